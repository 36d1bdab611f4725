"""Tests of rlsft.report: the HTML report built from a fake results folder (figures, headline
tables, "not computed yet", notebook pages, manifest summary, caching, robustness), the README
block and its markers, the command line, and the report in headless Chromium (every image loads,
a screenshot)."""
from __future__ import annotations

import base64
import doctest
import functools
import http.server
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rlsft import report as R
from rlsft.report import build_report, readme_block, update_readme

REPO = Path(__file__).resolve().parents[1]

CODE_MARKER = "SECRET_CODE_MARKER_4711 = 1"
PROFILE = {"name": "demo", "description": "A demo profile for the report tests", "chain": ["demo", "organism"]}


# ------------------------------------------------------------------------------------ fixtures

def _png(path: Path, color: str = "C0") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    ax.plot([0, 1, 2], [1, 3, 2], color=color)
    ax.set_title(path.stem)
    for ext in ("png",) + (("pdf",) if "nopdf" not in path.stem else ()):
        fig.savefig(path.with_suffix(f".{ext}"))
    plt.close(fig)
    return path


def _notebook(path: Path, title: str, png: Path | None, text: str) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    outputs = [new_output("stream", name="stdout", text=text + "\n"),
               new_output("stream", name="stderr", text="2026-01-01 fontTools.subset: maxp pruned\n")]
    if png is not None:
        outputs.append(new_output("display_data", data={
            "image/png": base64.b64encode(png.read_bytes()).decode("ascii"), "text/plain": "<Figure>"}))
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}\n\nSome narration."),
                             new_code_cell(f"{CODE_MARKER}\nprint({text!r})", outputs=outputs,
                                           execution_count=1)],
                      metadata={"rlsft": {"stage": "fig_demo", "kind": "figure"}})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


DECAY_CSV = """family,metric,comparison,ratio,ci_low,ci_high,paper_value,expected_direction,agrees,seed_min,seed_max
organism,frequency,RL/Base,2.41372,1.87654,3.01999,2.5,up,True,2.3,2.5
organism,frequency,SFT/Base,0.35551,0.29,0.41,0.3333333333333333,down,True,0.34,0.36
organism,frequency,SFT+RL/SFT,1.1,0.9,1.3,,up,,1.0,1.2
"""
SUMMARY_CSV = """family,variant,benchmark,n_problems,n_samples,M,accuracy,pass_at_1,pass_at_M,truncation_rate,mean_tokens,mean_chars
organism,SFT,nav-a,3,24,8,0.5,0.5,0.9,0.0,30.0,120.0
organism,Base,nav-a,3,24,8,0.62345,0.62345,0.87654,0.1,31.5,130.0
"""


@pytest.fixture
def fake(tmp_path) -> Path:
    """``results/demo``: manifest, two figures (one without PDF), two CSVs, two executed notebooks."""
    root = tmp_path / "results" / "demo"
    _png(root / "figures" / "fig6_demo_boxplots.png", "C1")
    _png(root / "figures" / "fig10_demo_nopdf.png", "C2")
    (root / "figures" / "headline_decay_ratios.csv").write_text(DECAY_CSV)
    (root / "samples").mkdir(parents=True)
    (root / "samples" / "summary.csv").write_text(SUMMARY_CSV)
    _notebook(root / "notebooks" / "41_fig_demo.ipynb", "41 · Demo figures",
              root / "figures" / "fig6_demo_boxplots.png", "hello from the notebook")
    _notebook(root / "notebooks" / "50_broken.failed.ipynb", "50 · Broken stage", None, "it failed here")
    versions = {"python": "3.11.7", "pandas": "9.9.9"}
    man = {"package_versions": versions,
           "stages": {
               "samples": {"notebook": "notebooks/20_sample.ipynb", "kind": "compute", "seed": 7,
                           "git_commit": "0123456789abcdef0123456789abcdef01234567+dirty",
                           "wall_time_s": 12.345, "finished_at": "2026-01-01T10:00:00+00:00",
                           "parameters": {"M": 8, "temperature": 0.6}, "outputs": {"samples/summary.csv": "x"},
                           "package_versions": versions},  # no peak_rss_mb: an older manifest
               "fig_demo": {"notebook": "notebooks/41_fig_demo.ipynb", "kind": "figure", "seed": 7,
                            "git_commit": "0123456789abcdef0123456789abcdef01234567+dirty",
                            "wall_time_s": 3.2, "peak_rss_mb": 321.4, "finished_at": "2026-01-01T10:05:00+00:00",
                            "parameters": {"example": 0}, "outputs": {}, "package_versions": versions}},
           "artifacts": {"figures/fig6_demo_boxplots.png": {"stage": "fig_demo",
                                                            "notebook": "notebooks/41_fig_demo.ipynb"}}}
    (root / "manifest.json").write_text(json.dumps(man))
    return root


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


# ------------------------------------------------------------------------------------- the index

def test_doctests():
    assert doctest.testmod(R).failed == 0


def test_a_killed_run_s_temporary_figure_is_not_a_figure(fake):
    """A run killed while saving a figure leaves ``.figX.png.k2.tmp.png``; the index lists finished
    figures only."""
    (fake / "figures" / ".fig6_demo_boxplots.png.k2j.tmp.png").write_bytes(b"")
    (fake / "figures" / ".t.csv.k2j.tmp.csv").write_text("")
    figs = _section(build_report(fake, PROFILE).read_text(), "figures")
    assert ".tmp" not in figs
    assert figs.count("<figure") == len([p for p in (fake / "figures").glob("*.png") if not p.name.startswith(".")])


def test_index_has_every_figure_and_the_headline_numbers(fake):
    index = build_report(fake, PROFILE)
    assert index == fake / "report" / "index.html"
    html = index.read_text()
    assert "demo" in html and PROFILE["description"] in html and "demo ← organism" in html
    figs = _section(html, "figures")
    for png in (fake / "figures").glob("*.png"):
        assert f'src="../figures/{png.name}"' in figs
        assert f'href="../figures/{png.name}"' in figs
    assert 'href="../figures/fig6_demo_boxplots.pdf"' in figs
    assert "no PDF" in figs  # fig10 has none
    assert figs.index("fig6_demo") < figs.index("fig10_demo")  # natural order
    assert 'href="41_fig_demo.html"' in figs  # the notebook that drew it (manifest artifacts)
    assert "not in the manifest" in figs  # fig10 is not recorded
    decay = _section(html, "decay")
    for s in ("2.41", "[1.88, 3.02]", "0.36", "[0.29, 0.41]", "2.5", "1/3", "2.30 – 2.50"):
        assert s in decay, s
    assert "2.41372" not in decay  # sensible precision
    acc = _section(html, "accuracy")
    assert "0.623" in acc and "0.877" in acc
    assert acc.index("Base") < acc.index("SFT")  # canonical variant order, not the file's


def test_missing_files_say_not_computed_yet(fake):
    html = build_report(fake, PROFILE).read_text()
    unique = _section(html, "unique")
    assert R.NOT_COMPUTED in unique and "trajectories/unique_ratios.csv" in unique
    assert "<table" not in unique
    for sid in ("accuracy", "figures", "manifest"):
        assert R.NOT_COMPUTED not in _section(html, sid)
    decay = _section(html, "decay")  # the ratios are there; the geomeans and visited fractions (newer) are not
    assert "headline_decay_ratios.csv</code> is missing" not in decay and "headline_visited.csv</code> is missing" in decay
    # an empty results folder: every section says so, no numbers appear
    empty = fake.parent / "empty"
    empty.mkdir()
    html = build_report(empty, None).read_text()
    for sid in ("decay", "unique", "accuracy", "figures", "notebooks", "manifest"):
        assert R.NOT_COMPUTED in _section(html, sid), sid
    assert "<td>" not in html


def test_broken_inputs_do_not_sink_the_report(fake):
    (fake / "samples" / "summary.csv").write_bytes(b"\x00\x01\x02not,a\n\"csv")
    (fake / "notebooks" / "30_garbage.ipynb").write_text("{not json")
    (fake / "manifest.json").write_text("[1, 2")
    html = build_report(fake, PROFILE).read_text()
    assert "30_garbage" in _section(html, "notebooks") and "could not render" in html
    assert R.NOT_COMPUTED in _section(html, "manifest")
    assert "2.41" in _section(html, "decay")


def test_notebook_pages_without_and_with_code(fake):
    build_report(fake, PROFILE)
    rep = fake / "report"
    page, code = (rep / "41_fig_demo.html").read_text(), (rep / "41_fig_demo.code.html").read_text()
    assert "hello from the notebook" in page and "41 · Demo figures" in page
    assert "data:image/png;base64," in page  # the figure, embedded as in the notebook's output
    assert "SECRET_CODE_MARKER" not in page and "SECRET_CODE_MARKER" in code
    assert "fontTools" not in page
    assert 'href="41_fig_demo.code.html"' in page and 'href="41_fig_demo.html"' in code
    assert 'href="index.html"' in page and 'href="../notebooks/41_fig_demo.ipynb"' in page
    # the latest run of a stage failed: its page is there and flagged
    assert "FAILED" in (rep / "50_broken.failed.html").read_text()
    nbs = _section((rep / "index.html").read_text(), "notebooks")
    assert 'href="41_fig_demo.html"' in nbs and 'href="41_fig_demo.code.html"' in nbs and "FAILED" in nbs


def test_stale_failed_notebook_is_not_shown(fake):
    ok = _notebook(fake / "notebooks" / "50_broken.ipynb", "50 · Fixed", None, "works now")
    later = time.time() + 5
    os.utime(ok, (later, later))
    html = build_report(fake, PROFILE).read_text()
    assert "50_broken.failed" not in html and 'href="50_broken.html"' in html


def test_manifest_summary(fake):
    m = _section(build_report(fake, PROFILE).read_text(), "manifest")
    assert "0123456789+dirty" in m  # the commit, shortened
    assert "<td>7</td>" in m  # seed
    assert "12.3" in m and "321" in m  # wall time, peak RSS
    samples_row = next(r for r in m.split("<tr>") if "<code>samples</code>" in r and "notebook" not in r)
    assert "—" in samples_row  # no peak_rss_mb recorded: shown as missing, not as 0
    assert "2026-01-01T10:05:00+00:00" in m
    assert "<details>" in m and "&quot;temperature&quot;: 0.6" in m
    assert "pandas" in m and "9.9.9" in m


def test_pages_are_cached_and_refreshed(fake):
    build_report(fake, PROFILE)
    page = fake / "report" / "41_fig_demo.html"
    before = page.stat().st_mtime_ns
    build_report(fake, PROFILE)
    assert page.stat().st_mtime_ns == before  # unchanged notebook: not rendered again
    _notebook(fake / "notebooks" / "41_fig_demo.ipynb", "41 · Demo figures", None, "second run")
    build_report(fake, PROFILE)
    assert "second run" in page.read_text()
    (fake / "notebooks" / "41_fig_demo.ipynb").unlink()
    build_report(fake, PROFILE)
    assert not page.exists()  # the notebook is gone, so is its page


def _copy_ci_results(ci_pipeline, dest: Path, *skip: str) -> Path:
    """A copy of the session's ci run (tests/conftest.py; a real results/ci, made by the runner in a
    temporary folder, so a clean clone runs these tests too) without the heavy or unused parts."""
    assert (ci_pipeline.root / "manifest.json").exists() and (ci_pipeline.root / "report" / "index.html").exists()
    shutil.copytree(ci_pipeline.root, dest, ignore=shutil.ignore_patterns("*.parquet", ".cache", "train", *skip))
    return dest


def test_ci_report_is_fast(tmp_path, ci_pipeline):
    root = _copy_ci_results(ci_pipeline, tmp_path / "ci", "report")
    t0 = time.perf_counter()
    html = build_report(root, {"name": "ci"}).read_text()
    assert time.perf_counter() - t0 < 10
    n_png = len(list((root / "figures").glob("*.png")))
    assert html.count('<figure class="card">') == n_png


# --------------------------------------------------------------------------------------- README

README = """# Title

intro text
<!-- results:demo:begin -->
old demo block
<!-- results:demo:end -->
middle
<!-- results:other:begin -->
other block
<!-- results:other:end -->
tail
"""


def test_readme_block_numbers_and_missing(fake):
    block = readme_block(fake)
    # a headline written before the decomposition existed: its parts read "—", its True flag "yes"
    assert "| frequency | RL/Base | 2.41 | [1.88, 3.02] | — | — | — | 2.5 | yes | yes |" in block
    assert "1/3" in block
    assert "| Base | 0.623 |" in block and "| SFT | 0.500 |" in block
    assert f"({R.NOT_COMPUTED}" in block and "unique_ratios.csv" in block
    assert "seed 7" in block


def test_update_readme_replaces_only_between_markers(fake, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert update_readme(readme, fake, "demo") is True
    text = readme.read_text()
    assert "old demo block" not in text and "2.41" in text
    head, rest = text.split("<!-- results:demo:begin -->")
    assert head == README.split("<!-- results:demo:begin -->")[0]
    assert rest.split("<!-- results:demo:end -->")[1] == README.split("<!-- results:demo:end -->")[1]
    assert "other block" in text
    assert update_readme(readme, fake, "demo") is False  # idempotent
    assert readme.read_text() == text


def test_update_readme_without_markers_is_a_noop(fake, tmp_path, caplog):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with caplog.at_level(logging.INFO, logger="rlsft.report"):
        assert update_readme(readme, fake, "demo") is False
    assert readme.read_text() == "# no markers here\n"
    assert "no <!-- results:demo:begin -->" in caplog.text


# ------------------------------------------------------------------------------------------- CLI

def test_cli_rebuilds_and_errors(fake, capsys):
    assert R.main(["--profile", "demo", "--results", str(fake.parent)]) == 0
    assert (fake / "report" / "index.html").is_file()
    assert R.main(["--profile", "nothing-here", "--results", str(fake.parent)]) == 2
    assert "no results folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- the browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def _chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if exe:
        return exe
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, but CI is set: .ci/run must install the Debian package chromium")
    pytest.skip("chromium is not installed (apt-get install chromium); CI is not set, so the browser test is skipped")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """``serve(folder) -> base URL`` of a local HTTP server on a free port of 127.0.0.1."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _browse(exe: str, url: str, profile_dir: Path, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after its load event (and a screenshot, if asked)."""
    args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]
    if screenshot is None:
        args += ["--dump-dom", url]
    else:
        args += [f"--screenshot={screenshot}", "--window-size=1280,2000", url]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


def _image_counts(dom: str) -> tuple[int, int]:
    root = re.search(r"<html[^>]*>", dom)
    assert root and 'data-images-checked="1"' in root.group(0), f"the page's image check did not run: {dom[:500]}"
    total = int(re.search(r'data-images-total="(\d+)"', root.group(0)).group(1))
    broken = int(re.search(r'data-images-broken="(\d+)"', root.group(0)).group(1))
    return total, broken


def _assert_real_screenshot(path: Path) -> None:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 20_000, "screenshot missing or tiny"
    with Image.open(path) as im:
        assert im.size == (1280, 2000)
        rgb = im.convert("RGB").resize((320, 500))
        colors = rgb.getcolors(maxcolors=1 << 16)
        assert colors is None or len(colors) > 50, "screenshot is (nearly) uniform"
        extrema = rgb.getextrema()
        assert all(hi - lo > 100 for lo, hi in extrema), "screenshot has no contrast"


def test_browser_every_image_loads(fake, tmp_path, serve):
    exe = _chromium()
    build_report(fake, PROFILE)
    base = serve(fake)
    n_png = len(list((fake / "figures").glob("*.png")))
    total, broken = _image_counts(_browse(exe, f"{base}/report/index.html", tmp_path / "chrome1"))
    assert (total, broken) == (n_png, 0)
    shot = tmp_path / "report.png"
    _browse(exe, f"{base}/report/index.html", tmp_path / "chrome2", screenshot=shot)
    _assert_real_screenshot(shot)
    # the notebook page's embedded figure loads too
    total, broken = _image_counts(_browse(exe, f"{base}/report/41_fig_demo.html", tmp_path / "chrome3"))
    assert total >= 1 and broken == 0
    # and the check does catch a missing figure (also when the report is opened from disk)
    (fake / "figures" / "fig10_demo_nopdf.png").unlink()
    total, broken = _image_counts(_browse(exe, (fake / "report" / "index.html").as_uri(), tmp_path / "chrome4"))
    assert (total, broken) == (n_png, 1)


def test_browser_ci_report_screenshot(tmp_path, serve, ci_pipeline):
    """The real ci report (of the session's ci run): every figure loads; its screenshot is kept
    next to it, in ``report/screenshot.png`` of the copy under this test's tmp_path."""
    exe = _chromium()
    from rlsft.config import load_profile

    root = _copy_ci_results(ci_pipeline, tmp_path / "ci")
    build_report(root, load_profile("ci"))  # as the runner does: the same page, up to date
    base = serve(root)
    n_png = len(list((root / "figures").glob("*.png")))
    assert n_png > 0
    assert _image_counts(_browse(exe, f"{base}/report/index.html", tmp_path / "chrome1")) == (n_png, 0)
    shot = tmp_path / "ci_report.png"
    _browse(exe, f"{base}/report/index.html", tmp_path / "chrome2", screenshot=shot)
    _assert_real_screenshot(shot)
    shutil.copyfile(shot, root / "report" / "screenshot.png")


def test_headline_leaves_out_comparisons_of_absent_variants(tmp_path):
    """A family with only Base and RL (imported completions): no SFT rows in the headline."""
    import pandas as pd

    from rlsft.headline import present_comparisons

    summary = pd.DataFrame({"family": ["f", "f", "g", "g", "g", "g"], "variant": ["Base", "RL", "Base", "RL", "SFT", "SFT+RL"],
                            "benchmark": "b", "pass_at_1": 0.5})
    ratios = pd.DataFrame({"family": ["f", "f", "f", "g", "g", "g"],
                           "comparison": ["RL/Base", "SFT/Base", "SFT+RL/SFT"] * 2, "ratio": [1.5, None, None, 2, 3, 4]})
    ratios.loc[len(ratios)] = ["h", "RL/Base", 0.7]  # a number is never hidden, whatever the summary says
    kept = present_comparisons(ratios, summary)
    assert kept[["family", "comparison"]].values.tolist() == [
        ["f", "RL/Base"], ["g", "RL/Base"], ["g", "SFT/Base"], ["g", "SFT+RL/SFT"], ["h", "RL/Base"]]
    kept = present_comparisons(ratios.iloc[::-1], summary)  # families in the summary's order
    assert kept["family"].tolist() == ["f", "g", "g", "g", "h"]
    assert present_comparisons(ratios, None).equals(ratios)  # no summary: unchanged
    # the README block and the report read the summary next to the ratios and leave the rows out alike
    (tmp_path / "samples").mkdir()
    (tmp_path / "trajectories").mkdir()
    summary.to_csv(tmp_path / "samples" / "summary.csv", index=False)
    ratios.assign(benchmark="b", quantity="unique_incorrect").to_csv(tmp_path / "trajectories" / "unique_ratios.csv",
                                                                     index=False)
    block = readme_block(tmp_path)
    assert "| f | b | unique_incorrect | RL/Base | 1.50 |" in block and "| f | b | unique_incorrect | SFT/Base" not in block
    unique = _section(build_report(tmp_path, None).read_text(), "unique")
    assert unique.count("<tr>") == 1 + 5  # header and the five rows kept


def test_report_renders_every_headline_column():
    """Each column the headline's accuracy table may hold has a header and a precision here."""
    from rlsft import headline as H

    assert set(R._ACCURACY_LABELS) == set(H.ACCURACY_COLUMNS)


# ------------------------------------------------------------------ decomposition, geomeans, visited

DECAY_PARTS_CSV = """family,metric,comparison,n_problems,ratio,ci_low,ci_high,node_ratio,node_ci_low,node_ci_high,shape_ratio,shape_ci_low,shape_ci_high,parts_product,matched_ratio,matched_ci_low,matched_ci_high,matched_agrees,n_nodes_after,n_nodes_before,paper_value,expected_direction,agrees,note,seed_min,seed_max
organism,frequency,RL/Base,100,1.5736,1.4405,1.7466,1.3103,1.2,1.4,1.1812,1.05,1.3,1.5477,1.2,1.1,1.31,yes,29,38,2.5,up,yes,,1.5,1.6
organism,frequency,SFT/Base,100,1.0096,0.9488,1.098,1.0,1.0,1.0,1.01,0.95,1.1,1.01,1.0,0.9,1.1,unclear,38,38,0.3333333333333333,down,unclear,,1.0,1.02
"""
GEOMEAN_CSV = """comparison,n_ratios,ratio,ci_low,ci_high,node_ratio,node_ci_low,node_ci_high,shape_ratio,shape_ci_low,shape_ci_high,paper_value,expected_direction,agrees,shape_agrees
RL/Base,3,1.3876,1.31,1.46,1.3589,1.3,1.42,1.03,0.97,1.09,2.5,up,yes,unclear
"""
VISITED_CSV = """family,variant,n_graphs,median_visited,median_k_asked,median_k_used,median_visited_fraction,saturated
organism,Base,100,38.0,40.0,39.0,0.95,True
organism,RL,100,29.0,40.0,39.0,0.725,False
"""


def _parts_root(tmp_path):
    root = tmp_path / "results" / "parts"
    (root / "figures").mkdir(parents=True)
    (root / "figures" / "headline_decay_ratios.csv").write_text(DECAY_PARTS_CSV)
    (root / "figures" / "headline_decay_geomeans.csv").write_text(GEOMEAN_CSV)
    (root / "figures" / "headline_visited.csv").write_text(VISITED_CSV)
    return root


def test_readme_block_and_report_show_every_part(tmp_path):
    root = _parts_root(tmp_path)
    block = readme_block(root)
    assert ("| frequency | RL/Base | 1.57 | [1.44, 1.75] | 1.31 [1.20, 1.40] | 1.18 [1.05, 1.30] | 1.20 [1.10, 1.31] "
            "| 2.5 | yes | no |") in block
    assert "| frequency | SFT/Base | 1.01 | [0.95, 1.10] |" in block and "unclear (CI spans 1)" in block
    assert "| RL/Base | 1.39 [1.31, 1.46] | 1.36 [1.30, 1.42] | 1.03 [0.97, 1.09] | 2.5 | yes | unclear | no |" in block
    # one sentence per comparison says which part carries it
    assert ("- RL/Base: β ratio 1.39 [1.31, 1.46] is carried by node count (RL visits fewer nodes than Base, "
            "part 1.36 [1.30, 1.42]); the shape part 1.03 [0.97, 1.09] holds 1.") in block
    assert "| Base | 38.0 | 40.0 | 39.0 | 0.95 | yes |" in block and "| RL | 29.0 | 40.0 | 39.0 | 0.72 | no |" in block
    decay = _section(build_report(root, {"name": "parts"}).read_text(), "decay")
    for text in ("1.31 [1.20, 1.40]", "1.18 [1.05, 1.30]", "1.20 [1.10, 1.31]", "node-count part",
                 "Geometric mean over metrics", "1.39 [1.31, 1.46]", "Visited fraction", "0.95", "median β·N"):
        assert text in decay, text


def test_a_table_with_only_a_note_shows_the_note(tmp_path):
    root = _parts_root(tmp_path)
    (root / "figures" / "headline_decay_ratios.csv").write_text(
        "family,metric,comparison,ratio,ci_low,ci_high,agrees,note\n,,,,,,,no decay rates: stage graphs found no steps\n")
    (root / "figures" / "headline_decay_geomeans.csv").write_text("comparison,ratio,ci_low,ci_high\n")
    block = readme_block(root)
    assert "no decay rates: stage graphs found no steps" in block and "has no rows" in block
    decay = _section(build_report(root, None).read_text(), "decay")
    assert "stage graphs found no steps" in decay and "<td>" not in decay


IMPORTED_KEPT = """family,variant,benchmark,problems,samples,samples_per_problem,problems_kept,samples_kept,samples_per_problem_kept,action
m,Base,aime24,30,240,8,30,240,8,kept as is
m,RL,aime24,30,240,8,30,240,8,kept as is
"""


def test_imported_checks_in_readme_block_and_report(fake):
    """No imported completions: no block and no section; all kept: one line; a change: its rows."""
    assert "Imported completions" not in readme_block(fake)
    assert 'id="imported"' not in build_report(fake, PROFILE).read_text()
    (fake / "samples" / "imported_checks.csv").write_text(IMPORTED_KEPT)
    assert "All 2 imported (family, variant, benchmark) sets were kept as is." in readme_block(fake)
    changed = IMPORTED_KEPT.replace("m,RL,aime24,30,240,8,30,240,8,kept as is",
                                    "m,RL,aime24,30,30,1,30,30,1,subsampled to the first 1 sample(s) per problem")
    (fake / "samples" / "imported_checks.csv").write_text(changed.replace("m,Base,aime24,30,240,8,30,240,8,kept as is",
                                                                          "m,Base,aime24,30,240,8,30,30,1,subsampled"))
    block = readme_block(fake)
    assert "| m | RL | aime24 | 30 | 1 | 30 | 1 | subsampled to the first 1 sample(s) per problem |" in block
    assert "kept as is" not in block
    section = _section(build_report(fake, PROFILE).read_text(), "imported")
    assert "subsampled to the first 1 sample(s) per problem" in section and "<td>RL</td>" in section


def _backend_run(root: Path, shift: float) -> None:
    """A minimal results folder: samples of two variants on 6 problems, unique counts and ratios."""
    import pandas as pd

    rows = [{"family": "organism", "variant": v, "benchmark": "nav-a", "problem": f"p{i}", "sample": j,
             "correct": (i + j + (v == "RL")) % 3 == 0 if shift == 0 or j else (i % 2 == 0)}
            for v in ("Base", "RL") for i in range(6) for j in range(4)]
    (root / "samples").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "samples" / "all_samples.parquet")
    (root / "trajectories").mkdir()
    pd.DataFrame([{"family": "organism", "variant": v, "benchmark": "nav-a", "problem": f"p{i}",
                   "unique_correct": 1, "unique_incorrect": 3 - (v == "RL") + shift * (i % 2)}
                  for v in ("Base", "RL") for i in range(6)]).to_csv(root / "trajectories" / "unique_trajectories.csv",
                                                                       index=False)
    pd.DataFrame([{"family": "organism", "benchmark": "nav-a", "quantity": "unique_incorrect", "comparison": "RL/Base",
                   "ratio": 0.66 + shift, "ci_low": 0.5, "ci_high": 0.8}]).to_csv(
        root / "trajectories" / "unique_ratios.csv", index=False)


def test_backends_side_by_side_in_the_block_of_a_profile_with_another_backend(tmp_path):
    """organism-vllm extends organism with backend vllm: its block sets both runs side by side; a
    profile with the parent's backend, or without the parent's samples, has no such section."""
    from rlsft.config import load_profile

    vllm, ci = load_profile("organism-vllm"), load_profile("ci")
    assert R.backend_partner(vllm, tmp_path) is None  # the parent's samples are missing
    _backend_run(tmp_path / "organism", 0.0)
    _backend_run(tmp_path / "organism-vllm", 1.0)
    assert R.backend_partner(vllm, tmp_path) == tmp_path / "organism"
    assert R.backend_partner(ci, tmp_path) is None  # same backend as organism
    block = readme_block(tmp_path / "organism-vllm", R.backend_partner(vllm, tmp_path))
    assert "**Backends side by side**" in block and "| variant | benchmark | measure | organism | organism-vllm |" in block
    assert "| RL | nav-a | unique incorrect | 2.000 | 2.500 | 0.500 [" in block
    assert "| nav-a | unique_incorrect | RL/Base | 0.66 [0.50, 0.80] | 1.66 [0.50, 0.80] |" in block
    assert "Backends side by side" not in readme_block(tmp_path / "organism-vllm")


def test_sweep_block_shows_each_point_with_its_shape_part_and_marks_the_profile_point(tmp_path):
    import pandas as pd
    from rlsft.report import _md_sweep

    root = tmp_path / "prof"
    assert _md_sweep(root) is None  # the stage has not run: no block
    (root / "sweep").mkdir(parents=True)
    rows = [("M", 4, "RL/Base", 1.5, 1.1), ("M", 8, "RL/Base", 2.0, 1.0), ("K", 8, "RL/Base", 1.2, 0.9),
            ("K", 16, "RL/Base", 2.0, 1.0), ("M", 4, "SFT/Base", float("nan"), float("nan"))]
    pd.DataFrame(rows, columns=["axis", "value", "comparison", "ratio", "shape_ratio"]).to_csv(
        root / "sweep" / "geomeans.csv", index=False)
    (root / "sweep" / "k_rule.json").write_text('{"profile_k": 16, "k_rule": 8}')
    text = _md_sweep(root)
    assert "K = 8, the smallest grid K" in text
    assert "| M | 4 | 1.50 (1.10) |" in text and "| M | 8* | 2.00 (1.00) |" in text
    assert "| K | 16* | 2.00 (1.00) |" in text and "| K | 8 | 1.20 (0.90) |" in text
    assert "SFT/Base" not in text  # a comparison without any number is left out
