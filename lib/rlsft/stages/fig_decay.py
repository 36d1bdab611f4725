"""Stage ``fig_decay`` (notebook ``41_fig6_decay.ipynb``): decay rates drawn -- rank plots (Fig. 5),
beta per metric and variant (Fig. 6, per benchmark Fig. 26), each ratio split into its node-count
and shape parts beside the node-count-matched control, the reasoning graphs of one problem (Fig. 4)
-- and the headline tables: the ratios of median beta with their parts, their geometric means over
metrics (PAPER.md §6.4) and the share of the K clusters each variant visits.

Reads ``graphs/`` (``decay_rates.csv``, ``decay_ratios.csv``, ``decay_geomeans.csv``,
``visited_summary.csv``, ``seed_spread.csv``, ``node_metrics.parquet``, the example problem's rows of
``nodes`` / ``edges.parquet``); writes ``figures/headline_decay_ratios.csv``,
``figures/headline_decay_geomeans.csv`` and ``figures/headline_visited.csv`` (the notebook draws
``figures/fig4_*``, ``fig5_*``, ``fig6_*``, ``fig26_*``). With nothing to draw (no steps, or no
graph with the three nodes a fit needs) the tables are written with a ``note`` and the notebook
says so instead of drawing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from rlsft import VARIANTS
from rlsft import io
from rlsft.controls import VISITED_SUMMARY_COLUMNS
from rlsft.graphs import graphs_from_tables
from rlsft.headline import DECAY_HEADLINE_COLUMNS, decay_headline, decomposition_notes, geomean_headline
from rlsft.params import param
from rlsft.ratios import GEOMEAN_COLUMNS

NOTEBOOK = "41_fig6_decay.ipynb"
KIND = "figure"
INPUTS = ("graphs",)
OUTPUTS = ("figures/fig4_*", "figures/fig5_*", "figures/fig6_*", "figures/fig26_*", "figures/headline_*")

PROBLEM_KEYS = ["family", "benchmark", "problem"]
NOTE_NO_STEPS = ("no decay rates: stage graphs found no steps in the responses (empty or unparsable text), "
                 "so there are no graphs to draw and no ratios")
NOTE_NO_BETA = ("no decay rate: no graph has the 3 nodes with X > 0 that a fit needs (responses of one or "
                "two steps, or none), so every beta and every ratio is empty")


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``fig_decay``; defaults are the organism profile's."""

    example: int = param(0, "which problem (index in sorted order, modulo their number) to draw as rank "
                            "plot and graph", ge=0)


def example_problem(node_metrics: pd.DataFrame, example: int) -> tuple | None:
    """``(family, benchmark, problem)`` number ``example`` (modulo their number) in sorted order;
    None when there is no problem.

    >>> nm = pd.DataFrame({"family": "f", "benchmark": "b", "problem": ["q", "p", "q"]})
    >>> example_problem(nm, 0), example_problem(nm, 3), example_problem(nm.iloc[:0], 0)
    (('f', 'b', 'p'), ('f', 'b', 'q'), None)
    """
    keys = node_metrics[PROBLEM_KEYS].drop_duplicates().sort_values(PROBLEM_KEYS)
    if keys.empty:
        return None
    return tuple(keys.iloc[example % len(keys)])


def example_graphs(graph_dir, problem: tuple | None) -> dict:
    """The saved graphs (every variant) of one ``(family, benchmark, problem)``, read with a filter."""
    if problem is None:
        return {}
    filt = [(c, "==", v) for c, v in zip(PROBLEM_KEYS, problem)]
    return graphs_from_tables(pd.read_parquet(graph_dir / "nodes.parquet", filters=filt),
                              pd.read_parquet(graph_dir / "edges.parquet", filters=filt))


def _read(path: Path, columns) -> pd.DataFrame:
    """A CSV, or an empty frame with ``columns`` when it is missing (graphs of an older run) or empty."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=list(columns))


def nothing_to_draw(decay: pd.DataFrame) -> str:
    """Why there is nothing to draw ("" when there is something).

    >>> nothing_to_draw(pd.DataFrame({"beta": [float("nan")]}))[:13], nothing_to_draw(pd.DataFrame({"beta": [0.1]}))
    ('no decay rate', '')
    """
    if decay.empty:
        return NOTE_NO_STEPS
    if not np.isfinite(pd.to_numeric(decay["beta"], errors="coerce")).any():
        return NOTE_NO_BETA
    return ""


def run(ctx, params: Params) -> dict:
    """``{"decay", "plottable", "ratios", "spread", "node_metrics", "variants", "example",
    "example_graphs", "headline", "geomeans", "visited", "decomposition_notes", "note"}``: the saved
    tables of stage ``graphs`` (``plottable``: the decay rows with a finite beta), the variants the
    profile has (in order), the example problem and its graphs (None / {} without one), the
    headline tables (``figures/headline_decay_ratios.csv``, ``headline_decay_geomeans.csv``,
    ``headline_visited.csv``), the lines explaining ratios whose parts do not multiply to them, and
    ``note``: why there is nothing to draw ("" when there is)."""
    gdir = ctx.input("graphs")
    decay = pd.read_csv(gdir / "decay_rates.csv")
    ratios = pd.read_csv(gdir / "decay_ratios.csv")
    spread = _read(gdir / "seed_spread.csv", ["family", "metric", "comparison", "ratio"])
    geomeans = _read(gdir / "decay_geomeans.csv", GEOMEAN_COLUMNS)
    visited = _read(gdir / "visited_summary.csv", VISITED_SUMMARY_COLUMNS)
    nm = pd.read_parquet(gdir / "node_metrics.parquet")
    note = nothing_to_draw(decay)
    example = example_problem(nm, params.example)
    headline = decay_headline(ratios, spread)
    if headline.empty and note:  # no row to carry the note: one row that only says why
        headline = pd.DataFrame([{"note": note}], columns=[c for c in DECAY_HEADLINE_COLUMNS] + ["seed_min", "seed_max"])
    io.write_csv(ctx.figures / "headline_decay_ratios.csv", headline)
    io.write_csv(ctx.figures / "headline_decay_geomeans.csv", geomean_headline(geomeans))
    io.write_csv(ctx.figures / "headline_visited.csv", visited)
    plottable = decay[np.isfinite(pd.to_numeric(decay["beta"], errors="coerce"))] if len(decay) else decay
    return {"decay": decay, "plottable": plottable, "ratios": ratios, "spread": spread, "node_metrics": nm,
            "variants": tuple(v for v in VARIANTS if v in set(decay["variant"])), "example": example,
            "example_graphs": example_graphs(gdir, example), "headline": headline, "geomeans": geomeans,
            "visited": visited, "decomposition_notes": decomposition_notes(headline), "note": note}
