"""The runner end to end (``python -m rlsft.runner``) on the ci profile, in a temporary results
folder (``--results``), never in results/.

The pipeline runs once per session (the ``ci_pipeline`` fixture of tests/conftest.py, shared with
tests/test_report.py) and doubles as the resume test: a fresh run is killed (SIGKILL, whole process
group and the notebook kernel) in the middle of the train or samples stage, then rerun to completion. The other tests reuse its results: an immediate
rerun skips everything, --dry-run touches nothing, --only/--from/--figures-only select, --force
reruns, and deleted figures are redrawn. User errors end with exit status 2 and one line, never a
traceback.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from rlsft import config as C
from rlsft import registry as REG
from rlsft.io import sha256_file
from rlsft.params import as_dict

from ci_pipeline import KILL_DURING, STAGE_LINE, run_runner, tail, temp_files_outside_hidden  # tests/ci_pipeline.py

REPO = Path(__file__).resolve().parents[1]
INFOS = list(REG.STAGES)
STAGES = [i.stage for i in INFOS]
FIGURE_STAGES = [i.stage for i in INFOS if i.kind == "figure"]
BY_STAGE = {i.stage: i for i in INFOS}


def stage_events(log: str) -> dict[str, list[str]]:
    """``{stage: ["running", "done in", ...]}`` from the runner's log lines."""
    events: dict[str, list[str]] = {}
    for stage, what in STAGE_LINE.findall(log):
        events.setdefault(stage, []).append(what)
    return events


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def dry_run_plan(text: str) -> list[tuple[str, str, str]]:
    """``[(notebook, kind, verdict)]`` from the ``stages:`` block that --dry-run prints."""
    return re.findall(r"^\s+(\d+_\S+\.ipynb)\s+\[(\w+)\]\s+(.*)$", text, flags=re.M)


# ------------------------------------------------------------------------ the one pipeline run

@pytest.fixture(scope="module")
def pipeline(ci_pipeline):
    """The session's ci run (tests/conftest.py; killed during train or samples, then resumed)."""
    return ci_pipeline


def test_resume_after_kill(pipeline):
    p = pipeline
    assert p.killed_stage in KILL_DURING
    assert p.done_before and p.killed_stage not in p.done_before
    assert set(p.done_before) < set(STAGES[:STAGES.index(p.killed_stage)] + [p.killed_stage])
    assert any(BY_STAGE[p.killed_stage].path.name in s for s in p.stale_after_kill), \
        "the kill should have caught the stage's notebook in flight"

    events = stage_events(p.resumed.out)
    for stage in p.done_before:
        assert events.get(stage) == ["skipped"], f"{stage} was done before the kill: {events.get(stage)}"
    for stage in STAGES:
        if stage not in p.done_before:
            assert events.get(stage) == ["running", "done in"], f"{stage}: {events.get(stage)}"
    assert re.search(rf"stage {p.killed_stage}\s+running \S+ \(never run\)", p.resumed.out)

    man = json.loads((p.root / "manifest.json").read_text())
    assert sorted(man["stages"]) == sorted(STAGES)
    assert temp_files_outside_hidden(p.root) == []
    assert not list(p.root.rglob("*.failed.ipynb"))
    parquets = [f for f in p.root.rglob("*.parquet") if not f.name.startswith(".")]
    assert parquets
    for f in parquets:
        pq.read_table(f)  # raises on a truncated file
    for f in (p.root / "notebooks").glob("*.ipynb"):
        json.loads(f.read_text())
    for rel, art in man["artifacts"].items():
        assert sha256_file(p.root / rel) == art["sha256"], rel


def test_first_run_executed_every_stage_once(pipeline):
    """Across the killed run and its resumption, every stage ran to the end exactly once."""
    p = pipeline
    done = [s for s, what in STAGE_LINE.findall(p.killed_log + p.resumed.out) if what == "done in"]
    assert sorted(done) == sorted(STAGES)
    assert done == [s for s in STAGES if s in done], "stages ran out of their numbered order"

    for info in INFOS:
        path = p.root / "notebooks" / info.path.name
        assert path.exists(), f"no executed notebook {path}"
        nb = json.loads(path.read_text())
        assert "papermill" in nb["metadata"]
        injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(injected) == 1
        src = "".join(injected[0]["source"])
        assert 'profile = "ci"' in src and f'results_root = "{p.results}"' in src
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c.get("execution_count") for c in code), f"{info.path.name}: not every cell ran"
        assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_manifest_provenance(pipeline):
    p = pipeline
    profile = C.load_profile("ci")
    man = json.loads((p.root / "manifest.json").read_text())
    assert man["package_versions"]["python"] and man["package_versions"]["torch"]
    for stage, rec in man["stages"].items():
        info = BY_STAGE[stage]
        assert rec["notebook"] == f"notebooks/{info.path.name}"
        assert rec["parameters"] == as_dict(REG.effective_params(profile, stage))
        assert rec["seed"] == profile["seed"] and rec["kind"] == info.kind
        assert rec["git_commit"] and rec["wall_time_s"] > 0 and rec["finished_at"]
        assert rec["package_versions"]["python"]
        assert rec["outputs"], f"{stage} recorded no artifacts"
        for rel, sha in rec["outputs"].items():
            art = man["artifacts"][rel]
            assert art["sha256"] == sha == sha256_file(p.root / rel)
            assert art["stage"] == stage and art["notebook"] == rec["notebook"]
            assert art["parameters"] == rec["parameters"] and art["seed"] == rec["seed"]
            assert art["git_commit"] == rec["git_commit"] and art["wall_time_s"] == rec["wall_time_s"]
    assert {a["stage"] for a in man["artifacts"].values()} == set(STAGES)


def test_a_run_leaves_the_checkout_as_it_was(pipeline):
    """The run writes its summary to results/<profile>/SUMMARY.md, not into the tracked README
    (issue 21): git status is the same before and after."""
    assert pipeline.git_after == pipeline.git_before
    summary = (pipeline.root / "SUMMARY.md").read_text()
    assert "Results of profile `ci`" in summary and "pass@1" in summary


def test_the_console_is_for_people(pipeline):
    """One line per stage event, bars, and where the logs are; papermill's cell log, the kernel's TCP
    warning and the notebooks' stdout go to results/<profile>/logs/<stage>.log (issue 21)."""
    out = pipeline.resumed.out
    lines = [ln for ln in out.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) <= 60, f"{len(lines)} console lines:\n" + "\n".join(lines[:80])
    for noise in ("Executing Cell", "Ending Cell", "without encryption", "Input Notebook"):
        assert noise not in out, noise
    for stage in STAGES:
        log = pipeline.root / "logs" / f"{stage}.log"
        if stage in stage_events(out) and "running" in stage_events(out)[stage]:
            assert log.is_file() and "Executing Cell" in log.read_text(), stage
            assert re.search(rf"stage {stage}\s+running .*log: \S+{stage}\.log", out), stage
    assert re.search(r"stage \S+\s+done in [\d.]+ s \(\d+ artifacts, peak \d+ MB\)", out)
    assert "summary: " in out and "SUMMARY.md" in out


# ----------------------------------------------------------------------- reruns on the results

def test_rerun_skips_everything(pipeline):
    p = pipeline
    man = (p.root / "manifest.json").read_bytes()
    r = run_runner("--profile", "ci", "--results", p.results)
    assert r.rc == 0, tail(r.out)
    events = stage_events(r.out)
    assert events == {s: ["skipped"] for s in STAGES}, events
    assert all(re.search(rf"stage {s}\s+skipped: up to date", r.out) for s in STAGES)
    assert r.seconds < 30, f"a rerun with nothing to do took {r.seconds:.1f} s"
    assert (p.root / "manifest.json").read_bytes() == man


def test_dry_run_touches_nothing(pipeline):
    p = pipeline
    before = snapshot(p.results)
    r = run_runner("--profile", "ci", "--results", p.results, "--dry-run")
    assert r.rc == 0, tail(r.out)
    plan = dry_run_plan(r.stdout)
    assert [nb for nb, _, _ in plan] == [i.path.name for i in INFOS]
    assert [k for _, k, _ in plan] == [i.kind for i in INFOS]
    assert all(v == "would skip (up to date)" for _, _, v in plan), plan
    assert "organism" in r.stdout and "recipe pretrain" in r.stdout  # the models are described

    r = run_runner("--profile", "ci", "--results", p.results, "--dry-run", "--force", "--only", "data")
    assert r.rc == 0 and dry_run_plan(r.stdout) == [("00_data.ipynb", "compute", "would run (forced)")]
    assert snapshot(p.results) == before


def test_dry_run_on_an_empty_results_folder_creates_nothing(tmp_path):
    results = tmp_path / "results"
    r = run_runner("--profile", "ci", "--results", results, "--dry-run")
    assert r.rc == 0, tail(r.out)
    plan = dry_run_plan(r.stdout)
    assert plan[0] == ("00_data.ipynb", "compute", "would run (never run)")
    assert all(v.startswith("would run") for _, _, v in plan) and len(plan) == len(INFOS)
    assert not results.exists()


@pytest.mark.parametrize("args, expected", [
    (["--only", "samples"], ["samples"]),
    (["--only", "21"], ["fig_passk"]),
    (["--only", "40_step_graphs"], ["graphs"]),
    (["--from", "topology"], STAGES[STAGES.index("topology"):]),
    (["--from", "50"], STAGES[STAGES.index("topology"):]),
    (["--figures-only"], FIGURE_STAGES),
    (["--until", "trajectories"], STAGES[:STAGES.index("trajectories") + 1]),
    (["--until", "00"], ["data"]),
    ([], STAGES),
])
def test_selection(pipeline, args, expected):
    r = run_runner("--profile", "ci", "--results", pipeline.results, "--dry-run", *args)
    assert r.rc == 0, tail(r.out)
    assert [nb for nb, _, _ in dry_run_plan(r.stdout)] == [BY_STAGE[s].path.name for s in expected]
    assert f"{len(expected)} of {len(STAGES)} stages selected" in r.out


def test_from_runs_that_stage_and_all_later_ones(pipeline):
    start = STAGES.index("fig_topology")
    r = run_runner("--profile", "ci", "--results", pipeline.results, "--from", "fig_topology")
    assert r.rc == 0, tail(r.out)
    assert stage_events(r.out) == {s: ["skipped"] for s in STAGES[start:]}


def test_a_stage_with_nothing_to_do_is_skipped_with_its_reason(tmp_path):
    """train in a completions-only profile: skipped with the reason, never required by hand (issue 21)."""
    if not (REPO.parent / "shared" / "real").is_dir():
        pytest.skip("../shared/real (the real completions) is not beside the checkout")
    r = run_runner("--profile", "real-qwen-math-1.5b", "--results", tmp_path / "r", "--dry-run", "--until", "samples")
    assert r.rc == 0, tail(r.out)
    plan = dict((nb, v) for nb, _, v in dry_run_plan(r.stdout))
    assert plan["10_train.ipynb"] == "would skip (nothing to do: no variant has a recipe (all are models or " \
                                     "imported completions))", plan
    assert plan["20_sample.ipynb"].startswith("would run")


def test_selection_errors(pipeline):
    r = run_runner("--profile", "ci", "--results", pipeline.results, "--only", "nope")
    assert r.rc == 2 and "unknown stage 'nope'" in r.stderr and "Traceback" not in r.out
    r = run_runner("--profile", "ci", "--results", pipeline.results, "--only", "data", "--from", "train")
    assert r.rc == 2 and "not allowed with argument" in r.stderr and "Traceback" not in r.out


def test_only_needs_computed_inputs(tmp_path):
    r = run_runner("--profile", "ci", "--results", tmp_path, "--only", "samples")
    assert r.rc == 2, tail(r.out)
    assert "needs the outputs of ['data', 'train']" in r.stderr and "Traceback" not in r.out
    assert not (tmp_path / "ci" / "manifest.json").exists()


def test_force_reruns_only_the_selected_stage(pipeline):
    p = pipeline
    before = json.loads((p.root / "manifest.json").read_text())
    executed = p.root / "notebooks" / BY_STAGE["fig_passk"].path.name
    mtime = executed.stat().st_mtime_ns
    r = run_runner("--profile", "ci", "--results", p.results, "--only", "fig_passk", "--force")
    assert r.rc == 0, tail(r.out)
    assert stage_events(r.out) == {"fig_passk": ["running", "done in"]}
    assert re.search(r"stage fig_passk\s+running \S+ \(forced\)", r.out)
    after = json.loads((p.root / "manifest.json").read_text())
    assert after["stages"]["fig_passk"]["finished_at"] != before["stages"]["fig_passk"]["finished_at"] \
        or after["stages"]["fig_passk"]["wall_time_s"] != before["stages"]["fig_passk"]["wall_time_s"]
    for stage in STAGES:
        if stage != "fig_passk":
            assert after["stages"][stage] == before["stages"][stage], stage
    assert executed.stat().st_mtime_ns > mtime
    # without --force the same selection is up to date again
    r = run_runner("--profile", "ci", "--results", p.results, "--only", "fig_passk")
    assert r.rc == 0 and stage_events(r.out) == {"fig_passk": ["skipped"]}


def test_figures_only_redraws_deleted_figures(pipeline):
    p = pipeline
    figures = p.root / "figures"
    files_before = sorted(f.relative_to(figures) for f in figures.rglob("*") if f.is_file())
    assert len(files_before) >= len(FIGURE_STAGES)
    shutil.rmtree(figures)
    r = run_runner("--profile", "ci", "--results", p.results, "--figures-only")
    assert r.rc == 0, tail(r.out)
    events = stage_events(r.out)
    assert events == {s: ["running", "done in"] for s in FIGURE_STAGES}, events
    for s in FIGURE_STAGES:
        assert re.search(rf"stage {s}\s+running \S+ \(output missing: figures/", r.out), s
    files_after = sorted(f.relative_to(figures) for f in figures.rglob("*") if f.is_file())
    assert files_after == files_before
    r = run_runner("--profile", "ci", "--results", p.results, "--dry-run")
    assert all(v == "would skip (up to date)" for _, _, v in dry_run_plan(r.stdout))


# -------------------------------------------------------------------- user errors: no traceback

def write_profile(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


BAD_PROFILES = {  # issue 20: each is one line, exit 2, before any work
    "string parameter": ({"extends": "ci", "stages": {"graphs": {"k": "abc"}}},
                         ["stages.graphs.k: expected an integer, got 'abc'"]),
    "quoted number": ({"extends": "ci", "stages": {"samples": {"M": "8"}}}, ["stages.samples.M", "without quotes"]),
    "out of range": ({"extends": "ci", "stages": {"samples": {"temperature": 5}}},
                     ["stages.samples.temperature: must be <= 2"]),
    "stage block not a mapping": ({"extends": "ci", "stages": {"samples": "x"}},
                                  ["stages.samples: must be a mapping of parameter: value"]),
    "stages not a mapping": ({"extends": "ci", "stages": ["samples"]}, ["'stages' must be a mapping"]),
    "families not a mapping": ({"extends": "ci", "families": ["organism"]}, ["'families' must be a mapping"]),
    "variants not a mapping": ({"extends": "ci", "families": {"organism": {"variants": ["Base", "RL"]}}},
                               ["'variants' must be a mapping"]),
}


def test_malformed_yaml_and_unwritable_results_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: ci\nstages:\n  samples: {M: 4\n  graphs: {}\n")
    r = run_runner("--profile", str(bad), "--results", tmp_path / "r", timeout=120)
    assert r.rc == 2 and "Traceback" not in r.out and "is not valid YAML at line" in r.stderr, r.stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: make the results folder a file instead
            ro.chmod(0o755)
            ro.rmdir()
            ro.write_text("not a folder")
        r = run_runner("--profile", "ci", "--results", ro, "--only", "data", timeout=120)
    finally:
        if ro.is_dir():
            ro.chmod(0o755)
    assert r.rc == 2 and "Traceback" not in r.out, tail(r.out)
    errors = [line for line in r.stderr.splitlines() if line.startswith("run_all.sh: error:")]
    assert len(errors) == 1 and "cannot write" in errors[0] and str(ro) in errors[0], r.stderr


def test_a_profile_file_cannot_write_into_another_profiles_results(tmp_path, pipeline):
    """A ``ci.yaml`` outside profiles/ would have mixed its results into results/ci (issue 20)."""
    other = tmp_path / "elsewhere" / "ci.yaml"
    other.parent.mkdir()
    other.write_text(yaml.safe_dump({"extends": str(REPO / "profiles" / "ci.yaml")}))
    r = run_runner("--profile", str(other), "--results", pipeline.results, "--only", "data", timeout=120)
    assert r.rc == 2 and "holds the results of the profile file" in r.stderr and "Traceback" not in r.out


@pytest.mark.parametrize("case", ["unknown profile", "unknown flag", "unknown key", "undeclared parameter",
                                  "unknown variant", *BAD_PROFILES])
def test_user_errors_exit_2_with_one_line(tmp_path, case):
    results = tmp_path / "results"
    if case in BAD_PROFILES:
        args, expect = ["--profile", write_profile(tmp_path, BAD_PROFILES[case][0])], BAD_PROFILES[case][1]
    elif case == "unknown profile":
        args, expect = ["--profile", "nope"], ["unknown profile 'nope'", "available profiles", "organism"]
    elif case == "unknown flag":
        args, expect = ["--profile", "ci", "--colour"], ["unrecognized arguments: --colour"]
    elif case == "unknown key":
        args = ["--profile", write_profile(tmp_path, {"extends": "ci", "colour": "red"})]
        expect = ["unknown key(s) ['colour']"]
    elif case == "undeclared parameter":
        args = ["--profile", write_profile(tmp_path, {"extends": "ci", "stages": {"data": {"n_cities": 3}}})]
        expect = ["stages.data: unknown parameter(s) ['n_cities']", "declared parameters", "n_places"]
    else:
        fam = {"organism": {"variants": {"DPO": {"recipe": "pretrain"}}}}
        args = ["--profile", write_profile(tmp_path, {"extends": "ci", "families": fam})]
        expect = ["unknown variant(s) ['DPO']"]
    r = run_runner(*args, "--results", results, timeout=120)
    assert r.rc == 2, tail(r.out)
    assert "Traceback" not in r.out
    errors = [line for line in r.stderr.splitlines() if line.startswith("run_all.sh: error:")]
    assert len(errors) == 1, r.stderr
    for word in expect:
        assert word in errors[0], (word, errors[0])
    assert not results.exists()
