"""Tests of the decay-rate ratios that explain themselves (issue 16): the node-count and shape parts
of a ratio, the node-count-matched control, the saturation guard and the K rule, the tri-state
``agrees``, the geometric means, the sweep over M and K, and the step-level stages surviving a run
with zero correct samples or no steps at all."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from rlsft import VARIANTS
from rlsft.context import Context
from rlsft.embedders import get_embedder
from rlsft.controls import (
    matched_decay,
    matched_prefix,
    rule_k,
    subsample_paths,
    visited_summary,
    visited_table,
)
from rlsft.graphs import (
    decay_rate,
    graphs_from_paths,
    decay_table_from_graphs,
)
from rlsft.ratios import (
    decay_geomeans,
    decay_ratios,
    geomean_ratios,
)
from rlsft.headline import ci_agreement, direction_verdict, magnitude_verdict, ratio_headline
from rlsft.params import build
from rlsft.stages import ablations, fig_ablations, fig_decay, fig_sweep, sweep
from rlsft.stages import graphs as SG
from rlsft.stages.graphs import step_analysis

from test_graphs import _toy_samples

STAGES = {"graphs": SG, "fig_decay": fig_decay, "ablations": ablations, "fig_ablations": fig_ablations,
          "sweep": sweep, "fig_sweep": fig_sweep}


def _ctx(root, stage: str, profile: dict) -> Context:
    params = build(STAGES[stage].Params, (profile.get("stages") or {}).get(stage), f"stages.{stage}")
    return Context(name=stage, profile=profile, params=params, root=root / profile["name"])


# ------------------------------------------------------------------- node-count part and shape part


def _exp_decay(shape: float, n: int) -> np.ndarray:
    """n node values decaying as 10^(-shape R / n): the same shape for any n, beta = shape / n."""
    r = np.arange(1, n + 1)
    return 10 ** (2 - shape * r / n)


def _same_shape_decay(n_problems=7):
    """Base visits twice as many nodes as RL, with the same shape of decay on every problem."""
    rows = []
    for p in range(n_problems):
        shape = 1.0 + 0.3 * p
        n_rl = 8 + 2 * p
        for variant, n in (("Base", 2 * n_rl), ("RL", n_rl)):
            for metric in ("frequency", "degree"):
                fit = decay_rate(_exp_decay(shape, n), return_fit=True)
                rows.append(dict(family="f", variant=variant, benchmark="b", problem=f"q{p}", metric=metric,
                                 beta=fit["beta"], n_nodes=fit["n"]))
    return pd.DataFrame(rows)


def test_same_shape_other_node_count_is_all_node_count():
    """Known answer: same shape, half the nodes -> shape part 1, raw ratio = node-count part = 2."""
    d = _same_shape_decay()
    r = decay_ratios(d, n_boot=200, seed=0, comparisons=[("RL", "Base")])
    assert len(r) == 2
    for _, row in r.iterrows():
        assert row["ratio"] == pytest.approx(2.0, rel=1e-9)
        assert row["node_ratio"] == pytest.approx(2.0, rel=1e-12)
        assert row["shape_ratio"] == pytest.approx(1.0, rel=1e-9)
        assert row["parts_product"] == pytest.approx(row["ratio"], rel=1e-9)
        assert row["shape_ci_low"] == pytest.approx(1.0, rel=1e-9) and row["shape_ci_high"] == pytest.approx(1.0, rel=1e-9)
        assert row["ci_low"] <= 2.0 + 1e-9 <= row["ci_high"] + 2e-9
        assert row["agrees"] == "yes"  # RL steeper, as the paper says; here only by node count
    g = decay_geomeans(d, n_boot=200, seed=0, comparisons=[("RL", "Base")]).iloc[0]
    assert g["ratio"] == pytest.approx(2.0) and g["node_ratio"] == pytest.approx(2.0)
    assert g["shape_ratio"] == pytest.approx(1.0) and g["agrees"] == "yes" and g["shape_agrees"] == "unclear"
    # the geometric mean's point values are geomean_ratios of the per-metric rows
    assert g["ratio"] == pytest.approx(geomean_ratios(r).iloc[0]["ratio_geomean"])


def test_shape_part_sees_a_steeper_shape_at_equal_node_count():
    rows = []
    for p in range(5):
        for variant, shape in (("Base", 1.0), ("RL", 3.0)):
            fit = decay_rate(_exp_decay(shape, 12 + p), return_fit=True)
            rows.append(dict(family="f", variant=variant, benchmark="b", problem=p, metric="degree",
                             beta=fit["beta"], n_nodes=fit["n"]))
    row = decay_ratios(pd.DataFrame(rows), n_boot=100, comparisons=[("RL", "Base")]).iloc[0]
    assert row["node_ratio"] == 1.0 and row["shape_ratio"] == pytest.approx(3.0) and row["ratio"] == pytest.approx(3.0)


def test_bootstrap_of_the_parts_shares_the_raw_ratios_draws():
    """The raw ratio's interval is what it was before the parts existed (same stream, same draws)."""
    rng = np.random.default_rng(3)
    d = _same_shape_decay(20)
    d = d.assign(beta=d["beta"] * rng.uniform(0.5, 1.5, len(d)))
    r = decay_ratios(d, n_boot=300, seed=4, comparisons=[("RL", "Base")])
    row = r[r.metric == "degree"].iloc[0]
    from rlsft.ratios import _key_seed

    s = d[d.metric == "degree"].assign(problem=lambda x: x["problem"].astype(str))
    w = s.set_index(["problem", "variant"])["beta"].unstack("variant").sort_index()
    a, b = w["RL"].to_numpy(), w["Base"].to_numpy()
    idx = _key_seed(4, "f", "all", "degree", "RL", "Base").integers(0, a.size, size=(300, a.size))
    boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))


# --------------------------------------------------------------------------- the matched control


def _block_paths(n_problems=6, m=8):
    """Every response walks one block of 5 nodes with a hub; Base's 8 responses use 8 blocks (40
    nodes), RL's use 4 blocks twice each (20 nodes): the graphs differ only in node count."""
    paths = {}
    for p in range(n_problems):
        walk = [0, 1, 0, 2, 0, 3, 1, 4] if p % 2 else [0, 1, 2, 0, 3, 0, 4, 1]
        for s in range(m):
            for variant, block in (("Base", s), ("RL", s // 2)):
                paths[("f", variant, "b", f"q{p}", s)] = [5 * block + x for x in walk]
    return paths


def test_matched_control_of_variants_that_differ_only_in_node_count():
    paths = _block_paths()
    decay = decay_table_from_graphs(graphs_from_paths(paths))
    m = matched_decay(paths, comparisons=[("RL", "Base")], draws=5, seed=1)
    assert (m["matched_variant"] == "before").all() and (m["nodes_before"] == 40).all() and (m["nodes_after"] == 20).all()
    assert (m["nodes_matched"] == 20).all() and (m["responses_matched"] == 4).all() and (m["responses_total"] == 8).all()
    r = decay_ratios(decay, n_boot=200, seed=0, comparisons=[("RL", "Base")], matched=m).set_index("metric")
    for metric in ("frequency", "degree", "betweenness"):
        row = r.loc[metric]
        assert row["node_ratio"] == pytest.approx(2.0)
        assert row["ratio"] > 1.5  # raw beta: RL looks much steeper ...
        assert row["matched_ratio"] == pytest.approx(1.0, abs=1e-9), metric  # ... only because it visits fewer nodes
        assert row["matched_n_problems"] == 6 and row["matched_agrees"] == "unclear"
    # the draws are seeded per problem and draw: the same table again, another seed another order
    pd.testing.assert_frame_equal(m, matched_decay(paths, comparisons=[("RL", "Base")], draws=5, seed=1))


def test_matched_prefix_and_equal_node_counts():
    rng = np.random.default_rng(0)
    prefix = matched_prefix([[0, 1], [0, 1], [2, 3], [4, 5]], 4, rng)
    assert len({n for p in prefix for n in p}) >= 4
    assert matched_prefix([[0], [1]], 10, rng) != []  # never reaches the target: all responses
    same = {("f", v, "b", "q", s): [s, s + 1, s + 2] for v in ("Base", "RL") for s in range(3)}
    m = matched_decay(same, comparisons=[("RL", "Base")], draws=2)
    assert (m["matched_variant"] == "neither").all() and m["nodes_matched"].isna().all()
    assert (m["beta_after"].fillna(-1) == m["beta_before"].fillna(-1)).all()
    with pytest.raises(ValueError, match="draws"):
        matched_decay(same, draws=0)


def test_subsample_paths_is_nested_and_seeded():
    paths = _block_paths(2)
    s4, s2 = subsample_paths(paths, 4, seed=3), subsample_paths(paths, 2, seed=3)
    assert set(s2) <= set(s4) and len(s4) == 2 * 2 * 4 and len(s2) == 2 * 2 * 2
    assert set(subsample_paths(paths, 99)) == set(paths) and subsample_paths(paths, 4, seed=4) != s4


# ------------------------------------------------------------------------ saturation and the K rule


def _visited_inputs(frac_base: float, frac_rl: float, k: int = 40):
    rows, crows = [], []
    for p in range(5):
        crows.append(dict(family="f", benchmark="b", problem=f"q{p}", k_used=k))
        for v, frac in (("Base", frac_base), ("RL", frac_rl)):
            rows.append(dict(family="f", variant=v, benchmark="b", problem=f"q{p}", metric="degree",
                             n_graph_nodes=int(round(frac * k))))
    return pd.DataFrame(rows), pd.DataFrame(crows)


def test_saturation_warning(caplog):
    decay, clustering = _visited_inputs(0.95, 0.5)
    with caplog.at_level(logging.WARNING, logger="rlsft.stages.graphs"):
        visited, summary, lines = SG.saturation(decay, clustering)
    assert visited["visited_fraction"].max() == pytest.approx(0.95)
    assert summary.set_index("variant")["saturated"].to_dict() == {"Base": True, "RL": False}
    assert len(lines) == 1 and lines[0].startswith("f/Base") and "38 of 40" in lines[0]
    assert "saturated at K: f/Base" in caplog.text and "f/RL" not in caplog.text
    caplog.clear()
    decay, clustering = _visited_inputs(0.8, 0.5)  # at the threshold: not saturated
    with caplog.at_level(logging.WARNING, logger="rlsft.stages.graphs"):
        assert SG.saturation(decay, clustering)[2] == []
    assert "saturated" not in caplog.text


def test_visited_table_scope_benchmark_and_rule_k():
    decay, clustering = _visited_inputs(0.5, 0.25)
    clustering = clustering.iloc[:1].assign(problem=np.nan)  # scope "benchmark": one group per benchmark
    v = visited_table(decay, clustering)
    assert (v["k_used"] == 40).all() and len(v) == 10
    by_k = pd.concat([visited_summary(visited_table(*_visited_inputs(fb, fr, k))).assign(k=k)
                      for k, fb, fr in ((20, 1.0, 0.9), (40, 0.85, 0.5), (80, 0.6, 0.3), (160, 0.4, 0.2))])
    assert rule_k(by_k) == 80 and rule_k(by_k, threshold=0.3) is None and rule_k(by_k.iloc[:0]) is None


# ----------------------------------------------------------------------------------- tri-state agrees


def test_tri_state_agrees_everywhere():
    assert [ci_agreement(2.0, lo, hi, "up") for lo, hi in ((1.2, 3), (0.8, 3), (0.4, 0.9))] == ["yes", "unclear", "no"]
    assert [ci_agreement(0.5, lo, hi, "down") for lo, hi in ((0.3, 0.7), (0.3, 1.2), (1.1, 1.5))] == ["yes", "unclear", "no"]
    assert ci_agreement(float("nan"), 1, 2, "up") is None and ci_agreement(2.0, None, None, "up") == "unclear"
    assert ci_agreement(2.0, 1.0, 3.0, "up") == "unclear"  # an interval that touches 1 holds 1
    # decay ratios: an interval spanning 1 is "unclear", never agreement
    rng = np.random.default_rng(0)
    rows = [dict(family="f", variant=v, benchmark="b", problem=p, metric="degree", beta=rng.uniform(0.5, 1.5),
                 n_nodes=10) for p in range(30) for v in ("Base", "RL")]
    r = decay_ratios(pd.DataFrame(rows), n_boot=300, comparisons=[("RL", "Base")]).iloc[0]
    assert r["ci_low"] < 1 < r["ci_high"] and r["agrees"] == "unclear"
    # the unique-trajectory ratios of rlsft.trajectories use the same rule
    from rlsft.trajectories import unique_ratios

    t = pd.DataFrame([dict(family="f", variant=v, benchmark="b", problem=p, unique_correct=3,
                           unique_incorrect=int(rng.integers(2, 6))) for p in range(30) for v in ("Base", "RL")])
    u = unique_ratios(t, n_boot=300, comparisons=[("RL", "Base")]).iloc[0]
    assert u["ci_low"] < 1 < u["ci_high"] and u["agrees"] == "unclear"
    # verdicts read the words; ablation n/a rows stay empty; the agreement table says unclear
    assert direction_verdict(pd.Series({"agrees": "unclear", "ci_low": np.nan, "ci_high": np.nan})) == "unclear (no CI)"
    assert fig_ablations.agreement({"na": False, "agrees": "unclear"}) == "unclear"
    na = ablations.mark_na(pd.DataFrame({"ratio": [2.0], "agrees": ["yes"], "shape_ratio": [1.1]}), [True], "n/a: x")
    assert na["agrees"].tolist() == [None] and na["shape_ratio"].isna().all()
    assert magnitude_verdict(1 / 3, 0.2, 0.5) == "yes" and magnitude_verdict(2.5, 1.1, 1.6) == "no"
    h = ratio_headline(pd.DataFrame({"comparison": ["RL/Base"], "ratio": [1.3], "ci_low": [1.1], "ci_high": [1.6],
                                     "agrees": ["yes"], "paper_value": [2.5]}))
    assert h[["direction_as_paper", "magnitude_as_paper"]].values.tolist() == [["yes", "no"]]


# --------------------------------------------------------------------- the stages end to end, and the sweep


def _profile(name: str) -> dict:
    return {"name": name, "seed": 0, "device": "cpu",
            "stages": {"graphs": {"embedder": "tfidf-char", "k": 5, "spread_seeds": [0], "n_boot": 30, "k_guard": False},
                       "ablations": {"ablations": {"K x0.5": {"k_scale": 0.5}, "top-2 edges": {"sparsify_k": 2}},
                                     "n_boot": 30},
                       "sweep": {"n_boot": 30, "k_grid": [2, 4, 8, 12, 16, 32], "k_range": [0.5, 4.0]}}}


def _write_samples(root, profile, samples):
    (root / profile["name"] / "samples").mkdir(parents=True)
    samples.to_parquet(root / profile["name"] / "samples" / "all_samples.parquet")


def test_sweep_over_m_and_k(tmp_path):
    profile = _profile("toy")
    _write_samples(tmp_path, profile, _toy_samples(n_samples=8))
    g = SG.run(_ctx(tmp_path, "graphs", profile), build(SG.Params, profile["stages"]["graphs"], "g"))
    ctx = _ctx(tmp_path, "sweep", profile)
    out = sweep.run(ctx, ctx.params)
    geo = out["geomeans"]
    assert sorted(set(geo.loc[geo.axis == "M", "value"])) == [4, 8]
    assert sorted(set(geo.loc[geo.axis == "K", "value"])) == [4, 5, 8, 12, 16]  # the grid from 2.5 to 20, and K = 5
    assert out["k_rule"]["steps_encoded"] == 0  # the K axis read the embedding cache stage graphs filled
    assert json.loads((ctx.dir / "k_rule.json").read_text())["k_axis"] == [4, 5, 8, 12, 16]
    # the main run is the last M point and the profile's K point
    main = g["ratios"][g["ratios"]["benchmark"] == "all"].reset_index(drop=True)
    for axis, value in (("M", 8), ("K", 5)):
        pt = out["ratios"][(out["ratios"]["axis"] == axis) & (out["ratios"]["value"] == value)].reset_index(drop=True)
        assert np.allclose(pt["ratio"], main["ratio"], equal_nan=True)
        assert np.allclose(pt["shape_ratio"], main["shape_ratio"], equal_nan=True)
    # every other K point is what stage graphs computes at that K (groups K reaches are clustered once
    # and reused for the larger K: the same graphs, k_asked set to each K)
    for k in (4, 8, 12, 16):
        seg = SG.segment_settings(build(SG.Params, profile["stages"]["graphs"], "g"))
        direct = step_analysis(_toy_samples(n_samples=8), seg, get_embedder("tfidf-char"), tmp_path / "direct-cache",
                               k=k, seed=0, progress=False)
        want = decay_ratios(direct.decay, n_boot=30, seed=0)
        want = want[want["benchmark"] == "all"].reset_index(drop=True)
        pt = out["ratios"][(out["ratios"]["axis"] == "K") & (out["ratios"]["value"] == k)].reset_index(drop=True)
        assert np.allclose(pt["ratio"], want["ratio"], equal_nan=True)
        assert np.allclose(pt["ci_low"], want["ci_low"], equal_nan=True)
        v = visited_summary(visited_table(direct.decay, direct.clustering))
        got = out["visited"][(out["visited"]["axis"] == "K") & (out["visited"]["value"] == k)]
        assert got["median_visited_fraction"].tolist() == v["median_visited_fraction"].tolist()
    assert (g["clustering"]["n_distinct"] <= 12).all()  # so K = 12 is identity, and K = 16 reuses it
    vis = out["visited"]
    assert set(vis["variant"]) == set(VARIANTS) and {"median_visited_fraction", "saturated"} <= set(vis.columns)
    on_grid = vis[(vis.axis == "K") & vis["value"].isin([4, 8, 12, 16])].rename(columns={"value": "k"})
    assert out["k_rule"]["k_rule"] == rule_k(on_grid)  # the rule's candidates: grid values only (not K = 5)
    fctx = _ctx(tmp_path, "fig_sweep", profile)
    f = fig_sweep.run(fctx, fctx.params)
    assert (fctx.figures / "fig_sweep_table.csv").is_file() and len(f["table"]) > 0
    assert sweep.m_values(4, 64) == [4, 8, 16, 32, 64]


def _exec_notebook(name: str, results_root, profile: str = "ci") -> dict:
    """Run a notebook's code cells in this process (Agg backend), with the parameters cell's values
    replaced by ``profile`` and ``results_root``."""
    import matplotlib

    matplotlib.use("Agg")
    from rlsft import notebooks as NB
    from rlsft.config import NOTEBOOK_DIR

    nb = NB.read(NOTEBOOK_DIR / name)
    ns = {"display": lambda *a, **k: None}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        exec(compile("".join(cell["source"]), name, "exec"), ns)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            ns.update(profile=profile, results_root=str(results_root))
    import matplotlib.pyplot as plt

    plt.close("all")
    return ns


@pytest.mark.parametrize("text", ["", "Go north now."], ids=["no-steps", "one-step-each"])
def test_stages_survive_zero_correct_samples(tmp_path, text):
    """Zero correct samples, no boxed answer, no (or too few) steps: graphs, fig_decay (stage and
    notebook), ablations, fig_ablations, sweep and fig_sweep finish, with a note instead of numbers."""
    profile = _profile("ci")  # the notebook opens profile "ci"; the tables come from this toy run
    samples = _toy_samples().assign(correct=False, text=text)
    _write_samples(tmp_path, profile, samples)
    g = SG.run(_ctx(tmp_path, "graphs", profile), build(SG.Params, profile["stages"]["graphs"], "g"))
    assert g["note"] and g["ratios"]["ratio"].isna().all()
    f = fig_decay.run(_ctx(tmp_path, "fig_decay", profile), fig_decay.Params())
    assert f["note"] and f["plottable"].empty
    head = pd.read_csv(tmp_path / "ci" / "figures" / "headline_decay_ratios.csv")
    assert head["note"].notna().all() and head["ratio"].isna().all()
    a = ablations.run(_ctx(tmp_path, "ablations", profile), build(ablations.Params, profile["stages"]["ablations"], "a"))
    assert a["note"] == ablations.NOTE_NO_RATIO
    fig_ablations.run(_ctx(tmp_path, "fig_ablations", profile), fig_ablations.Params())
    s = sweep.run(_ctx(tmp_path, "sweep", profile), build(sweep.Params, profile["stages"]["sweep"], "s"))
    assert s["geomeans"].empty or s["geomeans"]["ratio"].isna().all()
    fig_sweep.run(_ctx(tmp_path, "fig_sweep", profile), fig_sweep.Params())
    ns = _exec_notebook("41_fig6_decay.ipynb", tmp_path)  # seaborn on an empty frame used to raise here
    assert ns["NOTE"] == f["note"]
    _exec_notebook("61_fig32_33_ablations.ipynb", tmp_path)
    _exec_notebook("71_fig_sweep.ipynb", tmp_path)
    from rlsft.report import readme_block

    block = readme_block(tmp_path / "ci")
    why = "stage graphs found no steps" if not text else "no problem where both variants have a finite beta"
    assert why in block and "| RL/Base |" not in block  # the note, not a row of empty numbers
