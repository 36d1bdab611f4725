"""benchmarks/organism_seeds.py: spread runs (profiles, in-process stages, the headline table)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from rlsft import config as C

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark(name):
    """The script ``benchmarks/<name>.py`` as a module (registered, so its subprocesses' imports match)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def seeds():
    return _load_benchmark("organism_seeds")


def test_a_run_profile_changes_only_seed_world_and_device(seeds, tmp_path):
    path = seeds.profile_file(tmp_path / "r", 2, 13, "auto", base="ci")
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"description", "extends", "seed", "device", "stages"} and raw["stages"] == {"data": {"world_seed": 2}}
    prof, base = C.load_profile(str(path)), C.load_profile("ci")
    assert (prof["seed"], prof["device"], prof["stages"]["data"]["world_seed"]) == (13, "auto", 2)
    for stage in ("train", "samples", "graphs"):
        assert prof["stages"][stage] == base["stages"][stage]
    with pytest.raises(SystemExit):
        seeds.main(["table", "--runs", "2-13"])  # WORLD:SEED


def test_in_process_run_records_the_stages_like_the_notebooks(seeds, tmp_path):
    """``run`` without Jupyter: the runner's manifest has data, train and samples, and the
    trained table names the device."""
    results = tmp_path / "r"
    assert seeds.main(["run", "--base", "ci", "--runs", "0:1", "--results", str(results), "--device", "auto"]) == 0
    root = results / "ci-w0-s1-auto"
    man = json.loads((root / "manifest.json").read_text())
    assert set(man["stages"]) == {"data", "train", "samples"}
    assert man["stages"]["samples"]["outputs"] and man["profile_path"].endswith("ci-w0-s1-auto.yaml")
    trained = (root / "train" / "trained.csv").read_text().splitlines()
    assert trained[0].split(",")[5] == "device" and all(line.split(",")[5] == "cpu" for line in trained[1:])


def test_headline_table_reads_a_pipeline_run(seeds, ci_pipeline):
    row = seeds.headline(ci_pipeline.root)
    assert row["run"] == "ci" and row["trained on"] == "cpu"
    oks = {k: v for k, v in row.items() if k.startswith("ok:")}
    assert len(oks) == 6 and set(oks.values()) <= {0, 1}
    text = seeds.table([row, dict(row, run="ci again")])
    line = next(x for x in text.splitlines() if x.startswith("| ok: no collapse"))
    assert "| runs where it holds" in text
    assert line.rstrip(" |").endswith(f"{2 * oks['ok: no collapse (pass@1 > 0.05)']} of 2")


def test_base_stop_table_reads_where_the_walks_stop(tmp_path):
    """benchmarks/organism_base_stops.py on a run folder whose Base answers are writer texts of known kinds."""
    import random

    import pandas as pd

    from rlsft import task as T

    stops = _load_benchmark("organism_base_stops")
    world = T.World.generate(n_places=20, out_degree=3, seed=3)
    evals, _ = T.make_splits(world, {"nav-a": {"n": 8, "levels": [3]}}, seed=0)
    problems = evals["nav-a"]
    run = tmp_path / "organism-x"
    (run / "data").mkdir(parents=True)
    (run / "samples").mkdir()
    (run / "data" / "world.json").write_text(json.dumps(T.world_to_json(world)))
    T.problems_frame(problems, "nav-a").to_parquet(run / "data" / "problems.parquet")
    rng, rows = random.Random(0), []
    for p in problems:
        for style in ("habit", "misstate", "misstate", "lost"):
            text = T.base_attempt(world, p, rng, style)
            rows.append({"variant": "Base", "benchmark": "nav-a", "problem": p.id, "sample": len(rows), "text": text,
                         "correct": T.check(world, p, text)[1]})
    pd.DataFrame(rows).to_parquet(run / "samples" / "all_samples.parquet")
    row = stops.stop_table(run).loc[("organism-x", "Base")]
    assert row["pass@1"] == 0.25 and row["stops: goal"] == 0.75 and row["stops: elsewhere"] == 0.25
    assert row["stops: past goal"] == row["stops: short"] == row["claims away from goal"] == 0
    assert abs(row["Route line = walk, of walks at goal"] - 1 / 3) < 1e-9 and row["hops nearer"] < 1
    with pytest.raises(ValueError, match="no samples of variant 'RL'"):
        stops.stop_table(run, ["RL"])
    with pytest.raises(FileNotFoundError, match="all_samples.parquet is missing"):
        (run / "samples" / "all_samples.parquet").unlink()
        stops.stop_table(run)


def test_betweenness_parts_leave_out_one_kind_of_base_answer(tmp_path):
    """benchmarks/organism_betweenness_parts.py on a run whose step nodes are its distinct sentences:
    Base answers of known kinds (misstate, lost), RL answers that state their walks. The first row is
    the ratio of the whole graphs; leaving out the lost walks removes the places only they visit."""
    import random

    import pandas as pd

    from rlsft import graphs as G
    from rlsft import task as T
    from rlsft.ratios import decay_ratios

    parts = _load_benchmark("organism_betweenness_parts")
    world = T.World.generate(n_places=20, out_degree=3, seed=3)
    evals, _ = T.make_splits(world, {"nav-a": {"n": 6, "levels": [3]}}, seed=0)
    run = tmp_path / "organism-y"
    for d in ("data", "samples", "graphs"):
        (run / d).mkdir(parents=True)
    (run / "data" / "world.json").write_text(json.dumps(T.world_to_json(world)))
    T.problems_frame(evals["nav-a"], "nav-a").to_parquet(run / "data" / "problems.parquet")
    rng, rows = random.Random(0), []
    for p in evals["nav-a"]:
        for variant, styles in (("Base", ["misstate"] * 6 + ["lost"] * 4), ("RL", ["habit"] * 6 + ["greedy"] * 4)):
            for i, style in enumerate(styles):
                rows.append({"variant": variant, "benchmark": "nav-a", "problem": p.id, "sample": i,
                             "text": T.base_attempt(world, p, rng, style)})
    samples = pd.DataFrame(rows)
    samples["correct"] = False
    samples.to_parquet(run / "samples" / "all_samples.parquet")
    node_of = {}
    steps = [{"family": "organism", **{k: r[k] for k in ("variant", "benchmark", "problem", "sample")},
              "step_idx": j, "text": line, "node": node_of.setdefault(line, len(node_of)), "correct": False}
             for r in rows for j, line in enumerate(r["text"].splitlines())]
    pd.DataFrame(steps).to_parquet(run / "graphs" / "steps.parquet")

    table = parts.parts_table(run, n_boot=50).loc["organism-y"]
    assert list(table.index) == ["nothing", *parts.KINDS, "24 at random"]
    d = G.decay_table_from_graphs(G.graphs_from_steps(pd.DataFrame(steps)))
    whole = decay_ratios(d, n_boot=50, comparisons=[("RL", "Base")]).set_index("metric").loc["betweenness"]
    assert table.loc["nothing", "β RL/Base betweenness"] == pytest.approx(whole["ratio"])
    assert table.loc["lost", "share of Base's answers"] == pytest.approx(0.4)
    assert table.loc["claims away", "share of Base's answers"] == 0  # misstate and lost never claim away
    assert table.loc["claims away", "Base nodes"] == table.loc["nothing", "Base nodes"]
    assert table.loc["lost", "Base nodes"] < table.loc["nothing", "Base nodes"]
    assert (table["RL nodes"] == table.loc["nothing", "RL nodes"]).all()  # RL's graphs never change
    with pytest.raises(FileNotFoundError, match="steps.parquet is missing"):
        (run / "graphs" / "steps.parquet").unlink()
        parts.parts_table(run)
