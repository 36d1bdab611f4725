"""Tests of rlsft.topology: metrics against networkx, graphlets against brute force, sMAPE."""
import itertools
import math
import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from rlsft import topology as T

# ----------------------------------------------------------------------------- helpers


def random_digraph(n, m, seed, reciprocal=0.3):
    """A random DiGraph with some reciprocal edges (like reasoning graphs)."""
    rng = np.random.default_rng(seed)
    G = nx.gnm_random_graph(n, m, seed=seed, directed=True)
    for u, v in list(G.edges()):
        if rng.random() < reciprocal:
            G.add_edge(v, u)
    return G


def lcc_undirected(G):
    U = G.to_undirected()
    return U.subgraph(max(nx.connected_components(U), key=len)).copy()


def brute_force_graphlets(U):
    """Induced connected 4-node graphlets by enumerating every 4-node subset."""
    counts = dict.fromkeys(T.GRAPHLETS, 0)
    for quad in itertools.combinations(U.nodes(), 4):
        H = U.subgraph(quad)
        m = H.number_of_edges()
        if m < 3 or not nx.is_connected(H):
            continue
        maxdeg = max(d for _, d in H.degree())
        if m == 3:
            counts["G4" if maxdeg == 3 else "G3"] += 1
        elif m == 4:
            counts["G6" if maxdeg == 3 else "G5"] += 1
        else:
            counts["G7" if m == 5 else "G8"] += 1
    return counts


RANDOM_GRAPHS = [(40, 90, 0), (60, 200, 1), (80, 160, 2), (25, 150, 3)]


# ----------------------------------------------------------------------------- metrics vs networkx


@pytest.mark.parametrize("n,m,seed", RANDOM_GRAPHS)
def test_metrics_match_networkx(n, m, seed):
    G = random_digraph(n, m, seed)
    U = G.to_undirected()
    N, k = U.number_of_nodes(), 2 * U.number_of_edges() / U.number_of_nodes()
    L = lcc_undirected(G)
    nl, kl = L.number_of_nodes(), 2 * L.number_of_edges() / L.number_of_nodes()
    ref = {
        "edge_density": nx.density(G),
        "normalized_clustering": nx.average_clustering(U) / (k / (N - 1)),
        "degree_assortativity": nx.degree_assortativity_coefficient(G),
        "modularity": nx.community.modularity(U, nx.community.louvain_communities(U, seed=0)),
        "freeman_centralization": sum(max(dict(U.degree()).values()) - d for _, d in U.degree())
        / ((N - 1) * (N - 2)),
        "normalized_path_length": nx.average_shortest_path_length(L)
        / (math.log(nl) / math.log(kl)),
        "global_efficiency": nx.global_efficiency(U),
        "algebraic_connectivity": nx.algebraic_connectivity(L, tol=1e-12, method="tracemin_lu"),
    }
    got = T.global_metrics(G, seed=0)
    assert list(got) == list(T.METRICS)
    for name in T.METRICS:
        assert got[name] == pytest.approx(ref[name], rel=1e-7, abs=1e-9), name


def test_metrics_on_disconnected_graph_match_networkx():
    G = nx.disjoint_union(random_digraph(30, 70, 5), random_digraph(12, 20, 6))
    U = G.to_undirected()
    L = lcc_undirected(G)
    assert T.global_efficiency(G) == pytest.approx(nx.global_efficiency(U))
    assert T.algebraic_connectivity(G) == pytest.approx(
        nx.algebraic_connectivity(L, tol=1e-12, method="tracemin_lu"), rel=1e-7)
    nl, kl = L.number_of_nodes(), 2 * L.number_of_edges() / L.number_of_nodes()
    assert T.normalized_path_length(G) == pytest.approx(
        nx.average_shortest_path_length(L) / (math.log(nl) / math.log(kl)))


def test_algebraic_connectivity_sparse_path_matches_dense_and_networkx():
    G = random_digraph(300, 900, 7)
    L = lcc_undirected(G)
    ref = nx.algebraic_connectivity(L, tol=1e-12, method="tracemin_lu")
    assert T.algebraic_connectivity(G, dense_max=0) == pytest.approx(ref, rel=1e-7)
    assert T.algebraic_connectivity(G, dense_max=10_000) == pytest.approx(ref, rel=1e-7)


def test_directed_path_length_matches_reachable_pair_average():
    G = random_digraph(50, 120, 8)
    W = G.subgraph(max(nx.weakly_connected_components(G), key=len))
    d = [dist for s in W for t, dist in nx.single_source_shortest_path_length(W, s).items()
         if t != s]
    n = W.number_of_nodes()
    ref = np.mean(d) / (math.log(n) / math.log(W.number_of_edges() / n))
    assert T.normalized_path_length(G, directed=True) == pytest.approx(ref)
    K = nx.complete_graph(5, create_using=nx.DiGraph)
    assert T.normalized_path_length(K, directed=True) == pytest.approx(math.log(4) / math.log(5))


# ----------------------------------------------------------------------------- hand-computed graphs


def test_star_by_hand():
    n = 6  # leaves
    S = nx.star_graph(n).to_directed()
    m = T.global_metrics(S)
    N = n + 1
    assert m["edge_density"] == pytest.approx(2 / N)
    assert m["freeman_centralization"] == pytest.approx(1.0)
    assert m["normalized_clustering"] == 0.0
    assert m["degree_assortativity"] == pytest.approx(-1.0)
    assert m["algebraic_connectivity"] == pytest.approx(1.0)
    # ordered pairs: 2n hub-leaf pairs at distance 1, n(n-1) leaf-leaf pairs at distance 2
    assert m["global_efficiency"] == pytest.approx((2 * n + n * (n - 1) / 2) / (N * n))
    L = (2 * n + 2 * n * (n - 1)) / (N * n)
    assert m["normalized_path_length"] == pytest.approx(L / (math.log(N) / math.log(2 * n / N)))


def test_path_by_hand():
    n = 5
    P = nx.path_graph(n, create_using=nx.DiGraph)
    assert T.edge_density(P) == pytest.approx((n - 1) / (n * (n - 1)))
    assert T.freeman_centralization(P) == pytest.approx(2 / ((n - 1) * (n - 2)))
    assert T.algebraic_connectivity(P) == pytest.approx(2 * (1 - math.cos(math.pi / n)))
    # distances 1..4 occur 4,3,2,1 times (unordered): L = 20/10 = 2; efficiency from 1/d
    assert T.global_efficiency(P) == pytest.approx((4 + 3 / 2 + 2 / 3 + 1 / 4) / 10)
    assert T.normalized_path_length(P) == pytest.approx(2.0 / (math.log(5) / math.log(8 / 5)))
    assert T.normalized_clustering(P) == 0.0


def test_k4_by_hand():
    K = nx.complete_graph(4, create_using=nx.DiGraph)
    m = T.global_metrics(K)
    assert m["edge_density"] == 1.0
    assert m["normalized_clustering"] == pytest.approx(1.0)
    assert math.isnan(m["degree_assortativity"])  # all degrees equal
    assert m["modularity"] == pytest.approx(0.0)
    assert m["freeman_centralization"] == 0.0
    assert m["normalized_path_length"] == pytest.approx(1 / (math.log(4) / math.log(3)))
    assert m["global_efficiency"] == pytest.approx(1.0)
    assert m["algebraic_connectivity"] == pytest.approx(4.0)


def test_two_cliques_modularity_by_hand():
    G = nx.disjoint_union(nx.complete_graph(5), nx.complete_graph(5)).to_directed()
    assert T.modularity(G, seed=3) == pytest.approx(0.5)


def test_views_drop_self_loops_and_merge_reciprocal_edges():
    G = nx.DiGraph([(0, 1), (1, 0), (1, 2), (2, 2), (2, 0)])
    U = T.undirected_simple(G)
    assert sorted(map(sorted, U.edges())) == [[0, 1], [0, 2], [1, 2]]
    assert T.normalized_clustering(G) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- degenerate graphs


DEGENERATE = {
    "empty": nx.DiGraph(),
    "one node": nx.empty_graph(1, create_using=nx.DiGraph),
    "one edge": nx.DiGraph([(0, 1)]),
    "no edges": nx.empty_graph(5, create_using=nx.DiGraph),
    "self-loop only": nx.DiGraph([(0, 0), (1, 1), (2, 2)]),
}


@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_graphs_give_nan_without_warnings(name):
    G = DEGENERATE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = T.global_metrics(G)
        props, method, size = T.graphlet_proportions(G)
        sampled = T.graphlet_proportions_sampled(G, 100)
    assert all(math.isnan(v) for v in m.values())
    assert all(math.isnan(v) for v in props.values()) and size == 0
    assert all(math.isnan(v) for v in sampled.values())


def test_undefined_assortativity_is_nan_without_warning():
    C = nx.cycle_graph(7, create_using=nx.DiGraph)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(T.degree_assortativity(C))
        assert math.isnan(T.normalized_path_length(C, directed=True))  # <k> = 1


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match="networkx graph"):
        T.global_metrics({"not": "a graph"})
    with pytest.raises(ValueError, match="family, variant, benchmark, problem"):
        T.topology_table({("only", "two"): nx.DiGraph()}, progress=False)
    with pytest.raises(ValueError, match="n_samples"):
        T.graphlet_counts_sampled(nx.complete_graph(4), 0)
    with pytest.raises(ValueError, match="'in' or 'out'"):
        T.degree_assortativity(nx.path_graph(4, create_using=nx.DiGraph), x="total")


# ----------------------------------------------------------------------------- graphlets


@pytest.mark.parametrize("seed", range(6))
def test_graphlet_exact_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, p = int(rng.integers(8, 16)), float(rng.uniform(0.15, 0.6))
    U = nx.gnp_random_graph(n, p, seed=seed)
    if seed % 2:  # disconnected: add a separate component and isolated nodes
        U = nx.disjoint_union(U, nx.gnp_random_graph(6, 0.5, seed=seed + 100))
        U.add_nodes_from(["iso1", "iso2"])
    assert T.graphlet_counts_exact(U) == brute_force_graphlets(U)


def test_graphlet_exact_on_named_graphs():
    assert T.graphlet_counts_exact(nx.complete_graph(5))["G8"] == 5
    assert T.graphlet_counts_exact(nx.star_graph(5))["G4"] == 10
    assert T.graphlet_counts_exact(nx.cycle_graph(4))["G5"] == 1
    for G in (nx.petersen_graph(), nx.karate_club_graph(), nx.les_miserables_graph()):
        if G.number_of_nodes() <= 40:
            assert T.graphlet_counts_exact(G) == brute_force_graphlets(G)


def test_graphlet_exact_uses_undirected_simple_view():
    D = random_digraph(14, 40, 11)
    D.add_edge(3, 3)
    U = T.undirected_simple(D)
    assert T.graphlet_counts_exact(D) == brute_force_graphlets(U)


def test_graphlet_sampler_is_unbiased():
    """Mean over 300 seeded runs lies within 4 standard errors of the exact counts."""
    U = nx.gnp_random_graph(30, 0.3, seed=4)
    truth = T.graphlet_counts_exact(U)
    runs = [T.graphlet_counts_sampled(U, 400, seed=s) for s in range(300)]
    est = pd.DataFrame([r[0] for r in runs])
    reported_se = pd.DataFrame([r[1] for r in runs]).mean()
    for g in T.GRAPHLETS:
        se_mean = est[g].std(ddof=1) / math.sqrt(len(est))
        assert abs(est[g].mean() - truth[g]) < 4 * se_mean + 1e-9, g
        # the per-run standard error is a fair estimate of the spread across runs
        assert reported_se[g] == pytest.approx(est[g].std(ddof=1), rel=0.25), g
    exact_p = T.graphlet_proportions(U)[0]
    props = pd.DataFrame([T.graphlet_proportions_sampled(U, 400, seed=s) for s in range(300)])
    for g in T.GRAPHLETS:
        se_mean = props[g].std(ddof=1) / math.sqrt(len(props))
        assert abs(props[g].mean() - exact_p[g]) < 4 * se_mean + 1e-3, g


def test_graphlet_proportions_method_choice_and_sample_size():
    U = nx.gnp_random_graph(40, 0.2, seed=2)
    p_exact, method, size = T.graphlet_proportions(U)
    assert method == "exact" and size == sum(T.graphlet_counts_exact(U).values())
    assert sum(p_exact.values()) == pytest.approx(1.0)
    p_s, method, size = T.graphlet_proportions(U, max_exact=0, n_samples=50_000, seed=1)
    assert method == "sampled" and size == 50_000
    for g in T.GRAPHLETS:
        assert p_s[g] == pytest.approx(p_exact[g], abs=0.02)


def test_graphlet_sampler_is_deterministic_with_seed():
    U = nx.gnp_random_graph(50, 0.15, seed=3)
    a = T.graphlet_proportions_sampled(U, 2000, seed=7)
    assert a == T.graphlet_proportions_sampled(U, 2000, seed=7)
    assert a != T.graphlet_proportions_sampled(U, 2000, seed=8)


# ----------------------------------------------------------------------------- tables


def _graph_family():
    graphs = {}
    for i, variant in enumerate(T.VARIANTS):
        for prob in ("p1", "p2"):
            G = random_digraph(30, 60 + 15 * i, seed=10 * i + len(prob) + (prob == "p2"))
            nx.set_node_attributes(G, {u: 1 + (u % 3) for u in G}, "visits")
            graphs[("1.5B", variant, "amc23", prob)] = G
    return graphs


def test_topology_and_graphlet_tables_are_long_and_deterministic():
    graphs = _graph_family()
    t1 = T.topology_table(graphs, seed=0, progress=False)
    assert list(t1.columns) == ["family", "variant", "benchmark", "problem", "metric", "value"]
    assert len(t1) == len(graphs) * len(T.METRICS)
    pd.testing.assert_frame_equal(t1, T.topology_table(graphs, seed=0, progress=False))
    g1 = T.graphlet_table(graphs, max_exact=0, n_samples=500, seed=1, progress=False)
    assert list(g1.columns) == ["family", "variant", "benchmark", "problem", "graphlet",
                                "proportion", "method", "sample_size"]
    assert len(g1) == len(graphs) * 6 and set(g1.method) == {"sampled"}
    pd.testing.assert_frame_equal(
        g1, T.graphlet_table(graphs, max_exact=0, n_samples=500, seed=1, progress=False))
    g2 = T.graphlet_table(graphs, progress=False)
    assert set(g2.method) == {"exact"}
    assert g2.groupby(["variant", "problem"]).proportion.sum().round(12).eq(1).all()


def test_metric_performance_correlation_signs_and_counts():
    rows, perf = [], []
    for i, (fam, var) in enumerate(itertools.product(("A", "B"), T.VARIANTS)):
        for bench in ("aime24", "amc23"):
            acc = (i + 1) / 10 + (bench == "amc23") * 0.05
            perf.append((fam, var, bench, acc, min(1.0, acc + 0.3)))
            for prob in ("p1", "p2"):
                rows += [(fam, var, bench, prob, "global_efficiency", acc + (prob == "p1") * 0.01),
                         (fam, var, bench, prob, "modularity", acc ** 2),
                         (fam, var, bench, prob, "edge_density", math.nan)]
    topo = pd.DataFrame(rows, columns=[*T.KEY_COLS, "metric", "value"])
    perf = pd.DataFrame(perf, columns=["family", "variant", "benchmark", "pass_at_1", "pass_at_k"])
    out = T.metric_performance_correlation(topo, perf)
    assert list(out.columns) == ["metric", "performance", "pearson_r", "spearman_r", "n",
                                 "paper_sign", "agrees"]
    assert len(out) == 16
    ge = out[(out.metric == "global_efficiency") & (out.performance == "pass@1")].iloc[0]
    assert ge.pearson_r == pytest.approx(1.0) and ge.spearman_r == pytest.approx(1.0)
    assert ge.n == 16 and ge.paper_sign == 1 and bool(ge.agrees)
    mod = out[(out.metric == "modularity") & (out.performance == "pass@1")].iloc[0]
    assert mod.spearman_r == pytest.approx(1.0) and not bool(mod.agrees)
    ed = out[out.metric == "edge_density"].iloc[0]
    assert math.isnan(ed.pearson_r) and ed.n == 0 and math.isnan(ed.paper_sign)
    assert pd.isna(ed.agrees) and str(out.agrees.dtype) == "boolean"
    with pytest.raises(ValueError, match="perf_df lacks"):
        T.metric_performance_correlation(topo, perf.drop(columns="pass_at_k"))


def test_change_after_weighs_nested_cells_equally():
    t = pd.DataFrame(
        [("A", "b", "p1", "Base", "m", 1.0), ("A", "b", "p2", "Base", "m", 3.0),  # A mean 2
         ("B", "b", "p1", "Base", "m", 6.0),                                       # B mean 6
         ("A", "b", "p1", "RL", "m", 5.0), ("B", "b", "p1", "RL", "m", 5.0),
         ("A", "b", "p1", "SFT", "m", 1.0), ("A", "b", "p1", "SFT+RL", "m", 2.0)],
        columns=["family", "benchmark", "problem", "variant", "metric", "value"])
    out = T.change_after(t).iloc[0]
    assert out["Base"] == pytest.approx(4.0)  # (2 + 6) / 2, not (1 + 3 + 6) / 3
    assert out["Base->RL"] == pytest.approx(1.0)
    assert out["Base->SFT"] == pytest.approx(-3.0)
    assert out["SFT->SFT+RL"] == pytest.approx(1.0)
    per_family = T.change_after(t, by=["family"])
    assert per_family.set_index("family").loc["B", "Base->RL"] == pytest.approx(-1.0)
    g = T.change_after(t.rename(columns={"metric": "graphlet", "value": "proportion"}),
                       value_col="proportion", key_col="graphlet")
    assert list(g.columns[:5]) == ["graphlet", "Base", "RL", "SFT", "SFT+RL"]


# ----------------------------------------------------------------------------- sMAPE


def test_smape_by_hand():
    assert T.smape({"a": 1, "b": 1}, {"a": 1, "c": 2}) == pytest.approx(400 / 3)
    # a: |1-2| / 1.5 ; b: 0 ; c and d are visited by neither and are excluded
    assert T.smape({"a": 2, "b": 1, "c": 0}, {"a": 1, "b": 1, "d": 0}) == pytest.approx(100 / 3)
    assert T.smape({"a": 1}, {"a": 1}) == 0.0
    assert T.smape({"a": 1}, {"b": 1}) == 200.0
    assert math.isnan(T.smape({}, {})) and math.isnan(T.smape({"a": 0}, {"a": 0}))
    assert T.smape({"a": 1, "b": 3}, {"a": 2}) == T.smape({"a": 2}, {"a": 1, "b": 3})


def _visited(visits):
    G = nx.DiGraph()
    for u, k in visits.items():
        G.add_node(u, visits=k)
    return G


def test_smape_table_pairs_and_frequency_choice():
    base = _visited({"a": 1, "b": 1, "z": 0})
    graphs = {("F", "Base", "b", "p"): base,
              ("F", "RL", "b", "p"): _visited({"a": 2, "b": 2}),
              ("F", "SFT", "b", "p"): _visited({"a": 1, "c": 1})}
    out = T.smape_table(graphs).set_index("comparison")
    assert list(out.index) == ["RL/Base", "SFT/Base"]  # SFT+RL missing: skipped
    assert out.loc["RL/Base", "smape"] == pytest.approx(0.0)  # same distribution
    assert out.loc["RL/Base", "n_nodes"] == 2  # z is visited by neither
    assert out.loc["SFT/Base", "smape"] == pytest.approx(400 / 3)  # a: 0, b: 2, c: 2
    counts = T.smape_table(graphs, freq="count").set_index("comparison")
    assert counts.loc["RL/Base", "smape"] == pytest.approx(100 * (1 / 1.5))
    with pytest.raises(ValueError, match="'visits' attribute"):
        T.smape_table({("F", "Base", "b", "p"): nx.path_graph(3),
                       ("F", "RL", "b", "p"): nx.path_graph(3)})
    with pytest.raises(ValueError, match="freq"):
        T.visit_frequencies(base, freq="share")
