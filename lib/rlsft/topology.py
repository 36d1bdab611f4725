"""Global graph topology of reasoning graphs: eight metrics, 4-node graphlets, sMAPE (PAPER.md §7).

Input graphs are ``networkx.DiGraph`` s, one per (family, variant, benchmark, problem), with node
attribute ``visits`` and edge attributes ``count`` and ``distance`` (PAPER.md §6.2). Every metric
here is **unweighted**: ``count`` and ``distance`` are ignored (PAPER.md §7.1 lists the networkx
calls, all used without a ``weight``).

Views (PAPER.md §7.1):

- ``G``  the DiGraph as given (edge density, degree assortativity);
- ``U``  the undirected simple view: ``G.to_undirected()`` without self-loops and without edge
  attributes (u->v and v->u become one edge);
- ``LCC`` the largest connected component of ``U`` (= the largest weakly connected component of
  ``G``), for path length and algebraic connectivity.

Degenerate graphs (fewer than 3 nodes, or no edge) give NaN for every metric and never raise.

>>> import networkx as nx
>>> star = nx.star_graph(4).to_directed()
>>> round(freeman_centralization(star), 6)
1.0
>>> sorted(global_metrics(star)) == sorted(METRICS)
True

Graphlets (Fig. 9): proportions of the connected induced 4-node subgraphs G3..G8 (Pržulj
numbering) on ``U``, exact by counting formulas (``graphlet_counts_exact``) or estimated by
3-path sampling (``graphlet_counts_sampled``, Jha, Seshadhri & Pinar 2015).

sMAPE (§7.3): ``smape`` and ``smape_table`` compare node-visitation patterns of two variants.
"""
from __future__ import annotations

import functools
import logging
import math
import zlib
from typing import Iterable, Mapping

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import linalg as sla
from scipy import stats
from scipy.sparse import csgraph
from scipy.sparse import linalg as spla

from rlsft import COMPARISONS, VARIANTS
from rlsft.progress import bar as tqdm

log = logging.getLogger(__name__)

METRICS = (
    "edge_density",
    "normalized_clustering",
    "degree_assortativity",
    "modularity",
    "freeman_centralization",
    "normalized_path_length",
    "global_efficiency",
    "algebraic_connectivity",
)
"""The eight global metrics in the paper's order (PAPER.md §7.1, Fig. 8)."""

GRAPHLETS = ("G3", "G4", "G5", "G6", "G7", "G8")
"""Connected 4-node graphlets, Pržulj numbering: G3 path P4, G4 star (claw), G5 4-cycle,
G6 paw (triangle + pendant), G7 diamond (K4 minus an edge), G8 K4."""

GRAPHLET_NAMES = {"G3": "path", "G4": "star", "G5": "4-cycle", "G6": "paw", "G7": "diamond",
                  "G8": "K4"}

PAPER_SIGN = {"global_efficiency": 1.0, "algebraic_connectivity": 1.0, "modularity": -1.0}
"""Sign of the correlation with Pass@1 / Pass@k reported by the paper (§7.1); others unknown."""

KEY_COLS = ("family", "variant", "benchmark", "problem")

_DISTANCE_BLOCK = 512  # BFS sources per block: bounds the distance matrix to 512 x N floats


# --------------------------------------------------------------------------------------------
# Views shared by the metrics
# --------------------------------------------------------------------------------------------

class GraphViews:
    """The views of one graph that the metrics need, each computed once and cached.

    Pass a ``GraphViews`` instead of a graph to any metric to reuse work (``global_metrics``
    does). ``nodes`` fixes the node order of the sparse matrices.

    >>> v = GraphViews(nx.path_graph(4, create_using=nx.DiGraph))
    >>> v.n, v.m_undirected, v.lcc.tolist()
    (4, 3, [0, 1, 2, 3])
    """

    def __init__(self, G: nx.Graph):
        if not isinstance(G, nx.Graph):
            raise TypeError(f"expected a networkx graph, got {type(G).__name__}")
        self.G = G
        self.nodes = list(G.nodes())
        self.n = len(self.nodes)
        self.index = {u: i for i, u in enumerate(self.nodes)}

    @functools.cached_property
    def U(self) -> nx.Graph:
        """Undirected simple view: no self-loops, no attributes (PAPER.md §7.1 ``U``)."""
        return undirected_simple(self.G)

    @functools.cached_property
    def A(self) -> sp.csr_matrix:
        """Symmetric 0/1 adjacency of ``U`` (int64 CSR, sorted indices), rows in ``nodes`` order."""
        return _adjacency(self.U, self.index)

    @functools.cached_property
    def m_undirected(self) -> int:
        return self.A.nnz // 2

    @functools.cached_property
    def degree(self) -> np.ndarray:
        """Degrees in ``U``."""
        return np.diff(self.A.indptr)

    @functools.cached_property
    def lcc(self) -> np.ndarray:
        """Indices (into ``nodes``) of the largest connected component of ``U``."""
        if self.n == 0:
            return np.zeros(0, dtype=np.int64)
        _, labels = csgraph.connected_components(self.A, directed=False)
        largest = np.bincount(labels).argmax()
        return np.flatnonzero(labels == largest)

    @functools.cached_property
    def triangles(self) -> np.ndarray:
        """Triangles through each node of ``U``."""
        A = self.A
        return np.asarray((A @ A).multiply(A).sum(axis=1)).ravel() // 2

    @functools.cached_property
    def distance_sums(self) -> tuple[float, float, int]:
        """(Σ 1/d over ordered pairs of ``U``, Σ d over ordered pairs of the LCC, #LCC pairs)."""
        return _distance_sums(self.A, self.lcc)

    @property
    def degenerate(self) -> bool:
        """Fewer than 3 nodes or no edge (self-loops do not count)."""
        return self.n < 3 or self.m_undirected == 0


def undirected_simple(G: nx.Graph) -> nx.Graph:
    """``G.to_undirected()`` as a simple graph without self-loops or attributes.

    >>> undirected_simple(nx.DiGraph([(0, 1), (1, 0), (1, 1)])).edges()
    EdgeView([(0, 1)])
    """
    U = nx.Graph()
    U.add_nodes_from(G.nodes())
    U.add_edges_from((u, v) for u, v in G.edges() if u != v)
    return U


def _as_views(G) -> GraphViews:
    return G if isinstance(G, GraphViews) else GraphViews(G)


def _adjacency(U: nx.Graph, index: Mapping) -> sp.csr_matrix:
    n = len(index)
    if U.number_of_edges() == 0:
        return sp.csr_matrix((n, n), dtype=np.int64)
    e = np.array([(index[u], index[v]) for u, v in U.edges()], dtype=np.int64)
    rows = np.concatenate([e[:, 0], e[:, 1]])
    cols = np.concatenate([e[:, 1], e[:, 0]])
    A = sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(n, n))
    A.sum_duplicates()
    A.data[:] = 1
    A.sort_indices()
    return A


def _distance_sums(A: sp.csr_matrix, lcc: np.ndarray) -> tuple[float, float, int]:
    """BFS from every node in blocks (scipy, C speed); memory stays at block x N floats."""
    n = A.shape[0]
    inv_sum, lcc_sum = 0.0, 0.0
    in_lcc = np.zeros(n, dtype=bool)
    in_lcc[lcc] = True
    for start in range(0, n, _DISTANCE_BLOCK):
        src = np.arange(start, min(n, start + _DISTANCE_BLOCK))
        D = csgraph.shortest_path(A, method="D", directed=False, unweighted=True, indices=src)
        finite = np.isfinite(D) & (D > 0)
        inv_sum += float((1.0 / D[finite]).sum())
        rows = in_lcc[src]
        lcc_sum += float(D[np.ix_(rows, in_lcc)].sum())
    return inv_sum, lcc_sum, len(lcc) * (len(lcc) - 1)


# --------------------------------------------------------------------------------------------
# The eight global metrics (PAPER.md §7.1)
# --------------------------------------------------------------------------------------------

def edge_density(G) -> float:
    """Edge density E / (N(N-1)) of the **directed** graph ``G``.

    Reference: ``nx.density(G)`` on the DiGraph (PAPER.md §7.1 #1). NaN if degenerate.

    >>> edge_density(nx.complete_graph(3, create_using=nx.DiGraph))
    1.0
    """
    v = _as_views(G)
    if v.degenerate:
        return math.nan
    return float(nx.density(v.G))


def normalized_clustering(G) -> float:
    """Average clustering of ``U`` divided by C_rand = <k>/(N-1), <k> = 2E_U/N.

    View: undirected simple ``U`` (all nodes; nodes of degree < 2 count as 0, as in
    ``nx.average_clustering``). Reference: ``nx.average_clustering(U) / (<k>/(N-1))``, the
    predecessor's normalisation (PAPER.md §7.1 #2, §13). Computed from triangle counts (sparse
    A²), checked against networkx in the tests. NaN if degenerate.

    >>> normalized_clustering(nx.complete_graph(4))  # C = 1, C_rand = 3/3
    1.0
    """
    v = _as_views(G)
    if v.degenerate:
        return math.nan
    d = v.degree.astype(float)
    pairs = d * (d - 1) / 2
    local = np.divide(v.triangles, pairs, out=np.zeros_like(d), where=pairs > 0)
    c_rand = (2.0 * v.m_undirected / v.n) / (v.n - 1)
    return float(local.mean() / c_rand)


def degree_assortativity(G, x: str = "out", y: str = "in") -> float:
    """Degree assortativity: Pearson r of (x-degree of source, y-degree of target) over edges.

    View: the **directed** graph ``G`` (an undirected graph counts each edge both ways).
    Reference: ``nx.degree_assortativity_coefficient(G)`` (PAPER.md §7.1 #3), whose directed
    default is x='out', y='in'. Computed in numpy; returns NaN, without warnings, when undefined
    (constant degrees, e.g. a directed cycle) or degenerate.

    >>> round(degree_assortativity(nx.star_graph(3)), 6)
    -1.0
    """
    v = _as_views(G)
    if v.degenerate:
        return math.nan
    H = v.G
    if not H.is_directed():
        deg = dict(H.degree())
        pairs = [(deg[a], deg[b]) for a, b in H.edges()] + [(deg[b], deg[a]) for a, b in H.edges()]
    else:
        dx, dy = _directed_degree(H, x), _directed_degree(H, y)
        pairs = [(dx[a], dy[b]) for a, b in H.edges()]
    a = np.asarray(pairs, dtype=float)
    return _pearson(a[:, 0], a[:, 1])


def _directed_degree(H: nx.DiGraph, which: str) -> dict:
    if which == "out":
        return dict(H.out_degree())
    if which == "in":
        return dict(H.in_degree())
    raise ValueError(f"degree type must be 'in' or 'out', got {which!r}")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else math.nan


def modularity(G, seed: int = 0, resolution: float = 1.0) -> float:
    """Modularity of the Louvain partition of ``U`` (unweighted).

    View: undirected simple ``U``. Reference: ``nx.community.modularity(U,
    nx.community.louvain_communities(U, seed=seed))`` (PAPER.md §7.1 #4); Louvain is randomised,
    so the value depends on ``seed`` (default 0, as in PAPER.md). NaN if degenerate.

    >>> round(modularity(nx.disjoint_union(nx.complete_graph(4), nx.complete_graph(4))), 6)
    0.5
    """
    v = _as_views(G)
    if v.degenerate:
        return math.nan
    comms = nx.community.louvain_communities(v.U, weight=None, resolution=resolution, seed=seed)
    return float(nx.community.modularity(v.U, comms, weight=None, resolution=resolution))


def freeman_centralization(G) -> float:
    """Freeman degree centralisation Σ(k_max − k_i) / ((N−1)(N−2)) on ``U``.

    View: undirected simple ``U`` (all nodes). Reference: Freeman (1978) degree centralisation
    (PAPER.md §7.1 #5); 1 for a star, 0 for a regular graph. NaN if degenerate.

    >>> freeman_centralization(nx.star_graph(5)), freeman_centralization(nx.cycle_graph(5))
    (1.0, 0.0)
    """
    v = _as_views(G)
    if v.degenerate:
        return math.nan
    k = v.degree
    return float((k.max() - k).sum() / ((v.n - 1) * (v.n - 2)))


def normalized_path_length(G, directed: bool = False) -> float:
    """Average shortest path length L of the largest component over L_rand = ln N / ln <k>.

    View (default ``directed=False``): the largest connected component of ``U`` (= the largest
    weakly connected component of ``G`` made undirected), unweighted hops, L averaged over all
    ordered pairs, N and <k> = 2E/N of that component. Reference:
    ``nx.average_shortest_path_length`` on that component over the random-graph value
    ln N / ln <k> (PAPER.md §7.1 #6). A weakly connected DiGraph is in general not strongly
    connected, so directed distances are undefined for some pairs; ``directed=True`` averages
    directed hop distances over the *reachable* ordered pairs of the largest weakly connected
    component and uses the mean out-degree E/N. NaN if degenerate or <k> <= 1.

    >>> round(normalized_path_length(nx.complete_graph(4)), 6)  # 1 / (ln 4 / ln 3)
    0.792481
    """
    v = _as_views(G)
    if v.degenerate or len(v.lcc) < 3:
        return math.nan
    if directed:
        return _directed_normalized_path_length(v)
    n_c = len(v.lcc)
    m_c = int(v.A[v.lcc][:, v.lcc].nnz // 2)
    _, dist_sum, pairs = v.distance_sums
    return _normalize_path(dist_sum / pairs, n_c, 2.0 * m_c / n_c)


def _normalize_path(L: float, n: int, k_mean: float) -> float:
    if k_mean <= 1:
        return math.nan
    return float(L / (math.log(n) / math.log(k_mean)))


def _directed_normalized_path_length(v: GraphViews) -> float:
    H = v.G.subgraph([v.nodes[i] for i in v.lcc])
    idx = {u: i for i, u in enumerate(H.nodes())}
    edges = [(idx[a], idx[b]) for a, b in H.edges() if a != b]
    n_c = len(idx)
    if not edges:
        return math.nan
    e = np.asarray(edges)
    D_adj = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_c, n_c))
    D = csgraph.shortest_path(D_adj, method="D", directed=True, unweighted=True)
    finite = np.isfinite(D) & (D > 0)
    if not finite.any():
        return math.nan
    return _normalize_path(float(D[finite].mean()), n_c, len(set(edges)) / n_c)


def global_efficiency(G) -> float:
    """Global efficiency: mean of 1/d(u, v) over all ordered pairs of ``U`` (1/inf = 0).

    View: undirected simple ``U``, all nodes, unweighted hops. Reference:
    ``nx.global_efficiency(U)`` (Latora & Marchiori 2001; PAPER.md §7.1 #7), computed with
    scipy BFS. NaN if degenerate.

    >>> global_efficiency(nx.complete_graph(5))
    1.0
    """
    v = _as_views(G)
    if v.degenerate:
        return math.nan
    inv_sum, _, _ = v.distance_sums
    return float(inv_sum / (v.n * (v.n - 1)))


def algebraic_connectivity(G, dense_max: int = 600) -> float:
    """Second-smallest eigenvalue of the unnormalised Laplacian of the largest component of ``U``.

    View: the largest connected component of ``U``, unweighted. Reference:
    ``nx.algebraic_connectivity`` on that component (Fiedler 1973; PAPER.md §7.1 #8). Uses a
    dense ``scipy.linalg.eigh`` for components up to ``dense_max`` nodes and sparse shift-invert
    ``eigsh`` (sigma < 0, so L − σI is positive definite) above, falling back to dense if ARPACK
    fails. NaN if degenerate.

    >>> round(algebraic_connectivity(nx.complete_graph(5)), 6)  # K_n: n
    5.0
    """
    v = _as_views(G)
    if v.degenerate or len(v.lcc) < 2:
        return math.nan
    A = v.A[v.lcc][:, v.lcc].astype(float)
    L = csgraph.laplacian(A)
    if L.shape[0] <= dense_max:
        return _fiedler_dense(L)
    try:
        vals = spla.eigsh(L.tocsc(), k=2, sigma=-1e-3, which="LM", return_eigenvectors=False,
                          tol=1e-12)
        return float(max(np.sort(vals)[1], 0.0))
    except (spla.ArpackNoConvergence, RuntimeError) as exc:  # pragma: no cover - rare
        log.warning("sparse eigsh failed (%s); using dense eigh on %d nodes", exc, L.shape[0])
        return _fiedler_dense(L)


def _fiedler_dense(L) -> float:
    vals = sla.eigh(L.toarray(), eigvals_only=True, subset_by_index=[0, 1])
    return float(max(vals[1], 0.0))


_METRIC_FUNCS = {
    "edge_density": edge_density,
    "normalized_clustering": normalized_clustering,
    "degree_assortativity": degree_assortativity,
    "modularity": modularity,
    "freeman_centralization": freeman_centralization,
    "normalized_path_length": normalized_path_length,
    "global_efficiency": global_efficiency,
    "algebraic_connectivity": algebraic_connectivity,
}


def global_metrics(G: nx.Graph, seed: int = 0) -> dict[str, float]:
    """All eight metrics of one graph, in ``METRICS`` order; ``seed`` goes to Louvain.

    >>> m = global_metrics(nx.cycle_graph(6, create_using=nx.DiGraph))
    >>> m["freeman_centralization"], math.isnan(m["degree_assortativity"])
    (0.0, True)
    """
    v = GraphViews(G)
    out = {}
    for name in METRICS:
        f = _METRIC_FUNCS[name]
        out[name] = f(v, seed=seed) if name == "modularity" else f(v)
    return out


def _check_graphs(graphs: Mapping) -> None:
    if not isinstance(graphs, Mapping):
        raise ValueError("graphs must be a dict {(family, variant, benchmark, problem): DiGraph}")
    for key in graphs:
        if not (isinstance(key, tuple) and len(key) == 4):
            raise ValueError("graph keys must be (family, variant, benchmark, problem), "
                             f"got {key!r}")


def _progress(items, desc: str, progress: bool):
    return tqdm(items, desc=desc, disable=not progress, total=len(items))


def topology_table(graphs: Mapping[tuple, nx.DiGraph], seed: int = 0,
                   progress: bool = True) -> pd.DataFrame:
    """Long table of the eight metrics: family, variant, benchmark, problem, metric, value.

    >>> g = {("fam", "Base", "b", "p1"): nx.star_graph(3).to_directed()}
    >>> topology_table(g, progress=False).shape
    (8, 6)
    """
    _check_graphs(graphs)
    rows = []
    for key, G in _progress(list(graphs.items()), "topology", progress):
        for metric, value in global_metrics(G, seed=seed).items():
            rows.append((*key, metric, value))
    return pd.DataFrame(rows, columns=[*KEY_COLS, "metric", "value"])


# --------------------------------------------------------------------------------------------
# Metric–performance correlation
# --------------------------------------------------------------------------------------------

def metric_performance_correlation(topology_df: pd.DataFrame, perf_df: pd.DataFrame,
                                   metrics: Iterable[str] = METRICS,
                                   perf_cols: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Correlate each metric, averaged per model and benchmark, with Pass@1 and Pass@k.

    ``topology_df`` is ``topology_table``'s output; ``perf_df`` has family, variant, benchmark,
    pass_at_1, pass_at_k. Each metric is averaged over problems per (family, variant,
    benchmark) (NaN values skipped); the observations are these (model, benchmark) cells.
    Returns metric, performance ('pass@1' / 'pass@k'), pearson_r, spearman_r, n, paper_sign
    (+1 global efficiency and algebraic connectivity, −1 modularity, NaN otherwise) and agrees:
    sign(spearman_r) == paper_sign, NA where either is undefined.
    """
    perf_cols = dict(perf_cols or {"pass@1": "pass_at_1", "pass@k": "pass_at_k"})
    _require(topology_df, ("family", "variant", "benchmark", "metric", "value"), "topology_df")
    _require(perf_df, ("family", "variant", "benchmark", *perf_cols.values()), "perf_df")
    cell = ["family", "variant", "benchmark"]
    means = topology_df.groupby([*cell, "metric"], sort=False)["value"].mean().unstack("metric")
    merged = means.reset_index().merge(perf_df[[*cell, *perf_cols.values()]], on=cell)
    rows = []
    for metric in metrics:
        for label, col in perf_cols.items():
            x = merged[metric] if metric in merged else pd.Series(math.nan, index=merged.index)
            rows.append(_correlation_row(metric, label, x, merged[col]))
    out = pd.DataFrame(rows)
    out["agrees"] = out["agrees"].astype("boolean")
    return out


def _require(df: pd.DataFrame, cols: Iterable[str], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it has {list(df.columns)}")


def _correlation_row(metric: str, label: str, x: pd.Series, y: pd.Series) -> dict:
    ok = (x.notna() & y.notna()).to_numpy()
    xv, yv = x.to_numpy(float)[ok], y.to_numpy(float)[ok]
    pr = sr = math.nan
    if len(xv) >= 3 and np.ptp(xv) > 0 and np.ptp(yv) > 0:
        pr = float(stats.pearsonr(xv, yv)[0])
        sr = float(stats.spearmanr(xv, yv)[0])
    sign = PAPER_SIGN.get(metric, math.nan)
    agrees = pd.NA if math.isnan(sign) or math.isnan(sr) or sr == 0 else bool(np.sign(sr) == sign)
    return {"metric": metric, "performance": label, "pearson_r": pr, "spearman_r": sr,
            "n": int(len(xv)), "paper_sign": sign, "agrees": agrees}


# --------------------------------------------------------------------------------------------
# Graphlets (PAPER.md §7.2)
# --------------------------------------------------------------------------------------------

# P4 (3-path) copies contained in each induced graphlet: the 3-path sampler's weights.
_PATHS_IN = {"G3": 1, "G5": 4, "G6": 2, "G7": 6, "G8": 12}


def _as_simple_undirected(U) -> nx.Graph:
    if isinstance(U, GraphViews):
        return U.U
    if not isinstance(U, nx.Graph):
        raise TypeError(f"expected a networkx graph, got {type(U).__name__}")
    if U.is_directed() or U.is_multigraph() or nx.number_of_selfloops(U):
        return undirected_simple(U)
    return U


def _csr(U: nx.Graph) -> sp.csr_matrix:
    return _adjacency(U, {u: i for i, u in enumerate(U.nodes())})


def graphlet_counts_exact(U: nx.Graph) -> dict[str, int]:
    """Exact counts of connected induced 4-node graphlets G3..G8 of the undirected simple view.

    A directed, multi or self-looped graph is first reduced to ``undirected_simple``.
    Algorithm (orbit-free counting formulas, no 4-set enumeration): non-induced counts
    P4 = Σ_edges (d_u−1)(d_v−1) − 3T, claw = Σ C(d,3), C4 = ¼ Σ_{u≠v} C((A²)_uv, 2),
    paw = Σ_v t_v(d_v−2), diamond = Σ_edges C(t_uv, 2), and K4 by listing 4-cliques on the
    degree-ordered orientation; then the induced counts by inverting the subgraph-containment
    matrix (K4 holds 6 diamonds, 3 C4, 12 paws, 4 claws, 12 P4; diamond holds 1 C4, 4 paws,
    2 claws, 6 P4; paw holds 1 claw, 2 P4; C4 holds 4 P4). Cost: one sparse A² (O(Σ d²)) plus
    the clique listing (O(E·a²), a = arboricity).

    >>> graphlet_counts_exact(nx.complete_graph(5))
    {'G3': 0, 'G4': 0, 'G5': 0, 'G6': 0, 'G7': 0, 'G8': 5}
    >>> graphlet_counts_exact(nx.path_graph(5))["G3"]
    2
    """
    U = _as_simple_undirected(U)
    A = _csr(U)
    if A.nnz == 0:
        return dict.fromkeys(GRAPHLETS, 0)
    d = np.diff(A.indptr).astype(np.int64)
    A2 = (A @ A).tocsr()
    tri_e = A2.multiply(A).tocsr()  # triangles on each edge (both directions)
    t_v = np.asarray(tri_e.sum(axis=1)).ravel() // 2
    T = int(t_v.sum()) // 3
    up = sp.triu(tri_e, k=1).tocoo()  # edges with >= 1 triangle, once
    r, c = sp.triu(A, k=1).nonzero()
    w = A2.data
    c2_offdiag = int((w * (w - 1) // 2).sum()) - int((d * (d - 1) // 2).sum())
    non = {
        "P4": int(((d[r] - 1) * (d[c] - 1)).sum()) - 3 * T,
        "claw": int((d * (d - 1) * (d - 2) // 6).sum()),
        "C4": c2_offdiag // 4,
        "paw": int((t_v * (d - 2)).sum()),
        "diamond": int((up.data * (up.data - 1) // 2).sum()),
        "K4": _count_k4(A, d),
    }
    return _induced_from_noninduced(non)


def _induced_from_noninduced(non: Mapping[str, float]) -> dict:
    g8 = non["K4"]
    g7 = non["diamond"] - 6 * g8
    g6 = non["paw"] - 4 * g7 - 12 * g8
    g5 = non["C4"] - g7 - 3 * g8
    g4 = non["claw"] - g6 - 2 * g7 - 4 * g8
    g3 = non["P4"] - 4 * g5 - 2 * g6 - 6 * g7 - 12 * g8
    return {"G3": g3, "G4": g4, "G5": g5, "G6": g6, "G7": g7, "G8": g8}


def _count_k4(A: sp.csr_matrix, d: np.ndarray) -> int:
    """4-cliques: orient each edge towards the higher (degree, id) rank, then list cliques."""
    n = A.shape[0]
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), d))] = np.arange(n)
    out = []
    for u in range(n):
        nb = A.indices[A.indptr[u]:A.indptr[u + 1]]
        out.append(frozenset(nb[rank[nb] > rank[u]].tolist()))
    total = 0
    for u in range(n):
        ou = out[u]
        if len(ou) < 3:
            continue
        for v in ou:
            W = ou & out[v]
            if len(W) < 2:
                continue
            for x in W:
                total += len(W & out[x])
    return total


def graphlet_counts_sampled(U: nx.Graph, n_samples: int = 100_000,
                            seed: int | np.random.Generator | None = 0
                            ) -> tuple[dict[str, float], dict[str, float]]:
    """Unbiased estimates (and standard errors) of the induced graphlet counts G3..G8.

    3-path sampling (Jha, Seshadhri & Pinar, WWW 2015, "Path sampling"): pick an edge (u, v)
    with probability τ_uv/W, τ_uv = (d_u−1)(d_v−1), W = Στ; then a uniform neighbour a ≠ v of u
    and b ≠ u of v. Every non-induced 3-path a–u–v–b is drawn with probability exactly 1/W
    (draws with a = b close a triangle and count as misses). An induced graphlet H holding
    ``_PATHS_IN[H]`` 3-paths (G3 1, G5 4, G6 2, G7 6, G8 12) is therefore hit with probability
    c_H·P_H/W (c_H its count, P_H its 3-paths), so Ĉ_H = (hits_H / n) · W / P_H is unbiased. Stars hold no 3-path; their count
    follows from the exact Σ C(d,3) = G4 + G6 + 2·G7 + 4·G8, again unbiased.
    Cost: O(N + E) set-up plus O(n_samples · log E) vectorised numpy.

    Returns (estimates, standard_errors), each a dict G3..G8 -> float.

    >>> est, se = graphlet_counts_sampled(nx.cycle_graph(4), 1000, seed=0)
    >>> est["G5"], se["G5"]  # every 3-path of C4 lies in the one 4-cycle: exact
    (1.0, 0.0)
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    A = _csr(_as_simple_undirected(U))
    d = np.diff(A.indptr).astype(np.int64)
    claws = float((d * (d - 1) * (d - 2) // 6).sum())
    eu, ev = sp.triu(A, k=1).nonzero()
    tau = ((d[eu] - 1) * (d[ev] - 1)).astype(float)
    W = float(tau.sum())
    if W == 0:  # no 3-path: only stars (and they are exact)
        est = dict.fromkeys(GRAPHLETS, 0.0)
        est["G4"] = claws
        return est, dict.fromkeys(GRAPHLETS, 0.0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(eu), size=n_samples, p=tau / W)
    u, v = eu[pick], ev[pick]
    types = _classify_3paths(A, d, u, v, rng)
    return _path_sample_estimates(types, W, claws)


def _random_other_neighbour(A, d, u, excl, rng) -> np.ndarray:
    """A uniform neighbour of each u other than excl (requires d[u] >= 2)."""
    r = rng.integers(0, d[u] - 1)
    cand = A.indices[A.indptr[u] + r]
    last = A.indices[A.indptr[u] + d[u] - 1]
    return np.where(cand == excl, last, cand)


def _adjacent(A, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    n = A.shape[0]
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(A.indptr)) * n + A.indices
    query = p.astype(np.int64) * n + q
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[pos] == query


def _classify_3paths(A, d, u, v, rng) -> np.ndarray:
    """Induced type of each sampled a–u–v–b: 0 miss (a = b), 3..8 for G3..G8."""
    a = _random_other_neighbour(A, d, u, v, rng)
    b = _random_other_neighbour(A, d, v, u, rng)
    x, y, z = _adjacent(A, a, v), _adjacent(A, u, b), _adjacent(A, a, b)
    extra = x.astype(int) + y + z
    types = np.select([extra == 0, (extra == 1) & z, extra == 1, extra == 2, extra == 3],
                      [3, 5, 6, 7, 8])
    return np.where(a == b, 0, types)


def _path_sample_estimates(types: np.ndarray, W: float, claws: float):
    n = len(types)
    per = {g: (types == int(g[1])) * (W / _PATHS_IN[g]) for g in _PATHS_IN}
    per["G4"] = claws - per["G6"] - 2 * per["G7"] - 4 * per["G8"]
    est = {g: float(per[g].mean()) for g in GRAPHLETS}
    se = {g: float(per[g].std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan for g in GRAPHLETS}
    return est, se


def graphlet_proportions_sampled(U: nx.Graph, n_samples: int = 100_000,
                                 seed: int | np.random.Generator | None = 0) -> dict[str, float]:
    """Estimated proportions G3..G8 from ``graphlet_counts_sampled`` (n_samples 3-path draws).

    Proportion = Ĉ_H / Σ Ĉ. The counts are unbiased; the ratio is the standard ratio estimator
    (consistent, bias O(1/n_samples)). A negative star estimate (possible only when sampling
    noise is large) is clipped to 0 with a warning. All NaN when the graph has no connected
    4-node subgraph.

    >>> graphlet_proportions_sampled(nx.star_graph(4), 10)["G4"]
    1.0
    """
    est, _ = graphlet_counts_sampled(U, n_samples, seed)
    if est["G4"] < 0:
        log.warning("sampled star count %.3g < 0 (sampling noise); clipped to 0", est["G4"])
        est["G4"] = 0.0
    return _proportions(est)


def _proportions(counts: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(counts.values()))
    if total <= 0:
        return dict.fromkeys(GRAPHLETS, math.nan)
    return {g: float(counts[g]) / total for g in GRAPHLETS}


def wedge_count(U: nx.Graph) -> int:
    """Σ_v C(d_v, 2): the number of 2-paths, the cost driver of exact counting (size of A²)."""
    d = np.array([k for _, k in _as_simple_undirected(U).degree()], dtype=np.int64)
    return int((d * (d - 1) // 2).sum())


def graphlet_proportions(U: nx.Graph, max_exact: int = 50_000_000, n_samples: int = 200_000,
                         seed: int | np.random.Generator | None = 0
                         ) -> tuple[dict[str, float], str, int]:
    """Graphlet proportions G3..G8, exact when cheap, else sampled.

    Exact (``graphlet_counts_exact``) when the graph has at most ``max_exact`` wedges
    (``wedge_count``; 5·10⁷ wedges take about 1-2 s, e.g. 2000 nodes and 2·10⁵ edges),
    else ``graphlet_proportions_sampled`` with ``n_samples`` 3-path draws. Returns
    (proportions, method 'exact'|'sampled', sample_size), where sample_size is the number of
    3-path draws when sampled and the number of connected 4-node subgraphs counted (the whole
    population) when exact.

    >>> p, method, size = graphlet_proportions(nx.cycle_graph(4))
    >>> p["G5"], method, size
    (1.0, 'exact', 1)
    """
    U = _as_simple_undirected(U)
    if wedge_count(U) <= max_exact:
        counts = graphlet_counts_exact(U)
        return _proportions(counts), "exact", int(sum(counts.values()))
    log.info("graph with %d nodes: sampling %d 3-paths", U.number_of_nodes(), n_samples)
    return graphlet_proportions_sampled(U, n_samples, seed), "sampled", int(n_samples)


def _key_seed(seed: int, key: tuple) -> int:
    """A per-graph seed, stable across runs and independent of dict order."""
    return (int(seed) * 1_000_003 + zlib.crc32(repr(key).encode())) % (2**31)


def graphlet_table(graphs: Mapping[tuple, nx.DiGraph], max_exact: int = 50_000_000,
                   n_samples: int = 200_000, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Long table: family, variant, benchmark, problem, graphlet, proportion, method, sample_size.

    Each graph's sampler seed is derived from ``seed`` and its key, so results do not depend on
    which other graphs are in ``graphs``.

    >>> g = {("fam", "RL", "b", "p1"): nx.complete_graph(4, create_using=nx.DiGraph)}
    >>> graphlet_table(g, progress=False).query("graphlet == 'G8'")["proportion"].item()
    1.0
    """
    _check_graphs(graphs)
    rows = []
    for key, G in _progress(list(graphs.items()), "graphlets", progress):
        props, method, size = graphlet_proportions(G, max_exact, n_samples, _key_seed(seed, key))
        rows.extend((*key, g, props[g], method, size) for g in GRAPHLETS)
    return pd.DataFrame(rows, columns=[*KEY_COLS, "graphlet", "proportion", "method",
                                       "sample_size"])


# --------------------------------------------------------------------------------------------
# sMAPE between stages (PAPER.md §7.3)
# --------------------------------------------------------------------------------------------

def smape(x: Mapping, y: Mapping) -> float:
    """Symmetric MAPE (100/n) Σ_t |y_t − x_t| / ((|y_t| + |x_t|)/2), in [0, 200].

    ``x``, ``y``: node -> visitation frequency; a node missing from one dict has frequency 0
    there. Nodes with frequency 0 in both (0/0) are excluded; n counts the remaining nodes.
    NaN when no node is left.

    >>> smape({"a": 1, "b": 1}, {"a": 1, "c": 2})  # a: 0, b: 200, c: 200
    133.33333333333334
    >>> smape({"a": 0}, {"a": 0, "b": 0})
    nan
    """
    terms = [_smape_term(float(x.get(t, 0)), float(y.get(t, 0))) for t in set(x) | set(y)]
    terms = [s for s in terms if s is not None]
    return 100.0 * sum(terms) / len(terms) if terms else math.nan


def _smape_term(a: float, b: float) -> float | None:
    den = (abs(a) + abs(b)) / 2
    return None if den == 0 else abs(b - a) / den


def visit_frequencies(G: nx.Graph, freq: str = "proportion", attr: str = "visits") -> dict:
    """Node -> visitation frequency from node attribute ``attr``.

    ``freq='proportion'`` (default) divides by the model's total visits, so sMAPE compares the
    *distribution* of visits and is insensitive to how many steps a model takes in total (RL
    shortens responses, which would otherwise register as a difference at every node);
    ``freq='count'`` keeps raw counts. Nodes of frequency 0 in both models drop out of sMAPE
    either way, and a node visited by only one model contributes 200 either way.

    >>> G = nx.DiGraph(); G.add_node("a", visits=3); G.add_node("b", visits=1)
    >>> visit_frequencies(G)
    {'a': 0.75, 'b': 0.25}
    """
    if freq not in ("proportion", "count"):
        raise ValueError(f"freq must be 'proportion' or 'count', got {freq!r}")
    missing = [u for u, val in G.nodes(data=attr) if val is None]
    if missing:
        raise ValueError(f"{len(missing)} nodes lack the {attr!r} attribute, e.g. {missing[:3]}")
    counts = {u: float(val) for u, val in G.nodes(data=attr)}
    total = sum(counts.values())
    if freq == "count" or total == 0:
        return counts
    return {u: c / total for u, c in counts.items()}


def smape_table(graphs: Mapping[tuple, nx.DiGraph], pairs=COMPARISONS, freq: str = "proportion",
                attr: str = "visits") -> pd.DataFrame:
    """sMAPE of node visitation between the variants of each pair, per (family, benchmark, problem).

    ``pairs`` are (after, before), e.g. ("RL", "Base"); comparison 'RL/Base' is
    ``smape(x=before, y=after)`` (sMAPE is symmetric anyway). Pairs with a missing graph are
    skipped (logged). Columns: family, benchmark, problem, comparison, smape, n_nodes
    (nodes visited by at least one of the two). See ``visit_frequencies`` for ``freq``.
    """
    _check_graphs(graphs)
    problems = dict.fromkeys((f, b, p) for f, _, b, p in graphs)
    rows = []
    for fam, bench, prob in problems:
        for after, before in pairs:
            ga, gb = graphs.get((fam, after, bench, prob)), graphs.get((fam, before, bench, prob))
            if ga is None or gb is None:
                log.debug("sMAPE %s/%s skipped for %s: graph missing", after, before,
                          (fam, bench, prob))
                continue
            x, y = visit_frequencies(gb, freq, attr), visit_frequencies(ga, freq, attr)
            n = sum(1 for t in set(x) | set(y) if x.get(t, 0) or y.get(t, 0))
            rows.append((fam, bench, prob, f"{after}/{before}", smape(x, y), n))
    return pd.DataFrame(rows, columns=["family", "benchmark", "problem", "comparison", "smape",
                                       "n_nodes"])


# --------------------------------------------------------------------------------------------
# Change after training (Fig. 8 / 9 arrows)
# --------------------------------------------------------------------------------------------

def change_after(table: pd.DataFrame, value_col: str = "value", key_col: str = "metric",
                 by: Iterable[str] = (), nested: Iterable[str] = ("family", "benchmark"),
                 pairs=COMPARISONS) -> pd.DataFrame:
    """Mean per variant and the change after each training step, per ``key_col`` value.

    Values are first averaged over problems within each (``by`` + ``nested`` + variant + key)
    cell, then averaged equally over the ``nested`` cells (e.g. every model size and benchmark
    weighs the same, as in Fig. 8 "averaged over sizes and datasets"). Returns one row per
    (``by``…, key) with a column per variant (its mean) and one per pair, named 'Base->RL',
    'Base->SFT', 'SFT->SFT+RL', holding mean(after) − mean(before).

    >>> t = pd.DataFrame({"variant": ["Base", "RL"], "metric": ["m", "m"], "value": [1.0, 3.0]})
    >>> change_after(t, nested=())[["metric", "Base", "RL", "Base->RL"]].values.tolist()
    [['m', 1.0, 3.0, 2.0]]
    """
    by = list(by)
    nested = [c for c in nested if c in table.columns and c not in by]
    _require(table, [*by, "variant", key_col, value_col], "table")
    cells = table.groupby([*by, *nested, "variant", key_col], sort=False)[value_col].mean()
    means = cells.groupby(level=[*by, "variant", key_col], sort=False).mean()
    wide = means.unstack("variant")
    wide = wide.reindex(columns=[v for v in VARIANTS if v in wide.columns]
                        + [v for v in wide.columns if v not in VARIANTS])
    for after, before in pairs:
        if after in wide and before in wide:
            wide[f"{before}->{after}"] = wide[after] - wide[before]
        else:
            wide[f"{before}->{after}"] = math.nan
    wide.columns.name = None
    return wide.reset_index()
