"""Stage ``fig_decay`` (notebook ``41_fig6_decay.ipynb``): decay rates drawn -- rank plots (Fig. 5),
beta per metric and variant (Fig. 6, per benchmark Fig. 26), the reasoning graphs of one problem
(Fig. 4) -- and the headline table of the ratios of median beta.

Reads ``graphs/`` (``decay_rates.csv``, ``decay_ratios.csv``, ``seed_spread.csv``,
``node_metrics.parquet``, the example problem's rows of ``nodes`` / ``edges.parquet``); writes
``figures/headline_decay_ratios.csv`` (the notebook draws ``figures/fig4_*``, ``fig5_*``,
``fig6_*``, ``fig26_*``).
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from rlsft import VARIANTS
from rlsft import io
from rlsft.graphs import graphs_from_tables
from rlsft.headline import decay_headline
from rlsft.params import param

NOTEBOOK = "41_fig6_decay.ipynb"
KIND = "figure"
INPUTS = ("graphs",)
OUTPUTS = ("figures/fig4_*", "figures/fig5_*", "figures/fig6_*", "figures/fig26_*", "figures/headline_*")

PROBLEM_KEYS = ["family", "benchmark", "problem"]


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``fig_decay``; defaults are the organism profile's."""

    example: int = param(0, "which problem (index in sorted order, modulo their number) to draw as rank "
                            "plot and graph", ge=0)


def example_problem(node_metrics: pd.DataFrame, example: int) -> tuple:
    """``(family, benchmark, problem)`` number ``example`` (modulo their number) in sorted order.

    >>> nm = pd.DataFrame({"family": "f", "benchmark": "b", "problem": ["q", "p", "q"]})
    >>> example_problem(nm, 0), example_problem(nm, 3)
    (('f', 'b', 'p'), ('f', 'b', 'q'))
    """
    keys = node_metrics[PROBLEM_KEYS].drop_duplicates().sort_values(PROBLEM_KEYS)
    return tuple(keys.iloc[example % len(keys)])


def example_graphs(graph_dir, problem: tuple) -> dict:
    """The saved graphs (every variant) of one ``(family, benchmark, problem)``, read with a filter."""
    filt = [(c, "==", v) for c, v in zip(PROBLEM_KEYS, problem)]
    return graphs_from_tables(pd.read_parquet(graph_dir / "nodes.parquet", filters=filt),
                              pd.read_parquet(graph_dir / "edges.parquet", filters=filt))


def run(ctx, params: Params) -> dict:
    """``{"decay", "ratios", "spread", "node_metrics", "variants", "example", "example_graphs",
    "headline"}``: the saved tables of stage ``graphs``, the variants the profile has (in order), the
    example problem and its graphs, and the headline table (``figures/headline_decay_ratios.csv``)."""
    gdir = ctx.input("graphs")
    decay = pd.read_csv(gdir / "decay_rates.csv")
    ratios = pd.read_csv(gdir / "decay_ratios.csv")
    spread = pd.read_csv(gdir / "seed_spread.csv")
    nm = pd.read_parquet(gdir / "node_metrics.parquet")
    example = example_problem(nm, params.example)
    headline = decay_headline(ratios, spread)
    io.write_csv(ctx.figures / "headline_decay_ratios.csv", headline)
    return {"decay": decay, "ratios": ratios, "spread": spread, "node_metrics": nm,
            "variants": tuple(v for v in VARIANTS if v in set(decay["variant"])), "example": example,
            "example_graphs": example_graphs(gdir, example), "headline": headline}
