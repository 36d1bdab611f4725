"""The one end-to-end run of the ci profile that the test suite shares (``ci_pipeline`` fixture in
``tests/conftest.py``), and the helpers to drive the runner from tests.

The run goes to a temporary results folder (``--results``), never to results/: a fresh run is
killed (SIGKILL, whole process group and the notebook kernel) in the middle of the train or
samples stage, then rerun to completion. tests/test_runner.py checks the resume and everything
after it on these results; tests/test_report.py times and screenshots the report of the same run,
so a clean clone (no results/ci) runs those tests too, and the suite pays for one ci run only.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlsft import registry as REG

REPO = Path(__file__).resolve().parents[1]
KILL_DURING = ("train", "samples")
STAGE_LINE = re.compile(r"stage (\S+)\s+(skipped|running|done in)")


def runner_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "rlsft.runner", *map(str, args)]


def run_runner(*args, timeout: float = 900) -> SimpleNamespace:
    """Run the runner to the end; ``out`` is stdout and stderr together (the log)."""
    t0 = time.time()
    proc = subprocess.run(runner_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return SimpleNamespace(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr,
                           out=proc.stdout + proc.stderr, seconds=time.time() - t0)


def tail(text: str, n: int = 3000) -> str:
    return text[-n:]


def manifest_stages(root: Path) -> dict:
    try:
        return json.loads((root / "manifest.json").read_text())["stages"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def temp_files_outside_hidden(root: Path) -> list[str]:
    """Leftover temp files (``.name.XXXX.tmp...``) outside hidden (cache/shard) folders."""
    bad = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        bad += [str(Path(folder, f).relative_to(root)) for f in files if f.startswith(".") and ".tmp" in f]
    return bad


def kill_tree(pid: int) -> None:
    """SIGKILL the runner's process group, and the notebook kernel (its own session) with it."""
    import psutil

    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    os.killpg(pid, signal.SIGKILL)
    for k in kids:
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(kids, timeout=15)


def killed_and_resumed_ci_run(base: Path) -> SimpleNamespace:
    """Run the ci profile into ``base/results``, kill it during train or samples, rerun it to the end.

    Returns ``results`` (the --results folder), ``root`` (``results/ci``), ``killed_stage``,
    ``done_before`` (stages done at the kill), ``killed_log``, ``stale_after_kill`` (temp files
    left by the kill) and ``resumed`` (the rerun, see ``run_runner``).
    """
    by_stage = {i.stage: i for i in REG.STAGES}
    git_before = git_status()
    results = base / "results"
    root = results / "ci"
    log_path = base / "killed_run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(runner_cmd("--profile", "ci", "--results", results), cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    target, since, deadline = None, None, time.time() + 600
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the ci run ended (rc {proc.returncode}) before it could be killed:\n"
                            + tail(log_path.read_text()))
            if time.time() > deadline:
                pytest.fail("no train/samples stage in flight after 600 s:\n" + tail(log_path.read_text()))
            done = manifest_stages(root)
            started = [s for s, what in STAGE_LINE.findall(log_path.read_text()) if what == "running"]
            inflight = [s for s in started if s not in done]
            if done and inflight and inflight[-1] in KILL_DURING:
                if inflight[-1] != target:
                    target, since = inflight[-1], time.time()
                name = by_stage[target].path.name
                executing = list((root / "notebooks").glob(f".{name}.*.tmp.ipynb"))
                if executing and time.time() - since >= 3:
                    break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        proc.wait(timeout=60)
    killed_log = log_path.read_text()
    manifest_text = (root / "manifest.json").read_text()
    done_before = sorted(json.loads(manifest_text)["stages"])  # valid JSON after the kill
    stale_after_kill = temp_files_outside_hidden(root)

    resumed = run_runner("--profile", "ci", "--results", results)
    assert resumed.rc == 0, "the rerun after the kill failed:\n" + tail(resumed.out, 6000)
    return SimpleNamespace(results=results, root=root, killed_stage=target, done_before=done_before,
                           killed_log=killed_log, stale_after_kill=stale_after_kill, resumed=resumed,
                           git_before=git_before, git_after=git_status())


def git_status() -> str:
    """``git status --porcelain`` of the checkout (empty string outside a git checkout)."""
    proc = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""
