"""K-means nodes of the step level (PAPER.md §6.1): :func:`cluster_steps`, float32 throughout.

scikit-learn ``KMeans`` with ``n_init=10`` restarts for small groups, faiss (when importable) or one
restart / ``MiniBatchKMeans`` for large ones; K capped at the number of distinct points;
``metric="cosine"`` = spherical approximation (rows L2-normalised before Euclidean K-means).

>>> cluster_steps(np.array([[0., 0.], [5., 5.], [0., 0.1]]), k=2, seed=0)[0].tolist()
[0, 1, 0]
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

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
        closest = d[best]
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
        from sklearn.cluster import KMeans, MiniBatchKMeans

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


@contextlib.contextmanager
def _thread_limit(n: int | None):
    """At most ``n`` threads in the OpenMP/BLAS pools inside the block (``None``: no limit)."""
    if n is None:
        yield
        return
    if int(n) != n or n < 1:
        raise ValueError(f"threads must be a positive integer or None, got {n!r}")
    with _threadpools().limit(limits=int(n)):
        yield


@functools.lru_cache(maxsize=1)
def _threadpools():
    """The process's OpenMP/BLAS thread pools, found once (``threadpoolctl.ThreadpoolController``;
    finding them scans the loaded libraries, 4 ms per K-means otherwise)."""
    import sklearn.cluster  # noqa: F401  (loads scikit-learn's OpenMP runtime before the scan)
    from threadpoolctl import ThreadpoolController  # ships with scikit-learn

    return ThreadpoolController()


def cluster_steps(embeddings: np.ndarray, k: int, seed: int = 0, metric: str = "euclidean",
                  n_init: int = 10, sample_weight: np.ndarray | None = None,
                  minibatch_above: int = 100_000, method: str = "auto", exact_work: float = EXACT_WORK,
                  max_iter: int | None = None, return_info: bool = False, threads: int | None = None):
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

    ``threads``: at most this many threads in scikit-learn's OpenMP/BLAS pools during the fit
    (``None``: the library's default, every core). 1 is the robust choice for many small groups on a
    shared machine: OpenMP threads that spin while another process holds a core made one group's
    K-means 40 times slower (0.35 s alone, 14 s beside a training job on 2 cores).

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
        with _thread_limit(threads):
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


__all__ = ("EXACT_WORK", "REFINE_ITER", "INIT_SIZE", "faiss_available", "kmeans_plusplus", "cluster_steps")
