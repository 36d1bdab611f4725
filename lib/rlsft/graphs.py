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
- :func:`decay_table_from_graphs`, :func:`decay_ratios`: one beta per (model, problem, metric) and
  the ratios the paper reports (RL/Base ~ 2.5, SFT/Base ~ 1/3), with paired bootstrap CIs;
  :func:`geomean_ratios`, :func:`summarize_seed_spread` condense them;
- :func:`graph_tables` / :func:`graphs_from_tables`, :func:`node_metric_table`: the saved form of
  the graphs and their node metrics.

>>> G = build_graph([[0, 1, 1, 2], [0, 2]])
>>> sorted(G.edges(data="count")), visitation(G)
([(0, 1, 1), (0, 2, 1), (1, 2, 1)], {0: 2, 1: 1, 2: 2})
"""
from __future__ import annotations

import hashlib
import logging
import math
import warnings
from typing import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rlsft import COMPARISONS, VARIANTS
from rlsft.headline import ci_agreement

log = logging.getLogger(__name__)

PATH_KEYS = ("family", "variant", "benchmark", "problem", "sample")
GRAPH_KEYS = ("family", "variant", "benchmark", "problem")
METRICS = ("frequency", "degree", "betweenness")
PAPER_RATIO = {("RL", "Base"): 2.5, ("SFT", "Base"): 1 / 3, ("SFT+RL", "SFT"): math.nan}
"""The paper's ratios (abstract): RL steepens beta ~2.5x, SFT flattens it to ~1/3; SFT->SFT+RL: up."""
EXPECTED_DIRECTION = {("RL", "Base"): "up", ("SFT", "Base"): "down", ("SFT+RL", "SFT"): "up"}
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
    raw = rx.digraph_betweenness_centrality(R, normalized=False, endpoints=False)
    # networkx's normalisation for directed graphs: 1 / ((n-1)(n-2)), none for n <= 2. Applied here
    # to the raw Brandes sums so the result cannot depend on rustworkx's own convention.
    n = len(nodes)
    scale = 1.0 / ((n - 1) * (n - 2)) if n > 2 else 1.0
    return {nodes[i]: float(raw[i]) * scale for i in range(n)}


def betweenness(G: nx.DiGraph, weight: str | None = None, backend: str = "auto") -> dict:
    """Normalised betweenness, equal to ``networkx.betweenness_centrality(G, normalized=True)``.

    ``BC(v) = 1/((n-1)(n-2)) * sum_{s != v != t} sigma_st(v) / sigma_st`` on the DiGraph.
    ``backend="auto"`` uses rustworkx (unweighted; multithreaded) and networkx for
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
    subset of them: :func:`subsample_paths`), keyed by that tuple; as :func:`graphs_from_steps`.

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


# --------------------------------------------------------------------------------------------------
# Ratios
# --------------------------------------------------------------------------------------------------


def _key_seed(seed: int, *key) -> np.random.Generator:
    h = int(hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:16], 16)
    return np.random.default_rng(np.random.SeedSequence([int(seed), h]))


def _ci(boot: np.ndarray) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def _median_ratio(a: np.ndarray, b: np.ndarray, idx: np.ndarray | None) -> tuple[float, float, float]:
    """``(median(a) / median(b), ci_low, ci_high)``; the CI from the bootstrap rows ``idx`` (rows
    of problem positions; ``None``: no CI). Pairs stay paired: both medians use the same rows."""
    if a.size == 0:
        return math.nan, math.nan, math.nan
    mb = float(np.median(b))
    ratio = float(np.median(a)) / mb if mb != 0 else math.nan
    if idx is None:
        return ratio, math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    return (ratio, *_ci(boot))


RATIO_COLUMNS = ["family", "benchmark", "metric", "comparison", "after", "before", "n_problems", "beta_after",
                 "beta_before", "ratio", "ci_low", "ci_high", "paper_value", "expected_direction", "agrees",
                 "n_nodes_after", "n_nodes_before", "node_ratio", "node_ci_low", "node_ci_high", "shape_after",
                 "shape_before", "shape_ratio", "shape_ci_low", "shape_ci_high", "parts_product",
                 "matched_ratio", "matched_ci_low", "matched_ci_high", "matched_n_problems", "matched_agrees",
                 "note"]
"""Columns of :func:`decay_ratios`."""


def decay_ratios(decay_df, n_boot: int = 1000, seed: int = 0, by_benchmark: bool = False,
                 comparisons: Sequence[tuple[str, str]] = COMPARISONS, matched=None):
    """Median-beta ratios per (family, metric, comparison) with a paired bootstrap CI (§6.4), and
    their decomposition into a node-count part and a shape part.

    ``ratio = median_p beta_after(p) / median_p beta_before(p)`` over the problems p (pooled over
    benchmarks; ``benchmark="all"``) where both variants have a finite beta (paired). ``ci_low`` /
    ``ci_high``: 2.5 / 97.5 percentiles of the ratio over ``n_boot`` resamplings of the paired problems
    (``n_boot=0``: NaN). ``by_benchmark=True`` adds one row per benchmark. Deterministic given ``seed``
    (each row draws from its own stream, seeded by ``seed`` and the row's key).

    beta is fitted on the raw rank R = 1..N, so for the same shape of decay a graph with half the
    nodes N has twice the beta. The row therefore also gives, from the same bootstrap draws:

    - ``node_ratio`` = median N before / median N after (N = ``n_nodes``, the nodes in the fit), with
      ``node_ci_low`` / ``node_ci_high``: the part of the ratio that node count alone explains;
    - ``shape_ratio`` = median (beta N) after / median (beta N) before (beta N is the slope against
      the normalised rank R/N), with ``shape_ci_low`` / ``shape_ci_high``: the shape part;
    - ``parts_product`` = node_ratio * shape_ratio, which is close to ``ratio`` but not equal to it
      (a median of products is not the product of medians).

    ``matched``: a :func:`matched_decay` table; its ratio of medians (same pairing and bootstrap, its
    own stream) fills ``matched_ratio``, ``matched_ci_low``, ``matched_ci_high``,
    ``matched_n_problems`` and ``matched_agrees`` (NaN without it).

    ``agrees`` (and ``matched_agrees``): :func:`rlsft.headline.ci_agreement`, ``"yes"`` only when the
    CI excludes 1 on the paper's side, ``"unclear"`` when it holds 1 (or there is no CI), ``"no"``
    otherwise, empty without a ratio. ``note`` says why a row has no ratio. Columns:
    :data:`RATIO_COLUMNS` (``paper_value``: 2.5, 1/3, NaN; ``expected_direction``: up/down/up).

    >>> import pandas as pd
    >>> d = pd.DataFrame({"family": "f", "variant": ["Base", "RL"] * 3, "benchmark": "b",
    ...                   "problem": ["p", "p", "q", "q", "r", "r"], "metric": "degree",
    ...                   "beta": [0.1, 0.2] * 3, "n_nodes": [20, 10] * 3})
    >>> r = decay_ratios(d, n_boot=10, comparisons=[("RL", "Base")]).iloc[0]
    >>> float(r["ratio"]), float(r["node_ratio"]), float(r["shape_ratio"]), r["agrees"]
    (2.0, 2.0, 1.0, 'yes')
    """
    need = list(GRAPH_KEYS) + ["metric", "beta", "n_nodes"]
    missing = [c for c in need if c not in decay_df.columns]
    if missing:
        raise ValueError(f"decay_df lacks columns {missing}; build it with decay_table_from_graphs")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    for after, before in comparisons:
        for v in (after, before):
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {v!r} in comparisons; expected one of {VARIANTS}")
    d = decay_df[need].copy()
    d["problem"] = d["problem"].astype(str)
    idx = ["family", "metric", "benchmark", "problem", "variant"]
    dup = d.duplicated(idx)
    if dup.any():
        raise ValueError(f"decay_df has {int(dup.sum())} duplicate (family, metric, benchmark, problem, variant) "
                         "rows; concatenate decay tables of different settings into separate frames")
    wide = d.set_index(idx)[["beta", "n_nodes"]].unstack("variant").sort_index()
    mwide = _matched_wide(matched)
    rows = []
    for (family, metric), sub in wide.groupby(level=["family", "metric"], sort=True):
        scopes = [("all", sub)]
        if by_benchmark:
            scopes += [(b, s) for b, s in sub.groupby(level="benchmark", sort=True)]
        for bench, s in scopes:
            for after, before in comparisons:
                row = _ratio_row(s, family, bench, metric, after, before, n_boot, seed)
                row.update(_matched_part(mwide, family, bench, metric, after, before, n_boot, seed))
                rows.append(row)
    out = pd.DataFrame(rows, columns=RATIO_COLUMNS)
    for c in ("agrees", "matched_agrees", "note"):
        out[c] = out[c].astype(object)
    return out


def _ratio_row(s, family, bench, metric, after, before, n_boot, seed) -> dict:
    def col(name, v):
        return s[(name, v)].to_numpy(dtype=np.float64) if (name, v) in s.columns else np.full(len(s), np.nan)

    a, b = col("beta", after), col("beta", before)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    na, nb = col("n_nodes", after)[ok], col("n_nodes", before)[ok]
    comp = (after, before)
    direction = EXPECTED_DIRECTION.get(comp, "up")
    idx = None
    note = ""
    if a.size and n_boot > 0:
        # the same draws as before the decomposition existed, shared by the three ratios
        idx = _key_seed(seed, family, bench, metric, after, before).integers(0, a.size, size=(n_boot, a.size))
    if not a.size:
        absent = [v for v in (after, before) if ("beta", v) not in s.columns]
        note = (f"no graphs of {' and '.join(absent)}" if absent else
                "no problem where both variants have a finite beta (a fit needs >= 3 nodes with X > 0)")
        log.info("decay_ratios: no paired problems for %s %s/%s (%s, %s)", family, after, before, metric, bench)
    ratio, lo, hi = _median_ratio(a, b, idx)
    node, node_lo, node_hi = _median_ratio(nb, na, idx)
    shape, shape_lo, shape_hi = _median_ratio(a * na, b * nb, idx)
    return dict(family=family, benchmark=bench, metric=metric, comparison=f"{after}/{before}", after=after,
                before=before, n_problems=int(a.size), beta_after=float(np.median(a)) if a.size else math.nan,
                beta_before=float(np.median(b)) if a.size else math.nan, ratio=ratio, ci_low=lo, ci_high=hi,
                paper_value=PAPER_RATIO.get(comp, math.nan), expected_direction=direction,
                agrees=ci_agreement(ratio, lo, hi, direction),
                n_nodes_after=float(np.median(na)) if na.size else math.nan,
                n_nodes_before=float(np.median(nb)) if nb.size else math.nan,
                node_ratio=node, node_ci_low=node_lo, node_ci_high=node_hi,
                shape_after=float(np.median(a * na)) if a.size else math.nan,
                shape_before=float(np.median(b * nb)) if a.size else math.nan,
                shape_ratio=shape, shape_ci_low=shape_lo, shape_ci_high=shape_hi,
                parts_product=node * shape, note=note)


def _matched_wide(matched):
    if matched is None:
        return None
    need = ["family", "benchmark", "problem", "comparison", "metric", "beta_after", "beta_before"]
    missing = [c for c in need if c not in matched.columns]
    if missing:
        raise ValueError(f"matched lacks columns {missing}; build it with matched_decay")
    m = matched[need].copy()
    m["problem"] = m["problem"].astype(str)
    return m


def _matched_part(m, family, bench, metric, after, before, n_boot, seed) -> dict:
    empty = dict(matched_ratio=math.nan, matched_ci_low=math.nan, matched_ci_high=math.nan, matched_n_problems=0,
                 matched_agrees=None)
    if m is None:
        return empty
    sel = (m["family"] == family) & (m["metric"] == metric) & (m["comparison"] == f"{after}/{before}")
    if bench != "all":
        sel &= m["benchmark"] == bench
    a, b = m.loc[sel, "beta_after"].to_numpy(np.float64), m.loc[sel, "beta_before"].to_numpy(np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if not a.size:
        return empty
    idx = (_key_seed(seed, "matched", family, bench, metric, after, before).integers(0, a.size, size=(n_boot, a.size))
           if n_boot > 0 else None)
    ratio, lo, hi = _median_ratio(a, b, idx)
    return dict(matched_ratio=ratio, matched_ci_low=lo, matched_ci_high=hi, matched_n_problems=int(a.size),
                matched_agrees=ci_agreement(ratio, lo, hi, EXPECTED_DIRECTION.get((after, before), "up")))


def geomean_ratios(ratios_df, by: Sequence[str] = ("comparison",), columns: Sequence[str] = ("ratio",)):
    """Geometric mean of ``ratio`` (and of each other column of ``columns``, as
    ``<column>_geomean``) over the other rows (metrics, families) of ``benchmark == "all"``.

    PAPER.md §6.4's default aggregation before comparing with 2.5 and 1/3. Non-positive or NaN
    ratios are left out (and, for ``ratio``, counted in ``n_left_out``). :func:`decay_geomeans`
    gives the same point values with bootstrap intervals.

    >>> import pandas as pd
    >>> r = pd.DataFrame({"benchmark": "all", "comparison": "RL/Base", "ratio": [2.0, 8.0], "shape_ratio": [1., 4.]})
    >>> geomean_ratios(r, columns=("ratio", "shape_ratio"))[["ratio_geomean", "shape_ratio_geomean"]].values.tolist()
    [[4.0, 2.0]]
    """
    d = ratios_df[ratios_df["benchmark"] == "all"] if "benchmark" in ratios_df.columns else ratios_df

    def gm(s):
        s = s.astype(float)
        ok = s[np.isfinite(s) & (s > 0)]
        return float(np.exp(np.log(ok).mean())) if len(ok) else math.nan

    def agg(g):
        s = g["ratio"].astype(float)
        ok = np.isfinite(s) & (s > 0)
        out = {"ratio_geomean": gm(s), "n": int(ok.sum()), "n_left_out": int(len(s) - ok.sum())}
        out.update({f"{c}_geomean": gm(g[c]) for c in columns if c != "ratio"})
        return pd.Series(out)

    cols = ["ratio_geomean", "n", "n_left_out", *[f"{c}_geomean" for c in columns if c != "ratio"]]
    if d.empty:
        return pd.DataFrame(columns=[*by, *cols])
    out = pd.DataFrame([{**dict(zip(by, k if isinstance(k, tuple) else (k,))), **agg(g)}
                        for k, g in d.groupby(list(by), sort=True)])
    out["n"] = out["n"].astype(int)
    out["n_left_out"] = out["n_left_out"].astype(int)
    return out[[*by, *cols]]


GEOMEAN_COLUMNS = ["comparison", "after", "before", "n_ratios", "ratio", "ci_low", "ci_high", "node_ratio",
                   "node_ci_low", "node_ci_high", "shape_ratio", "shape_ci_low", "shape_ci_high", "paper_value",
                   "expected_direction", "agrees", "shape_agrees"]
"""Columns of :func:`decay_geomeans`."""


def _family_arrays(d, family, metrics, after, before):
    """beta and n_nodes of ``after`` and ``before`` per metric over one family's problems (NaN where absent)."""
    sub = d[d["family"] == family]
    probs = sorted(set(zip(sub["benchmark"], sub["problem"])))
    pos = {p: i for i, p in enumerate(probs)}
    out = {}
    for metric in metrics:
        arr = {k: np.full(len(probs), np.nan) for k in ("a", "b", "na", "nb")}
        for v, (kb, kn) in ((after, ("a", "na")), (before, ("b", "nb"))):
            part = sub[(sub["metric"] == metric) & (sub["variant"] == v)]
            ii = [pos[p] for p in zip(part["benchmark"], part["problem"])]
            arr[kb][ii] = part["beta"].to_numpy(np.float64)
            arr[kn][ii] = part["n_nodes"].to_numpy(np.float64)
        ok = np.isfinite(arr["a"]) & np.isfinite(arr["b"])
        for k in arr:
            arr[k][~ok] = np.nan
        out[metric] = arr
    return len(probs), out


def _nanmedian_ratio(a, b, idx):
    """Ratio of nan-medians, for the point (``idx`` None) or per bootstrap row."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if idx is None:
            return np.nanmedian(a) / np.nanmedian(b)
        return np.nanmedian(a[idx], axis=1) / np.nanmedian(b[idx], axis=1)


def decay_geomeans(decay_df, n_boot: int = 1000, seed: int = 0, comparisons: Sequence[tuple[str, str]] = COMPARISONS):
    """The headline of §6.4: per comparison, the geometric mean over metrics and families of the
    ratio of median beta (``ratio``), of its node-count part (``node_ratio``) and of its shape part
    (``shape_ratio``), each with a 95% bootstrap interval.

    The point values equal :func:`geomean_ratios` of :func:`decay_ratios`' rows (paired problems
    per metric). The interval resamples each family's problems once per draw, for all metrics
    together (the metrics of one problem are not independent), and takes the geometric mean of the
    resampled ratios. ``agrees`` / ``shape_agrees``: :func:`rlsft.headline.ci_agreement` of the raw
    and the shape geometric mean. Columns: :data:`GEOMEAN_COLUMNS`.

    >>> import pandas as pd
    >>> d = pd.DataFrame({"family": "f", "variant": ["Base", "RL"] * 3, "benchmark": "b",
    ...                   "problem": ["p", "p", "q", "q", "r", "r"], "metric": "degree",
    ...                   "beta": [0.1, 0.4] * 3, "n_nodes": [20, 10] * 3})
    >>> g = decay_geomeans(d, n_boot=10, comparisons=[("RL", "Base")]).iloc[0]
    >>> float(g["ratio"]), float(g["node_ratio"]), float(g["shape_ratio"])
    (4.0, 2.0, 2.0)
    """
    need = list(GRAPH_KEYS) + ["metric", "beta", "n_nodes"]
    missing = [c for c in need if c not in decay_df.columns]
    if missing:
        raise ValueError(f"decay_df lacks columns {missing}; build it with decay_table_from_graphs")
    d = decay_df[need].copy()
    d["problem"] = d["problem"].astype(str)
    rows = []
    for after, before in comparisons:
        rng = _key_seed(seed, "geomean", after, before)
        logs = {k: [] for k in ("ratio", "node", "shape")}
        boots = {k: [] for k in logs}
        for family in sorted(d["family"].unique(), key=str):
            metrics = sorted(d.loc[d["family"] == family, "metric"].unique(), key=str)
            n, arrays = _family_arrays(d, family, metrics, after, before)
            idx = rng.integers(0, n, size=(n_boot, n)) if (n and n_boot > 0) else None
            for metric in metrics:
                x = arrays[metric]
                parts = {"ratio": (x["a"], x["b"]), "node": (x["nb"], x["na"]), "shape": (x["a"] * x["na"], x["b"] * x["nb"])}
                points = {k: float(_nanmedian_ratio(u, v, None)) for k, (u, v) in parts.items()}
                if not all(np.isfinite(p) and p > 0 for p in points.values()):
                    continue
                for k, (u, v) in parts.items():
                    logs[k].append(math.log(points[k]))
                    if idx is not None:
                        with np.errstate(divide="ignore", invalid="ignore"):
                            boots[k].append(np.log(_nanmedian_ratio(u, v, idx)))
        row = dict(comparison=f"{after}/{before}", after=after, before=before, n_ratios=len(logs["ratio"]),
                   paper_value=PAPER_RATIO.get((after, before), math.nan),
                   expected_direction=EXPECTED_DIRECTION.get((after, before), "up"))
        for k, name in (("ratio", "ratio"), ("node", "node_ratio"), ("shape", "shape_ratio")):
            point = float(np.exp(np.mean(logs[k]))) if logs[k] else math.nan
            lo = hi = math.nan
            if boots[k]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    b = np.exp(np.nanmean(np.where(np.isfinite(np.vstack(boots[k])), np.vstack(boots[k]), np.nan), axis=0))
                lo, hi = _ci(b)
            prefix = "" if k == "ratio" else f"{k}_"
            row.update({name: point, f"{prefix}ci_low": lo, f"{prefix}ci_high": hi})
        row["agrees"] = ci_agreement(row["ratio"], row["ci_low"], row["ci_high"], row["expected_direction"])
        row["shape_agrees"] = ci_agreement(row["shape_ratio"], row["shape_ci_low"], row["shape_ci_high"],
                                           row["expected_direction"])
        rows.append(row)
    out = pd.DataFrame(rows, columns=GEOMEAN_COLUMNS)
    for c in ("agrees", "shape_agrees"):
        out[c] = out[c].astype(object)
    return out


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


def summarize_seed_spread(spread_df):
    """Per (family, benchmark, metric, comparison): n_seeds, ratio min / median / max, and
    ``all_on_paper_side``: every seed's ratio lies on the paper's side of 1 (the spread has no
    bootstrap intervals, so this is about the point values only, not an ``agrees`` verdict).

    >>> import pandas as pd
    >>> d = pd.DataFrame({"clustering_seed": [0, 1], "family": "f", "benchmark": "all", "metric": "degree",
    ...                   "comparison": "RL/Base", "ratio": [2.0, 3.0], "paper_value": 2.5, "expected_direction": "up"})
    >>> summarize_seed_spread(d)[["ratio_min", "ratio_median", "ratio_max", "all_on_paper_side"]].values.tolist()
    [[2.0, 2.5, 3.0, True]]
    """
    keys = ["family", "benchmark", "metric", "comparison"]
    d = spread_df.copy()
    r = d["ratio"].astype(float)
    d["_side"] = np.where(d["expected_direction"] == "down", r < 1, r > 1) & np.isfinite(r)
    g = d.groupby(keys, sort=True)
    out = g.agg(n_seeds=("clustering_seed", "nunique"), ratio_min=("ratio", "min"),
                ratio_median=("ratio", "median"), ratio_max=("ratio", "max"),
                paper_value=("paper_value", "first"), expected_direction=("expected_direction", "first"),
                all_on_paper_side=("_side", "all"))
    return out.reset_index()


# --------------------------------------------------------------------------------------------------
# Node-count-matched control, subsampled responses, visited fraction (saturation at K)
# --------------------------------------------------------------------------------------------------

MATCHED_COLUMNS = ["family", "benchmark", "problem", "comparison", "after", "before", "metric", "beta_after",
                   "beta_before", "nodes_after", "nodes_before", "matched_variant", "nodes_matched",
                   "responses_matched", "responses_total", "draws"]
"""Columns of :func:`matched_decay`."""


def _by_problem(paths: Mapping) -> dict:
    """``{(family, benchmark, problem): {variant: [path, ...]}}``, responses in sample order."""
    out: dict = {}
    for key in sorted(paths, key=lambda k: (str(k[:4]), k[4])):
        family, variant, bench, problem, _ = key
        out.setdefault((family, bench, problem), {}).setdefault(variant, []).append(paths[key])
    return out


def _betas(paths: list, C, sparsify_k, weight) -> tuple[dict, int]:
    """``({metric: beta}, graph nodes)`` of the graph of ``paths``."""
    G = build_graph(paths, centroids=C)
    if sparsify_k:
        G = sparsify_topk(G, sparsify_k)
    return {m: decay_rate(v) for m, v in node_metrics(G, weight=weight).items()}, G.number_of_nodes()


def matched_prefix(paths: Sequence[Sequence[int]], target: int, rng: np.random.Generator) -> list:
    """The responses of ``paths`` in a random order (``rng``), up to the first prefix whose graph
    visits at least ``target`` nodes (all of them when none does).

    >>> rng = np.random.default_rng(0)
    >>> len(matched_prefix([[0, 1], [2, 3], [4, 5]], 3, rng))
    2
    """
    seen: set = set()
    out = []
    for i in rng.permutation(len(paths)):
        out.append(paths[i])
        seen.update(paths[i])
        if len(seen) >= target:
            break
    return out


def matched_decay(paths: Mapping, comparisons: Sequence[tuple[str, str]] = COMPARISONS, draws: int = 5,
                  seed: int = 0, centroids: Mapping | None = None, sparsify_k: int | None = None,
                  weight: str | None = None):
    """The node-count-matched control: beta when both variants' graphs visit the same number of nodes.

    ``paths``: :func:`paths_from_steps` (one or many problems). Per problem and comparison, the
    variant whose graph visits more nodes is cut down: its responses are added in a random order
    (seeded by ``seed``, the problem, the variant and the draw) and stopped at the first prefix
    whose graph visits at least as many nodes as the other variant's graph
    (:func:`matched_prefix`); beta of each metric is fitted on that graph; the median over
    ``draws`` draws is its matched beta. The other variant keeps its whole graph. Equal node counts:
    both whole (``matched_variant`` "neither"). ``centroids`` / ``sparsify_k`` / ``weight`` as in
    :func:`graphs_from_steps` and :func:`node_metrics`. Columns: :data:`MATCHED_COLUMNS`
    (``nodes_matched`` / ``responses_matched``: medians over the draws).

    If a ratio keeps its direction after matching, the direction is about the shape of the decay,
    not about how many nodes the graphs visit.

    >>> paths = {("f", "Base", "b", "p", i): [i, i + 10] for i in range(4)}
    >>> paths.update({("f", "RL", "b", "p", i): [0, 1, 2, 0] for i in range(4)})
    >>> m = matched_decay(paths, comparisons=[("RL", "Base")], draws=3)
    >>> m[["matched_variant", "nodes_after", "nodes_before", "nodes_matched"]].astype(str).iloc[0].tolist()
    ['before', '3', '8', '4.0']
    """
    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    rows = []
    for (family, bench, problem), by_var in _by_problem(paths).items():
        C = None if centroids is None else centroids_for(centroids, family, bench, problem)
        whole: dict = {}

        def full(v):
            if v not in whole:
                whole[v] = _betas(by_var[v], C, sparsify_k, weight)
            return whole[v]

        for after, before in comparisons:
            if after not in by_var or before not in by_var:
                continue
            (ba, na), (bb, nb) = full(after), full(before)
            big, target = (after, nb) if na > nb else (before, na)
            betas = {"after": ba, "before": bb}
            n_matched = n_used = math.nan
            if na != nb:
                draws_b, nodes, used = [], [], []
                for r in range(int(draws)):
                    rng = _key_seed(seed, "matched", family, bench, problem, big, r)
                    prefix = matched_prefix(by_var[big], target, rng)
                    b, n = _betas(prefix, C, sparsify_k, weight)
                    draws_b.append(b)
                    nodes.append(n)
                    used.append(len(prefix))
                side = "after" if big == after else "before"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    betas[side] = {m: float(np.nanmedian([b[m] for b in draws_b])) for m in draws_b[0]}
                n_matched, n_used = float(np.median(nodes)), float(np.median(used))
            for metric in betas["after"]:
                rows.append(dict(family=family, benchmark=bench, problem=problem, comparison=f"{after}/{before}",
                                 after=after, before=before, metric=metric, beta_after=betas["after"][metric],
                                 beta_before=betas["before"][metric], nodes_after=na, nodes_before=nb,
                                 matched_variant="neither" if na == nb else ("after" if big == after else "before"),
                                 nodes_matched=n_matched, responses_matched=n_used,
                                 responses_total=len(by_var[big]), draws=int(draws)))
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)


def subsample_paths(paths: Mapping, m: int, seed: int = 0) -> dict:
    """``paths`` with at most ``m`` responses per graph (family, variant, benchmark, problem): the
    first ``m`` of the graph's samples in a random order seeded by ``seed`` and the graph key, so a
    smaller subsample is part of a larger one.

    >>> p = {("f", "RL", "b", "q", i): [i] for i in range(5)}
    >>> small, big = subsample_paths(p, 2), subsample_paths(p, 4)
    >>> len(small), len(big), set(small) <= set(big)
    (2, 4, True)
    """
    if int(m) != m or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    by_graph: dict = {}
    for key in paths:
        by_graph.setdefault(key[:4], []).append(key)
    out = {}
    for gkey in sorted(by_graph, key=str):
        keys = sorted(by_graph[gkey], key=lambda k: k[4])
        order = _key_seed(seed, "subsample", *gkey).permutation(len(keys))
        out.update({keys[i]: paths[keys[i]] for i in sorted(order[: int(m)])})
    return out


SATURATION = 0.8
"""A variant whose median visited fraction (visited nodes / K used) is above this is saturated at K:
its graph cannot grow by much, so K, not the model, sets its node count."""

VISITED_COLUMNS = [*GRAPH_KEYS, "visited", "k_used", "visited_fraction"]
VISITED_SUMMARY_COLUMNS = ["family", "variant", "n_graphs", "median_visited", "median_k_used",
                           "median_visited_fraction", "saturated"]


def _problem_str(s):
    return s.map(lambda x: "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x))


def visited_table(decay_df, clustering):
    """Per graph: ``visited`` (its nodes), ``k_used`` (the clusters of its clustering group, from
    ``clustering.csv``) and ``visited_fraction`` = visited / k_used. Columns :data:`VISITED_COLUMNS`.

    >>> import pandas as pd
    >>> d = pd.DataFrame({"family": "f", "variant": ["Base", "RL"], "benchmark": "b", "problem": "p",
    ...                   "metric": "degree", "n_graph_nodes": [9, 5]})
    >>> c = pd.DataFrame({"family": ["f"], "benchmark": ["b"], "problem": ["p"], "k_used": [10]})
    >>> visited_table(d, c)["visited_fraction"].tolist()
    [0.9, 0.5]
    """
    if decay_df.empty or clustering is None or clustering.empty:
        return pd.DataFrame(columns=VISITED_COLUMNS)
    g = decay_df[[*GRAPH_KEYS, "n_graph_nodes"]].drop_duplicates(list(GRAPH_KEYS)).rename(
        columns={"n_graph_nodes": "visited"})
    c = clustering.copy()
    per_problem = "problem" in c.columns and (_problem_str(c["problem"]) != "").any()
    on = ["family", "benchmark", "problem"] if per_problem else ["family", "benchmark"]
    g["_p"] = _problem_str(g["problem"])
    c["_p"] = _problem_str(c["problem"]) if "problem" in c.columns else ""
    keys = [k if k != "problem" else "_p" for k in on]
    c = c[[*keys, "k_used"]].drop_duplicates(keys)
    for col in ("family", "benchmark"):
        g[col], c[col] = g[col].astype(str), c[col].astype(str)
    out = g.merge(c, on=keys, how="left").drop(columns="_p")
    out["visited_fraction"] = out["visited"] / out["k_used"]
    return out.reindex(columns=VISITED_COLUMNS).reset_index(drop=True)


def visited_summary(visited, threshold: float = SATURATION):
    """Per (family, variant): graphs, median visited nodes, median K used, median visited fraction,
    and ``saturated`` (that median above ``threshold``). Variants in the canonical order.

    >>> import pandas as pd
    >>> v = pd.DataFrame({"family": "f", "variant": ["RL", "Base", "Base"], "visited": [5, 9, 10],
    ...                   "k_used": 10, "visited_fraction": [0.5, 0.9, 1.0]})
    >>> visited_summary(v)[["variant", "median_visited_fraction", "saturated"]].values.tolist()
    [['Base', 0.95, True], ['RL', 0.5, False]]
    """
    if visited.empty:
        return pd.DataFrame(columns=VISITED_SUMMARY_COLUMNS)
    g = visited.groupby(["family", "variant"], sort=False)
    out = g.agg(n_graphs=("visited", "size"), median_visited=("visited", "median"),
                median_k_used=("k_used", "median"), median_visited_fraction=("visited_fraction", "median")).reset_index()
    out["saturated"] = out["median_visited_fraction"] > threshold
    rank = {v: i for i, v in enumerate(VARIANTS)}
    out["_f"] = out["family"].map({f: i for i, f in enumerate(dict.fromkeys(visited["family"]))})
    out["_v"] = out["variant"].map(rank).fillna(len(rank))
    return out.sort_values(["_f", "_v"]).drop(columns=["_f", "_v"]).reset_index(drop=True)[VISITED_SUMMARY_COLUMNS]


def saturation_warnings(summary, threshold: float = SATURATION) -> list[str]:
    """One line per saturated (family, variant) of :func:`visited_summary` (none: ``[]``).

    >>> import pandas as pd
    >>> s = pd.DataFrame({"family": ["f"], "variant": ["Base"], "median_visited": [38.0], "median_k_used": [40.0],
    ...                   "median_visited_fraction": [0.95], "saturated": [True]})
    >>> saturation_warnings(s)[0][:66]
    'f/Base: its graphs visit a median 95% of the K clusters (38 of 40)'
    """
    out = []
    for _, r in summary[summary["saturated"].astype(bool)].iterrows():
        out.append(f"{r['family']}/{r['variant']}: its graphs visit a median {r['median_visited_fraction']:.0%} of "
                   f"the K clusters ({r['median_visited']:.0f} of {r['median_k_used']:.0f}), above {threshold:.0%}: "
                   f"saturated at K, so K rather than the model bounds its node count; raise K")
    return out


def rule_k(by_k, threshold: float = SATURATION):
    """The smallest K of ``by_k`` at which every variant's median visited fraction is at most
    ``threshold`` (``None`` when no K qualifies): the rule that sets each profile's K.

    ``by_k``: columns ``k`` and ``median_visited_fraction`` (one row per K and family/variant, as
    stage ``sweep`` writes ``sweep/visited.csv`` for its K axis).

    >>> import pandas as pd
    >>> t = pd.DataFrame({"k": [40, 40, 80, 80, 160, 160], "median_visited_fraction": [.95, .7, .8, .5, .6, .3]})
    >>> rule_k(t), rule_k(t, threshold=0.5)
    (80, None)
    """
    if by_k is None or len(by_k) == 0:
        return None
    worst = by_k.groupby("k")["median_visited_fraction"].max()
    ok = worst[worst <= threshold]
    return int(ok.index.min()) if len(ok) else None


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
    "PATH_KEYS", "GRAPH_KEYS", "GRAPH_KEY", "METRICS", "PAPER_RATIO", "EXPECTED_DIRECTION", "DECAY_COLUMNS",
    "merge_repeats", "paths_from_steps", "centroids_for", "build_graph", "sparsify_topk", "visitation", "degree",
    "betweenness", "decay_rate", "node_metrics", "graph_metrics", "graphs_from_steps", "graphs_from_paths",
    "decay_table_from_graphs",
    "sorted_decay", "decay_ratios", "geomean_ratios", "summarize_seed_spread", "graph_tables",
    "graphs_from_tables", "node_metric_table", "RATIO_COLUMNS", "GEOMEAN_COLUMNS", "decay_geomeans",
    "MATCHED_COLUMNS", "matched_prefix", "matched_decay", "subsample_paths", "SATURATION", "VISITED_COLUMNS",
    "VISITED_SUMMARY_COLUMNS", "visited_table", "visited_summary", "saturation_warnings", "rule_k",
]
