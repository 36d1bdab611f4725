"""Trajectory level (PAPER.md §5, Fig. 2, 3): chrF matrices and UPGMA unique trajectories.

For every (model, problem) the M = 256 responses are split into correct and incorrect ones; the
number of *unique* correct (incorrect) trajectories is the number of UPGMA clusters of the correct
(incorrect) responses, cut at chrF similarity 60 (§5.1):

1. :func:`chrf_matrix`: ``C[i, j]`` = sentence chrF of response i (hypothesis) against response j
   (reference), exactly ``sacrebleu.metrics.CHRF(char_order=6, word_order=0, beta=2)`` (§5.2):
   whitespace removed, character n-grams of orders 1..6, precision and recall averaged over the
   *effective* orders (those where both texts have n-grams), then ``F_beta`` on the 0-100 scale.
2. :func:`symmetrize` ``s = (C + C.T) / 2`` and :func:`distance_matrix` ``d = 1 - s / 100``.
3. :func:`count_unique`: ``linkage(squareform(d), "average")`` (UPGMA) and
   ``fcluster(Z, t=1 - 60/100, criterion="distance")``; the number of flat clusters.
4. :func:`unique_trajectories` (cached chrF matrices), :func:`cluster_labels` (per-sample
   cluster ids), :func:`cluster_examples` and :func:`mean_diversity` (squeezing or collapse?),
   :func:`summarise_unique` (means over problems with bootstrap CIs, Fig. 2) and
   :func:`unique_ratios` (RL/Base, SFT/Base, SFT+RL/SFT with paired bootstrap CIs, §5.3 H1-H3).
   Stage ``trajectories`` (:mod:`rlsft.stages.trajectories`) runs them and writes the tables.

How :func:`chrf_matrix` is fast and exact
-----------------------------------------
chrF needs, for every ordered pair (i, j) and order n, ``|ngrams_n(i) ∩ ngrams_n(j)|`` (multiset
intersection, ``sum_g min(c_ig, c_jg)``) and the n-gram totals. The intersection is symmetric, so
one number per *unordered* pair gives both directions (precision of i vs j is recall of j vs i).
All texts' n-grams of one order are packed into integers ``(n-gram, text)`` and sorted once; runs
give the counts ``c_ig``. ``min(a, b) = sum_{k>=1} [a >= k][b >= k]``: expanding every n-gram g
into "levels" k = 1..max_i c_ig turns the min-intersection into a product of 0/1 matrices,
``I = E E^T``. Levels of n-grams shared by many texts go through a float32 BLAS ``syrk`` (exact:
integer sums below 2^24); rare ones through a scipy sparse product; n-grams found in a single text
are dropped (they only touch the diagonal, which is the total). The F-score is then evaluated with
the same floating-point operations, in the same order, as sacrebleu, so the matrix agrees with
``CHRF().sentence_score`` to the last bit in practice (tests check 1e-9).

``fastchrf.pairwise_chrf(hyps, refs)`` (0.2.1, Rust; ``[[texts]], [[texts]]`` gives the same M x M
matrix) implements sacrebleu's formula and, in our tests, agrees to the last bit, with three
differences: whitespace is Rust's Unicode ``White_Space``, not Python's ``str.split()``
(U+001C..U+001F are removed by sacrebleu only, so ``"ab\\x1ccd"`` vs ``"abcd"`` is 100 in sacrebleu
and 39.4 in fastchrf); strings with lone surrogates raise ``UnicodeEncodeError``; there is no chrF++
(``word_order``). It hashes n-gram strings for each of the M^2 *ordered* pairs and runs one batch
row on one thread (rayon parallelises over rows only). ``benchmarks/bench_chrf.py`` times it.

>>> C = chrf_matrix(["the cat sat", "the cat sat", "a dog ran far away"])
>>> C.shape, float(C[0, 1]), round(float(C[0, 2]), 4)
((3, 3), 100.0, 2.5641)
>>> count_unique(chrf=C), count_unique(chrf=C, return_labels=True)[1].tolist()
(2, [0, 0, 1])
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from joblib import Parallel, delayed
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from rlsft import COMPARISONS, VARIANTS
from rlsft.headline import ci_agreement
from rlsft.io import save_npy, sha256_text
from rlsft.progress import bar as tqdm

log = logging.getLogger(__name__)

GROUP_KEYS = ("family", "variant", "benchmark", "problem")
TRAJECTORY_INPUT_COLUMNS = ("family", "variant", "benchmark", "problem", "sample", "correct")
"""The columns of ``samples`` this module needs (besides the text column); also the key columns of
:func:`cluster_labels`."""
QUANTITY = {("RL", "Base"): "unique_incorrect", ("SFT", "Base"): "unique_correct",
            ("SFT+RL", "SFT"): "unique_incorrect"}
"""Which count each training step is judged on (§5.3): RL squeezes incorrect, SFT expands correct."""
DIRECTION = {("RL", "Base"): "down", ("SFT", "Base"): "up", ("SFT+RL", "SFT"): "down"}
CACHE_VERSION = "1"
"""Bump when the chrF computation changes, so cached matrices are not reused."""

_DENSE_MIN_DF = 24
"""n-grams found in at least this many texts go through BLAS, rarer ones through scipy.sparse."""
_CHUNK_COLS = 8192
"""Level columns per BLAS call (bounds memory at M x 8192 float32)."""
_PUNCTS = frozenset('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')


# --------------------------------------------------------------------------------------------------
# chrF matrix
# --------------------------------------------------------------------------------------------------


def _check_texts(texts) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str (fill missing texts first)")
    return texts


def _check_orders(char_order, word_order, beta) -> None:
    for name, v in (("char_order", char_order), ("word_order", word_order)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if char_order + word_order < 1:
        raise ValueError("char_order + word_order must be >= 1")
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")


def _char_symbols(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace-free code points of all texts, concatenated, as dense ids 1..A; and lengths.

    ``"".join(t.split())`` is sacrebleu's whitespace removal (Python's ``str.isspace``).

    >>> sym, lens = _char_symbols(["ab a", "", "b\\tc"])
    >>> sym.tolist(), lens.tolist()
    ([1, 2, 1, 2, 3], [3, 0, 2])
    """
    stripped = ["".join(t.split()) for t in texts]
    lens = np.fromiter((len(s) for s in stripped), dtype=np.int64, count=len(stripped))
    codes = np.frombuffer("".join(stripped).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if codes.size == 0:
        return np.zeros(0, np.int64), lens
    table = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    table[codes] = 1
    np.cumsum(table, out=table)
    return table[codes], lens


def _remove_punctuation(sent: str) -> list[str]:
    """sacrebleu's chrF++ word tokenizer (``CHRF._remove_punctuation``), verbatim."""
    tokenized = []
    for w in sent.split():
        if len(w) == 1:
            tokenized.append(w)
        elif w[-1] in _PUNCTS:
            tokenized += [w[:-1], w[-1]]
        elif w[0] in _PUNCTS:
            tokenized += [w[0], w[1:]]
        else:
            tokenized.append(w)
    return tokenized


def _word_symbols(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids 1..A of sacrebleu's chrF++ words, concatenated; and token counts per text."""
    toks = [_remove_punctuation(t) for t in texts]
    lens = np.fromiter((len(x) for x in toks), dtype=np.int64, count=len(toks))
    flat = [w for x in toks for w in x]
    if not flat:
        return np.zeros(0, np.int64), lens
    ids, _ = pd.factorize(np.array(flat, dtype=object), sort=False)
    return ids.astype(np.int64) + 1, lens


def _sorted_keys(sym: np.ndarray, lens: np.ndarray, order: int, packed: bool | None = None
                 ) -> Iterator[tuple[int, np.ndarray, int]]:
    """For n = 1..order, yield ``(n, K, tbits)``: K sorted, one entry per n-gram occurrence,
    ``K = id(n-gram) << tbits | text``, equal ids iff equal n-grams.

    Packed path (alphabet and text index fit in 63 bits): the n-gram's symbols themselves are the
    id. Otherwise ids are lexicographic ranks built order by order with ``np.unique``.
    """
    M = lens.size
    tbits = max(1, int(M - 1).bit_length())
    A = int(sym.max()) if sym.size else 0
    b = max(1, A.bit_length())
    if packed is None:
        packed = order * b + tbits <= 63
    if sym.size == 0:
        for n in range(1, order + 1):
            yield n, np.zeros(0, np.int64), tbits
        return
    pad = order - 1  # zeros after each text: a window running past its text's end holds a 0
    N = sym.size
    real = np.repeat(np.arange(M, dtype=np.int64) * pad, lens) + np.arange(N, dtype=np.int64)
    spad = np.zeros(N + M * pad, dtype=np.int64)
    spad[real] = sym
    text = np.repeat(np.arange(M, dtype=np.int64), lens)
    ids = None
    packed_key = np.zeros(N, np.int64)
    for n in range(1, order + 1):
        last = spad[real + (n - 1)]
        valid = last != 0
        if packed:
            packed_key <<= b
            packed_key |= last
            K = packed_key[valid]
            bits = n * b + tbits
        else:  # rank of (rank of the (n-1)-prefix, last symbol); invalid windows get rank 0
            if n == 1:
                ids = spad.copy()
            else:
                L = spad.size - (n - 1)
                nxt = np.zeros_like(ids)
                key = ids[:L] * (A + 1) + spad[n - 1:]
                ok = (ids[:L] != 0) & (spad[n - 1:] != 0)
                nxt[:L][ok] = np.unique(key[ok], return_inverse=True)[1] + 1
                ids = nxt
            K = ids[real][valid]
            bits = int(ids.max()).bit_length() + tbits
        K = (K << tbits) | text[valid]
        if bits <= 16:  # narrower keys sort faster (16 bits: radix sort)
            K = K.astype(np.uint16)
            K.sort(kind="stable")
        else:
            if bits <= 32:
                K = K.astype(np.uint32)
            K.sort()
        yield n, K, tbits


def _pair_intersections(K: np.ndarray, M: int, tbits: int, dense_min: int = _DENSE_MIN_DF) -> np.ndarray:
    """``I[i, j] = sum_g min(c_ig, c_jg)`` for i != j (diagonal undefined) from sorted keys K.

    >>> K = np.sort(np.array([5 << 2 | 0, 5 << 2 | 0, 5 << 2 | 1, 7 << 2 | 1, 7 << 2 | 2]))
    >>> _pair_intersections(K, 3, 2)[[0, 0, 1], [1, 2, 2]].tolist()
    [1, 0, 1]
    """
    out = np.zeros((M, M), dtype=np.float64)
    if K.size < 2:
        return out.astype(np.int64)
    tmask = (1 << tbits) - 1
    rs = np.flatnonzero(np.r_[True, K[1:] != K[:-1]])          # runs of one (n-gram, text)
    rlen = np.diff(np.r_[rs, K.size])
    rk = K[rs]
    rg, rt = rk >> tbits, rk & tmask
    gs = np.flatnonzero(np.r_[True, rg[1:] != rg[:-1]])         # groups of one n-gram (in runs)
    gdf = np.diff(np.r_[gs, rs.size])                           # texts holding the n-gram
    gmax = np.maximum.reduceat(rlen, gs)                        # its levels: max count
    run_group = np.repeat(np.arange(gs.size), gdf)
    dense = gdf >= max(2, dense_min)
    for is_dense, gsel in ((True, dense), (False, (gdf >= 2) & ~dense)):
        if not gsel.any():
            continue
        rsel = gsel[run_group]
        cnt, t, grp = rlen[rsel], rt[rsel], run_group[rsel]
        width = np.where(gsel, gmax, 0)
        base = np.cumsum(width) - width                         # first level column of each group
        n_el = int(cnt.sum())
        first = np.cumsum(cnt) - cnt
        rows = np.repeat(t, cnt)
        gcol = np.repeat(base[grp], cnt)                         # nondecreasing: runs are by group
        cols = gcol + (np.arange(n_el) - np.repeat(first, cnt))
        ncols = int(width.sum())
        if is_dense:
            _dense_syrk(out, rows, cols, gcol, M)
        else:
            E = sp.csr_matrix((np.ones(n_el, np.int32), (rows, cols)), shape=(M, ncols))
            out += (E @ E.T).toarray()
    return out.astype(np.int64)


def _dense_syrk(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, gcol: np.ndarray, M: int) -> None:
    """out += B B^T for the 0/1 matrix B[rows, cols] = 1 (float32 BLAS, exact for integer sums
    below 2^24), in chunks of about ``_CHUNK_COLS`` columns cut at n-gram boundaries (``gcol``, each
    element's first column of its n-gram, is nondecreasing)."""
    n = rows.size
    start = 0
    while start < n:
        c0 = int(gcol[start])
        stop = max(int(np.searchsorted(gcol, c0 + _CHUNK_COLS, side="left")), start + 1)
        stop = int(np.searchsorted(gcol, gcol[stop - 1], side="right"))  # whole last n-gram
        w = int(cols[start:stop].max()) - c0 + 1
        B = np.zeros((M, w), dtype=np.float32)
        B[rows[start:stop], cols[start:stop] - c0] = 1.0
        out += B @ B.T
        start = stop


def _stats(sym: np.ndarray, lens: np.ndarray, order: int, packed: bool | None = None):
    """Per order n: (intersection matrix with totals on the diagonal, totals per text)."""
    M = lens.size
    res = []
    for n, K, tbits in _sorted_keys(sym, lens, order, packed):
        tot = np.maximum(lens - n + 1, 0)
        inter = _pair_intersections(K, M, tbits)
        np.fill_diagonal(inter, tot)
        res.append((inter, tot))
    return res


def _fscore(stats, beta) -> np.ndarray:
    """sacrebleu ``CHRF._compute_f_score`` (effective-order averaging), vectorised over all pairs,
    with the same floating-point operations in the same order."""
    inter0 = stats[0][0]
    shape = inter0.shape
    factor = beta ** 2
    avg_p = np.zeros(shape)
    avg_r = np.zeros(shape)
    eff = np.zeros(shape, dtype=np.int64)
    for inter, tot in stats:
        h = tot[:, None]   # hypothesis = row
        r = tot[None, :]   # reference = column
        ok = (h > 0) & (r > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = inter / h
            q = inter / r
        avg_p = avg_p + np.where(ok, p, 0.0)
        avg_r = avg_r + np.where(ok, q, 0.0)
        eff += ok
    with np.errstate(divide="ignore", invalid="ignore"):
        avg_p = np.where(eff > 0, avg_p / eff, 0.0)
        avg_r = np.where(eff > 0, avg_r / eff, 0.0)
        score = (1 + factor) * avg_p * avg_r
        score = score / ((factor * avg_p) + avg_r)
        score = 100 * score
    return np.where((avg_p + avg_r) != 0, score, 0.0)


@contextlib.contextmanager
def _blas_threads(n: int | None):
    """Limit BLAS threads (threadpoolctl, when installed) inside the block; None or -1: no limit."""
    if n is None or n == -1:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def chrf_matrix(texts: Sequence[str], char_order: int = 6, word_order: int = 0, beta: float = 2.0,
                n_jobs: int | None = 1) -> np.ndarray:
    """All-pairs sentence chrF: ``C[i, j] = CHRF(...).sentence_score(texts[i], [texts[j]]).score``.

    Exactly sacrebleu 2.x ``CHRF(char_order, word_order, beta)`` (lowercase=False, whitespace=False,
    eps_smoothing=False), including chrF++ (``word_order > 0``, sacrebleu's punctuation splitting).
    Returns a float64 (M, M) array on the 0-100 scale; the diagonal is 100 except for texts with
    no non-whitespace character (0). ``n_jobs`` caps the BLAS threads used inside (default 1,
    single-threaded, the fastest on small machines; -1 or None: BLAS default). To use several
    cores, run many problems in parallel with :func:`chrf_matrices`.

    >>> chrf_matrix(["abc", "abd", ""]).round(4).tolist()
    [[100.0, 38.8889, 0.0], [38.8889, 100.0, 0.0], [0.0, 0.0, 0.0]]
    """
    texts = _check_texts(texts)
    _check_orders(char_order, word_order, beta)
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer))
                               or (n_jobs < 1 and n_jobs != -1)):
        raise ValueError(f"n_jobs must be a positive integer, -1 or None, got {n_jobs!r}")
    M = len(texts)
    if M == 0:
        return np.zeros((0, 0), dtype=np.float64)
    t0 = time.perf_counter()
    with _blas_threads(n_jobs):
        stats = []
        if char_order:
            stats += _stats(*_char_symbols(texts), int(char_order))
        if word_order:
            stats += _stats(*_word_symbols(texts), int(word_order))
    C = _fscore(stats, beta)
    log.debug("chrf_matrix: %d texts, %d characters, %.3f s", M, sum(map(len, texts)), time.perf_counter() - t0)
    return C


def chrf_matrices(text_lists: Iterable[Sequence[str]], char_order: int = 6, word_order: int = 0,
                  beta: float = 2.0, n_jobs: int = 1) -> list[np.ndarray]:
    """:func:`chrf_matrix` of each list, ``n_jobs`` problems at a time (joblib, processes).

    Each call runs single-threaded inside, so ``n_jobs`` = number of cores is the right setting.

    >>> [m.shape for m in chrf_matrices([["a", "b"], ["x"]])]
    [(2, 2), (1, 1)]
    """
    text_lists = [_check_texts(t) for t in text_lists]
    if n_jobs == 1 or len(text_lists) <= 1:
        return [chrf_matrix(t, char_order, word_order, beta) for t in text_lists]
    return Parallel(n_jobs=n_jobs)(delayed(chrf_matrix)(t, char_order, word_order, beta) for t in text_lists)


# --------------------------------------------------------------------------------------------------
# Symmetrisation, distances, UPGMA
# --------------------------------------------------------------------------------------------------


def _check_square(chrf, name: str = "chrf") -> np.ndarray:
    C = np.asarray(chrf, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"{name} must be a square (M, M) matrix of chrF scores, got shape {C.shape}; "
                         "a condensed distance vector is not accepted (pass the square chrf_matrix)")
    if not np.isfinite(C).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if C.size and (C.min() < 0 or C.max() > 100 + 1e-9):
        raise ValueError(f"{name} must be on the 0-100 chrF scale, got values in [{C.min()}, {C.max()}]")
    return C


def symmetrize(chrf) -> np.ndarray:
    """``s = (C + C^T) / 2``, the symmetric similarity of §5.1 step 3.

    >>> symmetrize([[100, 40], [60, 100]]).tolist()
    [[100.0, 50.0], [50.0, 100.0]]
    """
    C = _check_square(chrf)
    return (C + C.T) / 2


def distance_matrix(chrf) -> np.ndarray:
    """``d = 1 - s / 100`` with a zero diagonal (a valid input for ``squareform``).

    >>> distance_matrix([[100, 40], [60, 100]]).tolist()
    [[0.0, 0.5], [0.5, 0.0]]
    """
    D = 1.0 - symmetrize(chrf) / 100.0
    np.fill_diagonal(D, 0.0)
    return D


def _first_seen_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel to 0..k-1 in order of first appearance."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inv]


def count_unique(texts: Sequence[str] | None = None, threshold: float = 60.0, *, chrf=None,
                 return_labels: bool = False, **chrf_kwargs):
    """Number of UPGMA clusters of the texts cut at chrF similarity ``threshold`` (§5.1 steps 3-5).

    ``linkage(squareform(d), method="average")`` then ``fcluster(Z, t=1 - threshold/100,
    criterion="distance")`` with ``d = 1 - (C + C^T)/200``. Pass the texts, or a precomputed square
    ``chrf`` matrix (then ``texts`` may be omitted; if both are given their sizes must agree).
    0 texts: 0 clusters; 1 text: 1. With ``return_labels`` returns ``(k, labels)``, labels 0..k-1
    numbered in order of first appearance. Extra keyword arguments go to :func:`chrf_matrix`.

    >>> count_unique(["x = 1 + 2 = 3", "x = 1 + 2 = 3.", "completely different words here"])
    2
    """
    if not isinstance(threshold, (int, float, np.integer, np.floating)) or isinstance(threshold, bool) \
            or not 0 <= threshold <= 100:
        raise ValueError(f"threshold must be a chrF similarity in [0, 100], got {threshold!r}")
    if chrf is None:
        if texts is None:
            raise ValueError("pass texts or a precomputed chrf matrix")
        C = chrf_matrix(texts, **chrf_kwargs)
    else:
        if chrf_kwargs:
            raise ValueError(f"chrF settings {sorted(chrf_kwargs)} have no effect with a precomputed chrf matrix")
        C = _check_square(chrf)
        if texts is not None and len(_check_texts(texts)) != C.shape[0]:
            raise ValueError(f"{len(texts)} texts but a chrf matrix of shape {C.shape}")
    M = C.shape[0]
    if M <= 1:
        return (M, np.zeros(M, dtype=np.int64)) if return_labels else M
    Z = linkage(squareform(distance_matrix(C), checks=False), method="average")
    labels = fcluster(Z, t=1.0 - threshold / 100.0, criterion="distance")
    k = int(np.unique(labels).size)
    return (k, _first_seen_labels(labels)) if return_labels else k


# --------------------------------------------------------------------------------------------------
# Unique trajectories per (family, variant, benchmark, problem)
# --------------------------------------------------------------------------------------------------


def chrf_cache_key(texts: Sequence[str], char_order: int = 6, word_order: int = 0, beta: float = 2.0) -> str:
    """sha256 of the chrF parameters and the ordered texts (lengths included, so no two lists of
    texts share a key).

    >>> chrf_cache_key(["a", "b"]) != chrf_cache_key(["b", "a"])
    True
    """
    texts = _check_texts(texts)
    return sha256_text("rlsft.trajectories.chrf_matrix", f"v{CACHE_VERSION}", f"char_order={char_order}",
                       f"word_order={word_order}", f"beta={float(beta)!r}", f"n={len(texts)}",
                       *(f"{len(t)}:{t}" for t in texts))


def cached_chrf_matrix(texts: Sequence[str], cache_dir, char_order: int = 6, word_order: int = 0,
                       beta: float = 2.0) -> np.ndarray:
    """:func:`chrf_matrix`, read from / written to ``cache_dir/chrf_<sha256>.npy`` (atomic write)."""
    texts = _check_texts(texts)
    path = Path(cache_dir) / f"chrf_{chrf_cache_key(texts, char_order, word_order, beta)}.npy"
    if path.exists():
        try:
            C = np.load(path, allow_pickle=False)
            if C.shape == (len(texts), len(texts)) and C.dtype == np.float64:
                return C
            log.warning("cached chrF matrix %s has shape %s, expected %d x %d; recomputing",
                        path.name, C.shape, len(texts), len(texts))
        except (OSError, ValueError) as e:
            log.warning("cannot read cached chrF matrix %s (%s); recomputing", path.name, e)
    C = chrf_matrix(texts, char_order, word_order, beta)
    save_npy(path, C)
    return C


def _check_samples(samples, text_column: str):
    if not isinstance(samples, pd.DataFrame):
        raise ValueError(f"samples must be a pandas DataFrame, got {type(samples).__name__}")
    need = list(TRAJECTORY_INPUT_COLUMNS) + [text_column]
    missing = [c for c in need if c not in samples.columns]
    if missing:
        raise ValueError(f"samples lacks columns {missing}; expected {need}")
    d = samples[need].copy()
    d["_problem_in"] = d["problem"]          # as given, so cluster_labels merges back onto samples
    d["problem"] = d["problem"].astype(str)
    if d[text_column].isna().any():
        raise ValueError(f"{int(d[text_column].isna().sum())} samples have no {text_column!r}; "
                         "fill them (e.g. with '') before clustering")
    if d["correct"].isna().any():
        raise ValueError(f"{int(d['correct'].isna().sum())} samples have no 'correct' value")
    d["correct"] = d["correct"].astype(bool)
    dup = d.duplicated(list(GROUP_KEYS) + ["sample"])
    if dup.any():
        raise ValueError(f"samples has {int(dup.sum())} duplicate (family, variant, benchmark, problem, sample) rows")
    return d.sort_values(list(GROUP_KEYS) + ["sample"], kind="stable").reset_index(drop=True)


def _compute_to_cache(texts, cache_dir, char_order, word_order, beta) -> int:
    cached_chrf_matrix(texts, cache_dir, char_order, word_order, beta)
    return len(texts)


def _group_matrices(samples, cache_dir, n_jobs: int, text_column: str, char_order: int, word_order: int,
                    beta: float, progress: bool, desc: str):
    """Yield (key, group frame sorted by sample, chrF matrix); missing matrices are computed first
    (``n_jobs`` groups in parallel) and cached, then every group is read back one at a time."""
    _check_orders(char_order, word_order, beta)
    d = _check_samples(samples, text_column)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    groups = [(key, g) for key, g in d.groupby(list(GROUP_KEYS), sort=True)]
    todo = []
    for key, g in groups:
        texts = g[text_column].tolist()
        path = Path(cache_dir) / f"chrf_{chrf_cache_key(texts, char_order, word_order, beta)}.npy"
        if not path.exists():
            todo.append(texts)
    log.info("%s: %d groups, %d chrF matrices cached, %d to compute (n_jobs=%d)",
             desc, len(groups), len(groups) - len(todo), len(todo), n_jobs)
    if todo:
        bar = tqdm(total=len(todo), desc=f"{desc}: chrF", unit="group", disable=not progress)
        if n_jobs == 1:
            for texts in todo:
                _compute_to_cache(texts, cache_dir, char_order, word_order, beta)
                bar.update()
        else:
            jobs = (delayed(_compute_to_cache)(t, cache_dir, char_order, word_order, beta) for t in todo)
            for _ in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
                bar.update()
        bar.close()
    for key, g in tqdm(groups, desc=f"{desc}: UPGMA", unit="group", disable=not progress):
        yield key, g, cached_chrf_matrix(g[text_column].tolist(), cache_dir, char_order, word_order, beta)


def unique_trajectories(samples, cache_dir, threshold: float = 60.0, n_jobs: int = 1, text_column: str = "text",
                        *, char_order: int = 6, word_order: int = 0, beta: float = 2.0, progress: bool = True):
    """Unique correct / incorrect trajectories per (family, variant, benchmark, problem) (§5.1).

    ``samples``: columns family, variant, benchmark, problem, sample, correct and ``text_column``.
    Per group: one chrF matrix over all its samples (ordered by ``sample``; cached as
    ``cache_dir/chrf_<sha256>.npy``, so a rerun does no chrF work), then :func:`count_unique` on the
    correct and on the incorrect sub-matrix. Returns columns family, variant, benchmark, problem,
    n_correct, n_incorrect, unique_correct, unique_incorrect, diversity_correct
    (= unique_correct / n_correct, NaN when n_correct = 0), diversity_incorrect.
    """
    rows = []
    for key, g, C in _group_matrices(samples, cache_dir, n_jobs, text_column, char_order, word_order, beta,
                                     progress, "unique_trajectories"):
        correct = g["correct"].to_numpy(bool)
        row = dict(zip(GROUP_KEYS, key))
        for name, sel in (("correct", correct), ("incorrect", ~correct)):
            idx = np.flatnonzero(sel)
            k = count_unique(chrf=C[np.ix_(idx, idx)], threshold=threshold)
            row[f"n_{name}"] = int(idx.size)
            row[f"unique_{name}"] = int(k)
            row[f"diversity_{name}"] = k / idx.size if idx.size else math.nan
        rows.append(row)
    cols = list(GROUP_KEYS) + ["n_correct", "n_incorrect", "unique_correct", "unique_incorrect",
                               "diversity_correct", "diversity_incorrect"]
    out = pd.DataFrame(rows, columns=cols)
    log.info("unique_trajectories: %d groups, threshold %.1f, mean unique correct %.2f, incorrect %.2f",
             len(out), threshold, out["unique_correct"].mean() if len(out) else math.nan,
             out["unique_incorrect"].mean() if len(out) else math.nan)
    return out


def cluster_labels(samples, cache_dir, threshold: float = 60.0, n_jobs: int = 1, text_column: str = "text",
                   *, char_order: int = 6, word_order: int = 0, beta: float = 2.0, progress: bool = True):
    """Per-sample UPGMA cluster within (family, variant, benchmark, problem, correct).

    Same matrices (and cache) as :func:`unique_trajectories`. Columns: family, variant, benchmark,
    problem (values as in ``samples``, so the result merges back onto it), sample, correct, cluster
    (0..k-1 within its group and correctness, in order of first appearance by sample),
    cluster_size; so a notebook can print one example per cluster.
    """
    parts = []
    for key, g, C in _group_matrices(samples, cache_dir, n_jobs, text_column, char_order, word_order, beta,
                                     progress, "cluster_labels"):
        correct = g["correct"].to_numpy(bool)
        labels = np.zeros(len(g), dtype=np.int64)
        for sel in (correct, ~correct):
            idx = np.flatnonzero(sel)
            if idx.size:
                labels[idx] = count_unique(chrf=C[np.ix_(idx, idx)], threshold=threshold, return_labels=True)[1]
        part = g[list(TRAJECTORY_INPUT_COLUMNS)].copy()
        part["problem"] = g["_problem_in"].to_numpy()
        part["cluster"] = labels
        parts.append(part)
    cols = list(TRAJECTORY_INPUT_COLUMNS) + ["cluster", "cluster_size"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    out["cluster_size"] = out.groupby(list(GROUP_KEYS) + ["correct", "cluster"])["sample"].transform("size")
    return out[cols]


EXAMPLE_COLUMNS = ("family", "benchmark", "problem", "variant", "correct", "n_samples", "n_clusters", "cluster",
                   "cluster_size", "text")


def cluster_examples(labels, samples, n_largest: int = 2, text_column: str = "text"):
    """One example text of each of the ``n_largest`` largest clusters, per variant (in ``VARIANTS``
    order) and correctness (incorrect first), for the first (family, benchmark, problem) of
    ``samples``: what a notebook prints to tell squeezing from collapse.

    ``labels``: :func:`cluster_labels` of ``samples``. Columns: ``EXAMPLE_COLUMNS`` (n_samples and
    n_clusters count the samples and clusters of the variant's correct or incorrect set).

    >>> s = pd.DataFrame({"family": "f", "variant": "RL", "benchmark": "b", "problem": "p", "sample": [0, 1, 2],
    ...                   "correct": False, "text": ["a", "a.", "b"]})
    >>> lab = s[["family", "variant", "benchmark", "problem", "sample", "correct"]].assign(cluster=[0, 0, 1])
    >>> cluster_examples(lab, s)[["variant", "n_samples", "n_clusters", "cluster", "cluster_size", "text"]].values.tolist()
    [['RL', 3, 2, 0, 2, 'a'], ['RL', 3, 2, 1, 1, 'b']]
    """
    if samples.empty:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    keys = ["family", "variant", "benchmark", "problem", "sample"]
    first = samples[["family", "benchmark", "problem"]].iloc[0]
    sel = labels[(labels["family"] == first["family"]) & (labels["benchmark"] == first["benchmark"])
                 & (labels["problem"] == first["problem"])]
    sel = sel.merge(samples[keys + [text_column]], on=keys)
    rows = []
    for v in VARIANTS:
        for ok in (False, True):
            part = sel[(sel["variant"] == v) & (sel["correct"] == ok)]
            if part.empty:
                continue
            sizes = part["cluster"].value_counts()
            for c in sizes.index[:n_largest]:
                rows.append((first["family"], first["benchmark"], first["problem"], v, ok, len(part), len(sizes),
                             int(c), int(sizes[c]), part[part["cluster"] == c][text_column].iloc[0]))
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


def mean_diversity(table):
    """Mean per-problem diversity (unique / count) of correct and incorrect trajectories per
    (family, variant), the variants in ``VARIANTS`` order (low diversity: the model repeats itself).

    >>> t = pd.DataFrame({"family": "f", "variant": ["SFT", "Base", "Base"], "diversity_correct": [0.5, 0.2, 0.4],
    ...                   "diversity_incorrect": [1.0, 0.5, float("nan")]})
    >>> mean_diversity(t).round(2).values.tolist()
    [[0.3, 0.5], [0.5, 1.0]]
    """
    div = table.groupby(["family", "variant"], observed=True)[["diversity_correct", "diversity_incorrect"]].mean()
    return div.reindex(VARIANTS, level="variant")


# --------------------------------------------------------------------------------------------------
# Summaries and ratios
# --------------------------------------------------------------------------------------------------


def _key_rng(seed: int, *key) -> np.random.Generator:
    h = int(hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:16], 16)
    return np.random.default_rng(np.random.SeedSequence([int(seed), h]))


def _check_table(table, n_boot: int):
    need = list(GROUP_KEYS) + ["unique_correct", "unique_incorrect"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}; build it with unique_trajectories")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    d = table[need].copy()
    d["problem"] = d["problem"].astype(str)
    dup = d.duplicated(list(GROUP_KEYS))
    if dup.any():
        raise ValueError(f"table has {int(dup.sum())} duplicate (family, variant, benchmark, problem) rows")
    return d


def _variant_rank(v: str) -> int:
    return VARIANTS.index(v) if v in VARIANTS else len(VARIANTS)


def summarise_unique(table, n_boot: int = 1000, seed: int = 0):
    """Mean unique correct / incorrect over problems per (family, variant, benchmark), Fig. 2.

    95% percentile bootstrap intervals resample the problems (``n_boot`` draws; 0 gives NaN);
    each row draws from its own stream seeded by ``seed`` and the row's key, so results do not
    depend on which other rows are present. Columns: family, variant, benchmark, n_problems,
    unique_correct, uc_low, uc_high, unique_incorrect, ui_low, ui_high.

    >>> import pandas as pd
    >>> t = pd.DataFrame(dict(family="1.5B", variant="RL", benchmark="AIME24", problem=["1", "2"],
    ...                       unique_correct=[2, 4], unique_incorrect=[10, 20]))
    >>> summarise_unique(t, n_boot=200)[["n_problems", "unique_correct", "unique_incorrect"]].values.tolist()
    [[2.0, 3.0, 15.0]]
    """
    d = _check_table(table, n_boot)
    rows = []
    keys = ["family", "variant", "benchmark"]
    for key, g in d.groupby(keys, sort=True):
        rng = _key_rng(seed, "summarise_unique", *key)
        uc = g["unique_correct"].to_numpy(np.float64)
        ui = g["unique_incorrect"].to_numpy(np.float64)
        n = uc.size
        ci = [math.nan] * 4
        if n_boot > 0 and n > 0:
            idx = rng.integers(0, n, size=(n_boot, n))
            ci = [*np.percentile(uc[idx].mean(axis=1), [2.5, 97.5]), *np.percentile(ui[idx].mean(axis=1), [2.5, 97.5])]
        rows.append(dict(zip(keys, key), n_problems=n, unique_correct=float(uc.mean()), uc_low=float(ci[0]),
                         uc_high=float(ci[1]), unique_incorrect=float(ui.mean()), ui_low=float(ci[2]),
                         ui_high=float(ci[3])))
    cols = keys + ["n_problems", "unique_correct", "uc_low", "uc_high", "unique_incorrect", "ui_low", "ui_high"]
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        out = out.assign(_r=out["variant"].map(_variant_rank)).sort_values(
            ["family", "benchmark", "_r"], kind="stable").drop(columns="_r").reset_index(drop=True)
    return out


def unique_ratios(table, n_boot: int = 1000, seed: int = 0,
                  comparisons: Sequence[tuple[str, str]] = COMPARISONS):
    """The paper's three claims as ratios of means over problems, per (family, benchmark) (§5.3).

    RL/Base of mean unique_incorrect (expected down), SFT/Base of mean unique_correct (up),
    SFT+RL/SFT of mean unique_incorrect (down). Paired over the problems both variants have; the
    95% CI is the percentile interval of the ratio over ``n_boot`` resamplings of those problems
    (the same problems for both variants). Deterministic given ``seed``. Columns: family, benchmark,
    quantity, comparison, ratio, ci_low, ci_high, direction_expected, agrees
    (:func:`rlsft.headline.ci_agreement`: "yes" only when the CI excludes 1 on the expected side,
    "unclear" when it holds 1 or there is no CI, "no" otherwise; empty without a ratio), n_problems,
    mean_after, mean_before. A comparison whose variants
    are missing for a (family, benchmark) is skipped.
    """
    d = _check_table(table, n_boot)
    for comp in comparisons:
        if comp not in QUANTITY:
            raise ValueError(f"unknown comparison {comp!r}; expected one of {list(QUANTITY)}")
    rows = []
    for (family, bench), g in d.groupby(["family", "benchmark"], sort=True):
        wide = g.set_index(["problem", "variant"])[["unique_correct", "unique_incorrect"]].unstack("variant")
        for after, before in comparisons:
            q = QUANTITY[(after, before)]
            if (q, after) not in wide.columns or (q, before) not in wide.columns:
                log.info("unique_ratios: %s %s lacks %s or %s; skipped", family, bench, after, before)
                continue
            pair = wide[[(q, after), (q, before)]].dropna()
            a = pair[(q, after)].to_numpy(np.float64)
            b = pair[(q, before)].to_numpy(np.float64)
            rows.append(_ratio_row(family, bench, q, after, before, a, b, n_boot,
                                   _key_rng(seed, "unique_ratios", family, bench, after, before)))
    cols = ["family", "benchmark", "quantity", "comparison", "ratio", "ci_low", "ci_high", "direction_expected",
            "agrees", "n_problems", "mean_after", "mean_before"]
    out = pd.DataFrame(rows, columns=cols)
    out["agrees"] = out["agrees"].astype(object)
    return out


def _ratio_row(family, bench, q, after, before, a, b, n_boot, rng) -> dict:
    direction = DIRECTION[(after, before)]
    ratio = lo = hi = math.nan
    ma = float(a.mean()) if a.size else math.nan
    mb = float(b.mean()) if b.size else math.nan
    if a.size and mb != 0:
        ratio = ma / mb
    if a.size and n_boot > 0:
        idx = rng.integers(0, a.size, size=(n_boot, a.size))
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = a[idx].mean(axis=1) / b[idx].mean(axis=1)
        boot = boot[np.isfinite(boot)]
        if boot.size:
            lo, hi = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    agrees = ci_agreement(ratio, lo, hi, direction)
    return dict(family=family, benchmark=bench, quantity=q, comparison=f"{after}/{before}", ratio=ratio,
                ci_low=lo, ci_high=hi, direction_expected=direction, agrees=agrees, n_problems=int(a.size),
                mean_after=ma, mean_before=mb)
