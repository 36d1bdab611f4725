"""The step-level code as it was before streaming (commit 990b1a0), kept as the benchmark's reference.

``benchmarks/bench_steps.py`` times it against the streaming path in the same run. It is not used by
the pipeline. Copied verbatim except for imports: the whole corpus is segmented into one table,
embedded at once (every cache chunk scanned into a dict, encode calls of ``batch_size`` texts),
clustered with float64 ``KMeans(n_init=10)`` per group, and the graphs are built twice (once for
the saved tables, once inside ``decay_table``) with the node metrics computed twice.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import networkx as nx
import numpy as np

from rlsft import io as rio
from rlsft.embedders import _slug, get_embedder
from rlsft.graphs import (GRAPH_KEY, GRAPH_KEYS, build_graph, centroids_for, decay_rate, node_metrics,
                          paths_from_steps, sparsify_topk)
from rlsft.steps import STEP_COLUMNS, _group_cols, segment_samples

log = logging.getLogger("steps_reference")

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


def graphs_from_steps(steps_df, centroids: Mapping | None = None, sparsify_k: int | None = None) -> dict:
    """One graph per (family, variant, benchmark, problem), keyed by that tuple."""

    by_graph: dict[tuple, list] = {}
    for key, path in paths_from_steps(steps_df).items():
        by_graph.setdefault(key[:4], []).append(path)
    out = {}
    for key, paths in by_graph.items():
        C = None if centroids is None else centroids_for(centroids, key[0], key[2], key[3])
        if centroids is not None and C is None:
            raise ValueError(f"no centroids for graph {key}; pass the centroids returned with this steps_df")
        G = build_graph(paths, centroids=C)
        out[key] = sparsify_topk(G, sparsify_k) if sparsify_k else G
    return out


def decay_table(steps_df, centroids: Mapping | None, sparsify_k: int | None = None, weight: str | None = None,
                progress: bool = True):
    """beta per (family, variant, benchmark, problem, metric) (PAPER.md §6.4, Fig. 6).

    Columns: family, variant, benchmark, problem, metric, beta, alpha, r2, n_nodes (nodes with X > 0
    in the fit), n_graph_nodes, n_edges (after sparsification). ``sparsify_k`` keeps each node's k
    smallest-distance out-edges (needs centroids); ``weight="distance"`` gives distance-weighted
    betweenness. Only nodes a model visits are in its graph.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if sparsify_k is not None and centroids is None:
        raise ValueError("sparsify_k needs centroids (edge distances); pass the centroids from step_table")
    if weight is not None and centroids is None:
        raise ValueError(f"weight={weight!r} needs centroids (edge distances); pass the centroids from step_table")
    graphs = graphs_from_steps(steps_df, centroids, sparsify_k)
    rows = []
    for key in tqdm(sorted(graphs, key=str), desc="decay", unit="graph", disable=not progress):
        G = graphs[key]
        for metric, vals in node_metrics(G, weight=weight).items():
            fit = decay_rate(vals, return_fit=True)
            rows.append(dict(zip(GRAPH_KEYS, key), metric=metric, beta=fit["beta"], alpha=fit["alpha"],
                             r2=fit["r2"], n_nodes=fit["n"], n_graph_nodes=G.number_of_nodes(),
                             n_edges=G.number_of_edges()))
    cols = list(GRAPH_KEYS) + ["metric", "beta", "alpha", "r2", "n_nodes", "n_graph_nodes", "n_edges"]
    df = pd.DataFrame(rows, columns=cols)
    n_nan = df.groupby("metric")["beta"].apply(lambda s: int(s.isna().sum())).to_dict() if len(df) else {}
    log.info("decay_table: %d graphs, sparsify_k=%s, weight=%s, NaN betas per metric %s",
             len(graphs), sparsify_k, weight, n_nan)
    return df


def graph_tables(graphs: Mapping):
    """Flatten graphs into ``(nodes, edges)`` DataFrames (the saved form the figure and topology
    stages read back with :func:`graphs_from_tables`).

    >>> G = build_graph([[0, 1, 2], [0, 2]])
    >>> nodes, edges = graph_tables({("f", "Base", "b", "p"): G})
    >>> len(nodes), len(edges), sorted(graphs_from_tables(nodes, edges)[("f", "Base", "b", "p")].edges)
    (3, 3, [(0, 1), (0, 2), (1, 2)])
    """
    import pandas as pd

    nrows, erows = [], []
    for key, G in graphs.items():
        base = dict(zip(GRAPH_KEY, key))
        nrows += [{**base, "node": int(n), "visits": int(d.get("visits", 0))} for n, d in G.nodes(data=True)]
        erows += [{**base, "src": int(u), "dst": int(v), "count": int(d.get("count", 1)),
                   "distance": float(d.get("distance", np.nan))} for u, v, d in G.edges(data=True)]
    return (pd.DataFrame(nrows, columns=[*GRAPH_KEY, "node", "visits"]),
            pd.DataFrame(erows, columns=[*GRAPH_KEY, "src", "dst", "count", "distance"]))


def graphs_from_tables(nodes, edges) -> dict:
    """Inverse of :func:`graph_tables`."""
    out: dict = {}
    for key, part in nodes.groupby(list(GRAPH_KEY), sort=False, observed=True):
        G = nx.DiGraph()
        G.add_nodes_from((int(n), {"visits": int(v)}) for n, v in zip(part["node"], part["visits"]))
        out[tuple(key)] = G
    for key, part in edges.groupby(list(GRAPH_KEY), sort=False, observed=True):
        G = out.setdefault(tuple(key), nx.DiGraph())
        G.add_edges_from((int(u), int(v), {"count": int(c), "distance": float(d)})
                         for u, v, c, d in zip(part["src"], part["dst"], part["count"], part["distance"]))
    return out


def node_metric_table(graphs: Mapping, weight: str | None = None):
    """Long table of node metrics: family, variant, benchmark, problem, node, metric, value."""
    import pandas as pd

    rows = []
    for key, G in graphs.items():
        base = dict(zip(GRAPH_KEY, key))
        for metric, values in node_metrics(G, weight=weight).items():
            rows += [{**base, "node": int(n), "metric": metric, "value": float(x)} for n, x in values.items()]
    return pd.DataFrame(rows, columns=[*GRAPH_KEY, "node", "metric", "value"])
