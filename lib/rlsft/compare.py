"""Compare two results folders table by table: the reproducibility check behind "the organism's
numbers are bit-for-bit those of an earlier run".

    python -m rlsft.compare results/organism /elsewhere/results/organism

Every ``.csv`` and ``.parquet`` under the first folder (hidden caches, trained weights and the
report left out) is read from both folders and compared exactly, value for value, except columns
that time the run (``seconds``, ``seconds_*``, ``wall_time_s``, ...). Prints one line per differing or missing
table and exits 1 when any differs.

>>> import tempfile, pandas as pd
>>> a, b = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
>>> for root, v in ((a, 1.0), (b, 1.0)):
...     (root / "t").mkdir(); pd.DataFrame({"x": [v], "seconds": [v * len(str(root))]}).to_csv(root / "t" / "r.csv", index=False)
>>> compare_folders(a, b)
{'same': ['t/r.csv'], 'different': [], 'missing': []}
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

TIMING_COLUMNS = ("seconds", "wall_time_s", "wall_s", "time_s", "elapsed_s", "peak_rss_mb")
SKIP_PARTS = ("train", "report", "notebooks", "logs")


def tables(root: Path) -> list[str]:
    """Relative paths of the CSV and parquet tables of a results folder."""
    out = []
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root)
        if p.suffix in (".csv", ".parquet") and not any(part.startswith(".") or part in SKIP_PARTS
                                                          for part in rel.parts):
            out.append(str(rel))
    return out


def _read(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return df.drop(columns=[c for c in df.columns if c in TIMING_COLUMNS or str(c).startswith("seconds_")])


def same_table(a: Path, b: Path) -> bool:
    """Whether two tables hold the same columns, rows and values (NaN equals NaN)."""
    x, y = _read(a), _read(b)
    if list(x.columns) != list(y.columns) or x.shape != y.shape:
        return False
    return bool(x.equals(y))


def compare_folders(a: Path, b: Path) -> dict:
    """``{"same": [...], "different": [...], "missing": [...]}`` over the tables of ``a``."""
    res = {"same": [], "different": [], "missing": []}
    for rel in tables(a):
        if not (Path(b) / rel).is_file():
            res["missing"].append(rel)
        else:
            res["same" if same_table(Path(a) / rel, Path(b) / rel) else "different"].append(rel)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rlsft.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    for folder in (args.a, args.b):
        if not folder.is_dir():
            print(f"rlsft.compare: error: {folder} is not a folder", file=sys.stderr)
            return 2
    res = compare_folders(args.a, args.b)
    for key in ("different", "missing"):
        for rel in res[key]:
            print(f"{key}: {rel}")
    print(f"{len(res['same'])} tables identical, {len(res['different'])} different, {len(res['missing'])} missing")
    return 1 if res["different"] or res["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
