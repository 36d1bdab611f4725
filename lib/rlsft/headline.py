"""The headline tables, computed once from the stage tables and used alike by the figure
notebooks, the HTML report and the README results block.

- :func:`decay_headline`: the decay-rate ratios over all benchmarks, with the spread over
  clustering seeds (``figures/headline_decay_ratios.csv``).
"""
from __future__ import annotations

import pandas as pd

DECAY_HEADLINE_COLUMNS = ("family", "metric", "comparison", "ratio", "ci_low", "ci_high", "paper_value",
                          "expected_direction", "agrees")


def decay_headline(ratios: pd.DataFrame, spread: pd.DataFrame) -> pd.DataFrame:
    """The ratios of median β over all benchmarks (rows with ``benchmark == "all"``), with the
    smallest and largest ratio over the clustering seeds of ``spread`` (``seed_min``, ``seed_max``).

    >>> r = pd.DataFrame({"family": ["f"], "benchmark": ["all"], "metric": ["degree"], "comparison": ["RL/Base"],
    ...                   "ratio": [1.5], "ci_low": [1.2], "ci_high": [1.8]})
    >>> s = pd.DataFrame({"family": ["f", "f"], "metric": ["degree"] * 2, "comparison": ["RL/Base"] * 2,
    ...                   "ratio": [1.4, 1.6]})
    >>> decay_headline(r, s)[["ratio", "seed_min", "seed_max"]].values.tolist()
    [[1.5, 1.4, 1.6]]
    """
    head = ratios[ratios["benchmark"] == "all"] if "benchmark" in ratios else ratios
    cols = [c for c in DECAY_HEADLINE_COLUMNS if c in head]
    head = head[cols].copy()
    sp = spread.groupby(["family", "metric", "comparison"])["ratio"].agg(seed_min="min", seed_max="max").reset_index()
    return head.merge(sp, on=["family", "metric", "comparison"], how="left")
