"""Step level, part 4 (PAPER.md §6.4): the node-count controls of the decay-rate ratios.

beta is fitted on the raw rank, so a graph that visits fewer nodes has a steeper decay for the same
shape. These functions check how much of a ratio (:mod:`rlsft.ratios`) node count explains; stages
``graphs`` and ``sweep`` run them.

- :func:`matched_decay`: the node-count-matched control, beta when both variants' graphs visit the
  same number of nodes (the bigger one cut down to a random prefix of its responses,
  :func:`matched_prefix`); :func:`rlsft.ratios.decay_ratios` turns it into ``matched_ratio``;
- :func:`subsample_paths`: at most ``m`` responses per graph (the M axis of stage ``sweep``);
- :func:`visited_table`, :func:`visited_summary`, :func:`saturation_warnings`: the fraction of the
  K clusters each graph visits, and the variants saturated at K (above :data:`SATURATION`);
  :func:`rule_k` is the rule that sets each profile's K.

>>> t = pd.DataFrame({"k": [40, 40, 80, 80], "median_visited_fraction": [0.95, 0.7, 0.8, 0.5]})
>>> rule_k(t)   # at K=40 one variant visits 95% of the clusters; at K=80 none is above 0.8
80
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from rlsft import COMPARISONS, VARIANTS
from rlsft.graphs import GRAPH_KEYS, build_graph, centroids_for, decay_rate, node_metrics, sparsify_topk
from rlsft.ratios import _key_seed


MATCHED_COLUMNS = ["family", "benchmark", "problem", "comparison", "after", "before", "metric", "beta_after",
                   "beta_before", "nodes_after", "nodes_before", "matched_variant", "nodes_matched",
                   "responses_matched", "responses_total", "draws"]
"""Columns of :func:`matched_decay`."""


def _by_problem(paths: Mapping) -> dict:
    """``{(family, benchmark, problem): {variant: [path, ...]}}``, responses in sample order."""
    out: dict = {}
    for key in sorted(paths, key=lambda k: (str(k[:4]), k[4])):
        family, variant, bench, problem, _ = key
        out.setdefault((family, bench, problem), {}).setdefault(variant, []).append(paths[key])
    return out


def _betas(paths: list, C, sparsify_k, weight) -> tuple[dict, int]:
    """``({metric: beta}, graph nodes)`` of the graph of ``paths``."""
    G = build_graph(paths, centroids=C)
    if sparsify_k:
        G = sparsify_topk(G, sparsify_k)
    return {m: decay_rate(v) for m, v in node_metrics(G, weight=weight).items()}, G.number_of_nodes()


def matched_prefix(paths: Sequence[Sequence[int]], target: int, rng: np.random.Generator) -> list:
    """The responses of ``paths`` in a random order (``rng``), up to the first prefix whose graph
    visits at least ``target`` nodes (all of them when none does).

    >>> rng = np.random.default_rng(0)
    >>> len(matched_prefix([[0, 1], [2, 3], [4, 5]], 3, rng))
    2
    """
    seen: set = set()
    out = []
    for i in rng.permutation(len(paths)):
        out.append(paths[i])
        seen.update(paths[i])
        if len(seen) >= target:
            break
    return out


def matched_decay(paths: Mapping, comparisons: Sequence[tuple[str, str]] = COMPARISONS, draws: int = 5,
                  seed: int = 0, centroids: Mapping | None = None, sparsify_k: int | None = None,
                  weight: str | None = None):
    """The node-count-matched control: beta when both variants' graphs visit the same number of nodes.

    ``paths``: :func:`rlsft.graphs.paths_from_steps` (one or many problems). Per problem and
    comparison, the variant whose graph visits more nodes is cut down: its responses are added in a
    random order (seeded by ``seed``, the problem, the variant and the draw) and stopped at the
    first prefix whose graph visits at least as many nodes as the other variant's graph
    (:func:`matched_prefix`); beta of each metric is fitted on that graph; the median over
    ``draws`` draws is its matched beta. The other variant keeps its whole graph. Equal node counts:
    both whole (``matched_variant`` "neither"). ``centroids`` / ``sparsify_k`` / ``weight`` as in
    :func:`rlsft.graphs.graphs_from_steps` and :func:`rlsft.graphs.node_metrics`. Columns:
    :data:`MATCHED_COLUMNS` (``nodes_matched`` / ``responses_matched``: medians over the draws).

    If a ratio keeps its direction after matching, the direction is about the shape of the decay,
    not about how many nodes the graphs visit.

    >>> paths = {("f", "Base", "b", "p", i): [i, i + 10] for i in range(4)}
    >>> paths.update({("f", "RL", "b", "p", i): [0, 1, 2, 0] for i in range(4)})
    >>> m = matched_decay(paths, comparisons=[("RL", "Base")], draws=3)
    >>> m[["matched_variant", "nodes_after", "nodes_before", "nodes_matched"]].astype(str).iloc[0].tolist()
    ['before', '3', '8', '4.0']
    """
    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    rows = []
    for (family, bench, problem), by_var in _by_problem(paths).items():
        C = None if centroids is None else centroids_for(centroids, family, bench, problem)
        whole: dict = {}

        def full(v):
            if v not in whole:
                whole[v] = _betas(by_var[v], C, sparsify_k, weight)
            return whole[v]

        for after, before in comparisons:
            if after not in by_var or before not in by_var:
                continue
            (ba, na), (bb, nb) = full(after), full(before)
            big, target = (after, nb) if na > nb else (before, na)
            betas = {"after": ba, "before": bb}
            n_matched = n_used = math.nan
            if na != nb:
                draws_b, nodes, used = [], [], []
                for r in range(int(draws)):
                    rng = _key_seed(seed, "matched", family, bench, problem, big, r)
                    prefix = matched_prefix(by_var[big], target, rng)
                    b, n = _betas(prefix, C, sparsify_k, weight)
                    draws_b.append(b)
                    nodes.append(n)
                    used.append(len(prefix))
                side = "after" if big == after else "before"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    betas[side] = {m: float(np.nanmedian([b[m] for b in draws_b])) for m in draws_b[0]}
                n_matched, n_used = float(np.median(nodes)), float(np.median(used))
            for metric in betas["after"]:
                rows.append(dict(family=family, benchmark=bench, problem=problem, comparison=f"{after}/{before}",
                                 after=after, before=before, metric=metric, beta_after=betas["after"][metric],
                                 beta_before=betas["before"][metric], nodes_after=na, nodes_before=nb,
                                 matched_variant="neither" if na == nb else ("after" if big == after else "before"),
                                 nodes_matched=n_matched, responses_matched=n_used,
                                 responses_total=len(by_var[big]), draws=int(draws)))
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)


def subsample_paths(paths: Mapping, m: int, seed: int = 0) -> dict:
    """``paths`` with at most ``m`` responses per graph (family, variant, benchmark, problem): the
    first ``m`` of the graph's samples in a random order seeded by ``seed`` and the graph key, so a
    smaller subsample is part of a larger one.

    >>> p = {("f", "RL", "b", "q", i): [i] for i in range(5)}
    >>> small, big = subsample_paths(p, 2), subsample_paths(p, 4)
    >>> len(small), len(big), set(small) <= set(big)
    (2, 4, True)
    """
    if int(m) != m or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    by_graph: dict = {}
    for key in paths:
        by_graph.setdefault(key[:4], []).append(key)
    out = {}
    for gkey in sorted(by_graph, key=str):
        keys = sorted(by_graph[gkey], key=lambda k: k[4])
        order = _key_seed(seed, "subsample", *gkey).permutation(len(keys))
        out.update({keys[i]: paths[keys[i]] for i in sorted(order[: int(m)])})
    return out


SATURATION = 0.8
"""A variant whose median visited fraction (visited nodes / K) is above this is saturated at K:
its graph cannot grow by much, so K, not the model, sets its node count."""

VISITED_COLUMNS = [*GRAPH_KEYS, "visited", "k_asked", "k_used", "visited_fraction"]
VISITED_SUMMARY_COLUMNS = ["family", "variant", "n_graphs", "median_visited", "median_k_asked", "median_k_used",
                           "median_visited_fraction", "saturated"]


def _problem_str(s):
    return s.map(lambda x: "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x))


def visited_table(decay_df, clustering):
    """Per graph: ``visited`` (its nodes), ``k_asked`` and ``k_used`` (the clusters K-means was asked
    for and fitted in its clustering group, from ``clustering.csv``; ``k_used`` = min(K, the group's
    distinct steps)) and ``visited_fraction`` = visited / k_asked. Columns :data:`VISITED_COLUMNS`.

    The fraction is of the clusters K allows, not of those fitted: when K reaches a group's distinct
    steps every step is its own node, K caps nothing, and a variant that writes most of the group's
    sentences (visited / k_used near 1) can still expand by writing new ones; that is not
    saturation. Where K binds (K < distinct steps) the two denominators are equal. A table without
    ``k_asked`` falls back to ``k_used``.

    >>> import pandas as pd
    >>> d = pd.DataFrame({"family": "f", "variant": ["Base", "RL"], "benchmark": "b", "problem": "p",
    ...                   "metric": "degree", "n_graph_nodes": [9, 5]})
    >>> c = pd.DataFrame({"family": ["f"], "benchmark": ["b"], "problem": ["p"], "k_asked": [10], "k_used": [10]})
    >>> visited_table(d, c)["visited_fraction"].tolist()
    [0.9, 0.5]
    >>> c2 = c.assign(k_asked=20)   # K above the group's 10 distinct steps: half of what K allows
    >>> visited_table(d, c2)["visited_fraction"].tolist()
    [0.45, 0.25]
    """
    if decay_df.empty or clustering is None or clustering.empty:
        return pd.DataFrame(columns=VISITED_COLUMNS)
    g = decay_df[[*GRAPH_KEYS, "n_graph_nodes"]].drop_duplicates(list(GRAPH_KEYS)).rename(
        columns={"n_graph_nodes": "visited"})
    c = clustering.copy()
    per_problem = "problem" in c.columns and (_problem_str(c["problem"]) != "").any()
    on = ["family", "benchmark", "problem"] if per_problem else ["family", "benchmark"]
    g["_p"] = _problem_str(g["problem"])
    c["_p"] = _problem_str(c["problem"]) if "problem" in c.columns else ""
    keys = [k if k != "problem" else "_p" for k in on]
    if "k_asked" not in c.columns:
        c["k_asked"] = c["k_used"]
    c = c[[*keys, "k_asked", "k_used"]].drop_duplicates(keys)
    for col in ("family", "benchmark"):
        g[col], c[col] = g[col].astype(str), c[col].astype(str)
    out = g.merge(c, on=keys, how="left").drop(columns="_p")
    out["visited_fraction"] = out["visited"] / out["k_asked"]
    return out.reindex(columns=VISITED_COLUMNS).reset_index(drop=True)


def visited_summary(visited, threshold: float = SATURATION):
    """Per (family, variant): graphs, median visited nodes, median K asked and used, median visited
    fraction, and ``saturated`` (that median above ``threshold``). Variants in the canonical order.

    >>> import pandas as pd
    >>> v = pd.DataFrame({"family": "f", "variant": ["RL", "Base", "Base"], "visited": [5, 9, 10],
    ...                   "k_asked": 10, "k_used": 10, "visited_fraction": [0.5, 0.9, 1.0]})
    >>> visited_summary(v)[["variant", "median_visited_fraction", "saturated"]].values.tolist()
    [['Base', 0.95, True], ['RL', 0.5, False]]
    """
    if visited.empty:
        return pd.DataFrame(columns=VISITED_SUMMARY_COLUMNS)
    g = visited.groupby(["family", "variant"], sort=False)
    out = g.agg(n_graphs=("visited", "size"), median_visited=("visited", "median"),
                median_k_asked=("k_asked", "median"), median_k_used=("k_used", "median"),
                median_visited_fraction=("visited_fraction", "median")).reset_index()
    out["saturated"] = out["median_visited_fraction"] > threshold
    rank = {v: i for i, v in enumerate(VARIANTS)}
    out["_f"] = out["family"].map({f: i for i, f in enumerate(dict.fromkeys(visited["family"]))})
    out["_v"] = out["variant"].map(rank).fillna(len(rank))
    return out.sort_values(["_f", "_v"]).drop(columns=["_f", "_v"]).reset_index(drop=True)[VISITED_SUMMARY_COLUMNS]


def saturation_warnings(summary, threshold: float = SATURATION) -> list[str]:
    """One line per saturated (family, variant) of :func:`visited_summary` (none: ``[]``).

    >>> import pandas as pd
    >>> s = pd.DataFrame({"family": ["f"], "variant": ["Base"], "median_visited": [38.0], "median_k_asked": [40.0],
    ...                   "median_visited_fraction": [0.95], "saturated": [True]})
    >>> saturation_warnings(s)[0][:66]
    'f/Base: its graphs visit a median 95% of the K clusters (38 of 40)'
    """
    out = []
    for _, r in summary[summary["saturated"].astype(bool)].iterrows():
        out.append(f"{r['family']}/{r['variant']}: its graphs visit a median {r['median_visited_fraction']:.0%} of "
                   f"the K clusters ({r['median_visited']:.0f} of {r['median_k_asked']:.0f}), above {threshold:.0%}: "
                   f"saturated at K, so K rather than the model bounds its node count; raise K")
    return out


K_GRID = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
"""The fixed grid of K values (powers of two and their 1.5 multiples): the saturation rule's candidates
(the K axis of stage ``sweep``, the guard of stage ``graphs``)."""


def next_grid_k(k: int, grid=K_GRID) -> int | None:
    """The smallest value of ``grid`` above ``k`` (None past its end).

    >>> next_grid_k(96), next_grid_k(100), next_grid_k(8192)
    (128, 128, None)
    """
    return next((int(g) for g in sorted(grid) if g > k), None)


def rule_k(by_k, threshold: float = SATURATION):
    """The smallest K of ``by_k`` at which every variant's median visited fraction is at most
    ``threshold`` (``None`` when no K qualifies): the rule that sets each profile's K.

    ``by_k``: columns ``k`` and ``median_visited_fraction`` (one row per K and family/variant, as
    stage ``sweep`` writes ``sweep/visited.csv`` for its K axis).

    >>> import pandas as pd
    >>> t = pd.DataFrame({"k": [40, 40, 80, 80, 160, 160], "median_visited_fraction": [.95, .7, .8, .5, .6, .3]})
    >>> rule_k(t), rule_k(t, threshold=0.5)
    (80, None)
    """
    if by_k is None or len(by_k) == 0:
        return None
    worst = by_k.groupby("k")["median_visited_fraction"].max()
    ok = worst[worst <= threshold]
    return int(ok.index.min()) if len(ok) else None


__all__ = [
    "MATCHED_COLUMNS", "matched_prefix", "matched_decay", "subsample_paths", "SATURATION", "VISITED_COLUMNS",
    "VISITED_SUMMARY_COLUMNS", "visited_table", "visited_summary", "saturation_warnings", "rule_k", "K_GRID",
    "next_grid_k",
]
