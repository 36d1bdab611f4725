"""Stage ``ablations`` (notebook ``60_ablations.ipynb``): robustness of the decay-rate ratios
(PAPER.md §8, Fig. 32 and 33).

Each ablation overrides the step settings of stage ``graphs`` (:func:`ablation_settings`: K scaled,
cosine distance, another embedder, top-k edge sparsification) and recomputes the ratios of median
beta (:func:`ablation_ratios`): top-k from the saved graph edges without clustering again
(:func:`topk_decay_from_saved`), the others clustered again, streamed one group at a time from the
embedding cache. An ablation that cannot change a number is reported as n/a (:func:`mark_na`),
never as agreement.

Reads ``samples/all_samples.parquet`` and ``graphs/`` (``decay_ratios.csv``, ``nodes`` /
``edges.parquet``) and stage ``graphs``' parameters for the same profile; writes
``ablations/<slug>/decay_ratios.csv`` (and ``decay_rates.csv`` when computed, ``settings.json``) per
ablation and ``ablations/summary.csv``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rlsft import config
from rlsft import io
from rlsft.embedders import cosine_noop_reason, get_embedder, outputs_unit_vectors
from rlsft.graphs import GRAPH_KEYS, decay_table_from_graphs, graphs_from_tables, sorted_decay, sparsify_topk
from rlsft.params import build, param
from rlsft.ratios import RATIO_COLUMNS, decay_ratios
from rlsft.stages import graphs as graphs_stage
from rlsft.stages.graphs import step_analysis

log = logging.getLogger(__name__)

NOTEBOOK = "60_ablations.ipynb"
KIND = "compute"
INPUTS = ("samples", "graphs")
OUTPUTS = ("ablations",)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``ablations``; defaults are the organism profile's."""

    ablations: dict[str, dict] = param(
        {"K x0.5": {"k_scale": 0.5}, "K x1.5": {"k_scale": 1.5}, "cosine": {"metric": "cosine"},
         "tfidf-char embedder": {"embedder": "tfidf-char"}, "top-10 edges": {"sparsify_k": 10},
         "top-20 edges": {"sparsify_k": 20}},
        "ablations by name, each overriding stage graphs' embedder, normalize, k, metric, sparsify_k or "
        "scope, or scaling its K (k_scale)")
    n_boot: int = param(1000, "bootstrap resamples of problems for the ratios' intervals", ge=0)


# --------------------------------------------------------------------------------------------------
# Ablations from the saved graphs, and the n/a statuses
# --------------------------------------------------------------------------------------------------

STATUS_COMPUTED = "computed"
NA_TOPK_FREQUENCY = "n/a: top-k sparsification removes edges only, so visit counts (frequency) cannot change"
RESULT_COLUMNS = tuple(c for c in RATIO_COLUMNS if c not in (
    "family", "benchmark", "metric", "comparison", "after", "before", "n_problems", "paper_value",
    "expected_direction", "agrees", "matched_agrees", "matched_n_problems", "note"))
"""The numbers of a :func:`decay_ratios` row that an n/a row leaves empty (the ratio, its parts, their
intervals, the medians and the matched control)."""
VERDICT_COLUMNS = ("agrees", "matched_agrees")
"""The verdicts an n/a row leaves empty."""


def iter_saved_graphs(graph_dir, progress: bool = False):
    """Yield the saved graphs of stage ``graphs`` one (family, benchmark, problem) at a time.

    Reads ``nodes.parquet`` / ``edges.parquet`` of ``graph_dir`` with a filter per problem, so only
    one problem's rows are in memory (row groups written per clustering group are skipped by their
    statistics). Each item is a dict ``(family, variant, benchmark, problem) -> DiGraph``.
    """
    graph_dir = Path(graph_dir)
    nodes_path, edges_path = graph_dir / "nodes.parquet", graph_dir / "edges.parquet"
    for p in (nodes_path, edges_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; run stage 'graphs' first")
    keys = pd.read_parquet(nodes_path, columns=["family", "benchmark", "problem"]).drop_duplicates()
    keys = sorted(map(tuple, keys.itertuples(index=False, name=None)), key=str)
    for fam, bench, prob in tqdm(keys, desc="saved graphs", unit="problem", disable=not progress):
        filt = [("family", "==", fam), ("benchmark", "==", bench), ("problem", "==", prob)]
        yield graphs_from_tables(pd.read_parquet(nodes_path, filters=filt), pd.read_parquet(edges_path, filters=filt))


def topk_decay_from_saved(graph_dir, k: int, weight: str | None = None, progress: bool = True):
    """The top-k ablation (Fig. 33) from the saved graphs, without clustering again.

    Every saved graph of ``graph_dir`` (its edges carry the centroid ``distance``) is sparsified by
    :func:`sparsify_topk` and its decay rates refitted. Equal to the decay table of the graphs
    built with ``sparsify_k=k`` on the same clustering, provided the saved graphs are unsparsified or were
    sparsified with a k' >= k. Returns ``(decay table, out-degree table)``; the latter has one row
    per graph: family, variant, benchmark, problem, max_out_degree, n_nodes_over_k (nodes that lose
    edges).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    parts, deg = [], []
    for graphs in iter_saved_graphs(graph_dir, progress=progress):
        if any(math.isnan(d) for G in graphs.values() for _, _, d in G.edges(data="distance")):
            raise ValueError(f"saved edges in {graph_dir} lack distances; rerun stage 'graphs'")
        for key, G in graphs.items():
            out = [d for _, d in G.out_degree()]
            deg.append(dict(zip(GRAPH_KEYS, key), max_out_degree=max(out, default=0),
                            n_nodes_over_k=sum(d > k for d in out)))
        parts.append(decay_table_from_graphs({key: sparsify_topk(G, k) for key, G in graphs.items()}, weight=weight))
    return sorted_decay(parts), pd.DataFrame(deg, columns=[*GRAPH_KEYS, "max_out_degree", "n_nodes_over_k"])


def topk_na_reason(out_degree, k: int) -> str | None:
    """``"n/a: ..."`` when no node of the given graphs has more than ``k`` out-edges (top-k removes
    nothing), else ``None``.

    >>> import pandas as pd
    >>> topk_na_reason(pd.DataFrame({"max_out_degree": [3, 5]}), 5)
    'n/a: no node has more than 5 out-edges, so top-5 sparsification removes nothing'
    >>> topk_na_reason(pd.DataFrame({"max_out_degree": [3, 6]}), 5) is None
    True
    """
    if len(out_degree) and int(out_degree["max_out_degree"].max()) > k:
        return None
    return f"n/a: no node has more than {k} out-edges, so top-{k} sparsification removes nothing"


def mark_na(ratios, mask, reason: str):
    """``ratios`` (a :func:`decay_ratios` table) with a ``status`` column; the rows in ``mask`` get
    ``status = reason`` and empty results (:data:`RESULT_COLUMNS` NaN, ``agrees`` empty), so an
    ablation that cannot change a number never reads as agreement.

    >>> import pandas as pd
    >>> r = pd.DataFrame({"metric": ["frequency", "degree"], "ratio": [2.0, 3.0], "agrees": ["yes", "yes"]})
    >>> m = mark_na(r, r["metric"] == "frequency", NA_TOPK_FREQUENCY)
    >>> m["ratio"].tolist(), m["agrees"].tolist(), m["status"].str[:4].tolist()
    ([nan, 3.0], [None, 'yes'], ['n/a:', 'comp'])
    """
    if not str(reason).startswith("n/a"):
        raise ValueError(f"an n/a reason starts with 'n/a', got {reason!r}")
    out = ratios.copy()
    if "status" not in out.columns:
        out["status"] = STATUS_COMPUTED
    mask = np.asarray(mask, dtype=bool)
    for c in RESULT_COLUMNS:
        if c in out.columns:
            out[c] = out[c].astype(float)
            out.loc[mask, c] = np.nan
    for c in VERDICT_COLUMNS:
        if c in out.columns:
            out[c] = out[c].astype(object)
            out.loc[mask, c] = None
    out.loc[mask, "status"] = reason
    return out


ABLATION_SETTINGS = ("embedder", "normalize", "k", "metric", "sparsify_k", "scope")
"""The step settings an ablation may override (``k_scale`` scales the default K)."""


def ablation_settings(base: Mapping, over: Mapping) -> dict:
    """The step settings of one ablation: ``base`` (stage ``graphs``'s parameters) overridden by
    ``over``; ``{"k_scale": x}`` sets K to ``max(2, round(x * base K))``.

    >>> ablation_settings({"k": 40, "metric": "euclidean"}, {"k_scale": 0.5})
    {'k': 20, 'metric': 'euclidean'}
    """
    unknown = sorted(set(over) - set(ABLATION_SETTINGS) - {"k_scale"})
    if unknown:
        raise ValueError(f"unknown ablation settings {unknown}; use {list(ABLATION_SETTINGS)} or k_scale")
    cfg = {**base, **{k: v for k, v in over.items() if k != "k_scale"}}
    if "k_scale" in over:
        cfg["k"] = max(2, int(round(base["k"] * over["k_scale"])))
    return cfg


def ablation_ratios(cfg: Mapping, base: Mapping, samples, segment_kwargs: dict | None, cache_dir, graph_dir,
                    default_ratios, n_boot: int = 1000, seed: int = 0, device: str = "cpu", progress: bool = True):
    """Decay ratios of one ablation (PAPER.md §8), each row with a ``status``; ``(ratios, decay, how)``.

    - only ``sparsify_k`` changes (top-k, Fig. 33): computed from the saved graphs of ``graph_dir``
      (:func:`topk_decay_from_saved`), not clustered again -- unless the saved graphs are already
      sparsified with a smaller k, then re-clustered; frequency rows are n/a (sparsifying cannot
      change visits), and so is every row of a family where no node has more than k out-edges;
    - only ``metric`` changes to cosine and :func:`rlsft.embedders.cosine_noop_reason` says it cannot
      change a number (unit-vector embeddings, no top-k, no distance weights): every row n/a,
      nothing computed;
    - nothing changes: every row n/a;
    - otherwise: :func:`step_analysis` with the settings (streamed; nothing written).

    n/a rows are ``default_ratios``' rows with empty results (:func:`mark_na`); ``decay`` is
    ``None`` when nothing was computed; ``how`` says which way it went.
    """
    changed = {key for key in ABLATION_SETTINGS if cfg.get(key) != base.get(key)}
    template = default_ratios.copy()
    if not changed:
        reason = "n/a: the same settings as the default"
        return mark_na(template, np.ones(len(template), bool), reason), None, reason
    emb = get_embedder(cfg["embedder"], device=device, normalize=cfg["normalize"])
    if changed == {"metric"} and cfg["metric"] == "cosine":
        reason = cosine_noop_reason(emb, cfg.get("sparsify_k"), None)
        if reason:
            return mark_na(template, np.ones(len(template), bool), reason), None, reason
    k_top = cfg.get("sparsify_k")
    if changed == {"sparsify_k"} and k_top is not None:
        if base.get("sparsify_k") is None or k_top <= base["sparsify_k"]:
            dec, outdeg = topk_decay_from_saved(graph_dir, k_top, progress=progress)
            how = f"top-{k_top} from the saved graph edges (no re-clustering)"
        else:
            dec = step_analysis(samples, segment_kwargs, emb, cache_dir, k=cfg["k"], seed=seed, scope=cfg["scope"],
                                metric=cfg["metric"], sparsify_k=k_top, progress=progress,
                                threads=cfg.get("kmeans_threads")).decay
            outdeg = None
            how = f"re-clustered: the saved graphs are top-{base['sparsify_k']}, fewer than {k_top} edges"
        rat = decay_ratios(dec, n_boot=n_boot, seed=seed)
        rat = mark_na(rat, rat["metric"] == "frequency", NA_TOPK_FREQUENCY)
        for fam in ([] if outdeg is None else sorted(set(rat["family"]))):
            reason = topk_na_reason(outdeg[outdeg["family"] == fam], k_top)
            if reason:
                rat = mark_na(rat, rat["family"] == fam, reason)
        return rat, dec, how
    dec = step_analysis(samples, segment_kwargs, emb, cache_dir, k=cfg["k"], seed=seed, scope=cfg["scope"],
                        metric=cfg["metric"], sparsify_k=k_top, progress=progress,
                        threads=cfg.get("kmeans_threads")).decay
    rat = decay_ratios(dec, n_boot=n_boot, seed=seed)
    rat["status"] = STATUS_COMPUTED
    return rat, dec, "re-clustered (streamed per group)"


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def graphs_params(profile: dict, graph_dir=None) -> graphs_stage.Params:
    """Stage ``graphs``' parameters for ``profile`` (its defaults overridden by the profile): the
    settings every ablation starts from. With ``graph_dir`` (stage graphs' output folder), ``k`` is
    the K that stage clustered at (:func:`rlsft.stages.graphs.used_k`: the profile's, or the
    saturation guard's)."""
    params = build(graphs_stage.Params, config.stage_params(profile, "graphs"),
                   f"profile {profile.get('name', '?')!r}, stages.graphs")
    if graph_dir is None:
        return params
    return dataclasses.replace(params, k=graphs_stage.used_k(graph_dir, params.k))


def slug(name: str) -> str:
    """The folder of an ablation under ``ablations/``.

    >>> slug("K x0.5"), slug("top-10 edges")
    ('k-x0-5', 'top-10-edges')
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _run_one(ctx, name: str, cfg: dict, base: dict, inputs: dict, n_boot: int):
    """One ablation: its ratios, written with its decay rates and settings under ``ablations/<slug>/``;
    returns ``(ratios, record)``."""
    rat, dec, how = ablation_ratios(cfg, base, inputs["samples"], inputs["seg"], inputs["cache"],
                                    inputs["graphs_dir"], inputs["default"], n_boot=n_boot, seed=ctx.seed,
                                    device=ctx.device)
    folder = ctx.dir / slug(name)
    if dec is not None:
        io.write_csv(folder / "decay_rates.csv", dec)
    else:
        (folder / "decay_rates.csv").unlink(missing_ok=True)  # nothing computed: no stale table
    io.write_csv(folder / "decay_ratios.csv", rat)
    io.write_json(folder / "settings.json", {**{k: cfg[k] for k in ABLATION_SETTINGS}, "computed_as": how})
    n_na = int(rat["status"].str.startswith("n/a").sum())
    log.info("%s: %s (%s clusters, %s, %s, top-k %s); %d rows computed, %d n/a", name, how, cfg["k"],
             cfg["embedder"], cfg["metric"], cfg["sparsify_k"], len(rat) - n_na, n_na)
    record = {"ablation": name, "computed_as": how, **{k: cfg[k] for k in ABLATION_SETTINGS},
              "rows_computed": len(rat) - n_na, "rows_na": n_na}
    return rat, record


def topk_share(graph_dir, ks) -> pd.DataFrame:
    """Per top-k of ``ks``: the percentage of nodes (of all saved graphs) with more than k
    out-edges, the only ones top-k sparsification changes."""
    if not ks:
        return pd.DataFrame(columns=["k", "pct_nodes_over_k"])
    edges = pd.read_parquet(Path(graph_dir) / "edges.parquet", columns=[*GRAPH_KEYS, "src"])
    outdeg = edges.groupby([*GRAPH_KEYS, "src"]).size()
    return pd.DataFrame([{"k": kk, "pct_nodes_over_k": 100 * (outdeg > kk).mean()} for kk in sorted(ks)])


def ratio_table(summary: pd.DataFrame, column: str = "ratio") -> pd.DataFrame:
    """``column`` (the ratio, or its ``shape_ratio`` / ``node_ratio`` part) as text, one row per
    ablation and a column per (comparison, metric): "n/a" for an n/a row, "—" for a missing value.

    >>> s = pd.DataFrame({"ablation": ["a", "b"], "comparison": "RL/Base", "metric": "degree",
    ...                   "ratio": [1.5, None], "status": [STATUS_COMPUTED, NA_TOPK_FREQUENCY]})
    >>> ratio_table(s).values.tolist()
    [['1.50'], ['n/a']]
    """
    if summary.empty or column not in summary.columns:
        return pd.DataFrame()
    shown = summary.assign(**{column: [f"{r:.2f}" if s == STATUS_COMPUTED and pd.notna(r)
                                       else ("n/a" if str(s).startswith("n/a") else "—")
                                       for r, s in zip(summary[column], summary["status"])]})
    return shown.pivot_table(index="ablation", columns=["comparison", "metric"], values=column, aggfunc="first",
                             sort=False)


NOTE_NO_RATIO = ("stage graphs has no ratio to check (no steps, or no graph with the 3 nodes a fit needs): every "
                 "ablation can only give empty ratios too")


def run(ctx, params: Params) -> dict:
    """``{"base", "note", "summary", "runs", "topk_share", "embedder_check", "status_counts", "ratio_table",
    "shape_table", "node_table"}``:
    stage ``graphs``' settings, every ablation's ratios beside the default's (``summary.csv``), how
    each was computed, the share of nodes top-k changes, whether the embedder returns unit vectors
    (the cosine ablation's n/a check), the statuses per ablation and the ratios as a table (with
    their shape and node-count parts: ``shape_table``, ``node_table``); ``note`` says when stage
    graphs had no ratio at all ("" otherwise)."""
    graphs_dir = ctx.input("graphs")
    gparams = graphs_params(ctx.profile, graphs_dir)
    base = dataclasses.asdict(gparams)
    default = pd.read_csv(graphs_dir / "decay_ratios.csv")
    inputs = {"samples": pd.read_parquet(ctx.input("samples") / "all_samples.parquet"),
              "seg": graphs_stage.segment_settings(gparams), "cache": graphs_stage.embedding_cache(ctx),
              "graphs_dir": graphs_dir, "default": default}
    log.info("default step settings: %s", {k: base[k] for k in ("embedder", "k", "metric", "sparsify_k", "scope")})
    note = "" if default["ratio"].notna().any() else NOTE_NO_RATIO
    if note:
        log.warning("%s", note)
    rows, records = [default.assign(status=STATUS_COMPUTED, ablation="default")], []
    for name, over in params.ablations.items():
        rat, record = _run_one(ctx, name, ablation_settings(base, over), base, inputs, params.n_boot)
        rows.append(rat.assign(ablation=name))
        records.append(record)
    summary = pd.concat(rows, ignore_index=True)
    io.write_csv(ctx.dir / "summary.csv", summary)
    emb = get_embedder(base["embedder"], device=ctx.device, normalize=base["normalize"])
    check = {"embedder": base["embedder"], "normalize": base["normalize"], "unit_vectors": outputs_unit_vectors(emb),
             "cosine": cosine_noop_reason(emb, base["sparsify_k"]) or "computed"}
    return {"base": base, "note": note, "summary": summary, "runs": pd.DataFrame(records),
            "topk_share": topk_share(graphs_dir, {v["sparsify_k"] for v in params.ablations.values()
                                                  if v.get("sparsify_k")}),
            "embedder_check": check,
            "status_counts": summary.groupby("ablation", sort=False)["status"].value_counts().unstack(fill_value=0),
            "ratio_table": ratio_table(summary), "shape_table": ratio_table(summary, "shape_ratio"),
            "node_table": ratio_table(summary, "node_ratio")}



__all__ = [
    "Params", "run", "STATUS_COMPUTED", "NA_TOPK_FREQUENCY", "RESULT_COLUMNS", "ABLATION_SETTINGS",
    "iter_saved_graphs", "topk_decay_from_saved", "topk_na_reason", "mark_na", "ablation_settings",
    "ablation_ratios", "graphs_params", "slug", "topk_share", "ratio_table",
]
