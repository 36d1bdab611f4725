"""The reader's JupyterLab (issue 21): ``./run_all.sh --lab`` serves the executed notebooks of a
run with the ``Python (rlsft)`` kernel, a real headless Chromium shows a notebook's figures and
that kernel, and an executed copy reruns in place. Uses the session's ci run (slow)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-extensions", "--hide-scrollbars"]


def _chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if exe:
        return exe
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, but CI is set: .ci/run must install the Debian package chromium")
    pytest.skip("chromium is not installed (apt-get install chromium); CI is not set, so the browser test is skipped")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_results(ci_pipeline, dest: Path) -> Path:
    """A copy of the ci results whose executed notebooks point at the copy (their injected
    ``results_root``), so that rerunning them never touches the session's run."""
    shutil.copytree(ci_pipeline.root, dest / "ci", ignore=shutil.ignore_patterns(".cache", "train"))
    for nb_path in (dest / "ci" / "notebooks").glob("*.ipynb"):
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if "injected-parameters" in (cell.get("metadata", {}).get("tags") or []):
                src = "".join(cell["source"]).replace(str(ci_pipeline.results), str(dest))
                cell["source"] = src.splitlines(keepends=True)
        nb_path.write_text(json.dumps(nb))
    return dest / "ci"


def test_an_executed_copy_reruns_in_place(ci_pipeline, tmp_path):
    root = _copy_results(ci_pipeline, tmp_path / "results")
    nb = root / "notebooks" / "21_fig_passk.ipynb"
    (root / "figures" / "fig0_pass_at_k.png").unlink()
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                           "--inplace", str(nb)], cwd=nb.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "figures" / "fig0_pass_at_k.png").is_file(), "the figure was redrawn in the copy"
    outputs = [o for c in json.loads(nb.read_text())["cells"] for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)


@pytest.fixture
def lab(ci_pipeline, tmp_path):
    """``./run_all.sh --lab --profile ci --results <copy>`` on a free local port; yields its base URL."""
    results = tmp_path / "results"
    _copy_results(ci_pipeline, results)
    port, token = _free_port(), "rlsft-test-token"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jrt"),
               RLSFT_LAB_ARGS=f"--no-browser --ServerApp.token={token} --ServerApp.ip=127.0.0.1 "
                              f"--LabApp.workspaces_dir={tmp_path / 'ws'} --LabApp.user_settings_dir={tmp_path / 'us'}")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([str(REPO / "run_all.sh"), "--lab", "--profile", "ci", "--results", str(results),
                             "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_jupyterlab_shows_the_figures_and_the_rlsft_kernel(lab, tmp_path):
    exe = _chromium()
    base, token = lab
    with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}", timeout=10) as r:
        specs = json.loads(r.read())
    assert specs["default"] == "rlsft" and specs["kernelspecs"]["rlsft"]["spec"]["display_name"] == "Python (rlsft)"
    url = f"{base}/lab/tree/21_fig_passk.ipynb?token={token}&reset"
    args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=30000",
            "--window-size=1400,1600"]
    dom = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True, timeout=240).stdout
    assert "jp-RenderedImage" in dom and "data:image/png" in dom, "the notebook's figure is not on the page"
    assert "Python (rlsft)" in dom, "the rlsft kernel is not shown"
    shot = tmp_path / "jupyterlab.png"
    subprocess.run(args + [f"--screenshot={shot}", url], capture_output=True, timeout=240)
    assert shot.is_file() and shot.stat().st_size > 20_000, "no screenshot of JupyterLab"
