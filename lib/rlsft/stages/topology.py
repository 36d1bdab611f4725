"""Stage ``topology`` (notebook ``50_topology.ipynb``): global topology of the reasoning graphs
(PAPER.md §7): eight graph metrics, their correlation with pass@1 and pass@k, 4-node graphlets,
and sMAPE of node visitation between training stages.

Reads ``graphs/nodes.parquet`` and ``graphs/edges.parquet`` (the graphs of stage ``graphs``) and
``samples/summary.csv``; writes under ``topology/``: ``topology.csv`` (metric per graph),
``topology_by_variant.csv`` (Fig. 8: mean per variant and change after each training step),
``metric_correlations.csv``, ``graphlets.csv`` (proportions of G3-G8 per graph),
``graphlets_by_variant.csv`` (Fig. 9) and ``smape.csv``.
"""
from __future__ import annotations

import dataclasses
import logging

import pandas as pd

from rlsft import graphs as G
from rlsft import io
from rlsft import topology as TP
from rlsft.params import param

NOTEBOOK = "50_topology.ipynb"
KIND = "compute"
INPUTS = ("graphs", "samples")
OUTPUTS = ("topology",)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``topology``; defaults are the organism profile's."""

    max_exact: int = param(50_000_000, "count a graph's graphlets exactly when it has at most this many "
                                       "2-paths (wedges), else estimate them by sampling 3-paths", ge=0)
    n_samples: int = param(200_000, "3-path samples per graph for the graphlet estimate of large graphs", ge=1)
    smape_freq: str = param("proportion", "node visitation compared by sMAPE: 'proportion' of a model's visits, "
                                          "or the raw 'count'", choices=("proportion", "count"))


def _performance(summary: pd.DataFrame) -> pd.DataFrame:
    """pass@1 and pass@k (= pass@M) per family, variant and benchmark, from ``samples/summary.csv``."""
    perf = summary.rename(columns={"pass_at_M": "pass_at_k"})
    return perf[["family", "variant", "benchmark", "pass_at_1", "pass_at_k"]]


def run(ctx, params: Params) -> dict:
    """``{"topology", "by_variant", "correlations", "graphlets", "graphlets_by_variant", "smape"}``:
    the tables written to ``topology/`` (see the module's docstring), in that order."""
    gdir = ctx.input("graphs")
    graphs = G.graphs_from_tables(pd.read_parquet(gdir / "nodes.parquet"), pd.read_parquet(gdir / "edges.parquet"))
    log.info("%d graphs", len(graphs))
    topo = TP.topology_table(graphs, seed=ctx.seed)
    io.write_csv(ctx.dir / "topology.csv", topo)
    by_variant = TP.change_after(topo, value_col="value", key_col="metric")
    io.write_csv(ctx.dir / "topology_by_variant.csv", by_variant)
    summary = pd.read_csv(ctx.input("samples") / "summary.csv")
    corr = TP.metric_performance_correlation(topo, _performance(summary))
    io.write_csv(ctx.dir / "metric_correlations.csv", corr)
    glets = TP.graphlet_table(graphs, max_exact=params.max_exact, n_samples=params.n_samples, seed=ctx.seed)
    io.write_csv(ctx.dir / "graphlets.csv", glets)
    glets_by_variant = TP.change_after(glets, value_col="proportion", key_col="graphlet")
    io.write_csv(ctx.dir / "graphlets_by_variant.csv", glets_by_variant)
    log.info("graphlets counted: %s", glets["method"].value_counts().to_dict())
    sm = TP.smape_table(graphs, freq=params.smape_freq)
    io.write_csv(ctx.dir / "smape.csv", sm)
    return {"topology": topo, "by_variant": by_variant, "correlations": corr, "graphlets": glets,
            "graphlets_by_variant": glets_by_variant, "smape": sm}
