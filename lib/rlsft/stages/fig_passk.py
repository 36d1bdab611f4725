"""Stage ``fig_passk`` (notebook ``21_fig_passk.ipynb``): pass@k curves per variant (the
accuracy context of every figure), and the pass@1 / pass@M table beside them.

Reads ``samples/pass_at_k.csv`` and ``samples/summary.csv``; writes ``figures/table_pass_at_k.csv``
(the notebook draws ``figures/fig0_pass_at_k.*``).
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from rlsft import VARIANTS
from rlsft import io

NOTEBOOK = "21_fig_passk.ipynb"
KIND = "figure"
INPUTS = ("samples",)
OUTPUTS = ("figures/fig0_pass_at_k.*", "figures/table_pass_at_k.csv")


@dataclasses.dataclass(frozen=True)
class Params:
    """Stage ``fig_passk`` has no parameters of its own."""


def run(ctx, params: Params) -> dict:
    """``{"passk", "summary", "table"}``: the saved pass@k and summary tables, and the summary in
    variant order (written to ``figures/table_pass_at_k.csv``)."""
    passk = pd.read_csv(ctx.input("samples") / "pass_at_k.csv")
    summary = pd.read_csv(ctx.input("samples") / "summary.csv")
    table = summary.copy()
    table["variant"] = pd.Categorical(table["variant"], VARIANTS, ordered=True)
    table = table.sort_values(["family", "benchmark", "variant"])
    io.write_csv(ctx.figures / "table_pass_at_k.csv", table)
    return {"passk": passk, "summary": summary, "table": table}
