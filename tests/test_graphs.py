"""Tests of rlsft.graphs (paths, graphs, node metrics, decay rates), rlsft.ratios (their ratios) and of
the stages that run them: graphs (streamed step analysis, seed spread), fig_decay, ablations and
fig_ablations."""
from __future__ import annotations

import json
import math
import zlib

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from rlsft import VARIANTS
from rlsft import embedders as E
from rlsft.embedders import get_embedder
from rlsft.graphs import (
    betweenness,
    build_graph,
    decay_rate,
    decay_table_from_graphs,
    degree,
    graph_tables,
    graphs_from_steps,
    node_metric_table,
    paths_from_steps,
    sparsify_topk,
    visitation,
)
from rlsft.ratios import decay_ratios, geomean_ratios, summarize_seed_spread
from rlsft.stages import graphs as SG
from rlsft.stages.ablations import (
    NA_TOPK_FREQUENCY,
    STATUS_COMPUTED,
    ablation_ratios,
    ablation_settings,
    mark_na,
    topk_decay_from_saved,
    topk_na_reason,
)
from rlsft.stages.graphs import CLUSTERING_COLUMNS, ParquetStream, seed_spread, step_analysis
from rlsft.steps import cluster_group, embedded_groups

# ---------------------------------------------------------------------------------------- decay rate


def test_decay_rate_exact_on_noise_free_data():
    for beta, alpha, n in [(0.5, 2.0, 10), (0.01, 1.0, 200), (1.7, -3.0, 4)]:
        r = np.arange(1, n + 1)
        x = 10 ** (alpha - beta * r)
        fit = decay_rate(np.random.default_rng(0).permutation(x), return_fit=True)
        assert fit["beta"] == pytest.approx(beta, abs=1e-12)
        assert fit["alpha"] == pytest.approx(alpha, abs=1e-10)
        assert fit["r2"] == pytest.approx(1.0) and fit["n"] == n


def test_decay_rate_noisy_zeros_and_too_few(caplog):
    rng = np.random.default_rng(1)
    r = np.arange(1, 301)
    x = 10 ** (1.0 - 0.02 * r + rng.normal(0, 0.05, size=r.size))
    assert decay_rate(x) == pytest.approx(0.02, rel=0.05)
    # zeros are dropped; dicts are accepted
    vals = {i: v for i, v in enumerate([100.0, 10.0, 1.0, 0.0, 0.0])}
    fit = decay_rate(vals, return_fit=True)
    assert fit["beta"] == pytest.approx(1.0) and fit["n"] == 3
    with caplog.at_level("INFO", logger="rlsft.graphs"):
        assert math.isnan(decay_rate([5.0, 0.0, 0.0, 2.0]))
    assert "positive values" in caplog.text
    assert math.isnan(decay_rate([]))
    assert math.isnan(decay_rate([1, 1, 1], return_fit=True)["r2"])  # flat: beta 0, r2 undefined
    assert decay_rate([1, 1, 1]) == 0
    with pytest.raises(ValueError, match="NaN"):
        decay_rate([1.0, float("nan"), 2.0])


# ---------------------------------------------------------------------------------------- graphs


def test_build_graph_merges_repeats_no_self_loops_and_attrs():
    C = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    G = build_graph([[0, 0, 1, 1, 0], [2, 2], [0, 1]], centroids=C)
    assert nx.number_of_selfloops(G) == 0
    assert visitation(G) == {0: 3, 1: 2, 2: 1}
    assert G.edges[0, 1] == {"count": 2, "distance": 5.0}
    assert G.edges[1, 0]["count"] == 1
    assert degree(G) == {0: 2, 1: 2, 2: 0}
    with pytest.raises(ValueError, match="centroids"):
        build_graph([[0, 5]], centroids=C)


def test_paths_from_steps_sorted_and_merged():
    df = pd.DataFrame({"family": "f", "variant": ["RL"] * 5 + ["Base"], "benchmark": "b", "problem": "p",
                       "sample": [1, 1, 1, 0, 0, 0], "step_idx": [2, 1, 0, 1, 0, 0],
                       "node": [3, 3, 3, 1, 2, 9]})
    paths = paths_from_steps(df)
    assert paths == {("f", "Base", "b", "p", 0): [9], ("f", "RL", "b", "p", 0): [2, 1],
                     ("f", "RL", "b", "p", 1): [3]}


def test_degree_visitation_hand_example():
    G = build_graph([[0, 1, 2, 3], [0, 2], [3, 0]])
    assert visitation(G) == {0: 3, 1: 1, 2: 2, 3: 2}
    assert degree(G) == {0: 3, 1: 2, 2: 3, 3: 2}  # 0: out 1,2 in 3; 2: in 1,0 out 3
    assert G.number_of_edges() == 5


def test_sparsify_keeps_k_smallest_out_edges():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(12, 3))
    paths = [rng.integers(0, 12, size=8).tolist() for _ in range(30)]
    G = build_graph(paths, centroids=C)
    H = sparsify_topk(G, 2)
    assert set(H.nodes) == set(G.nodes) and visitation(H) == visitation(G)
    for u in G:
        want = sorted(G.out_edges(u, data="distance"), key=lambda e: (e[2], e[1]))[:2]
        assert sorted(H.out_edges(u)) == sorted((a, b) for a, b, _ in want)
    with pytest.raises(ValueError, match="distance"):
        sparsify_topk(build_graph(paths), 2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_betweenness_matches_networkx(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    G = nx.gnp_random_graph(n, float(rng.uniform(0.02, 0.2)), seed=seed, directed=True)
    G = nx.relabel_nodes(G, {i: int(i * 7 + 3) for i in G})  # non-contiguous labels
    for u, v in G.edges:
        G.edges[u, v]["distance"] = float(rng.uniform(0.1, 2.0))
    ref = nx.betweenness_centrality(G, normalized=True)
    for backend in ("auto", "rustworkx"):
        got = betweenness(G, backend=backend)
        assert got.keys() == ref.keys()
        assert max(abs(got[k] - ref[k]) for k in ref) < 1e-9
    ref_w = nx.betweenness_centrality(G, normalized=True, weight="distance")
    got_w = betweenness(G, weight="distance")
    assert max(abs(got_w[k] - ref_w[k]) for k in ref_w) < 1e-9


def test_betweenness_small_graphs():
    for G in (nx.DiGraph(), nx.DiGraph([(0, 1)]), nx.path_graph(3, create_using=nx.DiGraph)):
        assert betweenness(G, backend="rustworkx") == nx.betweenness_centrality(G, normalized=True)
    with pytest.raises(ValueError, match="unweighted"):
        betweenness(nx.DiGraph([(0, 1, {"distance": 1.0})]), weight="distance", backend="rustworkx")


# ---------------------------------------------------------------------------------------- tables


def _toy_samples(n_samples=8, seed=0):
    rng = np.random.default_rng(seed)
    sents = [f"Move from place{i} to place{(i * 5 + 1) % 9} now." for i in range(9)]
    rows = []
    for v_i, variant in enumerate(VARIANTS):
        pool = sents[: 3 + 2 * v_i]  # variants use different parts of the step space
        for problem in ("p0", "p1", "p2"):
            for s in range(n_samples):
                picks = rng.integers(0, len(pool), size=int(rng.integers(3, 9)))
                rows.append(dict(family="toy", variant=variant, benchmark="bA" if problem != "p2" else "bB",
                                 problem=problem, sample=s, text=" ".join(pool[i] for i in picks),
                                 correct=bool(rng.integers(0, 2))))
    return pd.DataFrame(rows)


def step_table(samples, embedder, cache_dir, k, seed=0):
    """The whole step table at once, each group clustered as stage ``graphs`` clusters it:
    ``(steps, centroids by group key)``."""
    parts, centroids = [], {}
    for group in embedded_groups(samples, None, embedder, cache_dir, progress=False):
        steps, C, _ = cluster_group(group, k=k, seed=seed)
        parts.append(steps)
        centroids[group.key] = C
    return pd.concat(parts, ignore_index=True), centroids


def decay_table(steps_df, centroids, sparsify_k=None):
    """The decay rates of a whole step table's graphs."""
    return decay_table_from_graphs(graphs_from_steps(steps_df, centroids, sparsify_k))


def test_step_graphs_identical_across_seeded_runs(tmp_path):
    emb = get_embedder("tfidf-char", dim=8)
    runs = []
    for _ in range(2):
        df, C = step_table(_toy_samples(), emb, tmp_path, k=6, seed=3)
        dec = decay_table(df, C)
        runs.append((df, C, dec))
    pd.testing.assert_frame_equal(runs[0][2], runs[1][2])
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0])
    dec = runs[0][2]
    assert set(dec["metric"]) == {"frequency", "degree", "betweenness"}
    assert len(dec) == 4 * 3 * 3
    assert (dec["n_nodes"] <= dec["n_graph_nodes"]).all()
    sp = decay_table(runs[0][0], runs[0][1], sparsify_k=1)
    assert (sp["n_edges"] <= sp["n_graph_nodes"]).all()
    with pytest.raises(ValueError, match="centroids"):
        decay_table(runs[0][0], None, sparsify_k=2)


def _synthetic_decay(betas: dict, n_problems=5, nan_for=None):
    rows = []
    for metric in ("frequency", "degree"):
        for variant, base in betas.items():
            for p in range(n_problems):
                beta = base * (1 + 0.1 * (p - n_problems // 2))  # median = base
                if nan_for and (variant, p) == nan_for:
                    beta = math.nan
                rows.append(dict(family="f", variant=variant, benchmark="b1" if p < 3 else "b2", problem=f"q{p}",
                                 metric=metric, beta=beta, alpha=0.0, r2=1.0, n_nodes=10 + p,
                                 n_graph_nodes=20, n_edges=30))
    return pd.DataFrame(rows)


def test_decay_ratios_known_medians():
    dec = _synthetic_decay({"Base": 0.02, "RL": 0.05, "SFT": 0.01, "SFT+RL": 0.03})
    r = decay_ratios(dec, n_boot=200, seed=0)
    assert len(r) == 2 * 3 and set(r["benchmark"]) == {"all"}
    got = r.set_index(["metric", "comparison"])
    for metric in ("frequency", "degree"):
        assert got.loc[(metric, "RL/Base"), "ratio"] == pytest.approx(2.5)
        assert got.loc[(metric, "SFT/Base"), "ratio"] == pytest.approx(0.5)
        assert got.loc[(metric, "SFT+RL/SFT"), "ratio"] == pytest.approx(3.0)
    assert r["agrees"].tolist() == ["yes"] * 6  # every interval excludes 1 on the paper's side
    assert (r["ci_low"] <= r["ratio"] + 1e-12).all() and (r["ratio"] <= r["ci_high"] + 1e-12).all()
    assert got.loc[("degree", "RL/Base"), "paper_value"] == 2.5
    assert got.loc[("degree", "SFT/Base"), "paper_value"] == pytest.approx(1 / 3)
    assert math.isnan(got.loc[("degree", "SFT+RL/SFT"), "paper_value"])
    assert list(got.loc["degree", "expected_direction"]) == ["up", "down", "up"]
    assert (r["n_nodes_after"] == 12).all() and (r["n_problems"] == 5).all()
    # deterministic given the seed (noisy betas, so the bootstrap has something to resample)
    big = _synthetic_decay({"Base": 0.02, "RL": 0.05, "SFT": 0.01, "SFT+RL": 0.03}, n_problems=40)
    noisy = big.assign(beta=big["beta"].abs() * np.random.default_rng(0).uniform(0.5, 1.5, len(big)))
    pd.testing.assert_frame_equal(decay_ratios(noisy, n_boot=200, seed=0), decay_ratios(noisy, n_boot=200, seed=0))
    assert not decay_ratios(noisy, n_boot=200, seed=0).equals(decay_ratios(noisy, n_boot=200, seed=1))


def test_decay_ratios_paired_by_benchmark_and_disagreement():
    dec = _synthetic_decay({"Base": 0.02, "RL": 0.01, "SFT": 0.04, "SFT+RL": 0.02}, nan_for=("RL", 0))
    r = decay_ratios(dec, n_boot=0, by_benchmark=True)
    assert set(r["benchmark"]) == {"all", "b1", "b2"}
    row = r[(r.benchmark == "all") & (r.metric == "degree") & (r.comparison == "RL/Base")].iloc[0]
    assert row["n_problems"] == 4  # the problem with a NaN beta is dropped from both sides
    assert row["ratio"] == pytest.approx(np.median(0.01 * np.array([0.9, 1.0, 1.1, 1.2])) /
                                         np.median(0.02 * np.array([0.9, 1.0, 1.1, 1.2])))
    assert row["agrees"] == "unclear" and math.isnan(row["ci_low"])  # no bootstrap, no verdict
    booted = decay_ratios(dec, n_boot=200).set_index(["metric", "comparison"])
    assert booted.loc[("degree", "RL/Base"), "agrees"] == "no"  # the interval lies below 1, the paper says up
    assert (booted.xs("SFT/Base", level="comparison")["agrees"] == "no").all()
    g = geomean_ratios(r)
    assert g.set_index("comparison").loc["RL/Base", "ratio_geomean"] == pytest.approx(0.5)
    missing = decay_ratios(dec[dec.variant != "SFT+RL"], n_boot=0)
    assert missing[missing.comparison == "SFT+RL/SFT"]["agrees"].isna().all()
    assert (missing[missing.comparison == "SFT+RL/SFT"]["note"] == "no graphs of SFT+RL").all()
    with pytest.raises(ValueError, match="duplicate"):
        decay_ratios(pd.concat([dec, dec]))


def test_seed_spread(tmp_path):
    spread = seed_spread(_toy_samples(), None, get_embedder("tfidf-char", dim=8), tmp_path, k=5,
                         seeds=(0, 1), progress=False)
    assert sorted(spread["clustering_seed"].unique()) == [0, 1]
    assert len(spread) == 2 * 3 * 3
    s = summarize_seed_spread(spread)
    ok = s.dropna(subset=["ratio_min"])
    assert (s["n_seeds"] == 2).all() and len(ok) > 0 and (ok["ratio_min"] <= ok["ratio_max"]).all()
    again = seed_spread(_toy_samples(), None, get_embedder("tfidf-char", dim=8), tmp_path, k=5,
                        seeds=(0, 1), progress=False)
    pd.testing.assert_frame_equal(spread, again)


# ---------------------------------------------------------------------------------------- streaming


class _FakeEmbedder:
    """Deterministic, not corpus-dependent: the same text gets the same row in any call."""

    name = "fake-hash"
    normalize = False
    batch_size = 8

    def __init__(self):
        self.n_encoded = 0

    def encode(self, texts):
        self.n_encoded += len(texts)
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=6)
                         for t in texts]).astype(np.float32)


def _whole_table_outputs(samples, emb, cache, k, seed, sparsify_k=None):
    """What notebook 40 wrote before streaming: the whole table, then graphs, tables and decay."""
    df, C = step_table(samples, emb, cache, k=k, seed=seed)
    graphs = graphs_from_steps(df, C, sparsify_k=sparsify_k)
    nodes, edges = graph_tables(graphs)
    return {"steps": df, "nodes": nodes, "edges": edges, "node_metrics": node_metric_table(graphs),
            "decay": decay_table(df, C, sparsify_k=sparsify_k)}


def _sorted(df):
    return df.sort_values(list(df.columns[:-1])).reset_index(drop=True)


@pytest.mark.parametrize("sparsify_k", [None, 2])
def test_streaming_equals_whole_table(tmp_path, sparsify_k):
    samples = _toy_samples()
    emb = _FakeEmbedder()
    want = _whole_table_outputs(samples, emb, tmp_path / "cache", k=5, seed=3, sparsify_k=sparsify_k)
    res = step_analysis(samples, None, emb, tmp_path / "cache", k=5, seed=3, sparsify_k=sparsify_k,
                        out_dir=tmp_path / "out", progress=False)
    pd.testing.assert_frame_equal(res.decay, want["decay"])  # same rows, same order
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "decay_rates.csv"),
                                  want["decay"].astype({"problem": object}), check_dtype=False)
    for name in ("steps", "nodes", "edges", "node_metrics"):
        got = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
        assert list(got.columns) == list(want[name].columns), name
        assert dict(got.dtypes) == dict(want[name].dtypes), name
        key = ["family", "variant", "benchmark", "problem", "sample", "step_idx"] if name == "steps" else None
        if key:
            a, b = (d.sort_values(key).reset_index(drop=True) for d in (got, want[name]))
        else:
            a, b = _sorted(got), _sorted(want[name])
        pd.testing.assert_frame_equal(a, b, check_exact=name != "node_metrics")
    cl = pd.read_csv(tmp_path / "out" / "clustering.csv")
    assert list(cl.columns) == CLUSTERING_COLUMNS and len(cl) == 3
    assert (cl["method"] == "kmeans").all() and (cl["k_used"] == 5).all()
    assert (cl["n_distinct"] <= cl["n_steps"]).all() and not any(c.startswith("seconds") for c in cl.columns)
    tm = pd.read_csv(tmp_path / "out" / ".timings.csv")  # what changes from run to run, hidden
    assert list(tm.columns) == SG.TIMING_COLUMNS and (tm["n_encoded"] == 0).all() and (tm["seconds"] > 0).all()


def test_streaming_rerun_encodes_nothing_and_keeps_one_group(tmp_path):
    import weakref

    samples = _toy_samples()
    emb = _FakeEmbedder()
    first = step_analysis(samples, None, emb, tmp_path / "c", k=4, out_dir=tmp_path / "o", progress=False)
    assert first.timings["n_encoded"].sum() == emb.n_encoded > 0
    clustering_csv = (tmp_path / "o" / "clustering.csv").read_bytes()
    E._CACHES.clear()
    emb2 = _FakeEmbedder()
    again = step_analysis(samples, None, emb2, tmp_path / "c", k=4, progress=False)
    assert emb2.n_encoded == 0 and (again.timings["n_encoded"] == 0).all()
    pd.testing.assert_frame_equal(again.decay, first.decay)
    step_analysis(samples, None, emb2, tmp_path / "c", k=4, out_dir=tmp_path / "o", progress=False)
    assert (tmp_path / "o" / "clustering.csv").read_bytes() == clustering_csv  # a rerun does not change it
    # one group in memory at a time: a group's embeddings are freed once the next is produced
    refs = []
    for group in embedded_groups(samples, None, emb2, tmp_path / "c", progress=False):
        assert group.embeddings.dtype == np.float32
        assert all(r() is None for r in refs)
        refs.append(weakref.ref(group.embeddings))
        del group
    assert len(refs) == 3


def test_parquet_stream_is_atomic(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [9]}).to_parquet(path)
    with pytest.raises(RuntimeError):
        with ParquetStream(path, ["a"]) as w:
            w.write(pd.DataFrame({"a": [1, 2]}))
            raise RuntimeError("killed")
    assert pd.read_parquet(path)["a"].tolist() == [9] and len(list(tmp_path.iterdir())) == 1
    with ParquetStream(path, ["a"]):
        pass  # no rows: an empty table with the columns
    assert list(pd.read_parquet(path).columns) == ["a"] and len(pd.read_parquet(path)) == 0


def test_seed_spread_reuses_the_main_seed(tmp_path, monkeypatch):
    samples = _toy_samples()
    emb = get_embedder("tfidf-char", dim=8)
    main = step_analysis(samples, None, emb, tmp_path, k=5, seed=0, progress=False)
    full = seed_spread(samples, None, emb, tmp_path, k=5, seeds=(0, 1), progress=False)
    seen = []
    real = SG.cluster_group

    def counting(group, k, seed=0, **kw):
        seen.append(seed)
        return real(group, k, seed=seed, **kw)

    monkeypatch.setattr(SG, "cluster_group", counting)
    reused = seed_spread(samples, None, emb, tmp_path, k=5, seeds=(0, 1), progress=False, reuse={0: main.decay})
    assert seen == [1, 1, 1]  # seed 1 once per group; seed 0 never clustered again
    pd.testing.assert_frame_equal(reused, full)
    seen.clear()
    only0 = seed_spread(samples, None, emb, tmp_path, k=5, seeds=(0,), progress=False, reuse={0: main.decay})
    assert seen == [] and set(only0["clustering_seed"]) == {0}


# ---------------------------------------------------------------------------------------- ablations


def test_topk_from_saved_edges_equals_recomputed(tmp_path):
    samples = _toy_samples()
    emb = _FakeEmbedder()
    step_analysis(samples, None, emb, tmp_path / "c", k=6, seed=1, out_dir=tmp_path / "g", progress=False)
    df, C = step_table(samples, emb, tmp_path / "c", k=6, seed=1)
    for k in (1, 2, 50):
        got, outdeg = topk_decay_from_saved(tmp_path / "g", k, progress=False)
        want = decay_table(df, C, sparsify_k=k)
        pd.testing.assert_frame_equal(got, want)
        assert len(outdeg) == 12 and (outdeg["n_nodes_over_k"] >= 0).all()
    assert (outdeg["n_nodes_over_k"] == 0).all()  # k = 50: no node loses an edge
    unsparse = decay_table(df, C)
    pd.testing.assert_frame_equal(topk_decay_from_saved(tmp_path / "g", 50, progress=False)[0], unsparse)


def test_na_statuses(tmp_path):
    samples = _toy_samples()
    base = {"embedder": "tfidf-char", "normalize": False, "k": 5, "metric": "euclidean", "sparsify_k": None,
            "scope": "problem"}
    emb = get_embedder("tfidf-char")
    main = step_analysis(samples, None, emb, tmp_path / "c", k=5, out_dir=tmp_path / "g", progress=False)
    default = decay_ratios(main.decay, n_boot=20)
    kw = dict(samples=samples, segment_kwargs=None, cache_dir=tmp_path / "c", graph_dir=tmp_path / "g",
              default_ratios=default, n_boot=20, progress=False)
    # top-k: frequency is n/a, the other metrics computed (some node has more than 1 out-edge)
    rat, dec, how = ablation_ratios(ablation_settings(base, {"sparsify_k": 1}), base, **kw)
    assert "saved graph edges" in how and dec is not None
    freq = rat["metric"] == "frequency"
    assert (rat.loc[freq, "status"] == NA_TOPK_FREQUENCY).all() and rat.loc[freq, "ratio"].isna().all()
    assert rat.loc[freq, "agrees"].isna().all() and (rat.loc[~freq, "status"] == STATUS_COMPUTED).all()
    assert rat.loc[~freq, "ratio"].notna().any()
    # top-k larger than every out-degree: every row n/a
    rat, _, _ = ablation_ratios(ablation_settings(base, {"sparsify_k": 99}), base, **kw)
    assert rat["status"].str.startswith("n/a").all() and rat["ratio"].isna().all() and rat["agrees"].isna().all()
    assert (rat.loc[rat.metric != "frequency", "status"].str.contains("no node has more than 99")).all()
    # cosine on unit vectors: n/a without computing; on raw tf-idf rows: computed
    unit = {**base, "normalize": True}
    rat, dec, how = ablation_ratios(ablation_settings(unit, {"metric": "cosine"}), unit, **kw)
    assert dec is None and rat["status"].str.contains("cosine K-means equals Euclidean").all()
    assert rat["ratio"].isna().all() and len(rat) == len(default)
    rat, dec, _ = ablation_ratios(ablation_settings(base, {"metric": "cosine"}), base, **kw)
    assert dec is not None and (rat["status"] == STATUS_COMPUTED).all()
    rat, dec, _ = ablation_ratios(ablation_settings(base, {"k_scale": 0.6}), base, **kw)
    assert (rat["status"] == STATUS_COMPUTED).all() and dec is not None
    rat, dec, how = ablation_ratios(ablation_settings(base, {}), base, **kw)
    assert dec is None and rat["status"].str.startswith("n/a").all()
    # the helpers
    assert topk_na_reason(pd.DataFrame({"max_out_degree": [2]}), 2).startswith("n/a")
    with pytest.raises(ValueError, match="n/a"):
        mark_na(default, default["metric"] == "degree", "skipped")
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_settings(base, {"n_clusters": 3})


# ---------------------------------------------------------------------------------------- the stages


def _ctx(tmp_path, stage: str, profile: dict):
    from rlsft import registry as R
    from rlsft.context import Context
    from rlsft.params import build

    spec = R.get(stage)
    params = build(spec.params, (profile.get("stages") or {}).get(stage), f"stages.{stage}")
    return Context(name=stage, profile=profile, params=params, root=tmp_path / profile["name"])


def test_guard_raises_k_until_no_variant_is_saturated(tmp_path):
    """At a saturating K the graphs stage clusters again at the next K of the rule's grid until no
    variant's median visited fraction is above 0.8; k_choice.json says which K and why, the tables
    are those of the K kept, and the ablations start from that K."""
    from rlsft.controls import K_GRID
    from rlsft.stages import ablations

    samples = _toy_samples()
    profile = {"name": "toy", "seed": 2, "device": "cpu",
               "stages": {"graphs": {"embedder": "tfidf-char", "k": 5, "spread_seeds": [2], "n_boot": 0,
                                     "matched_draws": 0},
                          "ablations": {"ablations": {"K x0.5": {"k_scale": 0.5}}, "n_boot": 0}}}
    (tmp_path / "toy" / "samples").mkdir(parents=True)
    samples.to_parquet(tmp_path / "toy" / "samples" / "all_samples.parquet")
    ctx = _ctx(tmp_path, "graphs", profile)
    out = SG.run(ctx, ctx.params)
    choice = json.loads((ctx.dir / "k_choice.json").read_text())
    tried = [t["k"] for t in choice["tried"]]
    assert tried[0] == 5 and tried[1:] == [g for g in K_GRID if 5 < g <= choice["k"]]
    assert choice["k"] == out["k_choice"]["k"] > 5 and choice["k_profile"] == 5
    assert all(t["saturated"] for t in choice["tried"][:-1]) and not choice["tried"][-1]["saturated"]
    assert choice["reason"].startswith("raised by the guard")
    assert not out["visited_summary"]["saturated"].any()
    assert (out["visited_summary"]["median_visited_fraction"] <= 0.8).all()
    assert (out["clustering"]["k_asked"] == choice["k"]).all()
    want = step_analysis(samples, SG.segment_settings(ctx.params), get_embedder("tfidf-char"), tmp_path / "c2",
                         k=choice["k"], seed=2, progress=False)
    pd.testing.assert_frame_equal(out["decay"], want.decay)
    assert SG.used_k(ctx.dir, 5) == choice["k"] and SG.used_k(tmp_path, 5) == 5
    abl = ablations.run(_ctx(tmp_path, "ablations", profile), ablations.Params(ablations={"K x0.5": {"k_scale": 0.5}},
                                                                                n_boot=0))
    assert abl["base"]["k"] == choice["k"]

    off = {**profile, "name": "toy-off", "stages": {"graphs": {**profile["stages"]["graphs"], "k_guard": False}}}
    (tmp_path / "toy-off" / "samples").mkdir(parents=True)
    samples.to_parquet(tmp_path / "toy-off" / "samples" / "all_samples.parquet")
    octx = _ctx(tmp_path, "graphs", off)
    kept = SG.run(octx, octx.params)["k_choice"]
    assert kept["k"] == 5 and [t["k"] for t in kept["tried"]] == [5] and "k_guard off" in kept["reason"]


def test_stages_run_end_to_end(tmp_path):
    """graphs -> fig_decay -> ablations -> fig_ablations on the toy corpus, as the notebooks run them;
    the graphs stage's tables equal the method calls notebook 40 made, and the ablations read stage
    graphs' parameters from the profile."""
    from rlsft.stages import ablations, fig_ablations, fig_decay

    samples = _toy_samples()
    profile = {"name": "toy", "seed": 2, "device": "cpu",
               "stages": {"graphs": {"embedder": "tfidf-char", "k": 5, "spread_seeds": [2, 0], "n_boot": 20,
                                     "k_guard": False},
                          "ablations": {"ablations": {"K x0.5": {"k_scale": 0.5}, "top-2 edges": {"sparsify_k": 2},
                                                      "same": {"k_scale": 1.0}}, "n_boot": 20}}}
    (tmp_path / "toy" / "samples").mkdir(parents=True)
    samples.to_parquet(tmp_path / "toy" / "samples" / "all_samples.parquet")

    ctx = _ctx(tmp_path, "graphs", profile)
    out = SG.run(ctx, ctx.params)
    for name in ("steps.parquet", "nodes.parquet", "edges.parquet", "node_metrics.parquet", "decay_rates.csv",
                 "clustering.csv", "decay_ratios.csv", "seed_spread.csv", "decay_geomeans.csv", "matched_decay.csv",
                 "visited.csv", "visited_summary.csv", ".timings.csv"):
        assert (ctx.dir / name).is_file(), name
    seg = SG.segment_settings(ctx.params)
    want = step_analysis(samples, seg, get_embedder("tfidf-char"), tmp_path / "other-cache", k=5, seed=2,
                         progress=False, matched_draws=5)
    pd.testing.assert_frame_equal(out["decay"], want.decay)
    pd.testing.assert_frame_equal(out["ratios"], decay_ratios(want.decay, n_boot=20, seed=2, matched=want.matched))
    assert out["ratios"]["matched_ratio"].notna().any() and out["ratios"]["node_ratio"].notna().any()
    assert len(out["geomeans"]) == 3 and out["note"] == ""
    assert list(out["visited_summary"]["variant"]) == list(VARIANTS)
    assert out["spread"]["clustering_seed"].unique().tolist() == [2, 0]
    saved = pd.read_csv(ctx.dir / "seed_spread.csv")
    assert list(saved.columns) == list(out["spread"].columns)
    assert np.allclose(saved["ratio"], out["spread"]["ratio"], equal_nan=True)
    assert (out["spread_summary"]["n_seeds"] == 2).all()
    assert list((tmp_path / "toy" / ".cache" / "embeddings").iterdir())

    fctx = _ctx(tmp_path, "fig_decay", profile)
    fig = fig_decay.run(fctx, fig_decay.Params(example=4))
    assert fig["example"] == ("toy", "bA", "p1") and fig["variants"] == tuple(VARIANTS)
    assert sorted(k[1] for k in fig["example_graphs"]) == sorted(VARIANTS)
    head = pd.read_csv(fctx.figures / "headline_decay_ratios.csv")
    assert len(head) == 9 and {"seed_min", "seed_max", "node_ratio", "shape_ratio", "matched_ratio"} <= set(head.columns)
    assert len(pd.read_csv(fctx.figures / "headline_decay_geomeans.csv")) == 3
    assert len(pd.read_csv(fctx.figures / "headline_visited.csv")) == 4 and fig["note"] == ""

    actx = _ctx(tmp_path, "ablations", profile)
    abl = ablations.run(actx, actx.params)
    assert abl["base"]["k"] == 5 and abl["base"]["embedder"] == "tfidf-char"
    settings = __import__("json").loads((actx.dir / "k-x0-5" / "settings.json").read_text())
    assert settings["k"] == 2 and settings["computed_as"].startswith("re-clustered")
    summary = pd.read_csv(actx.dir / "summary.csv")
    assert list(dict.fromkeys(summary["ablation"])) == ["default", "K x0.5", "top-2 edges", "same"]
    assert summary.loc[summary["ablation"] == "same", "status"].str.startswith("n/a").all()
    assert not (actx.dir / "same" / "decay_rates.csv").exists()
    top = summary[(summary["ablation"] == "top-2 edges") & (summary["metric"] == "frequency")]
    assert (top["status"] == NA_TOPK_FREQUENCY).all()
    assert abl["topk_share"]["k"].tolist() == [2] and abl["embedder_check"]["unit_vectors"] is False
    assert abl["runs"]["ablation"].tolist() == ["K x0.5", "top-2 edges", "same"]

    gctx = _ctx(tmp_path, "fig_ablations", profile)
    agree = fig_ablations.run(gctx, fig_ablations.Params())
    table = pd.read_csv(gctx.figures / "fig32_33_agreement.csv", header=[0, 1])
    assert len(table) == 4 and agree["ablations"] == ["default", "K x0.5", "top-2 edges", "same"]
    assert (agree["agreement"].loc["same"] == "n/a").all()
    assert (agree["agreement"].loc["top-2 edges"].xs("frequency", level="metric") == "n/a").all()
