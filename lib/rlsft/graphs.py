"""Step level, part 2 (PAPER.md §6.2-6.4): reasoning graphs, node metrics, decay rates (Fig. 6, 26).

- :func:`paths_from_steps`: each response becomes a path of node ids, consecutive repeats merged;
- :func:`build_graph`: one directed graph per (family, variant, benchmark, problem), the union of
  its responses' paths (correct and incorrect mixed); node attr ``visits``, edge attrs ``count`` and
  ``distance`` (Euclidean distance between the K-means centroids); :func:`sparsify_topk` is the
  top-k smallest-distance check of Fig. 33;
- node metrics (§6.3): :func:`visitation`, :func:`degree`, :func:`betweenness` (exactly
  ``networkx.betweenness_centrality(G, normalized=True)``, computed with rustworkx);
- :func:`decay_rate` (§6.4): OLS of ``log10 X(R) = alpha - beta R`` over ranks of the positive values;
- :func:`decay_table`, :func:`decay_ratios`: one beta per (model, problem, metric) and the ratios the
  paper reports (RL/Base ~ 2.5, SFT/Base ~ 1/3), with paired bootstrap CIs;
- :func:`seed_spread`: the ratios over several clustering seeds (a fixed model's beta moves when the
  pooled clustering changes, so the spread must be reported); the main run's seed is reused;
- :func:`step_analysis`: the whole stage streamed one clustering group at a time (segment, embed,
  K-means, graphs, metrics, decay), writing its tables incrementally and atomically;
- ablations (§8): :func:`topk_decay_from_saved` (top-k from the saved edges, no re-clustering),
  :func:`ablation_ratios`, and :func:`mark_na` for ablations that cannot change a number.

>>> G = build_graph([[0, 1, 1, 2], [0, 2]])
>>> sorted(G.edges(data="count")), visitation(G)
([(0, 1, 1), (0, 2, 1), (1, 2, 1)], {0: 2, 1: 1, 2: 2})
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from . import COMPARISONS, VARIANTS
from . import io as rio

log = logging.getLogger(__name__)

PATH_KEYS = ("family", "variant", "benchmark", "problem", "sample")
GRAPH_KEYS = ("family", "variant", "benchmark", "problem")
METRICS = ("frequency", "degree", "betweenness")
PAPER_RATIO = {("RL", "Base"): 2.5, ("SFT", "Base"): 1 / 3, ("SFT+RL", "SFT"): math.nan}
"""The paper's ratios (abstract): RL steepens beta ~2.5x, SFT flattens it to ~1/3; SFT->SFT+RL: up."""
EXPECTED_DIRECTION = {("RL", "Base"): "up", ("SFT", "Base"): "down", ("SFT+RL", "SFT"): "up"}

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
        raise ValueError(f"steps_df lacks columns {missing}; build it with rlsft.steps.step_table")
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
    """One graph per (family, variant, benchmark, problem), keyed by that tuple."""
    from .steps import centroids_for

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


DECAY_COLUMNS = [*GRAPH_KEYS, "metric", "beta", "alpha", "r2", "n_nodes", "n_graph_nodes", "n_edges"]


def graph_metrics(graphs: Mapping, weight: str | None = None, progress: bool = False) -> dict:
    """:func:`node_metrics` of every graph, keyed like ``graphs`` (computed once, used for both the
    node-metric table and the decay rates)."""
    from tqdm.auto import tqdm

    return {key: node_metrics(graphs[key], weight=weight)
            for key in tqdm(list(graphs), desc="metrics", unit="graph", disable=not progress)}


def decay_table_from_graphs(graphs: Mapping, weight: str | None = None, metrics: Mapping | None = None,
                            progress: bool = False):
    """beta per (graph, metric) for graphs already built (see :func:`decay_table` for the columns).

    ``metrics``: precomputed :func:`graph_metrics` (else computed here). Rows are ordered by
    ``str(key)`` then metric, as :func:`decay_table` orders them.

    >>> d = decay_table_from_graphs({("f", "RL", "b", "p"): build_graph([[0, 1, 2, 3], [0, 2]])})
    >>> d[["metric", "n_graph_nodes", "n_edges"]].values.tolist()
    [['frequency', 4, 4], ['degree', 4, 4], ['betweenness', 4, 4]]
    """
    import pandas as pd
    from tqdm.auto import tqdm

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


def decay_table(steps_df, centroids: Mapping | None, sparsify_k: int | None = None, weight: str | None = None,
                progress: bool = True):
    """beta per (family, variant, benchmark, problem, metric) (PAPER.md §6.4, Fig. 6).

    Columns: family, variant, benchmark, problem, metric, beta, alpha, r2, n_nodes (nodes with X > 0
    in the fit), n_graph_nodes, n_edges (after sparsification). ``sparsify_k`` keeps each node's k
    smallest-distance out-edges (needs centroids); ``weight="distance"`` gives distance-weighted
    betweenness. Only nodes a model visits are in its graph.
    """
    if sparsify_k is not None and centroids is None:
        raise ValueError("sparsify_k needs centroids (edge distances); pass the centroids from step_table")
    if weight is not None and centroids is None:
        raise ValueError(f"weight={weight!r} needs centroids (edge distances); pass the centroids from step_table")
    graphs = graphs_from_steps(steps_df, centroids, sparsify_k)
    df = decay_table_from_graphs(graphs, weight=weight, progress=progress)
    n_nan = df.groupby("metric")["beta"].apply(lambda s: int(s.isna().sum())).to_dict() if len(df) else {}
    log.info("decay_table: %d graphs, sparsify_k=%s, weight=%s, NaN betas per metric %s",
             len(graphs), sparsify_k, weight, n_nan)
    return df


# --------------------------------------------------------------------------------------------------
# Ratios
# --------------------------------------------------------------------------------------------------


def _key_seed(seed: int, *key) -> np.random.Generator:
    h = int(hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:16], 16)
    return np.random.default_rng(np.random.SeedSequence([int(seed), h]))


def _ratio_ci(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    if n_boot <= 0 or a.size == 0:
        return math.nan, math.nan
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def decay_ratios(decay_df, n_boot: int = 1000, seed: int = 0, by_benchmark: bool = False,
                 comparisons: Sequence[tuple[str, str]] = COMPARISONS):
    """Median-beta ratios per (family, metric, comparison) with a paired bootstrap CI (§6.4).

    ``ratio = median_p beta_after(p) / median_p beta_before(p)`` over the problems p (pooled over
    benchmarks; ``benchmark="all"``) where both variants have a finite beta (paired). ``ci_low`` /
    ``ci_high``: 2.5 / 97.5 percentiles of the ratio over ``n_boot`` resamplings of the paired problems
    (``n_boot=0``: NaN). ``by_benchmark=True`` adds one row per benchmark. Deterministic given ``seed``
    (each row draws from its own stream, seeded by ``seed`` and the row's key).

    Columns: family, benchmark, metric, comparison ("RL/Base", ...), after, before, n_problems,
    beta_after, beta_before (the medians), ratio, ci_low, ci_high, paper_value (2.5, 1/3, NaN),
    expected_direction ("up"/"down"/"up"), agrees (ratio on the expected side of 1; NA without
    a ratio), n_nodes_after, n_nodes_before (median nodes in the fits).
    """
    import pandas as pd

    need = list(GRAPH_KEYS) + ["metric", "beta", "n_nodes"]
    missing = [c for c in need if c not in decay_df.columns]
    if missing:
        raise ValueError(f"decay_df lacks columns {missing}; build it with decay_table")
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
    rows = []
    for (family, metric), sub in wide.groupby(level=["family", "metric"], sort=True):
        scopes = [("all", sub)]
        if by_benchmark:
            scopes += [(b, s) for b, s in sub.groupby(level="benchmark", sort=True)]
        for bench, s in scopes:
            for after, before in comparisons:
                rows.append(_ratio_row(s, family, bench, metric, after, before, n_boot, seed))
    cols = ["family", "benchmark", "metric", "comparison", "after", "before", "n_problems", "beta_after",
            "beta_before", "ratio", "ci_low", "ci_high", "paper_value", "expected_direction", "agrees",
            "n_nodes_after", "n_nodes_before"]
    out = pd.DataFrame(rows, columns=cols)
    out["agrees"] = out["agrees"].astype("boolean")
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
    ratio = ci_lo = ci_hi = math.nan
    med_a = med_b = math.nan
    if a.size:
        med_a, med_b = float(np.median(a)), float(np.median(b))
        ratio = med_a / med_b if med_b != 0 else math.nan
        ci_lo, ci_hi = _ratio_ci(a, b, n_boot, _key_seed(seed, family, bench, metric, after, before))
    else:
        log.info("decay_ratios: no paired problems for %s %s/%s (%s, %s)", family, after, before, metric, bench)
    agrees = None if not np.isfinite(ratio) else bool(ratio > 1 if direction == "up" else ratio < 1)
    return dict(family=family, benchmark=bench, metric=metric, comparison=f"{after}/{before}", after=after,
                before=before, n_problems=int(a.size), beta_after=med_a, beta_before=med_b, ratio=ratio,
                ci_low=ci_lo, ci_high=ci_hi, paper_value=PAPER_RATIO.get(comp, math.nan),
                expected_direction=direction, agrees=agrees,
                n_nodes_after=float(np.median(na)) if na.size else math.nan,
                n_nodes_before=float(np.median(nb)) if nb.size else math.nan)


def geomean_ratios(ratios_df, by: Sequence[str] = ("comparison",)):
    """Geometric mean of ``ratio`` over the other rows (metrics, families) of ``benchmark == "all"``.

    PAPER.md §6.4's default aggregation before comparing with 2.5 and 1/3. Non-positive or NaN
    ratios are left out (and counted in ``n_left_out``).

    >>> import pandas as pd
    >>> r = pd.DataFrame({"benchmark": "all", "comparison": "RL/Base", "ratio": [2.0, 8.0]})
    >>> geomean_ratios(r)["ratio_geomean"].tolist()
    [4.0]
    """
    import pandas as pd

    d = ratios_df[ratios_df["benchmark"] == "all"] if "benchmark" in ratios_df.columns else ratios_df

    def agg(s):
        ok = s[np.isfinite(s) & (s > 0)]
        return pd.Series({"ratio_geomean": float(np.exp(np.log(ok).mean())) if len(ok) else math.nan,
                          "n": int(len(ok)), "n_left_out": int(len(s) - len(ok))})

    return d.groupby(list(by), sort=True)["ratio"].apply(agg).unstack().reset_index()


def seed_spread(samples, segment_kwargs: dict | None, embedder, cache_dir, k: int,
                seeds: Sequence[int] = (0, 1, 2), scope: str = "problem", metric: str = "euclidean",
                sparsify_k: int | None = None, weight: str | None = None, n_boot: int = 0,
                boot_seed: int = 0, by_benchmark: bool = False, progress: bool = True,
                reuse: Mapping[int, object] | None = None, n_init: int = 10, **cluster_kwargs):
    """Decay ratios for several clustering seeds: one :func:`decay_ratios` table per seed, stacked.

    A fixed model's beta moves when the pooled clustering changes, so the spread of the ratios over
    clustering seeds is reported next to them. ``reuse`` maps a seed to a decay table already
    computed with these settings (the main run's, from :func:`step_analysis`): that seed is not
    clustered again. The other seeds are computed in one streaming pass over the clustering groups:
    each group is segmented once and its embeddings read once from the cache, then clustered and
    graphed per seed, and dropped. Column ``clustering_seed`` is added; :func:`summarize_seed_spread`
    condenses the table.
    """
    import pandas as pd

    from .steps import cluster_group, embedded_groups, get_embedder

    if not seeds:
        raise ValueError("seeds is empty; pass e.g. seeds=(0, 1, 2)")
    reuse = {int(s): d for s, d in (reuse or {}).items()}
    todo = list(dict.fromkeys(int(s) for s in seeds if int(s) not in reuse))
    parts: dict[int, list] = {s: [] for s in todo}
    if todo:
        if isinstance(embedder, str):
            embedder = get_embedder(embedder)
        for group in embedded_groups(samples, segment_kwargs, embedder, cache_dir, scope=scope, progress=progress):
            for s in todo:
                steps_df, C, _ = cluster_group(group, k=k, seed=s, metric=metric, n_init=n_init, **cluster_kwargs)
                graphs = graphs_from_steps(steps_df, {group.key: C}, sparsify_k)
                parts[s].append(decay_table_from_graphs(graphs, weight=weight))
                del steps_df, C, graphs
            del group
    log.info("seed_spread: seeds %s reused, %s clustered", sorted(set(reuse) & {int(s) for s in seeds}), todo)
    out = []
    for s in dict.fromkeys(int(s) for s in seeds):
        dec = reuse[s] if s in reuse else _sorted_decay(parts[s])
        r = decay_ratios(dec, n_boot=n_boot, seed=boot_seed, by_benchmark=by_benchmark)
        r.insert(0, "clustering_seed", s)
        out.append(r)
    return pd.concat(out, ignore_index=True)


def _sorted_decay(parts: list):
    """Concatenate per-group decay tables in :func:`decay_table`'s row order (``str(graph key)``)."""
    import pandas as pd

    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=DECAY_COLUMNS)
    d = pd.concat(parts, ignore_index=True)
    order = sorted(range(len(d)), key=[str(t) for t in zip(*(d[c] for c in GRAPH_KEYS))].__getitem__)
    return d.iloc[order].reset_index(drop=True)


def summarize_seed_spread(spread_df):
    """Per (family, benchmark, metric, comparison): n_seeds, ratio min / median / max, all_agree.

    >>> import pandas as pd
    >>> d = pd.DataFrame({"clustering_seed": [0, 1], "family": "f", "benchmark": "all", "metric": "degree",
    ...                   "comparison": "RL/Base", "ratio": [2.0, 3.0], "agrees": [True, True],
    ...                   "paper_value": 2.5, "expected_direction": "up"})
    >>> summarize_seed_spread(d)[["ratio_min", "ratio_median", "ratio_max", "all_agree"]].values.tolist()
    [[2.0, 2.5, 3.0, True]]
    """
    keys = ["family", "benchmark", "metric", "comparison"]
    g = spread_df.groupby(keys, sort=True)
    out = g.agg(n_seeds=("clustering_seed", "nunique"), ratio_min=("ratio", "min"),
                ratio_median=("ratio", "median"), ratio_max=("ratio", "max"),
                paper_value=("paper_value", "first"), expected_direction=("expected_direction", "first"))
    out["all_agree"] = g["agrees"].apply(lambda s: bool(s.fillna(False).astype(bool).all()))
    return out.reset_index()




GRAPH_KEY = ("family", "variant", "benchmark", "problem")


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


def node_metric_table(graphs: Mapping, weight: str | None = None, metrics: Mapping | None = None):
    """Long table of node metrics: family, variant, benchmark, problem, node, metric, value.

    ``metrics``: precomputed :func:`graph_metrics` of ``graphs`` (else computed here).
    """
    import pandas as pd

    rows = []
    for key, G in graphs.items():
        base = dict(zip(GRAPH_KEY, key))
        by_metric = metrics[key] if metrics is not None else node_metrics(G, weight=weight)
        for metric, values in by_metric.items():
            rows += [{**base, "node": int(n), "metric": metric, "value": float(x)} for n, x in values.items()]
    return pd.DataFrame(rows, columns=[*GRAPH_KEY, "node", "metric", "value"])


# --------------------------------------------------------------------------------------------------
# Streaming: the whole step-level stage, one clustering group at a time
# --------------------------------------------------------------------------------------------------

SAVED_TABLES = ("steps", "nodes", "edges", "node_metrics")
"""The parquet tables :func:`step_analysis` writes (``<name>.parquet``), as stage ``graphs`` saves them."""
CLUSTERING_COLUMNS = ["family", "benchmark", "problem", "scope", "n_responses", "n_steps", "n_distinct",
                      "n_encoded", "k_asked", "k_used", "method", "n_init", "n_iter", "inertia", "seed",
                      "metric", "variants", "seconds_segment", "seconds_embed", "seconds_kmeans",
                      "seconds_graphs", "seconds_metrics", "seconds"]
"""Columns of ``clustering.csv``: one row per clustering group (``problem`` empty for scope="benchmark")."""


class ParquetStream:
    """Write a parquet file one DataFrame at a time (one row group each), atomically.

    The rows go to a temporary file beside ``path`` that replaces ``path`` only on
    ``close(ok=True)``; ``close(ok=False)`` (or an exception inside ``with``) leaves ``path`` as it
    was. Reading the file back gives the concatenation of the parts, as ``DataFrame.to_parquet``
    of the whole would. ``columns``: the columns of the empty file written when no part has rows.

    >>> import tempfile, pandas as pd
    >>> p = Path(tempfile.mkdtemp()) / "t.parquet"
    >>> with ParquetStream(p, ["a"]) as w:
    ...     w.write(pd.DataFrame({"a": [1, 2]})); w.write(pd.DataFrame({"a": [3]}))
    >>> pd.read_parquet(p)["a"].tolist()
    [1, 2, 3]
    """

    def __init__(self, path, columns: Sequence[str] = ()):
        self.path, self.columns = Path(path), list(columns)
        self._ctx = self._writer = self._schema = None
        self._empty = None
        self.rows = 0

    def write(self, df) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if len(df) == 0:
            if self._empty is None:
                self._empty = df.iloc[:0]
            return
        table = pa.Table.from_pandas(df, preserve_index=False, schema=self._schema)
        if self._writer is None:
            self._ctx = rio.atomic_path(self.path, ".parquet")
            tmp = self._ctx.__enter__()
            self._schema = table.schema
            self._writer = pq.ParquetWriter(tmp, self._schema)
        self._writer.write_table(table)
        self.rows += len(df)

    def close(self, ok: bool = True) -> None:
        import pandas as pd

        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if ok:
                self._ctx.__exit__(None, None, None)
            else:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        elif ok:
            rio.write_parquet(self.path, self._empty if self._empty is not None else pd.DataFrame(columns=self.columns))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False


@dataclasses.dataclass
class StepAnalysis:
    """What :func:`step_analysis` returns: the decay table (``decay_rates.csv``) and the per-group
    clustering record (``clustering.csv``)."""

    decay: object
    clustering: object


def _table_columns(name: str) -> list[str]:
    from .steps import STEP_COLUMNS

    return {"steps": list(STEP_COLUMNS), "nodes": [*GRAPH_KEY, "node", "visits"],
            "edges": [*GRAPH_KEY, "src", "dst", "count", "distance"],
            "node_metrics": [*GRAPH_KEY, "node", "metric", "value"]}[name]


def step_analysis(samples, segment_kwargs: dict | None, embedder, cache_dir, k: int, seed: int = 0,
                  scope: str = "problem", metric: str = "euclidean", n_init: int = 10,
                  sparsify_k: int | None = None, weight: str | None = None, out_dir=None,
                  tables: Sequence[str] = SAVED_TABLES, progress: bool = True, **cluster_kwargs) -> StepAnalysis:
    """The step level of PAPER.md §6, streamed one clustering group at a time.

    For each group -- (family, benchmark, problem), or (family, benchmark) for
    ``scope="benchmark"`` -- in sorted order: segment its responses, embed its distinct steps
    through the on-disk cache (:func:`rlsft.steps.embedded_groups`), K-means them
    (:func:`rlsft.steps.cluster_group`), build each variant's graph (``sparsify_k``: top-k
    out-edges), compute the node metrics once and the decay rates; append the group's rows to the
    output tables; drop the group. Peak memory is one group's, not the corpus's.

    ``out_dir``: where to write ``<table>.parquet`` for each of ``tables`` (a subset of
    :data:`SAVED_TABLES`: steps, nodes, edges, node_metrics -- the columns of the in-memory path:
    :func:`rlsft.steps.step_table`, :func:`graph_tables`, :func:`node_metric_table`), plus
    ``decay_rates.csv`` and ``clustering.csv``; every file is written atomically (a parquet file
    grows in a temporary file, one row group per group, and is renamed when all groups are done).
    ``out_dir=None`` writes nothing (ablations). Returns :class:`StepAnalysis` (decay table in
    :func:`decay_table`'s order; clustering record, columns :data:`CLUSTERING_COLUMNS`).
    """
    import contextlib

    import pandas as pd

    from .steps import cluster_group, embedded_groups, get_embedder

    bad = [t for t in tables if t not in SAVED_TABLES]
    if bad:
        raise ValueError(f"unknown tables {bad}; choose from {list(SAVED_TABLES)}")
    if isinstance(embedder, str):
        embedder = get_embedder(embedder)
    out = None if out_dir is None else Path(out_dir)
    decay_parts, info_rows = [], []
    with contextlib.ExitStack() as stack:
        streams = {} if out is None else {
            t: stack.enter_context(ParquetStream(out / f"{t}.parquet", _table_columns(t))) for t in tables}
        for group in embedded_groups(samples, segment_kwargs, embedder, cache_dir, scope=scope, progress=progress):
            steps_df, C, info = cluster_group(group, k=k, seed=seed, metric=metric, n_init=n_init, **cluster_kwargs)
            key = group.key
            del group
            t0 = time.perf_counter()
            graphs = graphs_from_steps(steps_df, {key: C}, sparsify_k)
            t1 = time.perf_counter()
            metrics = graph_metrics(graphs, weight=weight)
            decay_parts.append(decay_table_from_graphs(graphs, weight=weight, metrics=metrics))
            if "steps" in streams:
                streams["steps"].write(steps_df)
            if "nodes" in streams or "edges" in streams:
                nodes, edges = graph_tables(graphs)
                for name, df in (("nodes", nodes), ("edges", edges)):
                    if name in streams:
                        streams[name].write(df)
                del nodes, edges
            if "node_metrics" in streams:
                streams["node_metrics"].write(node_metric_table(graphs, metrics=metrics))
            t2 = time.perf_counter()
            info.update(scope=scope, seconds_graphs=t1 - t0, seconds_metrics=t2 - t1)
            info["seconds"] = sum(info.get(c, 0.0) for c in CLUSTERING_COLUMNS if c.startswith("seconds_"))
            info_rows.append(info)
            log.info("group %s: %d steps, %d distinct (%d encoded), %s K=%d, %d graphs; %.1f s "
                     "(segment %.1f, embed %.1f, k-means %.1f, graphs %.1f, metrics %.1f)", key, info["n_steps"],
                     info["n_distinct"], info["n_encoded"], info["method"], info["k_used"], len(graphs),
                     info["seconds"], info["seconds_segment"], info["seconds_embed"], info["seconds_kmeans"],
                     info["seconds_graphs"], info["seconds_metrics"])
            del steps_df, C, graphs, metrics
    if not info_rows:
        raise ValueError("no steps to cluster; check the segmentation settings (min_chars, rule)")
    decay = _sorted_decay(decay_parts)
    clustering = pd.DataFrame(info_rows).reindex(columns=CLUSTERING_COLUMNS)
    if out is not None:
        rio.write_csv(out / "decay_rates.csv", decay)
        rio.write_csv(out / "clustering.csv", clustering)
    log.info("step_analysis: %d groups (scope=%s), %d steps, %d graphs, methods %s, %.0f s",
             len(clustering), scope, int(clustering["n_steps"].sum()), decay[list(GRAPH_KEYS)].drop_duplicates().shape[0],
             clustering["method"].value_counts().to_dict(), clustering["seconds"].sum())
    return StepAnalysis(decay=decay, clustering=clustering)


# --------------------------------------------------------------------------------------------------
# Ablations from the saved graphs, and the n/a statuses
# --------------------------------------------------------------------------------------------------

STATUS_COMPUTED = "computed"
NA_TOPK_FREQUENCY = "n/a: top-k sparsification removes edges only, so visit counts (frequency) cannot change"
RESULT_COLUMNS = ("beta_after", "beta_before", "ratio", "ci_low", "ci_high", "n_nodes_after", "n_nodes_before")
"""The numbers of a :func:`decay_ratios` row that an n/a row leaves empty."""


def iter_saved_graphs(graph_dir, progress: bool = False):
    """Yield the saved graphs of stage ``graphs`` one (family, benchmark, problem) at a time.

    Reads ``nodes.parquet`` / ``edges.parquet`` of ``graph_dir`` with a filter per problem, so only
    one problem's rows are in memory (row groups written per clustering group are skipped by their
    statistics). Each item is a dict ``(family, variant, benchmark, problem) -> DiGraph``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    graph_dir = Path(graph_dir)
    nodes_path, edges_path = graph_dir / "nodes.parquet", graph_dir / "edges.parquet"
    for p in (nodes_path, edges_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; run stage 'graphs' first")
    keys = pd.read_parquet(nodes_path, columns=["family", "benchmark", "problem"]).drop_duplicates()
    keys = sorted(map(tuple, keys.itertuples(index=False, name=None)), key=str)
    for fam, bench, prob in tqdm(keys, desc="saved graphs", unit="problem", disable=not progress):
        filt = [("family", "==", fam), ("benchmark", "==", bench), ("problem", "==", prob)]
        yield graphs_from_tables(pd.read_parquet(nodes_path, filters=filt), pd.read_parquet(edges_path, filters=filt))


def topk_decay_from_saved(graph_dir, k: int, weight: str | None = None, progress: bool = True):
    """The top-k ablation (Fig. 33) from the saved graphs, without clustering again.

    Every saved graph of ``graph_dir`` (its edges carry the centroid ``distance``) is sparsified by
    :func:`sparsify_topk` and its decay rates refitted. Equal to :func:`decay_table` with
    ``sparsify_k=k`` on the same clustering, provided the saved graphs are unsparsified or were
    sparsified with a k' >= k. Returns ``(decay table, out-degree table)``; the latter has one row
    per graph: family, variant, benchmark, problem, max_out_degree, n_nodes_over_k (nodes that lose
    edges).
    """
    import pandas as pd

    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    parts, deg = [], []
    for graphs in iter_saved_graphs(graph_dir, progress=progress):
        if any(math.isnan(d) for G in graphs.values() for _, _, d in G.edges(data="distance")):
            raise ValueError(f"saved edges in {graph_dir} lack distances; rerun stage 'graphs'")
        for key, G in graphs.items():
            out = [d for _, d in G.out_degree()]
            deg.append(dict(zip(GRAPH_KEYS, key), max_out_degree=max(out, default=0),
                            n_nodes_over_k=sum(d > k for d in out)))
        parts.append(decay_table_from_graphs({key: sparsify_topk(G, k) for key, G in graphs.items()}, weight=weight))
    return _sorted_decay(parts), pd.DataFrame(deg, columns=[*GRAPH_KEYS, "max_out_degree", "n_nodes_over_k"])


def topk_na_reason(out_degree, k: int) -> str | None:
    """``"n/a: ..."`` when no node of the given graphs has more than ``k`` out-edges (top-k removes
    nothing), else ``None``.

    >>> import pandas as pd
    >>> topk_na_reason(pd.DataFrame({"max_out_degree": [3, 5]}), 5)
    'n/a: no node has more than 5 out-edges, so top-5 sparsification removes nothing'
    >>> topk_na_reason(pd.DataFrame({"max_out_degree": [3, 6]}), 5) is None
    True
    """
    if len(out_degree) and int(out_degree["max_out_degree"].max()) > k:
        return None
    return f"n/a: no node has more than {k} out-edges, so top-{k} sparsification removes nothing"


def mark_na(ratios, mask, reason: str):
    """``ratios`` (a :func:`decay_ratios` table) with a ``status`` column; the rows in ``mask`` get
    ``status = reason`` and empty results (:data:`RESULT_COLUMNS` NaN, ``agrees`` NA), so an
    ablation that cannot change a number never reads as agreement.

    >>> import pandas as pd
    >>> r = pd.DataFrame({"metric": ["frequency", "degree"], "ratio": [2.0, 3.0], "agrees": [True, True]})
    >>> m = mark_na(r, r["metric"] == "frequency", NA_TOPK_FREQUENCY)
    >>> m["ratio"].tolist(), m["agrees"].tolist(), m["status"].str[:4].tolist()
    ([nan, 3.0], [<NA>, True], ['n/a:', 'comp'])
    """
    import pandas as pd

    if not str(reason).startswith("n/a"):
        raise ValueError(f"an n/a reason starts with 'n/a', got {reason!r}")
    out = ratios.copy()
    if "status" not in out.columns:
        out["status"] = STATUS_COMPUTED
    mask = np.asarray(mask, dtype=bool)
    for c in RESULT_COLUMNS:
        if c in out.columns:
            out[c] = out[c].astype(float)
            out.loc[mask, c] = np.nan
    if "agrees" in out.columns:
        out["agrees"] = out["agrees"].astype("boolean")
        out.loc[mask, "agrees"] = pd.NA
    out.loc[mask, "status"] = reason
    return out



ABLATION_SETTINGS = ("embedder", "normalize", "k", "metric", "sparsify_k", "scope")
"""The step settings an ablation may override (``k_scale`` scales the default K)."""


def ablation_settings(base: Mapping, over: Mapping) -> dict:
    """The step settings of one ablation: ``base`` (stage ``graphs``'s parameters) overridden by
    ``over``; ``{"k_scale": x}`` sets K to ``max(2, round(x * base K))``.

    >>> ablation_settings({"k": 40, "metric": "euclidean"}, {"k_scale": 0.5})
    {'k': 20, 'metric': 'euclidean'}
    """
    unknown = sorted(set(over) - set(ABLATION_SETTINGS) - {"k_scale"})
    if unknown:
        raise ValueError(f"unknown ablation settings {unknown}; use {list(ABLATION_SETTINGS)} or k_scale")
    cfg = {**base, **{k: v for k, v in over.items() if k != "k_scale"}}
    if "k_scale" in over:
        cfg["k"] = max(2, int(round(base["k"] * over["k_scale"])))
    return cfg


def ablation_ratios(cfg: Mapping, base: Mapping, samples, segment_kwargs: dict | None, cache_dir, graph_dir,
                    default_ratios, n_boot: int = 1000, seed: int = 0, device: str = "cpu", progress: bool = True):
    """Decay ratios of one ablation (PAPER.md §8), each row with a ``status``; ``(ratios, decay, how)``.

    - only ``sparsify_k`` changes (top-k, Fig. 33): computed from the saved graphs of ``graph_dir``
      (:func:`topk_decay_from_saved`), not clustered again -- unless the saved graphs are already
      sparsified with a smaller k, then re-clustered; frequency rows are n/a (sparsifying cannot
      change visits), and so is every row of a family where no node has more than k out-edges;
    - only ``metric`` changes to cosine and :func:`rlsft.steps.cosine_noop_reason` says it cannot
      change a number (unit-vector embeddings, no top-k, no distance weights): every row n/a,
      nothing computed;
    - nothing changes: every row n/a;
    - otherwise: :func:`step_analysis` with the settings (streamed; nothing written).

    n/a rows are ``default_ratios``' rows with empty results (:func:`mark_na`); ``decay`` is
    ``None`` when nothing was computed; ``how`` says which way it went.
    """
    from .steps import cosine_noop_reason, get_embedder

    changed = {key for key in ABLATION_SETTINGS if cfg.get(key) != base.get(key)}
    template = default_ratios.copy()
    if not changed:
        reason = "n/a: the same settings as the default"
        return mark_na(template, np.ones(len(template), bool), reason), None, reason
    emb = get_embedder(cfg["embedder"], device=device, normalize=cfg["normalize"])
    if changed == {"metric"} and cfg["metric"] == "cosine":
        reason = cosine_noop_reason(emb, cfg.get("sparsify_k"), None)
        if reason:
            return mark_na(template, np.ones(len(template), bool), reason), None, reason
    k_top = cfg.get("sparsify_k")
    if changed == {"sparsify_k"} and k_top is not None:
        if base.get("sparsify_k") is None or k_top <= base["sparsify_k"]:
            dec, outdeg = topk_decay_from_saved(graph_dir, k_top, progress=progress)
            how = f"top-{k_top} from the saved graph edges (no re-clustering)"
        else:
            dec = step_analysis(samples, segment_kwargs, emb, cache_dir, k=cfg["k"], seed=seed, scope=cfg["scope"],
                                metric=cfg["metric"], sparsify_k=k_top, progress=progress).decay
            outdeg = None
            how = f"re-clustered: the saved graphs are top-{base['sparsify_k']}, fewer than {k_top} edges"
        rat = decay_ratios(dec, n_boot=n_boot, seed=seed)
        rat = mark_na(rat, rat["metric"] == "frequency", NA_TOPK_FREQUENCY)
        for fam in ([] if outdeg is None else sorted(set(rat["family"]))):
            reason = topk_na_reason(outdeg[outdeg["family"] == fam], k_top)
            if reason:
                rat = mark_na(rat, rat["family"] == fam, reason)
        return rat, dec, how
    dec = step_analysis(samples, segment_kwargs, emb, cache_dir, k=cfg["k"], seed=seed, scope=cfg["scope"],
                        metric=cfg["metric"], sparsify_k=k_top, progress=progress).decay
    rat = decay_ratios(dec, n_boot=n_boot, seed=seed)
    rat["status"] = STATUS_COMPUTED
    return rat, dec, "re-clustered (streamed per group)"


__all__ = [
    "merge_repeats", "paths_from_steps", "build_graph", "sparsify_topk", "visitation", "degree",
    "betweenness", "decay_rate", "node_metrics", "graph_metrics", "graphs_from_steps", "decay_table",
    "decay_table_from_graphs", "decay_ratios", "geomean_ratios", "seed_spread", "summarize_seed_spread",
    "graph_tables", "graphs_from_tables", "node_metric_table", "ParquetStream", "StepAnalysis",
    "step_analysis", "iter_saved_graphs", "topk_decay_from_saved", "topk_na_reason", "mark_na",
    "ablation_settings", "ablation_ratios", "ABLATION_SETTINGS",
    "PAPER_RATIO", "EXPECTED_DIRECTION", "SAVED_TABLES", "CLUSTERING_COLUMNS", "STATUS_COMPUTED",
    "NA_TOPK_FREQUENCY",
]
