"""All benchmarks in one command, one combined table with ratios.

    python benchmarks/run_benchmarks.py [--quick] [--parallel] [--profile organism] [--only NAME ...]

Runs, each in its own subprocess (one after the other by default, so they do not compete for the
CPU; ``--parallel`` starts them side by side, faster but with disturbed timings):

- ``chrf``: the all-pairs chrF matrix, ``rlsft.trajectories.chrf_matrix`` vs ``fastchrf`` and vs
  ``sacrebleu`` (``benchmarks/bench_chrf.py``; skipped with a note when that file is absent)
- ``betweenness``: ``rlsft.graphs.betweenness`` (rustworkx) vs ``networkx`` (``bench_graphs.py``)
- ``embedding``: encoding every step string vs ``rlsft.embedders.embed_unique`` (dedup, cold and warm
  cache) (``bench_graphs.py``)
- ``steps``: the step-level stage on one problem group, ``rlsft.stages.graphs.step_analysis`` (streamed)
  vs the code before streaming, per stage: time and peak RSS (``bench_steps.py``; the paper's size
  is ``bench_steps.py --full``, run on its own)

and reads (no subprocess) each pipeline stage's wall time and peak memory from
``results/<profile>/manifest.json`` (``wall_time_s``, ``peak_rss_mb``; the latter is NaN in
manifests written before it was recorded).

Prints one table and writes ``results/benchmarks/summary.csv`` atomically (its ``mode`` column says
``full`` or ``quick``: smaller sizes, under two minutes). The raw tables of the individual
benchmarks go to ``results/benchmarks/<name>.csv`` (``--quick``: ``results/benchmarks/quick/``,
so a quick run leaves the full tables alone), their logs to ``logs/`` beside them. Column meanings:
benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(ROOT / "lib"))

COLUMNS = ["group", "case", "ours", "ours_s", "reference", "reference_s", "ratio", "max_abs_diff",
           "peak_rss_mb", "note"]
NAMES = ("chrf", "betweenness", "embedding", "steps")

SIZES = {  # arguments of the individual benchmark scripts
    "full": {"chrf": [], "betweenness": ["--sizes", "200", "1000", "2000"],
             "embedding": ["--embed-texts", "5000", "--embed-distinct", "400"],
             "steps": ["--responses", "12", "--k", "200"]},
    "quick": {"chrf": ["--n-texts", "64", "--chars", "2000", "--sacrebleu-pairs", "100", "--repeats", "1"],
              "betweenness": ["--sizes", "200", "500", "--repeats", "2"],
              "embedding": ["--embed-texts", "1000", "--embed-distinct", "100"],
              "steps": ["--responses", "3", "--k", "50", "--dim", "256"]},
}


def _nan() -> float:
    return float("nan")


def _row(**kw) -> dict:
    row = {c: _nan() for c in COLUMNS}
    row.update({"note": ""}, **kw)
    return row


# ------------------------------------------------------------------------------ subprocesses

def specs(mode: str, scratch: Path) -> dict:
    """``name -> (script, argv, output file the script writes)``."""
    s = SIZES[mode]
    return {
        "chrf": (BENCH / "bench_chrf.py", s["chrf"] + ["--out", str(scratch / "chrf" / "chrf.csv")],
                 scratch / "chrf" / "chrf.csv"),
        "betweenness": (BENCH / "bench_graphs.py", s["betweenness"] + ["--skip-embedding", "--out",
                                                                      str(scratch / "betweenness")],
                        scratch / "betweenness" / "betweenness.csv"),
        # bench_graphs.py always times betweenness first: on a 10-node graph, and that table is dropped
        "embedding": (BENCH / "bench_graphs.py", ["--sizes", "10", "--repeats", "1"] + s["embedding"]
                      + ["--out", str(scratch / "embedding")], scratch / "embedding" / "embedding.csv"),
        "steps": (BENCH / "bench_steps.py", s["steps"] + ["--out", str(scratch / "steps" / "steps.csv")],
                  scratch / "steps" / "steps.csv"),
    }


def _rel(p: Path) -> str:
    p = Path(p)
    return str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else str(p)


RUNNING: set[int] = set()
"""Process-group ids of the benchmark processes still running (killed on Ctrl-C)."""


def _kill(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_one(name: str, script: Path, argv: list[str], log_path: Path, timeout: float) -> dict:
    """Run one benchmark script; returns rc, wall seconds, peak RSS (MB) of the process tree, log."""
    if not script.is_file():
        return {"name": name, "rc": None, "seconds": _nan(), "peak_rss_mb": _nan(),
                "error": f"{_rel(script)} not found: skipped"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "lib")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(script), *argv], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING.add(proc.pid)
        timer = threading.Timer(timeout, _kill, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        finally:
            timer.cancel()
            RUNNING.discard(proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    rc = proc.returncode
    error = None
    if rc != 0:
        error = (f"timed out after {timeout:.0f} s" if rc == -signal.SIGKILL and seconds >= timeout - 1
                 else f"exit status {rc}") + f"; log: {_rel(log_path)}"
    return {"name": name, "rc": rc, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "error": error}


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------- the tables

def chrf_rows(df, peak: float) -> list[dict]:
    import pandas as pd

    ours = df[df["method"] == "rlsft.chrf_matrix"]
    if ours.empty:
        return [_row(group="chrf", note="no rlsft.chrf_matrix row in chrf.csv")]
    o = ours.iloc[0]
    case = f"{int(o['n_texts'])} texts x {int(o['chars'])} chars, all pairs"
    rows = []
    for _, r in df[df["method"] != "rlsft.chrf_matrix"].iterrows():
        extrap = str(r.get("extrapolated", False)).lower() == "true"
        note = (f"time extrapolated from {int(r['pairs_timed'])} pairs" if extrap else "")
        rows.append(_row(group="chrf", case=case, ours="rlsft.chrf_matrix", ours_s=float(o["seconds"]),
                         reference=str(r["method"]), reference_s=float(r["seconds"]),
                         ratio=float(r["seconds"]) / float(o["seconds"]),
                         max_abs_diff=float(r["max_abs_diff"]) if pd.notna(r.get("max_abs_diff")) else _nan(),
                         peak_rss_mb=peak, note=note))
    return rows


def _threads(x) -> str:
    try:
        return f"{int(float(x))} threads"
    except (TypeError, ValueError):
        return ""


def betweenness_rows(df, peak: float) -> list[dict]:
    return [_row(group="betweenness", case=f"{int(r['n_nodes'])} nodes, {int(r['n_edges'])} edges",
                 ours="rlsft.graphs.betweenness (rustworkx)", ours_s=float(r["seconds_rustworkx"]),
                 reference="networkx.betweenness_centrality", reference_s=float(r["seconds_networkx"]),
                 ratio=float(r["seconds_networkx"]) / float(r["seconds_rustworkx"]),
                 max_abs_diff=float(r["max_abs_diff"]), peak_rss_mb=peak,
                 note=_threads(r.get("threads")))
            for _, r in df.iterrows()]


def embedding_rows(df, peak: float) -> list[dict]:
    base = df[df["mode"] == "encode_all"]
    if base.empty:
        return [_row(group="embedding", note="no encode_all row in embedding.csv")]
    b = base.iloc[0]
    case = f"{int(b['n_texts'])} step strings, {int(b['n_distinct'])} distinct"
    return [_row(group="embedding", case=case, ours=f"embed_unique ({str(r['mode']).replace('dedup_', '')})",
                 ours_s=float(r["seconds"]), reference="encode every string", reference_s=float(b["seconds"]),
                 ratio=float(b["seconds"]) / float(r["seconds"]) if float(r["seconds"]) > 0 else _nan(),
                 max_abs_diff=float(r["max_abs_diff"]), peak_rss_mb=peak)
            for _, r in df.iterrows() if r["mode"] != "encode_all"]


def steps_rows(df, peak: float) -> list[dict]:
    """One row per step-level stage: new (ours) vs old (reference) on the same run, and new alone at
    the larger size when the script ran one."""
    rows = []
    old, new = df[df["run"] == "old-sub"].set_index("stage"), df[df["run"] == "new-sub"].set_index("stage")
    for stage, n in new.iterrows():
        o = old.loc[stage] if stage in old.index else None
        case = (f"{stage}: 4 x {int(n['responses'])} responses, {int(n['n_distinct'])} distinct steps, "
                f"K={int(n['k'])}, dim={int(n['dim'])}")
        ref_s = float(o["seconds"]) if o is not None else _nan()
        rows.append(_row(group="steps", case=case, ours="rlsft.stages.graphs.step_analysis", ours_s=float(n["seconds"]),
                         reference="old step code (steps_reference.py)", reference_s=ref_s,
                         ratio=ref_s / float(n["seconds"]) if float(n["seconds"]) > 0 else _nan(),
                         peak_rss_mb=float(n["peak_rss_mb"]),
                         note=(f"old peak {float(o['peak_rss_mb']):.0f} MB; " if o is not None and o["peak_rss_mb"] == o["peak_rss_mb"] else "")
                         + f"new k-means: {n['method']}"))
    for stage, n in df[df["run"] == "new-full"].set_index("stage").iterrows():
        rows.append(_row(group="steps", case=f"{stage}: 4 x {int(n['responses'])} responses, K={int(n['k'])} (new only)",
                         ours="rlsft.stages.graphs.step_analysis", ours_s=float(n["seconds"]), peak_rss_mb=float(n["peak_rss_mb"]),
                         note=f"k-means: {n['method']}"))
    return rows or [_row(group="steps", note="no rows in steps.csv")]


def stage_rows(profile: str, results: Path) -> list[dict]:
    """Wall time and peak RSS per stage from ``results/<profile>/manifest.json``."""
    path = results / profile / "manifest.json"
    if not path.is_file():
        return [_row(group="stage", case=profile, note=f"not computed yet: no {_rel(path)}"
                     f" (run ./run_all.sh --profile {profile})")]
    try:
        stages = json.loads(path.read_text()).get("stages") or {}
    except (OSError, ValueError) as exc:
        return [_row(group="stage", case=profile, note=f"cannot read {path}: {exc}")]
    recs = sorted(stages.items(), key=lambda kv: (str(kv[1].get("notebook", "~")), kv[0]))
    total = sum(float(r.get("wall_time_s") or 0) for _, r in recs)
    rows = []
    for stage, r in recs:
        wall = r.get("wall_time_s")
        peak = r.get("peak_rss_mb")
        wall = float(wall) if wall is not None else _nan()
        rows.append(_row(group="stage", case=f"{profile}: {stage}", ours=Path(str(r.get("notebook", ""))).name,
                         ours_s=wall, peak_rss_mb=float(peak) if peak is not None else _nan(),
                         note=(f"{100 * wall / total:.0f}% of the pipeline" if total > 0 and not math.isnan(wall)
                               else "") + ("" if peak is not None else "; peak RSS not recorded")))
    if recs:
        rows.append(_row(group="stage", case=f"{profile}: all stages", ours="run_all.sh", ours_s=total,
                         peak_rss_mb=max((float(r["peak_rss_mb"]) for _, r in recs if r.get("peak_rss_mb") is not None),
                                         default=_nan()),
                         note=f"finished {max(str(r.get('finished_at', '')) for _, r in recs)}"))
    return rows


def format_table(df) -> str:
    def num(x, fmt):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    show = df.copy()
    show["ours_s"] = show["ours_s"].map(lambda x: num(x, ".4g"))
    show["reference_s"] = show["reference_s"].map(lambda x: num(x, ".4g"))
    show["ratio"] = show["ratio"].map(lambda x: num(x, ".1f") + ("x" if num(x, ".1f") else ""))
    show["max_abs_diff"] = show["max_abs_diff"].map(lambda x: num(x, ".1e"))
    show["peak_rss_mb"] = show["peak_rss_mb"].map(lambda x: "NaN" if isinstance(x, float) and math.isnan(x)
                                                  else num(x, ".0f"))
    show = show.fillna("")
    return show.to_string(index=False, max_colwidth=90)


# ------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        for pgid in list(RUNNING):
            _kill(pgid)
        print("run_benchmarks: interrupted; benchmark processes stopped", file=sys.stderr)
        return 130


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run every benchmark; print and save one combined table.",
                                 epilog="Column meanings: benchmarks/README.md")
    ap.add_argument("--quick", action="store_true", help="small sizes (under two minutes)")
    ap.add_argument("--parallel", action="store_true",
                    help="run the benchmark processes side by side (faster, but they share the CPU)")
    ap.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES), help="run only these benchmarks")
    ap.add_argument("--profile", default="organism", help="profile whose manifest gives the stage rows")
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="results root")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per benchmark process (default: 100 with --quick, 1800 otherwise)")
    args = ap.parse_args(argv)

    import pandas as pd

    from rlsft.io import write_bytes, write_csv

    mode = "quick" if args.quick else "full"
    timeout = args.timeout or (100.0 if args.quick else 1800.0)
    bench_dir = args.results / "benchmarks"
    out_dir = bench_dir / "quick" if args.quick else bench_dir  # raw tables and logs
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlsft-bench-") as tmp:
        scratch = Path(tmp)
        todo = {k: v for k, v in specs(mode, scratch).items() if k in args.only}
        print(f"[run_benchmarks] {mode} sizes; {', '.join(todo)} "
              f"{'side by side' if args.parallel else 'one after the other'}; logs in {out_dir / 'logs'}",
              flush=True)

        def job(item):
            name, (script, argv_, _) = item
            res = run_one(name, script, argv_, out_dir / "logs" / f"{name}.log", timeout)
            status = "skipped" if res["rc"] is None else ("ok" if res["rc"] == 0 else "FAILED")
            print(f"[run_benchmarks] {name:<12} {status} in {res['seconds']:.1f} s", flush=True)
            return res

        with ThreadPoolExecutor(max_workers=len(todo) if args.parallel else 1) as pool:
            results = {r["name"]: r for r in pool.map(job, todo.items())}

        rows = []
        builders = {"chrf": chrf_rows, "betweenness": betweenness_rows, "embedding": embedding_rows,
                    "steps": steps_rows}
        for name, (_, _, csv_path) in todo.items():
            res = results[name]
            if res["error"]:
                if res["rc"] not in (None, 0):
                    print(f"--- {name} log tail ---\n{tail(out_dir / 'logs' / f'{name}.log')}", file=sys.stderr)
                rows.append(_row(group=name, note=res["error"]))
                continue
            if not csv_path.is_file():
                rows.append(_row(group=name, note=f"wrote no {csv_path.name}; log: {_rel(out_dir / 'logs' / name)}.log"))
                continue
            write_bytes(out_dir / csv_path.name, csv_path.read_bytes())  # the raw table, kept
            try:
                rows += builders[name](pd.read_csv(csv_path), res["peak_rss_mb"])
            except Exception as exc:  # noqa: BLE001 - a changed CSV layout must not lose the other rows
                rows.append(_row(group=name, note=f"cannot read {csv_path.name}: {type(exc).__name__}: {exc}"))
    rows += stage_rows(args.profile, args.results)

    df = pd.DataFrame(rows, columns=COLUMNS)
    df.insert(0, "mode", mode)
    df["cpu_count"] = os.cpu_count()
    print()
    print(format_table(df.drop(columns=["mode", "cpu_count"])))
    path = write_csv(bench_dir / "summary.csv", df)
    print(f"\nwrote {path} ({time.perf_counter() - t_start:.0f} s)")
    failed = [n for n, r in results.items() if r["rc"] not in (None, 0)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
