"""Where the organism's Base stops, per run: the diagnosis of Base's pass@1 spread between training
runs (``docs/organism_log.md``, "Why Base's pass@1 spreads").

    .venv/bin/python benchmarks/organism_base_stops.py results/organism results/organism-confirm results/seeds/*-auto

For each run folder (one written by the pipeline: ``data/world.json``, ``data/problems.parquet`` and
``samples/all_samples.parquet``) and each variant asked for (``--variants``, default Base), over all
evaluation answers: pass@1; where the walk stops (``rlsft.task.walk_outcome``: at the goal, past
it, short of the shortest distance, elsewhere); the share of answers that claim arrival away from the
goal; among walks that end at the goal, the share whose Route line is the walk (the rest leave out
the start, the ``misstate`` habit, or say something else); the shares of walks that are the
habit's route and Base's second route, and of answers whose Route line recalls the habit's route
while the walk is another (the ``recall`` style); the share of hops that bring the walk nearer to
the goal; and how far the hop count is from the shortest distance (share exactly equal, mean
absolute difference); pass@1 on each evaluation set. Where the run has been analysed
(``graphs/decay_ratios.csv``), the row also shows the RL/Base β ratios on betweenness and
frequency with their 95% CIs, and the printout ends with the rank correlation, over the runs, of
Base's claims away from the goal with RL/Base's betweenness ratio. Reads what the pipeline wrote,
trains and samples nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rlsft import task as T  # noqa: E402


def outcomes(run: Path, variant: str) -> pd.DataFrame:
    """The evaluation answers of ``variant`` in the run folder ``run`` (benchmark, problem, sample,
    text, correct), each with its :func:`rlsft.task.walk_outcome` columns beside it."""
    for need in ("data/world.json", "data/problems.parquet", "samples/all_samples.parquet"):
        if not (run / need).exists():
            raise FileNotFoundError(f"{run / need} is missing: pass a folder of an organism run that has "
                                    f"been sampled (./run_all.sh --profile organism --until samples)")
    world = T.world_from_json(json.loads((run / "data/world.json").read_text()))
    problems = pd.read_parquet(run / "data/problems.parquet")
    by_key = {(r["benchmark"], r["problem"]): T.problem_from_row(r) for _, r in problems.iterrows()}
    samples = pd.read_parquet(run / "samples/all_samples.parquet", columns=["variant", "benchmark", "problem",
                                                                            "sample", "text", "correct"])
    s = samples[samples["variant"] == variant].reset_index(drop=True)
    if s.empty:
        raise ValueError(f"{run}: no samples of variant {variant!r}; it has {sorted(samples['variant'].unique())}")
    o = pd.DataFrame([T.walk_outcome(world, by_key[(b, p)], t)
                      for b, p, t in zip(s["benchmark"], s["problem"], s["text"])])
    return pd.concat([s, o], axis=1)


def stop_table(run: Path, variants=("Base",)) -> pd.DataFrame:
    """One row per variant of the run folder ``run``: the measures in the module docstring."""
    rows = []
    for v in variants:
        o = outcomes(run, v)
        at_goal = o[o["stop"] == "goal"]
        per_set = o.groupby("benchmark")["correct"].mean()
        rows.append({"run": run.name, "variant": v, "pass@1": o["correct"].mean(),
                     "pass@1 per set": " / ".join(f"{x:.2f}" for x in per_set), **rl_ratios(run),
                     **{f"stops: {k}": (o["stop"] == k).mean() for k in ("goal", "past goal", "short", "elsewhere")},
                     "claims away from goal": (o["claims"] & (o["stop"] != "goal")).mean(),
                     "Route line = walk, of walks at goal": (at_goal["route"] == "walked").mean() if len(at_goal) else np.nan,
                     "walks the habit / second route": f"{(o['walk'] == 'habit').mean():.2f} / "
                                                        f"{(o['walk'] == 'second').mean():.2f}",
                     "Route line recalls the habit's route": o["recalls habit"].mean(),
                     "hops nearer": o["nearer"].mean(), "takes a false road": o["false_road"].mean(),
                     "hops = distance": (o["hops"] == 0).mean(), "mean abs(hops - distance)": o["hops"].abs().mean()})
    return pd.DataFrame(rows).set_index(["run", "variant"])


def rl_ratios(run: Path) -> dict:
    """RL/Base β ratios (betweenness, frequency) of an analysed run with their 95% CIs; empty if
    the run has no ``graphs/decay_ratios.csv``."""
    path = run / "graphs" / "decay_ratios.csv"
    if not path.exists():
        return {}
    dr = pd.read_csv(path)
    dr = dr[(dr["benchmark"] == "all") & (dr["comparison"] == "RL/Base")].set_index("metric")
    out = {}
    for m in ("betweenness", "frequency"):
        if m in dr.index:
            r = dr.loc[m]
            out[f"β RL/Base {m}"] = float(r["ratio"])
            out[f"β RL/Base {m} CI"] = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (results/<profile> or results/seeds/<run>)")
    ap.add_argument("--variants", nargs="+", default=["Base"])
    args = ap.parse_args(argv)
    table = pd.concat([stop_table(r, args.variants) for r in args.runs if r.is_dir()])
    print(table.round(3).to_markdown())
    col = "β RL/Base betweenness"
    base = table.xs("Base", level="variant") if "Base" in table.index.get_level_values("variant") else None
    if base is not None and col in base and base[col].notna().sum() >= 3:
        rho = base["claims away from goal"].corr(base[col], method="spearman")
        print(f"\nSpearman rank correlation over {base[col].notna().sum()} runs: Base's claims away from "
              f"the goal vs {col}: {rho:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
