"""Do two results folders agree within sampling noise? pass@1 and unique trajectories per model,
paired by problem, with bootstrap intervals over problems (``rlsft.agreement``).

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
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from rlsft.agreement import agreement, same_weights  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="results/<profile> of the first run (e.g. transformers)")
    ap.add_argument("b", type=Path, help="results/<profile> of the second run (e.g. vLLM)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args(argv)
    weights = same_weights(args.a, args.b)
    print("same weights:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in weights.items()))
    table = agreement(args.a, args.b, args.n_boot).drop(columns=["ci_low", "ci_high"])
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(f"{int(table['agree'].sum())} of {len(table)} paired differences have a 95% interval holding 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
