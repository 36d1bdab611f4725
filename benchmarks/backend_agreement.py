"""Do two results folders agree within sampling noise? pass@1 and unique trajectories per model,
paired by problem, with bootstrap intervals over problems.

Made for the same models sampled by two backends, e.g. the organism sampled with transformers and
with vLLM on this CPU (the two draw different random numbers, so agreement means overlapping
intervals and a paired difference whose interval holds 0, not equal numbers):

    .venv/bin/python benchmarks/backend_agreement.py results/organism results/organism-vllm

Reads ``samples/all_samples.parquet`` and ``samples/models.json`` (are the weights the same? their
fingerprints) and, where present, ``trajectories/unique_trajectories.csv`` of each folder. Prints
one row per (family, variant, benchmark) and measure: A and B (means over problems with 95%
intervals) and B - A with its paired 95% interval; ``--csv FILE`` writes the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ["family", "variant", "benchmark"]


def boot_ci(values: np.ndarray, n_boot: int, rng) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over ``n_boot`` resamples."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def per_problem(folder: Path) -> pd.DataFrame:
    """pass@1 (and, if computed, unique correct / incorrect trajectories) per model and problem."""
    s = pd.read_parquet(folder / "samples" / "all_samples.parquet")
    s["problem"] = s["problem"].astype(str)
    out = s.groupby(KEYS + ["problem"], observed=True)["correct"].mean().rename("pass@1").reset_index()
    traj = folder / "trajectories" / "unique_trajectories.csv"
    if traj.exists():
        t = pd.read_csv(traj, dtype={"problem": str})
        out = out.merge(t[KEYS + ["problem", "unique_correct", "unique_incorrect"]], on=KEYS + ["problem"], how="left")
    return out


def same_weights(a: Path, b: Path) -> dict:
    """``{family/variant: True/False}``: do the two folders' models have the same fingerprint?"""
    fa, fb = ({f"{r['family']}/{r['variant']}": r.get("fingerprint") for r in
               json.loads((d / "samples" / "models.json").read_text())} for d in (a, b))
    return {k: fa[k] == fb.get(k) for k in fa}


def agreement(a: Path, b: Path, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    pa, pb = per_problem(a), per_problem(b)
    measures = [m for m in ("pass@1", "unique_correct", "unique_incorrect") if m in pa and m in pb]
    both = pa.merge(pb, on=KEYS + ["problem"], suffixes=(" A", " B"))
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in both.groupby(KEYS, sort=False):
        for m in measures:
            x, y = g[f"{m} A"].to_numpy(float), g[f"{m} B"].to_numpy(float)
            d = y - x
            lo, hi = boot_ci(d, n_boot, rng)
            rows.append({**dict(zip(KEYS, key)), "measure": m, "problems": len(g),
                         "A": x.mean(), "A 95% CI": "[%.3f, %.3f]" % boot_ci(x, n_boot, rng),
                         "B": y.mean(), "B 95% CI": "[%.3f, %.3f]" % boot_ci(y, n_boot, rng),
                         "B - A": d.mean(), "B - A 95% CI": f"[{lo:.3f}, {hi:.3f}]",
                         "agree": bool(lo <= 0 <= hi)})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="results/<profile> of the first run (e.g. transformers)")
    ap.add_argument("b", type=Path, help="results/<profile> of the second run (e.g. vLLM)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args(argv)
    weights = same_weights(args.a, args.b)
    print("same weights:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in weights.items()))
    table = agreement(args.a, args.b, args.n_boot)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(f"{int(table['agree'].sum())} of {len(table)} paired differences have a 95% interval holding 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
