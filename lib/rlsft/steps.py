"""The step table of the step level (PAPER.md §6.1), built one clustering group at a time.

Every response is cut into steps (:func:`rlsft.segmentation.segment`, over a samples table:
:func:`segment_samples`); :func:`embedded_groups` yields one clustering group -- (family,
benchmark, problem), or (family, benchmark) for ``scope="benchmark"`` -- at a time, its distinct
steps embedded once through the on-disk cache (:func:`rlsft.embedders.embed_texts`); and
:func:`cluster_group` fits one pooled K-means (:func:`rlsft.clustering.cluster_steps`) over the
steps of all four variants of the group, so the variants' graphs share one node set.
:mod:`rlsft.graphs` builds the graphs; stage ``graphs`` (:mod:`rlsft.stages.graphs`) drives it all.

>>> import pandas as pd
>>> s = pd.DataFrame({"family": "f", "variant": ["Base", "RL"], "benchmark": "b", "problem": "p",
...                   "sample": 0, "text": ["Go north. Go south.", "Go north."], "correct": True})
>>> [group] = embedded_groups(s, {"min_chars": 3}, get_embedder("tfidf-char", dim=4), None, progress=False)
>>> steps, C, info = cluster_group(group, k=5)
>>> steps[["variant", "text", "node"]].values.tolist(), C.shape, info["k_used"]
([['Base', 'Go north.', 0], ['Base', 'Go south.', 1], ['RL', 'Go north.', 0]], (2, 4), 2)
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rlsft.clustering import cluster_steps
from rlsft.embedders import embed_texts, get_embedder
from rlsft.segmentation import segment

log = logging.getLogger(__name__)

STEP_INPUT_COLUMNS = ("family", "variant", "benchmark", "problem", "sample", "text")
"""The columns of the samples table the step level reads (plus ``correct`` when present)."""
STEP_COLUMNS = ("family", "variant", "benchmark", "problem", "sample", "step_idx", "text", "node")
"""The leading columns of the step table (``steps.parquet``)."""

def _check_samples(samples) -> None:
    missing = [c for c in STEP_INPUT_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"samples lack columns {missing}; expected at least {list(STEP_INPUT_COLUMNS)} "
                         "(plus 'correct')")
    if samples.empty:
        raise ValueError("samples is empty; sample some responses first")


def segment_samples(samples, rule: str = "sentence", min_chars: int = 5, mask_digits: bool = False,
                    progress: bool = True):
    """One row per step of every response: the step table without ``node``.

    Columns: family, variant, benchmark, problem, sample, step_idx, text (and ``correct`` when the
    samples have it). Responses that give no step are logged and contribute no row.
    """
    _check_samples(samples)
    has_correct = "correct" in samples.columns
    cols = {c: [] for c in ("family", "variant", "benchmark", "problem", "sample", "step_idx", "text")}
    correct: list = []
    empty = 0
    it = samples[list(STEP_INPUT_COLUMNS) + (["correct"] if has_correct else [])].itertuples(index=False)
    for row in tqdm(it, total=len(samples), desc="segment", unit="resp", disable=not progress):
        text = row.text if isinstance(row.text, str) else ""
        steps = segment(text, rule=rule, min_chars=min_chars, mask_digits=mask_digits)
        if not steps:
            empty += 1
        for j, s in enumerate(steps):
            cols["family"].append(row.family)
            cols["variant"].append(row.variant)
            cols["benchmark"].append(row.benchmark)
            cols["problem"].append(str(row.problem))
            cols["sample"].append(int(row.sample))
            cols["step_idx"].append(j)
            cols["text"].append(s)
            if has_correct:
                correct.append(bool(row.correct))
    df = pd.DataFrame(cols)
    df["sample"] = df["sample"].astype(np.int64)
    df["step_idx"] = df["step_idx"].astype(np.int64)
    if has_correct:
        df["correct"] = pd.Series(correct, dtype=bool)
    if empty:
        log.warning("%d of %d responses gave no step (rule=%s, min_chars=%d)", empty, len(samples), rule, min_chars)
    return df


def _group_cols(scope: str) -> list[str]:
    if scope == "problem":
        return ["family", "benchmark", "problem"]
    if scope == "benchmark":
        return ["family", "benchmark"]
    raise ValueError(f"scope must be 'problem' (one K-means per family and problem) or 'benchmark', got {scope!r}")


@dataclasses.dataclass
class EmbeddedGroup:
    """One clustering group, segmented and embedded: what K-means needs.

    ``steps``: the group's rows of the step table (no ``node`` yet), in the samples' order;
    ``embeddings``: float32 ``(n_distinct, dim)``, the group's distinct step texts in order of first
    appearance; ``inverse``: the row of each step; ``info``: the group key columns, n_responses,
    n_steps, n_distinct, n_encoded (cache misses), seconds_segment, seconds_embed.
    """

    key: tuple
    steps: object
    embeddings: np.ndarray
    inverse: np.ndarray
    info: dict

    @property
    def counts(self) -> np.ndarray:
        """How many steps each distinct text stands for (K-means sample weights)."""
        return np.bincount(self.inverse, minlength=self.embeddings.shape[0])


def _embed_group(key: tuple, gcols: list[str], steps, embedder, cache_dir, chunk_size: int,
                 info: dict | None = None) -> EmbeddedGroup:
    t0 = time.perf_counter()
    codes, uniques = pd.factorize(steps["text"].astype(object), sort=False)
    texts = [str(u) for u in uniques]
    emb, n_new = embed_texts(texts, embedder, cache_dir, chunk_size=chunk_size)
    info = {**dict(zip(gcols, key)), **(info or {}), "n_steps": len(steps), "n_distinct": len(texts),
            "n_encoded": n_new, "seconds_embed": time.perf_counter() - t0}
    return EmbeddedGroup(key=key, steps=steps, embeddings=emb, inverse=codes.astype(np.int64), info=info)


def _sample_groups(samples, gcols: list[str]) -> list[tuple[tuple, np.ndarray]]:
    """``(group key, row positions)`` of each group of ``samples``, keys sorted (problem as str)."""
    keys = samples[gcols].copy()
    if "problem" in keys:
        keys["problem"] = keys["problem"].astype(str)
    groups = keys.groupby(gcols, sort=True, observed=True).indices
    return [(k if isinstance(k, tuple) else (k,), rows) for k, rows in sorted(groups.items())]


def embedded_groups(samples, segment_kwargs: dict | None, embedder, cache_dir, scope: str = "problem",
                    chunk_size: int = 16384, progress: bool = True):
    """Yield one :class:`EmbeddedGroup` per clustering group, one at a time (the streaming path).

    Each group's responses are segmented, its distinct steps embedded through the cache, and the
    group handed over; nothing of it is kept once the caller moves on. Groups come in sorted key
    order; a group whose responses give no step is skipped (logged).
    """
    if isinstance(embedder, str):
        embedder = get_embedder(embedder)
    _check_samples(samples)
    gcols = _group_cols(scope)
    groups = _sample_groups(samples, gcols)
    bar = tqdm(groups, desc="step groups", unit="group", disable=not progress)
    for key, rows in bar:
        t0 = time.perf_counter()
        bar.set_postfix_str(f"{'/'.join(map(str, key))}: segment")
        part = samples.iloc[rows]
        steps = segment_samples(part, progress=False, **(segment_kwargs or {}))
        seconds_segment = time.perf_counter() - t0
        if steps.empty:
            log.warning("group %s: its %d responses give no step; skipped", key, len(part))
            continue
        bar.set_postfix_str(f"{'/'.join(map(str, key))}: embed {steps['text'].nunique():,} distinct")
        _log_stage(len(steps), "group %s: segmented %d responses into %d steps in %.1f s; embedding",
                   key, len(part), len(steps), seconds_segment)
        group = _embed_group(key, gcols, steps, embedder, cache_dir, chunk_size,
                             {"n_responses": len(part), "seconds_segment": seconds_segment})
        bar.set_postfix_str(f"{'/'.join(map(str, key))}: k-means etc.")
        yield group
        del group, steps, part  # the caller drops its reference too: one group in memory at a time


LARGE_GROUP = 50_000
"""Groups with at least this many steps log each stage at INFO (smaller ones at DEBUG)."""


def _log_stage(n_steps: int, msg: str, *args) -> None:
    log.log(logging.INFO if n_steps >= LARGE_GROUP else logging.DEBUG, msg, *args)


def cluster_group(group: EmbeddedGroup, k: int, seed: int = 0, metric: str = "euclidean", n_init: int = 10,
                  **cluster_kwargs):
    """K-means one embedded group: ``(steps with 'node', centroids, info)``.

    ``info`` is the group's info plus the clustering's (method, n_init, n_iter, inertia, k_asked,
    k_used, seconds_kmeans) and ``variants``. ``cluster_kwargs`` go to :func:`cluster_steps`.
    """
    _log_stage(len(group.steps), "group %s: k-means K=%d on %d x %d (seed %d)", group.key, k,
               group.embeddings.shape[0], group.embeddings.shape[1], seed)
    labels_u, C, cinfo = cluster_steps(group.embeddings, k=k, seed=seed, metric=metric, n_init=n_init,
                                       sample_weight=group.counts, return_info=True, **cluster_kwargs)
    steps = group.steps.copy()
    steps["node"] = labels_u[group.inverse]
    order = list(STEP_COLUMNS) + [c for c in steps.columns if c not in STEP_COLUMNS]
    steps = steps[order]
    variants = sorted(steps["variant"].unique().tolist())
    info = {**group.info, "k_asked": int(k), "k_used": cinfo["k_used"], "method": cinfo["method"],
            "n_init": cinfo["n_init"], "n_iter": cinfo["n_iter"], "inertia": cinfo["inertia"],
            "seed": int(seed), "metric": metric, "variants": ",".join(variants),
            "seconds_kmeans": cinfo["seconds"]}
    _log_stage(len(steps), "group %s: %s K=%d in %.1f s", group.key, cinfo["method"], cinfo["k_used"],
               cinfo["seconds"])
    return steps, C, info


__all__ = ("STEP_INPUT_COLUMNS", "STEP_COLUMNS", "LARGE_GROUP", "segment_samples", "EmbeddedGroup",
           "embedded_groups", "cluster_group")
