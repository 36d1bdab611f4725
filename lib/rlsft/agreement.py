"""Do two results folders of the same models agree within sampling noise? pass@1 and unique
trajectories per model, paired by problem, with bootstrap intervals over problems.

Made for the same models sampled by two backends: the organism sampled with transformers (profile
``organism``) and with vLLM on this CPU (``organism-vllm``). The two draw different random numbers,
so agreement means a paired difference whose 95% interval holds 0, not equal numbers. The README
block of a profile whose samples backend differs from the profile it extends shows this table
(``rlsft.report``); ``benchmarks/backend_agreement.py`` prints it for any two folders.

>>> rng = np.random.default_rng(0)
>>> lo, hi = boot_ci(np.array([1.0, 1.0, 1.0]), 100, rng)
>>> (lo, hi)
(1.0, 1.0)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ["family", "variant", "benchmark"]
MEASURES = ("pass@1", "unique_correct", "unique_incorrect")
AGREEMENT_COLUMNS = [*KEYS, "measure", "problems", "A", "A 95% CI", "B", "B 95% CI", "B - A", "B - A 95% CI",
                     "ci_low", "ci_high", "agree"]


def boot_ci(values: np.ndarray, n_boot: int, rng) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over ``n_boot`` resamples."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def per_problem(folder: Path) -> pd.DataFrame:
    """pass@1 (and, if computed, unique correct / incorrect trajectories) per model and problem."""
    folder = Path(folder)
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
               json.loads((Path(d) / "samples" / "models.json").read_text())} for d in (a, b))
    return {k: fa[k] == fb.get(k) for k in fa}


def agreement(a: Path, b: Path, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (family, variant, benchmark) and measure of :data:`MEASURES` that both folders
    have: the means over the shared problems of A and B with 95% intervals, and B - A with its
    paired 95% interval (``ci_low``, ``ci_high``); ``agree`` when that interval holds 0."""
    pa, pb = per_problem(a), per_problem(b)
    measures = [m for m in MEASURES if m in pa and m in pb]
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
                         "ci_low": lo, "ci_high": hi, "agree": bool(lo <= 0 <= hi)})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
