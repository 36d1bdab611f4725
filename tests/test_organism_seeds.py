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


@pytest.fixture(scope="module")
def seeds():
    spec = importlib.util.spec_from_file_location("organism_seeds", ROOT / "benchmarks" / "organism_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["organism_seeds"] = mod
    spec.loader.exec_module(mod)
    return mod


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
