"""Step level, part 2 (PAPER.md §6.2-6.4): reasoning graphs, node metrics, decay rates (Fig. 6, 26).

Pure functions of a step table (:mod:`rlsft.steps`) and of graphs; stage ``graphs``
(:mod:`rlsft.stages.graphs`) runs them one clustering group at a time.

- :func:`paths_from_steps`: each response becomes a path of node ids, consecutive repeats merged;
- :func:`build_graph`: one directed graph per (family, variant, benchmark, problem), the union of
  its responses' paths (correct and incorrect mixed); node attr ``visits``, edge attrs ``count`` and
  ``distance`` (Euclidean distance between the K-means centroids); :func:`sparsify_topk` is the
  top-k smallest-distance check of Fig. 33; :func:`graphs_from_steps` builds every graph of a
  step table;
- node metrics (§6.3): :func:`visitation`, :func:`degree`, :func:`betweenness` (exactly
  ``networkx.betweenness_centrality(G, normalized=True)``, computed with rustworkx);
- :func:`decay_rate` (§6.4): OLS of ``log10 X(R) = alpha - beta R`` over ranks of the positive values;
- :func:`decay_table_from_graphs`: one beta per (model, problem, metric); :func:`sorted_decay`
  concatenates per-group decay tables in its row order;
- :func:`graph_tables` / :func:`graphs_from_tables`, :func:`node_metric_table`: the saved form of
  the graphs and their node metrics.

The ratios of these betas (RL/Base ~ 2.5, SFT/Base ~ 1/3, with bootstrap CIs) are in
:mod:`rlsft.ratios`; the node-count controls (matched node counts, subsampled responses, the visited
fraction and the K rule) in :mod:`rlsft.controls`. Both import this module, never the reverse.

>>> G = build_graph([[0, 1, 1, 2], [0, 2]])
>>> sorted(G.edges(data="count")), visitation(G)
([(0, 1, 1), (0, 2, 1), (1, 2, 1)], {0: 2, 1: 1, 2: 2})
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

PATH_KEYS = ("family", "variant", "benchmark", "problem", "sample")
GRAPH_KEYS = ("family", "variant", "benchmark", "problem")
METRICS = ("frequency", "degree", "betweenness")
GRAPH_KEY = GRAPH_KEYS
"""The key columns of a saved graph table (``nodes``, ``edges``, ``node_metrics``)."""


# --------------------------------------------------------------------------------------------------
# Paths and graphs
# --------------------------------------------------------------------------------------------------


def merge_repeats(path: Sequence[int]) -> list[int]:
    """Drop consecutive repeats (PAPER.md §6.2: no self-loops).

    >>> merge_repeats([3, 3, 1, 1, 3])
    [3, 1, 3]
    """
    out: list[int] = []
    for node in path:
        if not out or out[-1] != node:
            out.append(node)
    return out


def paths_from_steps(steps_df) -> dict[tuple, list[int]]:
    """Node path of every response, keyed by (family, variant, benchmark, problem, sample).

    Steps are ordered by ``step_idx``; consecutive identical nodes are merged.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"family": "f", "variant": "RL", "benchmark": "b", "problem": "p",
    ...                    "sample": [0, 0, 0, 1], "step_idx": [2, 0, 1, 0], "node": [5, 4, 4, 7]})
    >>> paths_from_steps(df)
    {('f', 'RL', 'b', 'p', 0): [4, 5], ('f', 'RL', 'b', 'p', 1): [7]}
    """
    need = list(PATH_KEYS) + ["step_idx", "node"]
    missing = [c for c in need if c not in steps_df.columns]
    if missing:
        raise ValueError(f"steps_df lacks columns {missing}; build it with rlsft.steps.cluster_group")
    if steps_df.empty:
        return {}
    if (steps_df["node"] < 0).any():
        raise ValueError("steps_df has negative node ids; every step needs a K-means node")
    df = steps_df[need].sort_values(list(PATH_KEYS) + ["step_idx"], kind="mergesort")
    gid = df.groupby(list(PATH_KEYS), sort=False, observed=True, dropna=False).ngroup().to_numpy()
    node = df["node"].to_numpy(dtype=np.int64)
    keep = np.ones(len(df), dtype=bool)
    keep[1:] = (gid[1:] != gid[:-1]) | (node[1:] != node[:-1])
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    key_rows = df.iloc[starts][list(PATH_KEYS)].itertuples(index=False, name=None)
    kept_gid, kept_node = gid[keep], node[keep]
    bounds = np.flatnonzero(np.r_[True, kept_gid[1:] != kept_gid[:-1], True])
    return {tuple(k): kept_node[bounds[i]:bounds[i + 1]].tolist() for i, k in enumerate(key_rows)}


def centroids_for(centroids: Mapping, family, benchmark, problem):
    """The centroid array of one graph, whichever scope the centroids were fitted with.

    >>> centroids_for({("f", "b"): "C"}, "f", "b", 7)
    'C'
    """
    for key in ((family, benchmark, str(problem)), (family, benchmark)):
        if key in centroids:
            return centroids[key]
    return None


def build_graph(paths: Iterable[Sequence[int]] | Mapping, centroids: np.ndarray | None = None) -> nx.DiGraph:
    """The union of ``paths`` as a simple DiGraph (PAPER.md §6.2).

    Node attr ``visits``: path positions per node after merging repeats. Edge attrs ``count``:
    transitions u->v over all paths; ``distance``: ``||c_u - c_v||_2`` when ``centroids`` (row i =
    node i) is given. No self-loops. Nodes and edges are added in sorted order (deterministic).

    >>> import numpy as np
    >>> G = build_graph({"a": [0, 0, 1], "b": [1, 0]}, centroids=np.array([[0., 0.], [3., 4.]]))
    >>> sorted(G.edges(data=True))
    [(0, 1, {'count': 1, 'distance': 5.0}), (1, 0, {'count': 1, 'distance': 5.0})]
    """
    if isinstance(paths, Mapping):
        paths = paths.values()
    visits: dict[int, int] = {}
    counts: dict[tuple[int, int], int] = {}
    for path in paths:
        p = merge_repeats([int(x) for x in path])
        for u in p:
            visits[u] = visits.get(u, 0) + 1
        for u, v in zip(p[:-1], p[1:]):
            counts[(u, v)] = counts.get((u, v), 0) + 1
    C = None
    if centroids is not None:
        C = np.asarray(centroids, dtype=np.float64)
        if visits and (C.ndim != 2 or max(visits) >= C.shape[0] or min(visits) < 0):
            raise ValueError(f"node ids 0..{max(visits)} do not index centroids of shape {C.shape}; "
                             "pass the centroids of the same clustering group")
    G = nx.DiGraph()
    for u in sorted(visits):
        G.add_node(u, visits=visits[u])
    for (u, v) in sorted(counts):
        attrs = {"count": counts[(u, v)]}
        if C is not None:
            attrs["distance"] = float(np.linalg.norm(C[u] - C[v]))
        G.add_edge(u, v, **attrs)
    return G


def sparsify_topk(G: nx.DiGraph, k: int) -> nx.DiGraph:
    """Keep, per node, only its ``k`` **out-edges** with the smallest ``distance`` (Fig. 33).

    Out-edges (not incident edges) so each node's choice is independent and the result is
    well defined; ties are broken by target id. All nodes (and their ``visits``) are kept.

    >>> G = nx.DiGraph(); G.add_edges_from([(0, 1, {"distance": 3.}), (0, 2, {"distance": 1.}),
    ...                                     (0, 3, {"distance": 2.})])
    >>> sorted(sparsify_topk(G, 2).edges())
    [(0, 2), (0, 3)]
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    H = nx.DiGraph()
    H.add_nodes_from(G.nodes(data=True))
    for u in G.nodes():
        out = list(G.out_edges(u, data=True))
        if any("distance" not in d for _, _, d in out):
            raise ValueError("sparsify_topk needs edge attr 'distance'; build the graph with centroids")
        out.sort(key=lambda e: (e[2]["distance"], e[1]))
        H.add_edges_from(out[: int(k)])
    return H


# --------------------------------------------------------------------------------------------------
# Node metrics (PAPER.md §6.3)
# --------------------------------------------------------------------------------------------------


def visitation(G: nx.DiGraph) -> dict:
    """Visitation frequency: path positions per node (node attr ``visits``).

    >>> visitation(build_graph([[0, 1], [1, 2, 1]]))
    {0: 1, 1: 3, 2: 1}
    """
    return {n: int(d.get("visits", 0)) for n, d in G.nodes(data=True)}


def degree(G: nx.DiGraph) -> dict:
    """In-degree + out-degree on the simple DiGraph.

    >>> degree(build_graph([[0, 1, 2], [2, 1]]))
    {0: 1, 1: 3, 2: 2}
    """
    return {n: int(d) for n, d in G.degree()}


def _rx_betweenness(G: nx.DiGraph) -> dict:
    import rustworkx as rx

    nodes = list(G.nodes())
    index = {n: i for i, n in enumerate(nodes)}
    R = rx.PyDiGraph(multigraph=False)
    R.add_nodes_from(nodes)
    R.add_edges_from_no_data([(index[u], index[v]) for u, v in G.edges()])
    # one thread: rustworkx's parallel sums (graphs of 50+ nodes by default) change in the last bits from
    # run to run, and a rerun must give the same table; single-threaded it is faster below ~1000 nodes
    # and half as fast at 2000 (0.43 s against 0.22 s on 2 cores)
    raw = rx.digraph_betweenness_centrality(R, normalized=False, endpoints=False, parallel_threshold=2**62)
    # networkx's normalisation for directed graphs: 1 / ((n-1)(n-2)), none for n <= 2. Applied here
    # to the raw Brandes sums so the result cannot depend on rustworkx's own convention.
    n = len(nodes)
    scale = 1.0 / ((n - 1) * (n - 2)) if n > 2 else 1.0
    return {nodes[i]: float(raw[i]) * scale for i in range(n)}


def betweenness(G: nx.DiGraph, weight: str | None = None, backend: str = "auto") -> dict:
    """Normalised betweenness, equal to ``networkx.betweenness_centrality(G, normalized=True)``.

    ``BC(v) = 1/((n-1)(n-2)) * sum_{s != v != t} sigma_st(v) / sigma_st`` on the DiGraph.
    ``backend="auto"`` uses rustworkx (unweighted; one thread, so reruns agree bit for bit) and networkx for
    ``weight="distance"`` (rustworkx 0.18 has no weighted node betweenness) or when rustworkx is
    missing; ``"networkx"`` forces the reference.

    >>> G = nx.DiGraph([(0, 1), (1, 2)])
    >>> betweenness(G) == nx.betweenness_centrality(G, normalized=True)
    True
    """
    if backend not in ("auto", "rustworkx", "networkx"):
        raise ValueError(f"backend must be 'auto', 'rustworkx' or 'networkx', got {backend!r}")
    if weight is not None and any(weight not in d for _, _, d in G.edges(data=True)):
        raise ValueError(f"weight={weight!r} but some edges lack that attribute; build the graph with centroids")
    if not G.is_directed():
        raise ValueError("betweenness expects a DiGraph (the reasoning graph is directed)")
    if backend == "networkx" or weight is not None:
        if backend == "rustworkx":
            raise ValueError("the rustworkx backend is unweighted; use weight=None or backend='networkx'")
        return nx.betweenness_centrality(G, normalized=True, weight=weight)
    try:
        return _rx_betweenness(G)
    except ImportError:
        if backend == "rustworkx":
            raise
        log.warning("rustworkx not importable; falling back to networkx betweenness")
        return nx.betweenness_centrality(G, normalized=True)


# --------------------------------------------------------------------------------------------------
# Decay rate (PAPER.md §6.4)
# --------------------------------------------------------------------------------------------------


def decay_rate(values, return_fit: bool = False):
    """beta of the OLS fit ``log10 X(R) = alpha - beta * R`` over ranks R = 1..n of the positive X.

    ``values``: a sequence or a dict node -> X. Zeros (and negatives) are dropped, the rest sorted
    descending and ranked 1..n (raw ranks). Fewer than 3 positive values: NaN (reason logged).
    ``return_fit=True`` gives ``{"beta", "alpha", "r2", "n"}`` (``r2`` NaN when all X are equal).

    >>> round(decay_rate([10 ** (2 - 0.5 * r) for r in range(1, 6)] + [0, 0]), 12)
    0.5
    >>> decay_rate([3, 0, 1])
    nan
    """
    x = np.asarray(list(values.values()) if isinstance(values, Mapping) else list(values), dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values contain NaN/inf; node metrics must be finite")
    x = np.sort(x[x > 0])[::-1]
    n = int(x.size)
    if n < 3:
        log.info("decay_rate: only %d positive values (< 3), beta is NaN", n)
        fit = {"beta": math.nan, "alpha": math.nan, "r2": math.nan, "n": n}
        return fit if return_fit else math.nan
    r = np.arange(1, n + 1, dtype=np.float64)
    y = np.log10(x)
    rc, yc = r - r.mean(), y - y.mean()
    slope = float((rc @ yc) / (rc @ rc))
    alpha = float(y.mean() - slope * r.mean())
    ss_tot = float(yc @ yc)
    ss_res = float(((y - (alpha + slope * r)) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    fit = {"beta": -slope, "alpha": alpha, "r2": r2, "n": n}
    return fit if return_fit else -slope


def node_metrics(G: nx.DiGraph, weight: str | None = None) -> dict[str, dict]:
    """The three node metrics of §6.3 keyed by metric name (``frequency``, ``degree``, ``betweenness``)."""
    return {"frequency": visitation(G), "degree": degree(G), "betweenness": betweenness(G, weight=weight)}


def graphs_from_steps(steps_df, centroids: Mapping | None = None, sparsify_k: int | None = None) -> dict:
    """One graph per (family, variant, benchmark, problem) of a step table, keyed by that tuple.

    ``centroids``: ``{group key: array}`` as :func:`rlsft.steps.cluster_group` fits them (edge
    distances); ``sparsify_k`` keeps each node's k smallest-distance out-edges (needs centroids).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"family": "f", "variant": "RL", "benchmark": "b", "problem": "p",
    ...                    "sample": [0, 0, 1], "step_idx": [0, 1, 0], "node": [0, 1, 1]})
    >>> sorted(graphs_from_steps(df)[("f", "RL", "b", "p")].edges)
    [(0, 1)]
    """
    return graphs_from_paths(paths_from_steps(steps_df), centroids, sparsify_k)


def graphs_from_paths(paths: Mapping, centroids: Mapping | None = None, sparsify_k: int | None = None) -> dict:
    """One graph per (family, variant, benchmark, problem) of :func:`paths_from_steps`' paths (any
    subset of them: :func:`rlsft.controls.subsample_paths`), keyed by that tuple; as
    :func:`graphs_from_steps`.

    >>> sorted(graphs_from_paths({("f", "RL", "b", "p", 0): [0, 1], ("f", "RL", "b", "p", 1): [1, 2]}))
    [('f', 'RL', 'b', 'p')]
    """
    by_graph: dict[tuple, list] = {}
    for key in sorted(paths, key=lambda k: (str(k[:4]), k[4])):
        by_graph.setdefault(key[:4], []).append(paths[key])
    out = {}
    for key, paths in by_graph.items():
        C = None if centroids is None else centroids_for(centroids, key[0], key[2], key[3])
        if centroids is not None and C is None:
            raise ValueError(f"no centroids for graph {key}; pass the centroids returned with this steps_df")
        G = build_graph(paths, centroids=C)
        out[key] = sparsify_topk(G, sparsify_k) if sparsify_k else G
    return out


DECAY_COLUMNS = [*GRAPH_KEYS, "metric", "beta", "alpha", "r2", "n_nodes", "n_graph_nodes", "n_edges"]


def graph_metrics(graphs: Mapping, weight: str | None = None, progress: bool = False) -> dict:
    """:func:`node_metrics` of every graph, keyed like ``graphs`` (computed once, used for both the
    node-metric table and the decay rates)."""
    return {key: node_metrics(graphs[key], weight=weight)
            for key in tqdm(list(graphs), desc="metrics", unit="graph", disable=not progress)}


def decay_table_from_graphs(graphs: Mapping, weight: str | None = None, metrics: Mapping | None = None,
                            progress: bool = False):
    """beta per (family, variant, benchmark, problem, metric) of graphs already built (PAPER.md §6.4, Fig. 6).

    Columns (:data:`DECAY_COLUMNS`): family, variant, benchmark, problem, metric, beta, alpha, r2,
    n_nodes (nodes with X > 0 in the fit), n_graph_nodes, n_edges (after any sparsification).
    ``weight="distance"`` gives distance-weighted betweenness (the graphs need centroid distances).
    ``metrics``: precomputed :func:`graph_metrics` (else computed here). Rows are ordered by
    ``str(key)`` then metric (per-group tables concatenated with :func:`sorted_decay` keep it).

    >>> d = decay_table_from_graphs({("f", "RL", "b", "p"): build_graph([[0, 1, 2, 3], [0, 2]])})
    >>> d[["metric", "n_graph_nodes", "n_edges"]].values.tolist()
    [['frequency', 4, 4], ['degree', 4, 4], ['betweenness', 4, 4]]
    """
    rows = []
    for key in tqdm(sorted(graphs, key=str), desc="decay", unit="graph", disable=not progress):
        G = graphs[key]
        vals_by_metric = metrics[key] if metrics is not None else node_metrics(G, weight=weight)
        for metric, vals in vals_by_metric.items():
            fit = decay_rate(vals, return_fit=True)
            rows.append(dict(zip(GRAPH_KEYS, key), metric=metric, beta=fit["beta"], alpha=fit["alpha"],
                             r2=fit["r2"], n_nodes=fit["n"], n_graph_nodes=G.number_of_nodes(),
                             n_edges=G.number_of_edges()))
    return pd.DataFrame(rows, columns=DECAY_COLUMNS)


def sorted_decay(parts: list):
    """Concatenate per-group decay tables in :func:`decay_table_from_graphs`' row order (``str(graph key)``).

    >>> q = pd.DataFrame({"family": ["f"], "variant": "RL", "benchmark": "b", "problem": ["q"]})
    >>> sorted_decay([q, q.assign(problem="p")])["problem"].tolist()
    ['p', 'q']
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=DECAY_COLUMNS)
    d = pd.concat(parts, ignore_index=True)
    order = sorted(range(len(d)), key=[str(t) for t in zip(*(d[c] for c in GRAPH_KEYS))].__getitem__)
    return d.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Saved form
# --------------------------------------------------------------------------------------------------


def graph_tables(graphs: Mapping):
    """Flatten graphs into ``(nodes, edges)`` DataFrames (the saved form the figure and topology
    stages read back with :func:`graphs_from_tables`).

    >>> G = build_graph([[0, 1, 2], [0, 2]])
    >>> nodes, edges = graph_tables({("f", "Base", "b", "p"): G})
    >>> len(nodes), len(edges), sorted(graphs_from_tables(nodes, edges)[("f", "Base", "b", "p")].edges)
    (3, 3, [(0, 1), (0, 2), (1, 2)])
    """
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


def node_metric_table(graphs: Mapping, weight: str | None = None, metrics: Mapping | None = None):
    """Long table of node metrics: family, variant, benchmark, problem, node, metric, value.

    ``metrics``: precomputed :func:`graph_metrics` of ``graphs`` (else computed here).
    """
    rows = []
    for key, G in graphs.items():
        base = dict(zip(GRAPH_KEY, key))
        by_metric = metrics[key] if metrics is not None else node_metrics(G, weight=weight)
        for metric, values in by_metric.items():
            rows += [{**base, "node": int(n), "metric": metric, "value": float(x)} for n, x in values.items()]
    return pd.DataFrame(rows, columns=[*GRAPH_KEY, "node", "metric", "value"])


__all__ = [
    "PATH_KEYS", "GRAPH_KEYS", "GRAPH_KEY", "METRICS", "DECAY_COLUMNS",
    "merge_repeats", "paths_from_steps", "centroids_for", "build_graph", "sparsify_topk", "visitation", "degree",
    "betweenness", "decay_rate", "node_metrics", "graph_metrics", "graphs_from_steps", "graphs_from_paths",
    "decay_table_from_graphs", "sorted_decay", "graph_tables", "graphs_from_tables", "node_metric_table",
]
