"""Stage ``fig_ablations`` (notebook ``61_fig32_33_ablations.ipynb``): the decay-rate ratios under
each ablation beside the default (Fig. 32: K, distance, embedder; Fig. 33: top-k sparsification),
and whether each agrees with the paper's direction: "yes" only when the ratio's 95% interval excludes 1
on the paper's side, "unclear" when it holds 1, "no" otherwise.

Reads ``ablations/summary.csv``; writes ``figures/fig32_33_agreement.csv`` (the notebook draws
``figures/fig32_*`` and ``figures/fig33_*``). An n/a row (an ablation that cannot change the number)
reads "n/a" in the agreement table: it is not evidence of agreement.
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from rlsft import io
from rlsft.headline import agreement_word

NOTEBOOK = "61_fig32_33_ablations.ipynb"
KIND = "figure"
INPUTS = ("ablations",)
OUTPUTS = ("figures/fig32_*", "figures/fig33_*")


@dataclasses.dataclass(frozen=True)
class Params:
    """Stage ``fig_ablations`` has no parameters of its own."""


def summary_all(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's rows over all benchmarks, with ``status`` (``"computed"`` for a summary written
    before statuses existed) and ``na`` (the status is n/a)."""
    allr = (summary[summary["benchmark"] == "all"] if "benchmark" in summary else summary).copy()
    if "status" not in allr:  # a summary written before statuses existed
        allr["status"] = "computed"
    allr["na"] = allr["status"].astype(str).str.startswith("n/a")
    return allr


def agreement(row) -> str:
    """"n/a", "yes", "unclear", "no" or "—" (no ratio) for one summary row: ``agrees`` as
    :func:`rlsft.headline.ci_agreement` wrote it ("yes" only when the CI excludes 1 on the paper's
    side), a flag of an older summary read as yes/no, "n/a" for an ablation that cannot change it.

    >>> [agreement({"na": na, "agrees": a}) for na, a in ((False, "unclear"), (False, True), (True, "yes"))]
    ['unclear', 'yes', 'n/a']
    """
    if row["na"]:
        return "n/a"
    return agreement_word(row["agrees"])


def run(ctx, params: Params) -> dict:
    """``{"summary", "ablations", "agreement"}``: the summary over all benchmarks (with ``na``), the
    ablations in order, and the agreement table (``figures/fig32_33_agreement.csv``)."""
    allr = summary_all(pd.read_csv(ctx.input("ablations") / "summary.csv"))
    tab = allr.assign(agreement=allr.apply(agreement, axis=1)).pivot_table(
        index="ablation", columns=["comparison", "metric"], values="agreement", aggfunc="first", sort=False)
    io.write_csv(ctx.figures / "fig32_33_agreement.csv", tab.reset_index())
    return {"summary": allr, "ablations": list(dict.fromkeys(allr["ablation"])), "agreement": tab}
