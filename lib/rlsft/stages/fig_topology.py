"""Stage ``fig_topology`` (notebook ``51_fig8_fig9_topology.ipynb``): Figures 8, 31 and 9 and the
metric-performance correlations (PAPER.md §7), drawn from the tables of stage ``topology`` only.

Reads ``topology/topology.csv``, ``graphlets.csv``, ``metric_correlations.csv`` and ``smape.csv``;
writes no table. The notebook draws ``figures/fig8_global_metrics.*``,
``fig31_global_metrics_by_benchmark.*``, ``fig9_graphlets.*``,
``fig7_metric_performance_correlation.*`` and ``smape_between_stages.*``.
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from rlsft import figures

NOTEBOOK = "51_fig8_fig9_topology.ipynb"
KIND = "figure"
INPUTS = ("topology",)
OUTPUTS = ("figures/fig8_*", "figures/fig9_*", "figures/fig31_*", "figures/fig7_*", "figures/smape_*")


@dataclasses.dataclass(frozen=True)
class Params:
    """Stage ``fig_topology`` has no parameters of its own."""


def _ordered(df: pd.DataFrame, variants: tuple) -> pd.DataFrame:
    out = df.copy()
    out["variant"] = pd.Categorical(out["variant"], variants, ordered=True)
    return out


def run(ctx, params: Params) -> dict:
    """The tables the figures are drawn from: ``topology``, ``graphlets`` (their ``variant`` an
    ordered categorical of the variants present), ``correlations``, ``smape``; ``variants`` (those
    present, canonical order) and ``metrics`` (in the table's order); ``graphlet_means`` (mean
    proportion per graphlet and variant, Fig. 9) and ``correlations_wide`` (Spearman r per metric
    and performance measure, Fig. 7)."""
    tdir = ctx.input("topology")
    topo = pd.read_csv(tdir / "topology.csv")
    glets = pd.read_csv(tdir / "graphlets.csv")
    corr = pd.read_csv(tdir / "metric_correlations.csv")
    sm = pd.read_csv(tdir / "smape.csv")
    metrics = list(dict.fromkeys(topo["metric"]))
    variants = figures.present_variants(topo["variant"])
    topo, glets = _ordered(topo, variants), _ordered(glets, variants)
    means = glets.groupby(["graphlet", "variant"], observed=True)["proportion"].mean().unstack("variant")
    wide = corr.pivot(index="metric", columns="performance", values="spearman_r").reindex(metrics)
    return {"topology": topo, "graphlets": glets, "correlations": corr, "smape": sm, "variants": variants,
            "metrics": metrics, "graphlet_means": means, "correlations_wide": wide}
