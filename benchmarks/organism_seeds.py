"""The organism's run-to-run spread: the frozen design trained again from other seeds and worlds.

The bootstrap intervals in the README resample problems of one training run; they do not cover
how much the headline moves when the four models are trained again. This script trains the
organism profile under several (world, seed) pairs, each its own profile that ``extends`` the
organism and changes only ``seed`` (training, evaluation problems, sampling), ``stages.data.
world_seed`` and ``device``, and tabulates the headline of each run side by side.

    # train and sample 6 runs side by side (on a GPU machine: --device auto; no Jupyter needed)
    python benchmarks/organism_seeds.py run --runs 0:0 0:10 0:11 2:2 2:12 2:13 --device auto --parallel 6
    # analyse them here with the notebooks (trajectories and graphs stages), then the table
    python benchmarks/organism_seeds.py analyse --runs 0:0 0:10 0:11 2:2 2:12 2:13 --device auto
    python benchmarks/organism_seeds.py table --runs 0:0 0:10 0:11 2:2 2:12 2:13 --device auto \\
        --also results/organism results/organism-confirm

``run`` executes the compute stages up to ``--until`` (default ``samples``) through the runner, in
process (``rlsft.runner.execute_in_process``: each stage module's ``run(ctx, params)``, no notebook
kernel; ``--notebooks`` for the notebooks) so it works on a machine image without Jupyter; the
manifest records the stages as the notebooks would. Results go to ``results/seeds/<profile>/`` (``--results``). ``adopt`` makes
results computed on another machine this checkout's (the manifest names its profile file by
absolute path). ``analyse`` runs the later stages one at a time (``--only``), so a run whose trained
model files stayed on the machine that trained them is analysed from its samples.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rlsft import runner  # noqa: E402
from rlsft.io import write_text  # noqa: E402
from rlsft.store import Store  # noqa: E402

ANALYSIS = ("trajectories", "graphs")


def parse_run(text: str) -> tuple[int, int]:
    """``"world:seed"`` -> ``(world, seed)``.

    >>> parse_run("2:12")
    (2, 12)
    """
    try:
        world, seed = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a run is WORLD:SEED (two integers), got {text!r}") from None
    return world, seed


def profile_file(results: Path, world: int, seed: int, device: str, base: str = "organism") -> Path:
    """Write (or rewrite) the run's profile under ``results/profiles/`` and return its path.

    It ``extends`` the organism profile by a path relative to itself, so the same file works in
    any checkout that keeps the folder layout.
    """
    folder = results / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{base}-w{world}-s{seed}-{device}.yaml"
    rel = os.path.relpath(ROOT / "profiles" / f"{base}.yaml", folder)
    write_text(path, f"# written by benchmarks/organism_seeds.py: profile {base}, world {world}, seed {seed}\n"
                    f'description: "Spread run of {base}: world {world}, seed {seed}, device {device}"\n'
                    f"extends: {rel}\nseed: {seed}\ndevice: {device}\n"
                    f"stages:\n  data:\n    world_seed: {world}\n")
    return path


def run_one(profile: Path, results: Path, until: str, in_process: bool) -> int:
    return runner.run(["--profile", str(profile), "--results", str(results), "--until", until],
                      execute_stage=runner.execute_in_process if in_process else None)


def adopt(results: Path, profile: Path) -> None:
    """Point a results folder made on another machine at this checkout's profile file."""
    Store(results / profile.stem).set_profile_path(str(profile.resolve()))


def headline(folder: Path) -> dict:
    """One run's headline numbers from its saved tables (the README block's sources), and whether
    each "done when" item of the organism issue holds in it (``ok: ...`` rows, 1 or 0)."""
    row: dict = {"run": folder.name}
    summ = pd.read_csv(folder / "samples" / "summary.csv")
    base = summ[summ.variant == "Base"].sort_values("benchmark")
    row["Base pass@1"] = " / ".join(f"{x:.2f}" for x in base.pass_at_1)
    row["lowest pass@1"] = f"{summ.pass_at_1.min():.3f}"
    tr = folder / "train" / "trained.csv"
    row["trained on"] = ",".join(sorted(set(pd.read_csv(tr).get("device", pd.Series(["cpu"])).astype(str))))
    dr = pd.read_csv(folder / "graphs" / "decay_ratios.csv")
    dr = dr[dr.benchmark == "all"]
    gm = pd.read_csv(folder / "graphs" / "decay_geomeans.csv").set_index("comparison")
    metrics = ("frequency", "degree", "betweenness")
    side = {}
    for comp in ("SFT/Base", "RL/Base", "SFT+RL/SFT"):
        sub = dr[dr.comparison == comp].set_index("metric").loc[list(metrics)]
        row[f"β {comp} f / d / b"] = " / ".join(f"{x:.2f}" for x in sub.ratio)
        row[f"β {comp} CI high / low"] = " / ".join(
            f"{x:.2f}" for x in (sub.ci_high if comp == "SFT/Base" else sub.ci_low))
        side[comp] = bool((sub.ci_high < 1).all()) if comp == "SFT/Base" else bool((sub.ci_low > 1).all())
        row[f"geomean {comp}"] = f"{gm.ratio[comp]:.2f} [{gm.ci_low[comp]:.2f}, {gm.ci_high[comp]:.2f}]"
        row[f"{comp} nodes · shape"] = f"{gm.node_ratio[comp]:.2f} · {gm.shape_ratio[comp]:.2f}"
    ur = pd.read_csv(folder / "trajectories" / "unique_ratios.csv").sort_values("benchmark")
    uniq = {}
    for q, comp in (("unique_incorrect", "RL/Base"), ("unique_correct", "SFT/Base")):
        uniq[q] = ur[(ur.quantity == q) & (ur.comparison == comp)].ratio
        row[f"{q} {comp}"] = " / ".join(f"{x:.2f}" for x in uniq[q])
    row["ok: β SFT/Base CIs < 1"] = int(side["SFT/Base"])
    row["ok: β RL/Base and SFT+RL/SFT CIs > 1"] = int(side["RL/Base"] and side["SFT+RL/SFT"])
    row["ok: unique incorrect RL/Base < 1 (all sets)"] = int((uniq["unique_incorrect"] < 1).all())
    row["ok: unique correct SFT/Base > 1 (2 of 3)"] = int((uniq["unique_correct"] > 1).sum() >= 2)
    row["ok: Base pass@1 in 0.15-0.30"] = int(base.pass_at_1.between(0.15, 0.30).all())
    row["ok: no collapse (pass@1 > 0.05)"] = int((summ.pass_at_1 > 0.05).all())
    return row


def table(rows: list[dict]) -> str:
    """Runs as columns, plus a column counting the runs where each ``ok:`` item holds."""
    df = pd.DataFrame(rows).set_index("run").T
    oks = [i for i in df.index if i.startswith("ok:")]
    df["runs where it holds"] = ""
    df.loc[oks, "runs where it holds"] = [f"{int(df.loc[i].iloc[:-1].astype(int).sum())} of {len(rows)}" for i in oks]
    return df.to_markdown()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "adopt", "analyse", "table", "_one"])
    ap.add_argument("--runs", nargs="+", type=parse_run, default=[(0, 10), (0, 11), (2, 12), (2, 13)],
                    help="WORLD:SEED pairs (default: 0:10 0:11 2:12 2:13)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "seeds")
    ap.add_argument("--until", default="samples", help="last stage of `run` (default: samples)")
    ap.add_argument("--parallel", type=int, default=1, help="runs trained side by side (default 1)")
    ap.add_argument("--notebooks", action="store_true", help="`run` through notebooks (needs Jupyter)")
    ap.add_argument("--also", nargs="*", type=Path, default=[], help="result folders to add to the table")
    ap.add_argument("--base", default="organism", help="the profile each run extends (default organism)")
    ap.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    results = args.results.resolve()
    profiles = [profile_file(results, w, s, args.device, args.base) for w, s in args.runs]
    if args.command == "_one":
        return run_one(args.profile, results, args.until, in_process=not args.notebooks)
    if args.command == "run":
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // max(1, args.parallel)))}
        pending, live, failed, t0 = list(profiles), {}, [], time.time()
        while pending or live:
            while pending and len(live) < args.parallel:
                p = pending.pop(0)
                log = open(results / f"{p.stem}.log", "w")
                cmd = [sys.executable, __file__, "_one", "--profile", str(p), "--results", str(results),
                       "--until", args.until, "--device", args.device, "--base", args.base] + (["--notebooks"] if args.notebooks else [])
                live[p] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, time.time())
                print(f"[{time.time() - t0:6.0f} s] started {p.stem}", flush=True)
            for p, (proc, log, started) in list(live.items()):
                if proc.poll() is not None:
                    log.close()
                    live.pop(p)
                    print(f"[{time.time() - t0:6.0f} s] {p.stem}: exit {proc.returncode} after "
                          f"{time.time() - started:.0f} s (log {results / (p.stem + '.log')})", flush=True)
                    if proc.returncode:
                        failed.append(p.stem)
            time.sleep(1)
        return 1 if failed else 0
    if args.command in ("adopt", "analyse"):
        for p in profiles:
            adopt(results, p)
            if args.command == "analyse":
                for stage in ANALYSIS:
                    code = runner.run(["--profile", str(p), "--results", str(results), "--only", stage])
                    if code:
                        return code
        return 0
    rows = [headline(results / p.stem) for p in profiles if (results / p.stem / "graphs").exists()]
    rows += [headline(f) for f in args.also]
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
