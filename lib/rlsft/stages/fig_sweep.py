"""Stage ``fig_sweep`` (notebook ``71_fig_sweep.ipynb``): the headline ratios against the number of
responses per variant M and the number of clusters K, raw beta beside its shape part, with their
95% intervals, and each variant's visited fraction against K with the saturation line.

Reads ``sweep/`` (``ratios.csv``, ``geomeans.csv``, ``visited.csv``, ``k_rule.json``); writes
``figures/fig_sweep_table.csv`` (the geometric means per point, the figure's numbers; the notebook
draws ``figures/fig_sweep_*``).
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from rlsft import io

NOTEBOOK = "71_fig_sweep.ipynb"
KIND = "figure"
INPUTS = ("sweep",)
OUTPUTS = ("figures/fig_sweep_*",)

TABLE_COLUMNS = ["axis", "value", "comparison", "ratio", "ci_low", "ci_high", "shape_ratio", "shape_ci_low",
                 "shape_ci_high", "node_ratio", "paper_value", "agrees", "shape_agrees"]


@dataclasses.dataclass(frozen=True)
class Params:
    """Stage ``fig_sweep`` has no parameters of its own."""


def sweep_table(geomeans: pd.DataFrame) -> pd.DataFrame:
    """The geometric means per sweep point with a ratio, in axis and value order.

    >>> g = pd.DataFrame({"axis": ["K", "M", "M"], "value": [8, 8, 4], "comparison": "RL/Base", "ratio": [1.2, 1.1, None]})
    >>> sweep_table(g)[["axis", "value"]].values.tolist()
    [['K', 8], ['M', 8]]
    """
    if geomeans.empty or "ratio" not in geomeans.columns:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    out = geomeans[geomeans["ratio"].notna()].reindex(columns=TABLE_COLUMNS)
    return out.sort_values(["axis", "comparison", "value"], kind="stable").reset_index(drop=True)


def _read(path, columns=("axis", "value")) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(columns))


def run(ctx, params: Params) -> dict:
    """``{"ratios", "geomeans", "visited", "k_rule", "table"}``: the sweep's tables and the figure's
    numbers (``figures/fig_sweep_table.csv``)."""
    sdir = ctx.input("sweep")
    ratios, geomeans, visited = (_read(sdir / f"{n}.csv") for n in ("ratios", "geomeans", "visited"))
    table = sweep_table(geomeans)
    io.write_csv(ctx.figures / "fig_sweep_table.csv", table)
    return {"ratios": ratios, "geomeans": geomeans, "visited": visited, "k_rule": io.read_json(sdir / "k_rule.json"),
            "table": table}
