"""Stage ``sweep`` (notebook ``70_sweep.ipynb``): how the headline decay-rate ratios move with the
number of responses per variant M and with the number of clusters K.

beta is fitted on the raw rank, so anything that changes how many nodes a graph visits moves it:
fewer responses visit fewer nodes, and a small K caps every variant's node count (saturation). This
stage measures both, from one run that reuses what stage ``graphs`` computed:

- **M axis** (:func:`m_axis`): responses are subsampled **after** clustering -- the nodes of stage
  ``graphs`` (``graphs/steps.parquet``), the same clusters for every M -- keeping ``m`` responses per
  variant and problem (a random subset, seeded per graph, each smaller one inside the larger,
  :func:`rlsft.controls.subsample_paths`) for m = ``m_first``, 2 ``m_first``, ... below the profile's M,
  and M itself (the main run);
- **K axis** (:func:`k_axis`): every clustering group K-means'd again for each K of a fixed grid
  (:data:`K_GRID`, about two values per doubling) from 0.25 to 10 times the profile's K
  (``k_range``; each capped at the group's distinct steps), from the embedding cache stage
  ``graphs`` filled (no step is encoded again); stage graphs' K (the profile's, or the one its
  saturation guard chose) is the main run, not recomputed.

Each point gets the ratios of median beta with their node-count and shape parts and bootstrap
intervals (:func:`rlsft.ratios.decay_ratios`), their geometric means over metrics
(:func:`rlsft.ratios.decay_geomeans`) and each variant's visited fraction
(:func:`rlsft.controls.visited_summary`); :func:`rlsft.controls.rule_k` names the smallest grid K of
the K axis at which no variant is saturated: the saturation rule that sets the profiles' K. Top-k sparsification (``sparsify_k``) is applied on the K axis and
not on the M axis (the saved steps carry no centroids); none of the shipped profiles sparsifies.

Reads ``samples/all_samples.parquet`` and ``graphs/`` (``steps.parquet``, ``decay_rates.csv``,
``clustering.csv``), stage ``graphs``' parameters for the same profile and the embedding cache;
writes ``sweep/ratios.csv``, ``sweep/geomeans.csv``, ``sweep/visited.csv`` and ``sweep/k_rule.json``.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import pandas as pd

from rlsft import io
from rlsft.controls import K_GRID, SATURATION, rule_k, subsample_paths, visited_summary, visited_table
from rlsft.embedders import get_embedder
from rlsft.graphs import (PATH_KEYS, decay_table_from_graphs, graphs_from_paths, graphs_from_steps, paths_from_steps,
                          sorted_decay)
from rlsft.params import param
from rlsft.ratios import decay_geomeans, decay_ratios
from rlsft.stages import graphs as graphs_stage
from rlsft.stages.ablations import graphs_params
from rlsft.steps import cluster_group, embedded_groups

log = logging.getLogger(__name__)

NOTEBOOK = "70_sweep.ipynb"
KIND = "compute"
INPUTS = ("samples", "graphs")
OUTPUTS = ("sweep",)

RATIO_KEEP = ["family", "metric", "comparison", "n_problems", "ratio", "ci_low", "ci_high", "node_ratio",
              "node_ci_low", "node_ci_high", "shape_ratio", "shape_ci_low", "shape_ci_high", "paper_value",
              "expected_direction", "agrees"]
"""The columns of :func:`rlsft.ratios.decay_ratios` kept per sweep point (rows over all benchmarks)."""


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``sweep``; defaults are the organism profile's (sized to keep the
    stage near a minute of the organism's 15 on 2 cores)."""

    m_first: int = param(4, "the M axis: responses per variant at the first point, doubled up to the "
                            "profile's M (M itself, the main run, is the last point)", ge=1)
    k_grid: list[int] = param(list(K_GRID), "the fixed grid of K values (about two per doubling) that the K axis "
                                            "and the saturation rule draw from")
    k_range: list[float] = param([0.25, 10.0], "the K axis: the grid's values from the first to the second multiple "
                                               "of stage graphs' K, and that K itself (the main run); each capped at "
                                               "a group's distinct steps")
    n_boot: int = param(1000, "bootstrap resamples of problems for each point's intervals", ge=0)


def m_values(m_first: int, m_max: int) -> list[int]:
    """``m_first``, doubled while below ``m_max``, then ``m_max``.

    >>> m_values(4, 64), m_values(4, 8), m_values(4, 6), m_values(8, 4)
    ([4, 8, 16, 32, 64], [4, 8], [4, 6], [4])
    """
    out, m = [], int(m_first)
    while m < m_max:
        out.append(m)
        m *= 2
    return out + [int(m_max)]


def k_values(k: int, grid, k_range) -> list[int]:
    """The K axis: the values of ``grid`` from ``k_range[0] * k`` to ``k_range[1] * k``, and ``k``.

    >>> k_values(100, K_GRID, [0.25, 10]), k_values(8, K_GRID, [0.25, 10])
    ([32, 48, 64, 96, 100, 128, 192, 256, 384, 512, 768], [8, 12, 16, 24, 32, 48, 64])
    """
    lo, hi = (float(x) * k for x in k_range)
    return sorted({int(g) for g in grid if lo <= g <= hi} | {int(k)})


def _point(decay, clustering, axis: str, value: int, n_boot: int, seed: int, same_as: dict | None = None) -> dict:
    """One sweep point: its ratios, geometric means and visited fractions, each tagged (axis, value).
    ``same_as``: a point whose decay table equals ``decay`` (its ratios and means are taken, not
    bootstrapped again)."""
    tag = {"axis": axis, "value": int(value)}
    if same_as is None:
        rat = decay_ratios(decay, n_boot=n_boot, seed=seed)
        rat = rat[rat["benchmark"] == "all"][RATIO_KEEP]
        geo = decay_geomeans(decay, n_boot=n_boot, seed=seed)
    else:
        rat, geo = (same_as[name].drop(columns=["axis", "value"]) for name in ("ratios", "geomeans"))
    vis = visited_summary(visited_table(decay, clustering))
    return {name: df.assign(**tag)[["axis", "value", *df.columns]]
            for name, df in (("ratios", rat), ("geomeans", geo), ("visited", vis))}


def m_axis(graph_dir, m_first: int, n_boot: int, seed: int, main_decay=None) -> list[dict]:
    """The points of the M axis: the nodes of stage ``graphs`` (``steps.parquet``), ``m`` responses
    per variant and problem (:func:`rlsft.controls.subsample_paths`, seeded by ``seed``); the
    largest M is ``main_decay`` when given (the main run), else rebuilt from all responses."""
    steps = pd.read_parquet(graph_dir / "steps.parquet", columns=[*PATH_KEYS, "step_idx", "node"])
    clustering = pd.read_csv(graph_dir / "clustering.csv")
    paths = paths_from_steps(steps)
    del steps
    if not paths:
        return []
    per_graph = pd.Series([k[:4] for k in paths]).value_counts()
    m_max = int(per_graph.max())
    points = []
    for m in m_values(m_first, m_max):
        t0 = time.perf_counter()
        if m == m_max and main_decay is not None:
            decay = main_decay
        else:
            decay = decay_table_from_graphs(graphs_from_paths(subsample_paths(paths, m, seed=seed)))
        points.append(_point(decay, clustering, "M", m, n_boot, seed))
        log.info("sweep M = %d: %.1f s", m, time.perf_counter() - t0)
    return points


def k_axis(samples, gparams, cache_dir, ks, seed: int, n_boot: int, main=None, device: str = "cpu",
           progress: bool = True) -> tuple[list[dict], int]:
    """The points of the K axis: each clustering group K-means'd again for each K of ``ks`` (other
    than the main run's K, when ``main = (K, decay, clustering)`` is given), from the embedding cache
    ``cache_dir``, one group in memory at a time, with stage ``graphs``' K-means threads. Returns
    ``(points, steps encoded)``; the second is 0 when the cache held every step.

    A group whose K reaches its distinct steps is clustered by identity (every step its own node,
    whatever the seed), so every larger K gives the same graphs: they are computed once per group,
    at the first such K, and reused for the larger ones with ``k_asked`` set to each K."""
    todo = sorted(k for k in ks if main is None or k != main[0])
    decay_parts: dict[int, list] = {k: [] for k in todo}
    info_rows: dict[int, list] = {k: [] for k in todo}
    encoded = 0
    if todo:
        emb = get_embedder(gparams.embedder, device=device, normalize=gparams.normalize)
        seg = graphs_stage.segment_settings(gparams)
        for group in embedded_groups(samples, seg, emb, cache_dir, scope=gparams.scope, progress=progress):
            encoded += int(group.info["n_encoded"])
            identity = None  # (decay, info) at the first K that reached the group's distinct steps
            for k in todo:
                if identity is not None:
                    decay_parts[k].append(identity[0])
                    info_rows[k].append({**identity[1], "k_asked": int(k)})
                    continue
                steps_df, C, info = cluster_group(group, k=k, seed=seed, metric=gparams.metric,
                                                  threads=gparams.kmeans_threads)
                graphs = graphs_from_steps(steps_df, {group.key: C}, gparams.sparsify_k)
                decay_parts[k].append(decay_table_from_graphs(graphs))
                info_rows[k].append(info)
                if info["method"] == "identity":
                    identity = (decay_parts[k][-1], info)
                del steps_df, C, graphs
            del group
    points, previous = [], None  # previous: (the parts of the last computed K, its point)
    for k in ks:
        same = None
        if main is not None and k == main[0]:
            decay, clustering = main[1], main[2]
        else:
            decay = sorted_decay(decay_parts[k])
            clustering = pd.DataFrame(info_rows[k]).reindex(columns=graphs_stage.CLUSTERING_COLUMNS)
            ids = [id(d) for d in decay_parts[k]]
            same = previous[1] if previous is not None and previous[0] == ids else None
        points.append(_point(decay, clustering, "K", k, n_boot, seed, same_as=same))
        if main is None or k != main[0]:
            previous = ([id(d) for d in decay_parts[k]], points[-1])
    return points, encoded


def _stack(points: list[dict], name: str) -> pd.DataFrame:
    parts = [p[name] for p in points if len(p[name])]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["axis", "value"])


def run(ctx, params: Params) -> dict:
    """``{"ratios", "geomeans", "visited", "k_rule", "settings", "seconds", "note"}``: per sweep point
    (``axis`` "M" or "K", ``value`` m or K asked) the ratios with their parts and intervals
    (``sweep/ratios.csv``), their geometric means over metrics (``sweep/geomeans.csv``) and the
    visited fraction per variant (``sweep/visited.csv``); the K the saturation rule picks from the K
    axis (``sweep/k_rule.json``); the settings swept; the stage's wall time; and a note when there
    was nothing to sweep."""
    t0 = time.perf_counter()
    gdir = ctx.input("graphs")
    gparams = graphs_params(ctx.profile, gdir)
    main_decay = pd.read_csv(gdir / "decay_rates.csv")
    main_clustering = pd.read_csv(gdir / "clustering.csv")
    note = ""
    if main_clustering.empty:
        note = "nothing to sweep: stage graphs found no steps"
        log.warning("%s", note)
        m_points, k_points, encoded, ks = [], [], 0, []
    else:
        if gparams.sparsify_k:
            log.warning("the M axis is computed without top-%d sparsification (the saved steps carry no "
                        "centroids); the K axis applies it", gparams.sparsify_k)
        m_points = m_axis(gdir, params.m_first, params.n_boot, ctx.seed,
                          main_decay=None if gparams.sparsify_k else main_decay)
        samples = pd.read_parquet(ctx.input("samples") / "all_samples.parquet")
        ks = k_values(gparams.k, params.k_grid, params.k_range)
        k_points, encoded = k_axis(samples, gparams, graphs_stage.embedding_cache(ctx), ks, ctx.seed, params.n_boot,
                                   main=(gparams.k, main_decay, main_clustering), device=ctx.device)
        if encoded:
            log.warning("the embedding cache lacked %d steps; they were encoded now", encoded)
    points = m_points + k_points
    tables = {name: _stack(points, name) for name in ("ratios", "geomeans", "visited")}
    for name, df in tables.items():
        io.write_csv(ctx.dir / f"{name}.csv", df)
    vk = tables["visited"]
    vk = vk[(vk["axis"] == "K") & vk["value"].isin(params.k_grid)].rename(columns={"value": "k"}) if len(vk) else vk
    k_rule = {"threshold": SATURATION, "k_axis": ks, "profile_k": graphs_params(ctx.profile).k, "graphs_k": gparams.k,
              "k_rule": rule_k(vk) if len(vk) else None, "steps_encoded": encoded}
    io.write_json(ctx.dir / "k_rule.json", k_rule)
    seconds = time.perf_counter() - t0
    log.info("sweep: %d M points, %d K points in %.1f s; the saturation rule picks K = %s (grid %s)",
             len(m_points), len(k_points), seconds, k_rule["k_rule"], ks)
    return {**tables, "k_rule": k_rule, "settings": {"k": gparams.k, "embedder": gparams.embedder,
                                                        "metric": gparams.metric, "sparsify_k": gparams.sparsify_k},
            "seconds": seconds, "note": note}


__all__ = ["Params", "run", "K_GRID", "m_values", "k_values", "m_axis", "k_axis", "RATIO_KEEP"]
