"""Stage ``fig_trajectories`` (notebook ``31_fig2_trajectories.ipynb``): Figure 2, unique correct vs
unique incorrect trajectories per variant, and the ratios beside it.

Reads ``trajectories/unique_summary.csv`` and ``trajectories/unique_ratios.csv``; writes
``figures/fig2_table.csv`` (the summary in variant order) and ``figures/fig2_ratios.csv`` (the
ratios as saved); the notebook draws ``figures/fig2_unique_trajectories.*``.
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from rlsft import headline as H
from rlsft import io

NOTEBOOK = "31_fig2_trajectories.ipynb"
KIND = "figure"
INPUTS = ("trajectories",)
OUTPUTS = ("figures/fig2_*",)


@dataclasses.dataclass(frozen=True)
class Params:
    """Stage ``fig_trajectories`` has no parameters of its own."""


def run(ctx, params: Params) -> dict:
    """``{"summary", "ratios", "table", "headline"}``: the saved summary and ratios, the summary in
    variant order (written to ``figures/fig2_table.csv``; the ratios to ``figures/fig2_ratios.csv``)
    and the ratios with their verdict against the paper, as the report shows them
    (:func:`rlsft.headline.ratio_headline`)."""
    summary = pd.read_csv(ctx.input("trajectories") / "unique_summary.csv")
    ratios = pd.read_csv(ctx.input("trajectories") / "unique_ratios.csv")
    table = H.sort_family_benchmark_variant(summary)
    io.write_csv(ctx.figures / "fig2_table.csv", table)
    io.write_csv(ctx.figures / "fig2_ratios.csv", ratios)
    return {"summary": summary, "ratios": ratios, "table": table, "headline": H.ratio_headline(ratios)}
