"""Stage ``graphs`` (notebook ``40_step_graphs.ipynb``): the step level of PAPER.md §6.

Every response is cut into steps, every distinct step embedded once (cached on disk under
``results/<profile>/.cache/embeddings``), one pooled K-means per (family, benchmark, problem) gives
the nodes the four variants share, each variant's graph is the union of its responses' node paths,
and the decay rate beta of three node metrics is fitted per graph; the ratios of median beta
(RL/Base ~ 2.5, SFT/Base ~ 1/3 in the paper) get bootstrap intervals and their spread over
clustering seeds.

:func:`step_analysis` streams all of it one clustering group at a time (segment, embed, K-means,
graphs, metrics, decay), writing ``steps`` / ``nodes`` / ``edges`` / ``node_metrics.parquet``,
``decay_rates.csv`` and ``clustering.csv`` incrementally and atomically; :func:`seed_spread` refits
the clustering with other seeds. Reads ``samples/all_samples.parquet``; writes ``graphs/`` (those
tables, ``decay_ratios.csv``, ``decay_geomeans.csv``, ``matched_decay.csv``, ``visited.csv``,
``visited_summary.csv``, ``seed_spread.csv``; the run's timings and cache misses go to the hidden
``.timings.csv``, so ``clustering.csv`` is the same on every rerun).

beta is fitted on the raw rank (§6.4), so a graph that visits fewer nodes has a larger beta for the
same shape of decay. Each ratio therefore comes with its node-count part and its shape part
(:func:`rlsft.ratios.decay_ratios`), a node-count-matched control (:func:`rlsft.controls.matched_decay`,
computed per clustering group while the group is in memory) and, per variant, the share of the K
clusters its graphs visit (:func:`rlsft.controls.visited_summary`; a warning above
:data:`rlsft.controls.SATURATION`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from rlsft import io
from rlsft.controls import (MATCHED_COLUMNS, SATURATION, matched_decay, next_grid_k, saturation_warnings,
                            visited_summary, visited_table)
from rlsft.embedders import get_embedder
from rlsft.graphs import (DECAY_COLUMNS, GRAPH_KEY, GRAPH_KEYS, decay_table_from_graphs, graph_metrics, graph_tables,
                          graphs_from_steps, node_metric_table, paths_from_steps, sorted_decay)
from rlsft.params import param
from rlsft.ratios import decay_geomeans, decay_ratios, summarize_seed_spread
from rlsft.steps import STEP_COLUMNS, cluster_group, embedded_groups

log = logging.getLogger(__name__)

NOTEBOOK = "40_step_graphs.ipynb"
KIND = "compute"
INPUTS = ("samples",)
OUTPUTS = ("graphs",)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``graphs``; defaults are the organism profile's."""

    embedder: str = param("all-MiniLM-L6-v2", "sentence embedder: a sentence-transformers id or folder "
                          "(paper: BAAI/bge-large-en-v1.5) or 'tfidf-char' (the offline second embedder)")
    normalize: bool = param(False, "L2-normalise embeddings (BGE's default is True; paper unclear)")
    segment_rule: str = param("sentence", "'sentence' (newline, then sentence split) or 'line'",
                              choices=("sentence", "line"))
    min_chars: int = param(5, "drop fragments of at most this many characters", ge=0)
    mask_digits: bool = param(False, "replace digit runs by 0 before embedding (a deviation; off in the paper)")
    k: int = param(96, "K-means clusters per pooled group (paper: 2000), capped at distinct steps; the "
                       "organism's 96 is the saturation rule's (stage sweep, profiles/organism.yaml)", ge=1)
    scope: str = param("problem", "pool the K-means per 'problem' (default) or per 'benchmark'",
                       choices=("problem", "benchmark"))
    metric: str = param("euclidean", "'euclidean' (paper) or 'cosine' (rows L2-normalised first)",
                        choices=("euclidean", "cosine"))
    sparsify_k: int | None = param(None, "keep each node's k nearest out-edges (paper ablation: 10 or 20); "
                                   "None: off", ge=1)
    spread_seeds: list[int] = param([0, 1, 2], "clustering seeds for the spread of the ratios (the profile's "
                                    "seed is the main run's, not clustered again)")
    n_boot: int = param(1000, "bootstrap resamples of problems for the ratios' intervals", ge=0)
    matched_draws: int = param(5, "draws of the node-count-matched control (random response orders per problem; "
                                  "the median beta over them); 0: off", ge=0)
    k_guard: bool = param(True, "if a variant is saturated at k (median visited fraction above 0.8), raise K "
                                "along the saturation rule's grid (rlsft.controls.K_GRID) until none is; the K "
                                "used and why: graphs/k_choice.json")
    kmeans_threads: int | None = param(1, "threads of each group's K-means (1: fastest for per-problem groups "
                                          "on a shared 2-core machine, and robust beside another job; None: "
                                          "the library's default, every core)", ge=1)


SAVED_TABLES = ("steps", "nodes", "edges", "node_metrics")
"""The parquet tables :func:`step_analysis` writes (``<name>.parquet``), as stage ``graphs`` saves them."""
CLUSTERING_COLUMNS = ["family", "benchmark", "problem", "scope", "n_responses", "n_steps", "n_distinct",
                      "k_asked", "k_used", "method", "n_init", "n_iter", "inertia", "seed", "metric", "variants"]
"""Columns of ``clustering.csv``: one row per clustering group (``problem`` empty for scope="benchmark").
Only what the run's inputs determine: the same on every rerun, so the stages that read it are not
rerun for nothing."""
TIMING_COLUMNS = ["family", "benchmark", "problem", "n_encoded", "seconds_segment", "seconds_embed",
                  "seconds_kmeans", "seconds_graphs", "seconds_metrics", "seconds_matched", "seconds"]
"""Columns of the hidden ``.timings.csv``: what changes from run to run (wall times; ``n_encoded``,
the cache misses, is 0 on a rerun). Hidden files are not recorded as artifacts."""
NO_BETA_NOTE = ("no decay rate: no graph has the 3 nodes with X > 0 that a fit needs (responses of one or two "
                "steps), so every beta and every ratio is empty")
NO_STEPS_NOTE = ("no steps: every response gave no step (empty or unparsable text), so there are no graphs, "
                 "decay rates or ratios; check the samples and the segmentation settings (min_chars, rule)")


class ParquetStream:
    """Write a parquet file one DataFrame at a time (one row group each), atomically.

    The rows go to a temporary file beside ``path`` that replaces ``path`` only on
    ``close(ok=True)``; ``close(ok=False)`` (or an exception inside ``with``) leaves ``path`` as it
    was. Reading the file back gives the concatenation of the parts, as ``DataFrame.to_parquet``
    of the whole would. ``columns``: the columns of the empty file written when no part has rows.

    >>> import tempfile, pandas as pd
    >>> p = Path(tempfile.mkdtemp()) / "t.parquet"
    >>> with ParquetStream(p, ["a"]) as w:
    ...     w.write(pd.DataFrame({"a": [1, 2]})); w.write(pd.DataFrame({"a": [3]}))
    >>> pd.read_parquet(p)["a"].tolist()
    [1, 2, 3]
    """

    def __init__(self, path, columns: Sequence[str] = ()):
        self.path, self.columns = Path(path), list(columns)
        self._ctx = self._writer = self._schema = None
        self._empty = None
        self.rows = 0

    def write(self, df) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if len(df) == 0:
            if self._empty is None:
                self._empty = df.iloc[:0]
            return
        table = pa.Table.from_pandas(df, preserve_index=False, schema=self._schema)
        if self._writer is None:
            self._ctx = io.atomic_path(self.path, ".parquet")
            tmp = self._ctx.__enter__()
            self._schema = table.schema
            self._writer = pq.ParquetWriter(tmp, self._schema)
        self._writer.write_table(table)
        self.rows += len(df)

    def close(self, ok: bool = True) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if ok:
                self._ctx.__exit__(None, None, None)
            else:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        elif ok:
            io.write_parquet(self.path, self._empty if self._empty is not None else pd.DataFrame(columns=self.columns))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False


@dataclasses.dataclass
class StepAnalysis:
    """What :func:`step_analysis` returns: the decay table (``decay_rates.csv``), the per-group
    clustering record (``clustering.csv``), its timings (``.timings.csv``) and the
    node-count-matched control (``matched_decay.csv``; empty when not computed)."""

    decay: object
    clustering: object
    timings: object = None
    matched: object = None


def _table_columns(name: str) -> list[str]:
    return {"steps": list(STEP_COLUMNS), "nodes": [*GRAPH_KEY, "node", "visits"],
            "edges": [*GRAPH_KEY, "src", "dst", "count", "distance"],
            "node_metrics": [*GRAPH_KEY, "node", "metric", "value"]}[name]


def _graph_group(key: tuple, steps_df, C, info: dict, streams: Mapping, scope: str, sparsify_k: int | None,
                 weight: str | None, matched: dict | None = None):
    """Graphs, node metrics and decay rates of one clustered group; its rows appended to ``streams``.

    Completes ``info`` (scope, seconds_graphs, seconds_metrics, seconds_matched, seconds) and
    returns ``(decay table, matched table or None)``; ``matched``: keyword arguments of
    :func:`rlsft.controls.matched_decay` (draws, seed), or None for no matched control.
    """
    t0 = time.perf_counter()
    graphs = graphs_from_steps(steps_df, {key: C}, sparsify_k)
    t1 = time.perf_counter()
    metrics = graph_metrics(graphs, weight=weight)
    decay = decay_table_from_graphs(graphs, weight=weight, metrics=metrics)
    if "steps" in streams:
        streams["steps"].write(steps_df)
    if "nodes" in streams or "edges" in streams:
        nodes, edges = graph_tables(graphs)
        for name, df in (("nodes", nodes), ("edges", edges)):
            if name in streams:
                streams[name].write(df)
        del nodes, edges
    if "node_metrics" in streams:
        streams["node_metrics"].write(node_metric_table(graphs, metrics=metrics))
    t2 = time.perf_counter()
    mt = None
    if matched:
        mt = matched_decay(paths_from_steps(steps_df), centroids={key: C}, sparsify_k=sparsify_k, weight=weight,
                           **matched)
    t3 = time.perf_counter()
    info.update(scope=scope, seconds_graphs=t1 - t0, seconds_metrics=t2 - t1, seconds_matched=t3 - t2)
    info["seconds"] = sum(info.get(c, 0.0) for c in TIMING_COLUMNS if c.startswith("seconds_"))
    log.info("group %s: %d steps, %d distinct (%d encoded), %s K=%d, %d graphs; %.1f s "
             "(segment %.1f, embed %.1f, k-means %.1f, graphs %.1f, metrics %.1f, matched %.1f)", key,
             info["n_steps"], info["n_distinct"], info["n_encoded"], info["method"], info["k_used"], len(graphs),
             info["seconds"], info["seconds_segment"], info["seconds_embed"], info["seconds_kmeans"],
             info["seconds_graphs"], info["seconds_metrics"], info["seconds_matched"])
    return decay, mt


def step_analysis(samples, segment_kwargs: dict | None, embedder, cache_dir, k: int, seed: int = 0,
                  scope: str = "problem", metric: str = "euclidean", n_init: int = 10,
                  sparsify_k: int | None = None, weight: str | None = None, out_dir=None,
                  tables: Sequence[str] = SAVED_TABLES, progress: bool = True, matched_draws: int = 0,
                  **cluster_kwargs) -> StepAnalysis:
    """The step level of PAPER.md §6, streamed one clustering group at a time.

    For each group -- (family, benchmark, problem), or (family, benchmark) for
    ``scope="benchmark"`` -- in sorted order: segment its responses, embed its distinct steps
    through the on-disk cache (:func:`rlsft.steps.embedded_groups`), K-means them
    (:func:`rlsft.steps.cluster_group`), build each variant's graph (``sparsify_k``: top-k
    out-edges), compute the node metrics once and the decay rates; append the group's rows to the
    output tables; drop the group. Peak memory is one group's, not the corpus's.

    ``out_dir``: where to write ``<table>.parquet`` for each of ``tables`` (a subset of
    :data:`SAVED_TABLES`: steps, nodes, edges, node_metrics -- columns: :data:`rlsft.steps.STEP_COLUMNS`,
    :func:`rlsft.graphs.graph_tables`, :func:`rlsft.graphs.node_metric_table`), plus
    ``decay_rates.csv`` and ``clustering.csv``; every file is written atomically (a parquet file
    grows in a temporary file, one row group per group, and is renamed when all groups are done).
    ``out_dir=None`` writes nothing (ablations). ``matched_draws > 0`` also computes the
    node-count-matched control of each group (:func:`rlsft.controls.matched_decay`, seeded by
    ``seed``), written as ``matched_decay.csv``. Returns :class:`StepAnalysis` (decay table in
    :func:`rlsft.graphs.decay_table_from_graphs`' order; clustering record, columns
    :data:`CLUSTERING_COLUMNS`; timings, :data:`TIMING_COLUMNS`, written as the hidden
    ``.timings.csv``). When no response gives a step, every table is empty (a warning says so,
    :data:`NO_STEPS_NOTE`).
    """
    bad = [t for t in tables if t not in SAVED_TABLES]
    if bad:
        raise ValueError(f"unknown tables {bad}; choose from {list(SAVED_TABLES)}")
    if isinstance(embedder, str):
        embedder = get_embedder(embedder)
    out = None if out_dir is None else Path(out_dir)
    decay_parts, info_rows, matched_parts = [], [], []
    matched = {"draws": int(matched_draws), "seed": seed} if matched_draws else None
    with contextlib.ExitStack() as stack:
        streams = {} if out is None else {
            t: stack.enter_context(ParquetStream(out / f"{t}.parquet", _table_columns(t))) for t in tables}
        for group in embedded_groups(samples, segment_kwargs, embedder, cache_dir, scope=scope, progress=progress):
            steps_df, C, info = cluster_group(group, k=k, seed=seed, metric=metric, n_init=n_init, **cluster_kwargs)
            key = group.key
            del group
            dec, mt = _graph_group(key, steps_df, C, info, streams, scope, sparsify_k, weight, matched)
            decay_parts.append(dec)
            if mt is not None:
                matched_parts.append(mt)
            info_rows.append(info)
            del steps_df, C
    if not info_rows:
        log.warning("step_analysis: %s", NO_STEPS_NOTE)
    decay = sorted_decay(decay_parts).reindex(columns=DECAY_COLUMNS)
    clustering = pd.DataFrame(info_rows).reindex(columns=CLUSTERING_COLUMNS)
    timings = pd.DataFrame(info_rows).reindex(columns=TIMING_COLUMNS)
    mtable = (pd.concat(matched_parts, ignore_index=True) if matched_parts
              else pd.DataFrame(columns=MATCHED_COLUMNS))
    if out is not None:
        io.write_csv(out / "decay_rates.csv", decay)
        io.write_csv(out / "clustering.csv", clustering)
        io.write_csv(out / ".timings.csv", timings)
        if matched:
            io.write_csv(out / "matched_decay.csv", mtable)
    log.info("step_analysis: %d groups (scope=%s), %d steps, %d graphs, methods %s, %.0f s",
             len(clustering), scope, int(clustering["n_steps"].sum()), decay[list(GRAPH_KEYS)].drop_duplicates().shape[0],
             clustering["method"].value_counts().to_dict(), timings["seconds"].sum())
    return StepAnalysis(decay=decay, clustering=clustering, timings=timings, matched=mtable)


def seed_spread(samples, segment_kwargs: dict | None, embedder, cache_dir, k: int,
                seeds: Sequence[int] = (0, 1, 2), scope: str = "problem", metric: str = "euclidean",
                sparsify_k: int | None = None, weight: str | None = None, n_boot: int = 0,
                boot_seed: int = 0, by_benchmark: bool = False, progress: bool = True,
                reuse: Mapping[int, object] | None = None, n_init: int = 10, **cluster_kwargs):
    """Decay ratios for several clustering seeds: one :func:`decay_ratios` table per seed, stacked.

    A fixed model's beta moves when the pooled clustering changes, so the spread of the ratios over
    clustering seeds is reported next to them. ``reuse`` maps a seed to a decay table already
    computed with these settings (the main run's, from :func:`step_analysis`): that seed is not
    clustered again. The other seeds are computed in one streaming pass over the clustering groups:
    each group is segmented once and its embeddings read once from the cache, then clustered and
    graphed per seed, and dropped. Column ``clustering_seed`` is added; :func:`summarize_seed_spread`
    condenses the table.
    """
    if not seeds:
        raise ValueError("seeds is empty; pass e.g. seeds=(0, 1, 2)")
    reuse = {int(s): d for s, d in (reuse or {}).items()}
    todo = list(dict.fromkeys(int(s) for s in seeds if int(s) not in reuse))
    parts: dict[int, list] = {s: [] for s in todo}
    if todo:
        if isinstance(embedder, str):
            embedder = get_embedder(embedder)
        for group in embedded_groups(samples, segment_kwargs, embedder, cache_dir, scope=scope, progress=progress):
            identity = None  # a group K reaches is clustered by identity, the same for every seed
            for s in todo:
                if identity is not None:
                    parts[s].append(identity)
                    continue
                steps_df, C, info = cluster_group(group, k=k, seed=s, metric=metric, n_init=n_init, **cluster_kwargs)
                graphs = graphs_from_steps(steps_df, {group.key: C}, sparsify_k)
                parts[s].append(decay_table_from_graphs(graphs, weight=weight))
                if info["method"] == "identity":
                    identity = parts[s][-1]
                del steps_df, C, graphs
            del group
    log.info("seed_spread: seeds %s reused, %s clustered", sorted(set(reuse) & {int(s) for s in seeds}), todo)
    out = []
    for s in dict.fromkeys(int(s) for s in seeds):
        dec = reuse[s] if s in reuse else sorted_decay(parts[s])
        r = decay_ratios(dec, n_boot=n_boot, seed=boot_seed, by_benchmark=by_benchmark)
        r.insert(0, "clustering_seed", s)
        out.append(r)
    return pd.concat(out, ignore_index=True)


def segment_settings(params: Params) -> dict:
    """The segmentation keyword arguments of :func:`rlsft.steps.segment_samples` from the parameters.

    >>> segment_settings(Params())
    {'rule': 'sentence', 'min_chars': 5, 'mask_digits': False}
    """
    return {"rule": params.segment_rule, "min_chars": params.min_chars, "mask_digits": params.mask_digits}


def embedding_cache(ctx) -> Path:
    """The profile's embedding cache folder, ``results/<profile>/.cache/embeddings`` (shared with
    the ablations)."""
    return ctx.root / ".cache" / "embeddings"


def saturation(decay, clustering, threshold: float = SATURATION):
    """``(visited per graph, visited summary per variant, warning lines)`` of a step analysis
    (:func:`rlsft.controls.visited_table`, :func:`rlsft.controls.visited_summary`,
    :func:`rlsft.controls.saturation_warnings`); each warning is also logged."""
    visited = visited_table(decay, clustering)
    summary = visited_summary(visited, threshold)
    lines = saturation_warnings(summary, threshold)
    for line in lines:
        log.warning("saturated at K: %s", line)
    return visited, summary, lines


def _k_trial(k: int, summary) -> dict:
    """One K the stage clustered at: the widest variant's median visited fraction and the saturated ones."""
    worst = summary.sort_values("median_visited_fraction", ascending=False).head(1)
    return {"k": int(k), "widest": (f"{worst['family'].iat[0]}/{worst['variant'].iat[0]}" if len(worst) else None),
            "median_visited_fraction": (round(float(worst["median_visited_fraction"].iat[0]), 4) if len(worst)
                                        else None),
            "saturated": [f"{r.family}/{r.variant}" for r in summary.itertuples() if bool(r.saturated)]}


def k_choice(params: Params, k: int, tried: list[dict]) -> dict:
    """What ``graphs/k_choice.json`` records: the profile's K, the K used, each K clustered at (its widest
    variant's median visited fraction, the saturated variants) and why the last one was kept.

    >>> k_choice(Params(k=96), 128, [{"k": 96, "saturated": ["f/SFT"]}, {"k": 128, "saturated": []}])["reason"]
    'raised by the guard: f/SFT saturated at K = 96; none at K = 128'
    """
    last = tried[-1] if tried else {"k": k, "saturated": []}
    if k == params.k:
        reason = ("the profile's K: no variant saturated" if not last["saturated"] else
                  "the profile's K, saturated: " + ", ".join(last["saturated"])
                  + ("" if params.k_guard else " (k_guard off)"))
    else:
        first = tried[0]
        reason = (f"raised by the guard: {', '.join(first['saturated'])} saturated at K = {first['k']}; "
                  + (f"none at K = {k}" if not last["saturated"] else
                     f"still saturated at K = {k}, the grid's last value: " + ", ".join(last["saturated"])))
    return {"k_profile": int(params.k), "k": int(k), "k_guard": bool(params.k_guard), "threshold": SATURATION,
            "tried": tried, "reason": reason}


def used_k(graph_dir, default: int) -> int:
    """The K stage ``graphs`` clustered at (``k_choice.json``; ``default`` when it is absent, as in
    results from before the guard): the K the stages after it start from."""
    path = Path(graph_dir) / "k_choice.json"
    return int(io.read_json(path)["k"]) if path.exists() else int(default)


def run(ctx, params: Params) -> dict:
    """``{"decay", "clustering", "timings", "ratios", "geomeans", "matched", "visited", "visited_summary",
    "saturation_warnings", "spread", "spread_summary", "note"}``: the decay rates and the clustering
    record of :func:`step_analysis` (written with the graphs under ``graphs/``; timings in the
    hidden ``.timings.csv``), the ratios of median beta with their node-count and shape parts and
    the node-count-matched control (``decay_ratios.csv``; the matched betas per problem in
    ``matched_decay.csv``), the geometric means over metrics (``decay_geomeans.csv``), the visited
    fraction per graph and per variant (``visited.csv``, ``visited_summary.csv``) with a warning per
    saturated variant, the ratios per clustering seed (``seed_spread.csv``) and that spread
    summarised, the K used (``k_choice``, ``k_choice.json``: the profile's K, raised along the
    saturation rule's grid while a variant is saturated, when ``k_guard``); ``note`` is empty
    unless there was nothing to measure (then every table is empty and the note says why)."""
    samples = pd.read_parquet(ctx.input("samples") / "all_samples.parquet")
    emb = get_embedder(params.embedder, device=ctx.device, normalize=params.normalize)
    seg, cache = segment_settings(params), embedding_cache(ctx)
    k, tried = params.k, []
    while True:
        res = step_analysis(samples, seg, emb, cache, k=k, seed=ctx.seed, scope=params.scope,
                            metric=params.metric, sparsify_k=params.sparsify_k, out_dir=ctx.dir,
                            matched_draws=params.matched_draws, threads=params.kmeans_threads)
        visited, vsum, warn = saturation(res.decay, res.clustering)
        tried.append(_k_trial(k, vsum))
        raised = next_grid_k(k) if params.k_guard and warn else None
        if raised is None:
            break
        log.warning("K = %d saturates %s: the guard raises K to %d (the next K of the saturation rule's grid) "
                    "and clusters again", k, ", ".join(tried[-1]["saturated"]), raised)
        k = raised
    choice = k_choice(params, k, tried)
    io.write_json(ctx.dir / "k_choice.json", choice)
    ratios = decay_ratios(res.decay, n_boot=params.n_boot, seed=ctx.seed,
                          matched=res.matched if params.matched_draws else None)
    io.write_csv(ctx.dir / "decay_ratios.csv", ratios)
    geomeans = decay_geomeans(res.decay, n_boot=params.n_boot, seed=ctx.seed)
    io.write_csv(ctx.dir / "decay_geomeans.csv", geomeans)
    if not params.matched_draws:
        (ctx.dir / "matched_decay.csv").unlink(missing_ok=True)  # no stale control from an earlier run
    io.write_csv(ctx.dir / "visited.csv", visited)
    io.write_csv(ctx.dir / "visited_summary.csv", vsum)
    note = NO_STEPS_NOTE if res.clustering.empty else (
        "" if pd.to_numeric(res.decay["beta"], errors="coerce").notna().any() else NO_BETA_NOTE)
    if note:
        log.warning("%s", note)
    if res.clustering.empty:
        spread = decay_ratios(res.decay, n_boot=0)
        spread.insert(0, "clustering_seed", pd.Series(dtype="int64"))
    else:
        spread = seed_spread(samples, seg, emb, cache, k=k, seeds=params.spread_seeds, scope=params.scope,
                             metric=params.metric, sparsify_k=params.sparsify_k, n_boot=0,
                             reuse={ctx.seed: res.decay}, threads=params.kmeans_threads)
    io.write_csv(ctx.dir / "seed_spread.csv", spread)
    return {"decay": res.decay, "clustering": res.clustering, "timings": res.timings, "ratios": ratios,
            "geomeans": geomeans, "matched": res.matched, "visited": visited, "visited_summary": vsum,
            "saturation_warnings": warn, "spread": spread, "spread_summary": summarize_seed_spread(spread),
            "k_choice": choice, "note": note}
