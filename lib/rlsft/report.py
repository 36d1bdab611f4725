"""The reader's side: an HTML report of one profile's results, and the README's results block.

``build_report(root, profile)`` writes ``results/<profile>/report/``:

- ``index.html``: the profile (name, description, ``extends`` chain); the headline tables read from
  the saved CSVs (decay-rate ratios against the paper's 2.5 and 1/3, unique-trajectory ratios,
  accuracy / pass@1 / pass@M); a thumbnail grid of every ``figures/*.png`` linking to the PNG and
  PDF; the executed notebooks; and a summary of ``manifest.json`` (seed, git commit, package
  versions, per-stage wall time, peak memory, finish time and parameters).
- ``<notebook>.html``: each executed notebook rendered with nbconvert without code (figures are
  embedded as they are in the notebook's outputs), and ``<notebook>.code.html`` with the code.

Every number comes from a file under ``results/<profile>/``; a missing file makes its section say
"not computed yet", never a made-up value. Figures are referenced relatively (``../figures/x.png``)
so the folder works when opened from disk. Pages are re-rendered only when their notebook changed
(``report/.pages.json`` holds the notebooks' sha256). Every write is atomic.

``readme_block(root)`` renders the headline numbers as markdown and ``update_readme(readme, root,
profile_name)`` puts that block between ``<!-- results:<profile>:begin -->`` and
``<!-- results:<profile>:end -->`` in the README.

The headline tables themselves (which rows, in which order, the verdict against the paper) are
built by :mod:`rlsft.headline`, the same functions the figure stages use; this module reads the
saved CSVs, hands them to it and renders the result as HTML or Markdown.

By hand::

    python -m rlsft.report --profile ci [--results DIR] [--readme README.md]

>>> fmt_num(0.93692702), fmt_num(float("nan")), fmt_num(2.5, paper=True), fmt_num(1 / 3, paper=True)
('0.94', '—', '2.5', '1/3')
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import logging
import re
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from rlsft import headline as H
from rlsft.agreement import agreement
from rlsft.config import REPO_ROOT, load_profile
from rlsft.errors import ConfigError
from rlsft.io import finished_files, read_json, sha256_file, write_json, write_text

log = logging.getLogger("rlsft.report")

REPORT_VERSION = "2"
"""Bumped when the page rendering changes, so cached notebook pages are rendered again."""

NOT_COMPUTED = "not computed yet"

# where each headline table comes from: (path under results/<profile>/, the stage that writes it;
# the stage name is only shown in the "not computed yet" note)
SOURCES = {
    "decay": ("figures/headline_decay_ratios.csv", "fig_decay"),
    "geomean": ("figures/headline_decay_geomeans.csv", "fig_decay"),
    "visited": ("figures/headline_visited.csv", "fig_decay"),
    "unique": ("trajectories/unique_ratios.csv", "trajectories"),
    "summary": ("samples/summary.csv", "samples"),
    "imported": ("samples/imported_checks.csv", "samples"),
}
RATIO_TABLES = ("decay", "geomean", "unique")
"""The headline tables that go through :func:`rlsft.headline.ratio_headline` (verdicts against the paper)."""

# log lines that only clutter the reader's page (matplotlib's PDF font subsetting at INFO level)
_NOISE = re.compile(r"fontTools\.|matplotlib\.font_manager|findfont:")

_PAPER_FRACTIONS = {1 / 3: "1/3", 2 / 3: "2/3", 0.5: "1/2", 0.25: "1/4"}


# ------------------------------------------------------------------------------------- formatting

def fmt_num(x, digits: int = 2, paper: bool = False) -> str:
    """A number as the report shows it: ``digits`` decimals, ``—`` when missing.

    ``paper=True`` writes the paper's reference values as it does (``2.5``, ``1/3``).

    >>> fmt_num(12345.678), fmt_num(0.000123), fmt_num(3), fmt_num(None), fmt_num("x")
    ('12346', '0.00012', '3', '—', 'x')
    """
    if isinstance(x, str):
        return x if x.strip() else "—"
    if H.is_missing(x):
        return "—"
    if isinstance(x, bool) or type(x).__name__ in ("bool_", "bool"):
        return "yes" if x else "no"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if paper:
        for ref, label in _PAPER_FRACTIONS.items():
            if abs(v - ref) < 1e-9:
                return label
        return f"{v:g}"
    if v == int(v) and abs(v) < 1e15 and not isinstance(x, float):
        return str(int(v))
    if v == 0:
        return f"{0:.{digits}f}"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    if abs(v) < 10 ** -digits:
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}"


def fmt_ci(lo, hi, digits: int = 2) -> str:
    """``[lo, hi]``, or ``—`` when the interval is missing.

    >>> fmt_ci(0.62987, 1.1871), fmt_ci(float("nan"), 1.0)
    ('[0.63, 1.19]', '—')
    """
    if H.is_missing(lo) or H.is_missing(hi):
        return "—"
    return f"[{fmt_num(float(lo), digits)}, {fmt_num(float(hi), digits)}]"


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _href(path: str) -> str:
    return quote(path, safe="/.#?=&:")


# -------------------------------------------------------------------------------------- reading

def _read_csv(path: Path):
    """The CSV as a DataFrame; ``None`` when it does not exist; raises on a malformed file."""
    if not path.is_file():
        return None
    return pd.read_csv(path)


def _read_summary(root: Path):
    """``samples/summary.csv`` (the variants each family has), or None when missing or unreadable."""
    try:
        return _read_csv(Path(root) / SOURCES["summary"][0])
    except Exception:  # noqa: BLE001 - no summary: nothing to filter by
        return None


def _only_note(df) -> str:
    """The note of a ratio table that has notes but no ratio at all ("" otherwise)."""
    if "note" not in df.columns or "ratio" not in df.columns or df["ratio"].notna().any():
        return ""
    notes = [str(n) for n in dict.fromkeys(df["note"].dropna()) if str(n).strip()]
    return "; ".join(notes)


def headline_table(root: Path, key: str):
    """``(table, problem)``: the headline table ``key`` of :data:`SOURCES`, read from ``root``
    (``results/<profile>``), and None; or ``(None, problem)`` with problem ``"missing"``, ``"empty"``,
    ``"note: <why>"`` (a table whose rows only say why there is no ratio) or the exception that
    reading raised. Ratio tables (:data:`RATIO_TABLES`) go through
    :func:`rlsft.headline.ratio_headline` (the comparisons of variants a family has, with the
    verdicts against the paper); the others are returned as read."""
    try:
        df = _read_csv(Path(root) / SOURCES[key][0])
    except pd.errors.EmptyDataError:
        return None, "empty"
    except Exception as exc:  # noqa: BLE001 - a broken file becomes a note, never a crash
        return None, exc
    if df is None:
        return None, "missing"
    note = _only_note(df)
    if note:
        return None, f"note: {note}"
    if key in RATIO_TABLES:
        df = H.ratio_headline(df, _read_summary(root))
    if df.empty:
        return None, "empty"
    return df, None


def load_manifest(root: Path) -> dict | None:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return None
    try:
        man = read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read %s: %s", path, exc)
        return None
    return man if isinstance(man, dict) else None


def _stage_records(man: dict | None) -> list[tuple[str, dict]]:
    """The manifest's stage records in notebook order."""
    if not man:
        return []
    stages = [(k, v) for k, v in (man.get("stages") or {}).items() if isinstance(v, dict)]
    return sorted(stages, key=lambda kv: (str(kv[1].get("notebook", "~")), kv[0]))


def _short_commit(c) -> str:
    if not c:
        return "unknown"
    c = str(c)
    sha, _, rest = c.partition("+")
    if re.fullmatch(r"[0-9a-f]{40}", sha):
        sha = sha[:10]
    return sha + ("+" + rest if rest else "")


# ------------------------------------------------------------------------------------ notebooks

def executed_notebooks(root: Path) -> list[dict]:
    """The executed notebooks to render: every ``NN_name.ipynb``, and a ``.failed.ipynb`` when it is
    the latest run of its stage (no successful copy, or a newer one)."""
    folder = Path(root) / "notebooks"
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.ipynb")):
        if p.name.startswith("."):
            continue
        if p.name.endswith(".failed.ipynb"):
            ok = p.with_name(p.name[: -len(".failed.ipynb")] + ".ipynb")
            if ok.exists() and ok.stat().st_mtime >= p.stat().st_mtime:
                continue  # a stale failure, superseded by a successful run
            out.append({"path": p, "stem": p.name[: -len(".ipynb")], "failed": True})
        else:
            out.append({"path": p, "stem": p.stem, "failed": False})
    return out


def _prepare(nb) -> None:
    """Drop matplotlib/fontTools log lines from stderr streams, and the streams they empty."""
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out.get("text", "")
                text = "".join(l for l in text.splitlines(keepends=True) if not _NOISE.search(l))
                if not text.strip():
                    continue
                out["text"] = text
            kept.append(out)
        cell["outputs"] = kept


def _notebook_title(nb, default: str) -> str:
    for cell in nb.cells:
        if cell.get("cell_type") == "markdown":
            for line in str(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip() or default
            break
    return default


_EXPORTERS: dict = {}


def _exporter(with_code: bool):
    if with_code not in _EXPORTERS:
        from nbconvert import HTMLExporter
        from nbconvert.preprocessors import CoalesceStreamsPreprocessor

        # nbconvert warns once per page that figures lack alt text (the lab template has none)
        quiet = logging.getLogger("rlsft.report.nbconvert")
        quiet.setLevel(logging.ERROR)
        if with_code:
            ex = HTMLExporter(log=quiet)
        else:
            ex = HTMLExporter(log=quiet, exclude_input=True, exclude_input_prompt=True,
                              exclude_output_prompt=True)
        ex.register_preprocessor(CoalesceStreamsPreprocessor(enabled=True), enabled=True)
        _EXPORTERS[with_code] = ex
    return _EXPORTERS[with_code]


_NAV_CSS = """<style>
.rlsft-nav{position:sticky;top:0;z-index:100;background:#f6f8fa;border-bottom:1px solid #d0d7de;
 padding:6px 16px;font:14px/1.5 system-ui,sans-serif}
.rlsft-nav a{margin-right:1.2em}.rlsft-nav .failed{color:#b00020;font-weight:bold;margin-right:1.2em}
</style>"""


def _nav(stem: str, title: str, with_code: bool, failed: bool, meta_line: str) -> str:
    other = (f'<a href="{_href(stem)}.html">without code</a>' if with_code
             else f'<a href="{_href(stem)}.code.html">with code</a>')
    flag = '<span class="failed">this run FAILED</span>' if failed else ""
    return (f'<div class="rlsft-nav"><a href="index.html">&larr; report</a>{flag}'
            f'<strong style="margin-right:1.2em">{_esc(title)}</strong>{other}'
            f'<a href="../notebooks/{_href(stem)}.ipynb">executed notebook (.ipynb)</a>'
            f'<span style="color:#57606a">{_esc(meta_line)}</span></div>')


def _inject_nav(body: str, nav: str) -> str:
    body = body.replace("</head>", _NAV_CSS + _IMG_CHECK + "\n</head>", 1)
    m = re.search(r"<body[^>]*>", body)
    if not m:
        return nav + body
    return body[: m.end()] + "\n" + nav + body[m.end():]


def render_notebook(path: Path, with_code: bool, stem: str, failed: bool = False, meta_line: str = "") -> tuple[str, str]:
    """(title, HTML page) of one executed notebook."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    title = _notebook_title(nb, stem)
    _prepare(nb)
    body, _ = _exporter(with_code).from_notebook_node(
        nb, resources={"metadata": {"name": f"{title}{'' if not with_code else ' (code)'}"}})
    return title, _inject_nav(body, _nav(stem, title, with_code, failed, meta_line))


def _render_pages(root: Path, report: Path, man: dict | None) -> list[dict]:
    """Render (or reuse) the page pair of every executed notebook; returns one entry per notebook."""
    cache_path = report / ".pages.json"
    try:
        cache = read_json(cache_path) if cache_path.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    if cache.get("version") != REPORT_VERSION:
        cache = {"version": REPORT_VERSION, "pages": {}}
    pages = cache.setdefault("pages", {})
    by_nb = {Path(str(r.get("notebook", ""))).stem: (s, r) for s, r in _stage_records(man)}
    entries, seen = [], set()
    for item in executed_notebooks(root):
        stem, path = item["stem"], item["path"]
        seen.add(stem)
        base = stem[: -len(".failed")] if item["failed"] else stem
        stage, rec = by_nb.get(base, (None, {}))
        meta_bits = []
        if stage:
            meta_bits.append(f"stage {stage}")
        if rec.get("wall_time_s") is not None:
            meta_bits.append(f"{fmt_num(rec['wall_time_s'], 1)} s")
        if rec.get("finished_at"):
            meta_bits.append(f"finished {rec['finished_at']}")
        meta_line = " · ".join(meta_bits)
        entry = {"stem": stem, "failed": item["failed"], "stage": stage, "record": rec, "title": stem,
                 "error": None}
        try:
            digest = sha256_file(path)
            key = f"{digest}:{meta_line}:{item['failed']}"
            old = pages.get(stem, {})
            html_files = [report / f"{stem}.html", report / f"{stem}.code.html"]
            if old.get("key") == key and all(f.is_file() for f in html_files):
                entry["title"] = old.get("title", stem)
            else:
                for with_code, out in zip((False, True), html_files):
                    title, page = render_notebook(path, with_code, stem, item["failed"], meta_line)
                    write_text(out, page)
                entry["title"] = title
                pages[stem] = {"key": key, "title": title}
        except Exception as exc:  # noqa: BLE001 - one broken notebook must not sink the report
            log.warning("report: cannot render %s: %s", path, exc)
            entry["error"] = f"{type(exc).__name__}: {exc}"
            pages.pop(stem, None)
        entries.append(entry)
    for stem in [s for s in pages if s not in seen]:  # notebooks that are gone: drop their pages
        for f in (report / f"{stem}.html", report / f"{stem}.code.html"):
            f.unlink(missing_ok=True)
        del pages[stem]
    write_json(cache_path, cache)
    return entries


# --------------------------------------------------------------------------------------- tables

def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _missing_note(root: Path, key: str) -> str:
    rel, stage = SOURCES[key]
    return (f'<p class="missing">{NOT_COMPUTED}: <code>{_esc(rel)}</code> is missing '
            f'(written by stage <code>{_esc(stage)}</code>).</p>')


def _error_note(rel: str, exc: Exception) -> str:
    return f'<p class="missing">could not read <code>{_esc(rel)}</code>: {_esc(type(exc).__name__)}: {_esc(exc)}</p>'


def _agree_cell(row) -> str:
    s = row[H.VERDICT_COLUMN]
    return f'<span class="agree-{s.split()[0]}">{s}</span>'


def _get(row, col, default=None):
    return row[col] if col in row.index else default


def _load_table(root: Path, key: str):
    """``(table, relative path, None)``, or ``(None, relative path, html note)`` when the table is
    missing, unreadable or empty (see :func:`headline_table`)."""
    rel = SOURCES[key][0]
    df, problem = headline_table(root, key)
    if problem == "missing":
        return None, rel, _missing_note(root, key)
    if problem == "empty":
        return None, rel, f'<p class="missing"><code>{_esc(rel)}</code> has no rows.</p>'
    if isinstance(problem, str) and problem.startswith("note: "):
        return None, rel, f'<p class="missing"><code>{_esc(rel)}</code>: {_esc(problem[6:])}</p>'
    if problem is not None:
        return None, rel, _error_note(rel, problem)
    return df, rel, None


def _value_ci(r, value: str, prefix: str = "") -> str:
    """``"1.57 [1.40, 1.75]"`` from a row's ``value`` and ``<prefix>ci_low`` / ``<prefix>ci_high``;
    ``—`` without a value.

    >>> import pandas as pd
    >>> _value_ci(pd.Series({"shape_ratio": 1.18, "shape_ci_low": 1.0, "shape_ci_high": 1.31}), "shape_ratio", "shape_")
    '1.18 [1.00, 1.31]'
    """
    v = _get(r, value)
    if H.is_missing(v):
        return "—"
    ci = fmt_ci(_get(r, f"{prefix}ci_low"), _get(r, f"{prefix}ci_high"))
    return fmt_num(v) + ("" if ci == "—" else f" {ci}")


def _has(df, col: str) -> bool:
    return col in df.columns and df[col].notna().any()


def _notes(df) -> list[str]:
    return [str(n) for n in dict.fromkeys(df["note"].dropna()) if str(n).strip()] if "note" in df.columns else []


DECOMPOSITION_TEXT = (
    "β is fitted on the raw rank R = 1..N (PAPER.md §6.4), so for the same shape of decay a graph that "
    "visits half as many nodes has twice the β. Each ratio is therefore shown with its node-count part "
    "(median N before / median N after; N = nodes in the fit) and its shape part (median β·N after / "
    "before: the slope against R/N), from the same bootstrap of problems: β ratio ≈ node-count part × "
    "shape part (medians taken separately, so not exactly). The node-count-matched ratio refits β after "
    "cutting the larger graph down to the other's node count (random response orders, median over draws): "
    "a direction that survives it is about shape, not node count. The headline number stays the raw β "
    "ratio, as the paper fits it.")


def decay_section(root: Path) -> str:
    df, rel, note = _load_table(root, "decay")
    if note is not None:
        return note
    multi = "family" in df.columns and df["family"].nunique() > 1
    header = (["family"] if multi else []) + ["metric", "comparison", "β ratio", "95% CI", "node-count part",
                                              "shape part", "node-matched β ratio", "paper", "expected",
                                              "direction as paper", "paper value in CI"]
    has_seed = {"seed_min", "seed_max"} <= set(df.columns)
    if has_seed:
        header.append("range over seeds")
    has_note = bool(_notes(df))
    if has_note:
        header.append("note")
    rows = []
    for _, r in df.iterrows():
        row = ([_esc(_get(r, "family", ""))] if multi else []) + [
            _esc(_get(r, "metric", "")), _esc(_get(r, "comparison", "")),
            f"<strong>{fmt_num(_get(r, 'ratio'))}</strong>", fmt_ci(_get(r, "ci_low"), _get(r, "ci_high")),
            _value_ci(r, "node_ratio", "node_"), _value_ci(r, "shape_ratio", "shape_"),
            _value_ci(r, "matched_ratio", "matched_"),
            fmt_num(_get(r, "paper_value"), paper=True), _esc(fmt_num(_get(r, "expected_direction"))),
            _agree_cell(r), _esc(_get(r, H.MAGNITUDE_COLUMN, "—"))]
        if has_seed:
            row.append(fmt_ci(r["seed_min"], r["seed_max"]).replace("[", "").replace("]", "").replace(", ", " – "))
        if has_note:
            row.append(_esc(fmt_num(_get(r, "note", ""))))
        rows.append(row)
    return (f'<p class="src">Ratio of the median decay rate β after / before training (a ratio &gt; 1: '
            f'the steeper decay of a squeezed graph); 95% paired bootstrap interval. The paper reports '
            f'about 2.5 for RL/Base and about 1/3 for SFT/Base. “direction as paper”: yes only when the '
            f'interval excludes 1 on the paper\'s side; “paper value in CI”: whether 2.5 or 1/3 lies in '
            f'the interval. From <a href="../{_href(rel)}"><code>{_esc(rel)}</code></a>.</p>'
            f'<p class="src">{_esc(DECOMPOSITION_TEXT)}</p>' + _html_table(header, rows)
            + geomean_block(root) + visited_block(root))


def geomean_block(root: Path) -> str:
    """The geometric means over metrics (PAPER.md §6.4's headline aggregation), raw β and shape."""
    df, rel, note = _load_table(root, "geomean")
    title = "<h3>Geometric mean over metrics</h3>"
    if note is not None:
        return title + note
    header = ["comparison", "β ratio (95% CI)", "node-count part", "shape part", "paper", "direction as paper",
              "shape direction as paper", "paper value in CI"]
    rows = [[_esc(_get(r, "comparison", "")), f"<strong>{_value_ci(r, 'ratio')}</strong>",
             _value_ci(r, "node_ratio", "node_"), _value_ci(r, "shape_ratio", "shape_"),
             fmt_num(_get(r, "paper_value"), paper=True), _agree_cell(r),
             _esc(H.agreement_word(_get(r, "shape_agrees"))), _esc(_get(r, H.MAGNITUDE_COLUMN, "—"))]
            for _, r in df.iterrows()]
    return (title + f'<p class="src">Per comparison, the geometric mean of the ratios over the three metrics '
            f'(and families), the aggregation the spec sets before comparing with 2.5 and 1/3; the interval '
            f'resamples each family\'s problems once for all metrics. From <a href="../{_href(rel)}">'
            f'<code>{_esc(rel)}</code></a>.</p>' + _html_table(header, rows))


def visited_block(root: Path) -> str:
    """The median share of the K clusters each variant's graphs visit (saturation at K)."""
    df, rel, note = _load_table(root, "visited")
    title = "<h3>Visited fraction of the K clusters</h3>"
    if note is not None:
        return title + note
    multi = "family" in df.columns and df["family"].nunique() > 1
    header = (["family"] if multi else []) + ["variant", "graphs", "median visited nodes", "median K",
                                              "median K used", "median visited fraction", "saturated (> 0.8)"]
    rows = [([_esc(_get(r, "family", ""))] if multi else []) + [
        _esc(_get(r, "variant", "")), fmt_num(_get(r, "n_graphs")), fmt_num(_get(r, "median_visited"), 1),
        fmt_num(_get(r, "median_k_asked"), 1), fmt_num(_get(r, "median_k_used"), 1),
        fmt_num(_get(r, "median_visited_fraction")),
        _saturated_cell(_get(r, "saturated"))] for _, r in df.iterrows()]
    return (title + f'<p class="src">A variant whose graphs visit most of the K clusters cannot expand past K: '
            f'K, not the model, bounds its node count and so its β. The fraction is of K (visited / K); K used '
            f'is smaller where K reaches a problem\'s distinct steps, and there K caps nothing. From <a href="../{_href(rel)}">'
            f'<code>{_esc(rel)}</code></a>.</p>' + _html_table(header, rows))


def _saturated_cell(x) -> str:
    word = H.agreement_word(x)
    return '<span class="agree-no">yes</span>' if word == "yes" else _esc(word)


def unique_section(root: Path) -> str:
    df, rel, note = _load_table(root, "unique")
    if note is not None:
        return note
    multi = "family" in df.columns and df["family"].nunique() > 1
    header = (["family"] if multi else []) + ["benchmark", "quantity", "comparison", "ratio", "95% CI",
                                              "expected", "direction as paper", "problems",
                                              "mean before → after"]
    rows = []
    for _, r in df.iterrows():
        rows.append(([_esc(_get(r, "family", ""))] if multi else []) + [
            _esc(_get(r, "benchmark", "")), _esc(_get(r, "quantity", "")), _esc(_get(r, "comparison", "")),
            f"<strong>{fmt_num(_get(r, 'ratio'))}</strong>", fmt_ci(_get(r, "ci_low"), _get(r, "ci_high")),
            _esc(fmt_num(_get(r, "direction_expected"))), _agree_cell(r),
            fmt_num(_get(r, "n_problems")),
            f"{fmt_num(_get(r, 'mean_before'))} → {fmt_num(_get(r, 'mean_after'))}"])
    return (f'<p class="src">Ratio of the mean number of unique trajectories per problem (UPGMA clusters '
            f'of chrF distances), after / before: the paper finds RL fewer unique incorrect ones '
            f'(down), SFT more unique correct ones (up). 95% paired bootstrap interval. From '
            f'<a href="../{_href(rel)}"><code>{_esc(rel)}</code></a>.</p>' + _html_table(header, rows))


_ACCURACY_LABELS = {"family": ("family", 0), "variant": ("variant", 0), "benchmark": ("benchmark", 0),
                    "n_problems": ("problems", 0), "M": ("M", 0), "accuracy": ("accuracy", 3),
                    "pass_at_1": ("pass@1", 3), "pass_at_M": ("pass@M", 3), "truncation_rate": ("truncated", 3),
                    "mean_tokens": ("mean tokens", 1)}
"""The header and decimals of each column of :func:`rlsft.headline.accuracy_table` (0: as is)."""


def summary_section(root: Path) -> str:
    df, rel, note = _load_table(root, "summary")
    if note is not None:
        return note
    df = H.accuracy_table(df)
    cols = [(c, *_ACCURACY_LABELS[c]) for c in df.columns]
    if "family" in df.columns and df["family"].nunique() <= 1:
        cols = [c for c in cols if c[0] != "family"]
    rows = [[_esc(fmt_num(r[c], d)) if d else _esc(fmt_num(r[c])) for c, _, d in cols] for _, r in df.iterrows()]
    return (f'<p class="src">Accuracy (mean over all M answers), pass@1 and pass@M (unbiased '
            f'estimator, mean over problems) per variant and benchmark. From <a href="../{_href(rel)}">'
            f'<code>{_esc(rel)}</code></a>.</p>' + _html_table([c[1] for c in cols], rows))


def _natural(p: Path):
    """Sort key: fig2 before fig10 (numbers compared as numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", p.name)]


def figures_section(root: Path, man: dict | None, pages: list[dict]) -> str:
    folder = root / "figures"
    pngs = sorted(finished_files(folder, "*.png"), key=_natural) if folder.is_dir() else []
    if not pngs:
        return f'<p class="missing">{NOT_COMPUTED}: no figures in <code>figures/</code>.</p>'
    artifacts = (man or {}).get("artifacts") or {}
    page_of = {Path(str(e["record"].get("notebook", ""))).stem: e for e in pages if e.get("record")}
    cards = []
    for p in pngs:
        rel = f"figures/{p.name}"
        art = artifacts.get(rel) or {}
        nb = Path(str(art.get("notebook") or "")).stem
        links = [f'<a href="../{_href(rel)}">PNG</a>']
        pdf = p.with_suffix(".pdf")
        links.append(f'<a href="../figures/{_href(pdf.name)}">PDF</a>' if pdf.is_file()
                     else '<span class="missing">no PDF</span>')
        if nb and nb in page_of:
            links.append(f'<a href="{_href(nb)}.html">{_esc(nb)}</a>')
        elif nb:
            links.append(f"<span>{_esc(nb)}</span>")
        note = ""
        if man is not None and not art:
            note = '<div class="missing">not in the manifest (left from an older run?)</div>'
        cards.append(f'<figure class="card"><a href="../{_href(rel)}"><img src="../{_href(rel)}" '
                     f'alt="{_esc(p.stem)}"></a><figcaption><code>{_esc(p.stem)}</code><br>'
                     f'{" · ".join(links)}{note}</figcaption></figure>')
    tables = finished_files(folder, "*.csv")
    extra = ""
    if tables:
        extra = ('<p class="src">Tables behind the figures: ' + ", ".join(
            f'<a href="../figures/{_href(t.name)}"><code>{_esc(t.name)}</code></a>' for t in tables) + "</p>")
    return (f'<p class="src">{len(pngs)} figures from <code>figures/</code> (click for the full PNG).</p>'
            f'<div class="grid">{"".join(cards)}</div>{extra}')


def notebooks_section(pages: list[dict]) -> str:
    if not pages:
        return f'<p class="missing">{NOT_COMPUTED}: no executed notebooks in <code>notebooks/</code>.</p>'
    rows = []
    for e in pages:
        stem, rec = e["stem"], e["record"] or {}
        if e["error"]:
            link = f'{_esc(stem)} <span class="missing">(could not render: {_esc(e["error"])})</span>'
        else:
            link = (f'<a href="{_href(stem)}.html">{_esc(e["title"])}</a> '
                    f'(<a href="{_href(stem)}.code.html">with code</a>)')
        status = '<span class="agree-no">FAILED</span>' if e["failed"] else "ok"
        rows.append([f"<code>{_esc(stem)}</code>", link, _esc(e["stage"] or "—"), _esc(rec.get("kind", "—")),
                     status, fmt_num(rec.get("wall_time_s"), 1)])
    return _html_table(["notebook", "page", "stage", "kind", "status", "wall time (s)"], rows)


def manifest_section(man: dict | None) -> str:
    if man is None:
        return f'<p class="missing">{NOT_COMPUTED}: no <code>manifest.json</code>.</p>'
    recs = _stage_records(man)
    seeds = sorted({str(r.get("seed")) for _, r in recs if r.get("seed") is not None})
    commits = sorted({_short_commit(r.get("git_commit")) for _, r in recs})
    finished = sorted(str(r["finished_at"]) for _, r in recs if r.get("finished_at"))
    total = sum(float(r.get("wall_time_s") or 0) for _, r in recs)
    facts = [("stages recorded", str(len(recs))), ("seed", ", ".join(seeds) or "—"),
             ("git commit", ", ".join(commits) or "—"),
             ("finished", f"{finished[0]} … {finished[-1]}" if finished else "—"),
             ("total wall time of the recorded stages", f"{fmt_num(total, 1)} s"),
             ("artifacts", str(len(man.get("artifacts") or {})))]
    out = ['<table class="facts">' + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts)
           + "</table>"]
    rows = []
    for stage, r in recs:
        peak = r.get("peak_rss_mb")
        rows.append([f"<code>{_esc(stage)}</code>", _esc(Path(str(r.get("notebook", "—"))).name),
                     _esc(r.get("kind", "—")), fmt_num(r.get("wall_time_s"), 1),
                     fmt_num(peak, 0) if peak is not None else "—", _esc(r.get("finished_at", "—")),
                     _esc(_short_commit(r.get("git_commit"))), str(len(r.get("outputs") or {}))])
    if rows:
        out.append("<h3>Stages</h3>" + _html_table(
            ["stage", "notebook", "kind", "wall time (s)", "peak RSS (MB)", "finished", "git commit", "artifacts"],
            rows))
        params = []
        for stage, r in recs:
            p = r.get("parameters") or {}
            params.append(f"<details><summary><code>{_esc(stage)}</code>: {len(p)} parameters</summary>"
                          f"<pre>{_esc(json.dumps(p, indent=2, sort_keys=True, default=str))}</pre></details>")
        out.append("<h3>Parameters per stage</h3>" + "".join(params))
    versions = man.get("package_versions") or {}
    if versions:
        differ = sorted({s for s, r in recs if r.get("package_versions") and r["package_versions"] != versions})
        note = (f'<p class="missing">stages run with other package versions: {_esc(", ".join(differ))} '
                f'(see their records in <code>manifest.json</code>)</p>' if differ else "")
        out.append("<h3>Package versions</h3>" + _html_table(
            ["package", "version"], [[_esc(k), f"<code>{_esc(v)}</code>"] for k, v in sorted(versions.items())],
            cls="narrow") + note)
    out.append('<p class="src">Full record: <a href="../manifest.json"><code>manifest.json</code></a>.</p>')
    return "".join(out)


# ---------------------------------------------------------------------------------------- index

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:0 20px 60px;color:#1f2328}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:14px}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
thead th{background:#f6f8fa}td{font-variant-numeric:tabular-nums}
table.facts th{background:#f6f8fa;font-weight:600}
.missing{color:#9a6700}.src{color:#57606a;font-size:14px}
.agree-yes{color:#1a7f37;font-weight:600}.agree-no{color:#cf222e;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.card{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:8px;background:#fff}
.card img{width:100%;height:180px;object-fit:contain;display:block;background:#fafafa}
.card figcaption{font-size:13px;margin-top:6px}
details{margin:.2em 0}pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:13px}
#broken-images{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px}
nav.toc a{margin-right:1em}
"""

# counts the images that did not load into <html data-images-*> (the browser test reads them) and
# warns the reader when a figure is missing on disk
_IMG_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = document.images, broken = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) broken.push(imgs[i].getAttribute("src"));
  }
  var root = document.documentElement;
  root.setAttribute("data-images-total", String(imgs.length));
  root.setAttribute("data-images-broken", String(broken.length));
  root.setAttribute("data-images-checked", "1");
  if (broken.length) {
    var n = document.getElementById("broken-images");
    if (!n) {
      n = document.createElement("p");
      n.id = "broken-images";
      n.style.cssText = "background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px";
      document.body.insertBefore(n, document.body.firstChild);
    }
    n.textContent = broken.length + " of " + imgs.length + " figures did not load: " + broken.join(", ");
    n.hidden = false;
  }
});
</script>"""


def _profile_header(profile, root: Path) -> tuple[str, str]:
    if isinstance(profile, str):
        profile = {"name": profile}
    profile = profile or {}
    name = str(profile.get("name") or root.name)
    desc = profile.get("description")
    chain = profile.get("chain") or [name]
    bits = [f"<h1>RL Squeezes, SFT Expands — results of profile <code>{_esc(name)}</code></h1>"]
    if desc:
        bits.append(f"<p>{_esc(desc)}</p>")
    bits.append(f'<p class="src">Profile chain: <code>{_esc(" ← ".join(map(str, chain)))}</code> · '
                f'results folder <code>results/{_esc(root.name)}/</code> · report generated '
                f'{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}. Every number on this '
                f'page is read from the files of that folder; a missing file shows as '
                f'“{NOT_COMPUTED}”.</p>')
    return name, "\n".join(bits)


def _section(sid: str, title: str, body_fn, *args) -> str:
    try:
        body = body_fn(*args)
    except Exception as exc:  # noqa: BLE001 - a broken section must not sink the report
        log.warning("report: section %r failed: %s", title, exc)
        body = f'<p class="missing">could not build this section: {_esc(type(exc).__name__)}: {_esc(exc)}</p>'
    return f'<section id="{sid}"><h2>{_esc(title)}</h2>\n{body}\n</section>'


def render_index(root: Path, profile, man: dict | None, pages: list[dict]) -> str:
    name, header = _profile_header(profile, root)
    sections = [
        ("decay", "Decay-rate ratios (step level, Fig. 6)", decay_section, root),
        ("unique", "Unique-trajectory ratios (trajectory level, Fig. 2)", unique_section, root),
        ("accuracy", "Accuracy and pass@k per variant", summary_section, root),
        *([("imported", "Imported completions (balance checks)", imported_section, root)]
          if (Path(root) / SOURCES["imported"][0]).exists() else []),
        ("figures", "Figures", figures_section, root, man, pages),
        ("notebooks", "Executed notebooks", notebooks_section, pages),
        ("manifest", "Run record (manifest)", manifest_section, man),
    ]
    toc = "".join(f'<a href="#{s[0]}">{_esc(s[1].split(" (")[0])}</a>' for s in sections)
    body = "\n".join(_section(s[0], s[1], s[2], *s[3:]) for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>rlsft report: {_esc(name)}</title><style>{_CSS}</style>{_IMG_CHECK}</head>\n<body>\n"
            f'{header}\n<p id="broken-images" hidden></p>\n<nav class="toc">{toc}</nav>\n{body}\n</body></html>\n')


def build_report(root: Path, profile=None) -> Path:
    """Write ``<root>/report/index.html`` and one page pair per executed notebook; returns the index.

    ``root`` is ``results/<profile>``; ``profile`` the loaded profile dict (or its name). Never
    raises on missing or broken inputs: those sections say so.
    """
    t0 = time.perf_counter()
    root = Path(root)
    report = root / "report"
    report.mkdir(parents=True, exist_ok=True)
    man = load_manifest(root)
    try:
        pages = _render_pages(root, report, man)
    except Exception as exc:  # noqa: BLE001
        log.warning("report: notebook pages failed: %s", exc)
        pages = []
    index = write_text(report / "index.html", render_index(root, profile, man, pages))
    log.info("report: wrote %s (%d notebook pages) in %.1f s", index, len(pages), time.perf_counter() - t0)
    return index


# --------------------------------------------------------------------------------------- README

def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _md_provenance(root: Path) -> str:
    recs = _stage_records(load_manifest(root))
    if not recs:
        return f"Profile `{root.name}`: no `manifest.json` yet."
    finished = max(str(r.get("finished_at", "")) for _, r in recs)
    commits = sorted({_short_commit(r.get("git_commit")) for _, r in recs})
    seeds = sorted({str(r.get("seed")) for _, r in recs if r.get("seed") is not None})
    return (f"Profile `{root.name}`, seed {', '.join(seeds) or '?'}, git `{', '.join(commits)}`, "
            f"last stage finished {finished}. Report: `results/{root.name}/report/index.html`.")


def _md_read(root: Path, key: str):
    """``(table, None)`` or ``(None, the markdown note saying why there is none)``."""
    src = f"results/{root.name}/{SOURCES[key][0]}"
    df, problem = headline_table(root, key)
    if isinstance(problem, Exception):
        return None, f"(could not read `{src}`: {problem})"
    if isinstance(problem, str) and problem.startswith("note: "):
        return None, f"(`{src}`: {problem[6:]})"
    if problem == "empty":
        return None, f"(`{src}` has no rows)"
    if problem is not None:
        return None, f"({NOT_COMPUTED}: `{src}`)"
    return df, None


def _md_decay(df, src: str) -> str:
    multi = "family" in df.columns and df["family"].nunique() > 1
    notes = _notes(df)
    rows = [([str(_get(r, "family", ""))] if multi else []) + [
        str(_get(r, "metric", "")), str(_get(r, "comparison", "")), fmt_num(_get(r, "ratio")),
        fmt_ci(_get(r, "ci_low"), _get(r, "ci_high")), _value_ci(r, "node_ratio", "node_"),
        _value_ci(r, "shape_ratio", "shape_"), _value_ci(r, "matched_ratio", "matched_"),
        fmt_num(_get(r, "paper_value"), paper=True), r[H.VERDICT_COLUMN], str(_get(r, H.MAGNITUDE_COLUMN, "—"))]
        + ([fmt_num(_get(r, "note", ""))] if notes else []) for _, r in df.iterrows()]
    return _md_table((["family"] if multi else []) + [
        "metric", "comparison", "β ratio", "95% CI", "node-count part", "shape part", "node-matched β ratio",
        "paper", "direction as paper", "paper value in CI"] + (["note"] if notes else []), rows)


def _md_geomean(df, src: str) -> str:
    rows = [[str(_get(r, "comparison", "")), _value_ci(r, "ratio"), _value_ci(r, "node_ratio", "node_"),
             _value_ci(r, "shape_ratio", "shape_"), fmt_num(_get(r, "paper_value"), paper=True),
             r[H.VERDICT_COLUMN], H.agreement_word(_get(r, "shape_agrees")), str(_get(r, H.MAGNITUDE_COLUMN, "—"))]
            for _, r in df.iterrows()]
    reading = "\n".join(f"- {H.decomposition_sentence(r)}" for _, r in df.iterrows())
    return reading + "\n\n" + _md_table(["comparison", "β ratio (95% CI)", "node-count part", "shape part", "paper",
                      "direction as paper", "shape direction as paper", "paper value in CI"], rows)


def _md_visited(df, src: str) -> str:
    multi = "family" in df.columns and df["family"].nunique() > 1
    rows = [([str(_get(r, "family", ""))] if multi else []) + [
        str(_get(r, "variant", "")), fmt_num(_get(r, "median_visited"), 1), fmt_num(_get(r, "median_k_asked"), 1),
        fmt_num(_get(r, "median_k_used"), 1), fmt_num(_get(r, "median_visited_fraction")),
        H.agreement_word(_get(r, "saturated"))] for _, r in df.iterrows()]
    return _md_table((["family"] if multi else []) + ["variant", "median visited nodes", "median K", "median K used",
                                                      "median visited fraction", "saturated (> 0.8)"], rows)


def _md_unique(df, src: str) -> str:
    multi = "family" in df.columns and df["family"].nunique() > 1
    rows = [([str(_get(r, "family", ""))] if multi else []) + [
        str(_get(r, "benchmark", "")), str(_get(r, "quantity", "")), str(_get(r, "comparison", "")),
        fmt_num(_get(r, "ratio")), fmt_ci(_get(r, "ci_low"), _get(r, "ci_high")),
        str(_get(r, "direction_expected", "")), r[H.VERDICT_COLUMN]] for _, r in df.iterrows()]
    return _md_table((["family"] if multi else []) + ["benchmark", "quantity", "comparison", "ratio",
                                                      "95% CI", "expected", "direction as paper"], rows)


def _md_pass_at_1(df, src: str) -> str:
    if not set(H.PASS_AT_1_COLUMNS) <= set(df.columns):
        return f"(`{src}` lacks the columns variant, benchmark, pass_at_1)"
    table = H.pass_at_1_table(df)
    multi = len(dict.fromkeys(table["family"])) > 1
    benches = list(table.columns[2:])
    rows = [([str(r["family"])] if multi else []) + [str(r["variant"])] + [fmt_num(r[b], 3) for b in benches]
            for _, r in table.iterrows()]
    return _md_table((["family"] if multi else []) + ["variant"] + benches, rows)


_MD_INTROS = {
    "decay": "**Decay-rate ratios** (median β after / before, 95% bootstrap CI; the paper: RL/Base ≈ 2.5, "
             "SFT/Base ≈ 1/3), each with its node-count part (median N before / after, N = nodes in the fit) "
             "and shape part (median β·N after / before, the slope against R/N), β ratio ≈ node-count part × "
             "shape part, and the β ratio when both graphs visit the same number of nodes (node-matched); "
             "direction as paper: yes only when the CI excludes 1 on the paper's side; from `{src}`:",
    "geomean": "**Geometric mean over metrics** (PAPER.md §6.4's aggregation; raw β and its shape part, 95% CI), "
               "from `{src}`:",
    "visited": "**Visited fraction** (median share of the K clusters a variant's graphs visit, visited / K; "
               "above 0.8 the variant is saturated at K; K used = min(K, a problem's distinct steps) is smaller "
               "where K reaches the distinct steps, and there K caps nothing), from `{src}`:",
    "unique": "**Unique-trajectory ratios** (mean unique trajectories per problem, after / before, 95% CI; "
              "expected: RL/Base incorrect down, SFT/Base correct up), from `{src}`:",
    "summary": "**pass@1 per variant**, from `{src}`:",
    "backends": "**Backends side by side**: the same models (the same training seeds) sampled by profile `{a}` "
                "and by this profile with another backend; per model and benchmark, the mean over problems "
                "of each and the paired difference with its 95% bootstrap interval over problems (the "
                "backends draw different random numbers, so agreement means an interval that holds 0, not "
                "equal numbers; `rlsft.agreement`, from `results/{a}` and `results/{b}`), then the "
                "unique-trajectory ratios of both runs:",
    "sweep": "**How the ratio moves with K and M** (stage sweep: the geometric mean over metrics of the β ratio "
             "and, in parentheses, of its shape part, at each number of clusters K with the same samples, and at "
             "each number of responses per variant M subsampled with the same clusters; * marks the K of "
             "stage graphs and the profile's M; the saturation rule picks K = {k_rule}, the smallest grid K at which no variant's "
             "median visited fraction exceeds 0.8), from `{src}` (figure: `results/{name}/figures/"
             "fig_sweep_geomean.png`):",
    "imported": "**Imported completions** (the variants of a family on the problems they share, with the same "
                "samples per problem; `stages.samples.imported_balance`), from `{src}`:",
}


_IMPORTED_COLUMNS = ["family", "variant", "benchmark", "problems", "samples_per_problem", "problems_kept",
                     "samples_per_problem_kept", "action"]


def _imported_rows(df) -> tuple[int, list[list[str]]]:
    """``(checked, rows)``: how many (family, variant, benchmark) files were checked, and the rows
    of those the balance changed (``samples/imported_checks.csv``; action other than "kept as is")."""
    changed = df[df["action"].astype(str) != "kept as is"] if "action" in df.columns else df
    return len(df), [[str(_get(r, c, "")) for c in _IMPORTED_COLUMNS] for _, r in changed.iterrows()]


def _md_imported(df, src: str) -> str:
    checked, rows = _imported_rows(df)
    if not rows:
        return f"All {checked} imported (family, variant, benchmark) sets were kept as is."
    return _md_table(_IMPORTED_COLUMNS, rows)


def imported_section(root: Path) -> str:
    """The balance report of imported completions (HTML), or a line saying there were none."""
    rel = SOURCES["imported"][0]
    df, problem = headline_table(root, "imported")
    if df is None:
        return f'<p class="src">No imported completions (no <code>{_esc(rel)}</code>).</p>'
    checked, rows = _imported_rows(df)
    src = f'From <a href="../{_href(rel)}"><code>{_esc(rel)}</code></a>.'
    if not rows:
        return f'<p class="src">All {checked} imported (family, variant, benchmark) sets were kept as is. {src}</p>'
    return (f'<p class="src">The variants of a family are compared on the problems they share with the same '
            f'samples per problem; what that changed: {src}</p>' + _html_table(_IMPORTED_COLUMNS, rows))


def backend_partner(profile: dict | None, results: Path) -> Path | None:
    """The results folder to set beside this profile's, backend against backend: that of the profile
    it extends (``profile["chain"][1]``) when the two sample with different backends (``organism-vllm``
    against ``organism``) and the parent's samples exist; else None."""
    chain = (profile or {}).get("chain") or []
    if len(chain) < 2:
        return None
    try:
        parent = load_profile(chain[1])
    except ConfigError:
        return None

    def backend(p: dict) -> str:
        return ((p.get("stages") or {}).get("samples") or {}).get("backend", "transformers")

    folder = Path(results) / parent["name"]
    if backend(parent) == backend(profile) or not (folder / "samples" / "all_samples.parquet").exists():
        return None
    return folder


def _md_backends(root: Path, partner: Path) -> str:
    """pass@1 and unique incorrect trajectories of the same models sampled by two backends (paired
    differences with 95% intervals), and each run's unique-trajectory ratios, as markdown."""
    try:
        table = agreement(partner, root)
    except (OSError, KeyError, ValueError) as exc:
        return f"(cannot compare with `results/{partner.name}`: {exc})"
    table = table[table["measure"].isin(["pass@1", "unique_incorrect"])]
    rows = [[str(r["variant"]), str(r["benchmark"]), str(r["measure"]).replace("_", " "), fmt_num(r["A"], 3),
             fmt_num(r["B"], 3), f"{fmt_num(r['B - A'], 3)} {fmt_ci(r['ci_low'], r['ci_high'], 3)}",
             "yes" if r["agree"] else "no"] for _, r in table.iterrows()]
    a, b = partner.name, root.name
    out = [_md_table(["variant", "benchmark", "measure", a, b, f"{b} − {a} (95% CI)", "interval holds 0"], rows),
           f"{int(table['agree'].sum())} of {len(table)} paired differences hold 0 in their 95% interval."]
    ua, ub = (_read_csv(Path(d) / SOURCES["unique"][0]) for d in (partner, root))
    if ua is not None and ub is not None:
        keys = [c for c in ("family", "benchmark", "quantity", "comparison") if c in ua and c in ub]
        m = ua.merge(ub, on=keys, suffixes=(" A", " B"))
        rows = [[str(r["benchmark"]), str(r["quantity"]), str(r["comparison"]),
                 f"{fmt_num(r['ratio A'])} {fmt_ci(r['ci_low A'], r['ci_high A'])}",
                 f"{fmt_num(r['ratio B'])} {fmt_ci(r['ci_low B'], r['ci_high B'])}"] for _, r in m.iterrows()]
        out.append(_md_table(["benchmark", "quantity", "comparison", f"ratio, {a}", f"ratio, {b}"], rows))
    return "\n\n".join(out)


def _md_k_choice(root: Path) -> str | None:
    """The K stage graphs clustered at and why (``graphs/k_choice.json``), or None before the guard.

    >>> import tempfile, json
    >>> r = Path(tempfile.mkdtemp()); (r / "graphs").mkdir()
    >>> _ = (r / "graphs" / "k_choice.json").write_text(json.dumps({"k_profile": 96, "k": 128,
    ...     "reason": "raised by the guard: f/SFT saturated at K = 96; none at K = 128"}))
    >>> _md_k_choice(r)[:60]
    '**K = 128** (profile: 96): raised by the guard: f/SFT satura'
    """
    path = Path(root) / "graphs" / "k_choice.json"
    if not path.exists():
        return None
    c = read_json(path)
    return (f"**K = {c['k']}** (profile: {c['k_profile']}): {c['reason']} (`results/{Path(root).name}/graphs/"
            f"k_choice.json`; the guard raises K along the saturation rule's grid while a variant's median "
            f"visited fraction is above 0.8).")


def _md_sweep(root: Path) -> str | None:
    """The K and M axes of stage ``sweep`` (``sweep/geomeans.csv``, ``sweep/k_rule.json``): one row per
    point, one column per comparison, ``β ratio (shape part)``; ``None`` when the stage has not run."""
    path = root / "sweep" / "geomeans.csv"
    if not path.exists():
        return None
    geo = pd.read_csv(path)
    if geo.empty:
        return f"(`results/{root.name}/sweep/geomeans.csv` has no rows)"
    rule_path = root / "sweep" / "k_rule.json"
    rule = read_json(rule_path) if rule_path.exists() else {}
    main_k = rule.get("graphs_k", rule.get("profile_k"))
    main_m = int(geo.loc[geo["axis"] == "M", "value"].max()) if (geo["axis"] == "M").any() else None
    comps = [c for c in dict.fromkeys(geo["comparison"]) if geo.loc[geo["comparison"] == c, "ratio"].notna().any()]
    rows = []
    for (axis, value), part in geo.groupby(["axis", "value"], sort=False):
        own = (axis == "K" and value == main_k) or (axis == "M" and value == main_m)
        cells = []
        for c in comps:
            r = part[part["comparison"] == c]
            cells.append("—" if r.empty or H.is_missing(r["ratio"].iloc[0]) else
                         f"{fmt_num(r['ratio'].iloc[0])} ({fmt_num(r['shape_ratio'].iloc[0])})")
        rows.append([axis, f"{int(value)}{'*' if own else ''}", *cells])
    intro = _MD_INTROS["sweep"].format(k_rule=rule.get("k_rule") or "—", src=f"results/{root.name}/sweep/geomeans.csv",
                                      name=root.name)
    return intro + "\n\n" + _md_table(["axis", "value", *comps], rows)


def readme_block(root: Path, partner: Path | None = None) -> str:
    """The headline numbers of ``root`` (``results/<profile>``) as a markdown block; with ``partner``
    (:func:`backend_partner`), also the two backends side by side."""
    root = Path(root)
    out = [_md_provenance(root)]
    for key, render in (("decay", _md_decay), ("geomean", _md_geomean), ("visited", _md_visited),
                        ("unique", _md_unique), ("summary", _md_pass_at_1)):
        src = f"results/{root.name}/{SOURCES[key][0]}"
        out.append(_MD_INTROS[key].format(src=src))
        df, err = _md_read(root, key)
        out.append(err if err else render(df, src))
        k_line = _md_k_choice(root) if key == "visited" else None
        if k_line:
            out.append(k_line)
    sweep = _md_sweep(root)
    if sweep is not None:
        out.append(sweep)
    imported, _ = headline_table(root, "imported")
    if imported is not None:  # only profiles that import completions have the balance report
        src = f"results/{root.name}/{SOURCES['imported'][0]}"
        out += [_MD_INTROS["imported"].format(src=src), _md_imported(imported, src)]
    if partner is not None:
        out += [_MD_INTROS["backends"].format(a=Path(partner).name, b=root.name), _md_backends(root, Path(partner))]
    return "\n\n".join(out) + "\n"


def _markers(profile_name: str) -> tuple[str, str]:
    return f"<!-- results:{profile_name}:begin -->", f"<!-- results:{profile_name}:end -->"


def update_readme(readme_path: Path, root: Path, profile_name: str, partner: Path | None = None) -> bool:
    """Replace the text between the profile's results markers in ``readme_path`` with
    :func:`readme_block`; returns whether the file changed (no-op with a log line without markers)."""
    readme_path = Path(readme_path)
    begin, end = _markers(profile_name)
    try:
        text = readme_path.read_text(encoding="utf-8")
    except OSError as exc:
        log.info("update_readme: cannot read %s (%s); nothing updated", readme_path, exc)
        return False
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    if i < 0 or j < 0:
        log.info("update_readme: %s has no %s ... %s markers; nothing updated", readme_path, begin, end)
        return False
    new = text[: i + len(begin)] + "\n" + readme_block(root, partner).strip("\n") + "\n" + text[j:]
    if new == text:
        return False
    write_text(readme_path, new)
    log.info("update_readme: wrote the %s results block into %s", profile_name, readme_path)
    return True


# ------------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rlsft.report",
                                 description="Rebuild results/<profile>/report/ from the saved results.")
    ap.add_argument("--profile", default="organism", help="profile name (default: organism)")
    ap.add_argument("--results", default=str(REPO_ROOT / "results"), help="results root (default: results/)")
    ap.add_argument("--readme", nargs="?", const=str(REPO_ROOT / "README.md"), default=None, metavar="PATH",
                    help="also update the profile's results block in the README (default path: README.md)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        profile = load_profile(args.profile)
    except ConfigError as exc:  # results of a profile whose YAML is gone or invalid: still report them
        log.info("report: profile %r not loaded (%s); using its name only", args.profile, str(exc).splitlines()[0])
        profile = {"name": args.profile}
    root = Path(args.results) / profile["name"]
    if not root.is_dir():
        print(f"python -m rlsft.report: error: no results folder {root}; run ./run_all.sh --profile "
              f"{args.profile} first", file=sys.stderr)
        return 2
    index = build_report(root, profile)
    print(index)
    if args.readme:
        update_readme(Path(args.readme), root, profile["name"], backend_partner(profile, Path(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
