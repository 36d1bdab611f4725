"""Stage ``trajectories`` (notebook ``30_trajectories.ipynb``): unique correct and incorrect
trajectories per (model, problem) (PAPER.md §5, Fig. 2).

Reads ``samples/all_samples.parquet``; writes under ``trajectories/``: ``unique_trajectories.csv``
(one row per family, variant, benchmark, problem), ``unique_summary.csv`` (means over problems with
bootstrap intervals), ``unique_ratios.csv`` (RL/Base, SFT/Base, SFT+RL/SFT with paired bootstrap
intervals), ``cluster_labels.parquet`` (each sample's UPGMA cluster) and the chrF matrix cache
``.cache/chrf_<sha256>.npy`` (a rerun does no chrF work).
"""
from __future__ import annotations

import dataclasses
import logging

import pandas as pd

from rlsft import io
from rlsft import trajectories as TR
from rlsft.params import param

NOTEBOOK = "30_trajectories.ipynb"
KIND = "compute"
INPUTS = ("samples",)
OUTPUTS = ("trajectories",)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``trajectories``; defaults are the organism profile's."""

    threshold: float = param(60.0, "chrF similarity at which the UPGMA tree is cut (paper: 60 on sacrebleu's "
                                   "0-100 scale; the distance cut is 1 - threshold/100)", ge=0, le=100)
    n_jobs: int = param(2, "problems whose chrF matrices are computed in parallel (processes; 1: in this "
                           "process)", ge=1)
    n_boot: int = param(1000, "bootstrap resamples of problems for the 95% intervals (0: no intervals, NaN)",
                        ge=0)


def run(ctx, params: Params) -> dict:
    """``{"table", "summary", "ratios", "diversity", "labels", "examples"}``: unique trajectories per
    problem, their means and ratios (written as ``unique_trajectories.csv``, ``unique_summary.csv``,
    ``unique_ratios.csv``), the mean diversity per variant, every sample's cluster (written as
    ``cluster_labels.parquet``) and example texts of the largest clusters of the first problem."""
    samples = pd.read_parquet(ctx.input("samples") / "all_samples.parquet")
    log.info("%s samples", f"{len(samples):,}")
    cache = ctx.dir / ".cache"
    table = TR.unique_trajectories(samples, cache_dir=cache, threshold=params.threshold, n_jobs=params.n_jobs)
    io.write_csv(ctx.dir / "unique_trajectories.csv", table)
    summary = TR.summarise_unique(table, n_boot=params.n_boot, seed=ctx.seed)
    ratios = TR.unique_ratios(table, n_boot=params.n_boot, seed=ctx.seed)
    io.write_csv(ctx.dir / "unique_summary.csv", summary)
    io.write_csv(ctx.dir / "unique_ratios.csv", ratios)
    labels = TR.cluster_labels(samples, cache_dir=cache, threshold=params.threshold)
    io.write_parquet(ctx.dir / "cluster_labels.parquet", labels)
    return {"table": table, "summary": summary, "ratios": ratios, "diversity": TR.mean_diversity(table),
            "labels": labels, "examples": TR.cluster_examples(labels, samples)}
