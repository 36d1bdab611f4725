"""Step level, part 3 (PAPER.md §6.4): the decay-rate ratios the paper reports (Fig. 6, 26).

Pure functions of a decay table (:func:`rlsft.graphs.decay_table_from_graphs`: one beta per model,
problem and metric); stages ``graphs``, ``ablations`` and ``sweep`` run them.

- :func:`decay_ratios`: per (family, metric, comparison) the ratio of median beta after / before
  (RL/Base ~ 2.5, SFT/Base ~ 1/3 in the paper: :data:`PAPER_RATIO`, :data:`EXPECTED_DIRECTION`)
  with a paired bootstrap CI, split into a node-count part and a shape part, and the ratio of a
  node-count-matched table (:func:`rlsft.controls.matched_decay`) when given one;
- :func:`geomean_ratios`, :func:`decay_geomeans`: their geometric mean over metrics and families,
  the latter with bootstrap intervals (the headline of §6.4);
- :func:`summarize_seed_spread`: the ratios' spread over clustering seeds.

Every bootstrap draws from its own stream, seeded by ``seed`` and the row's key, so the numbers do
not depend on the order in which rows are computed.

>>> r = pd.DataFrame({"benchmark": "all", "comparison": "RL/Base", "ratio": [2.0, 8.0]})
>>> geomean_ratios(r)[["comparison", "ratio_geomean", "n"]].values.tolist()
[['RL/Base', 4.0, 2]]
"""
from __future__ import annotations

import hashlib
import logging
import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from rlsft import COMPARISONS, VARIANTS
from rlsft.graphs import GRAPH_KEYS
from rlsft.headline import ci_agreement

log = logging.getLogger(__name__)

PAPER_RATIO = {("RL", "Base"): 2.5, ("SFT", "Base"): 1 / 3, ("SFT+RL", "SFT"): math.nan}
"""The paper's ratios (abstract): RL steepens beta ~2.5x, SFT flattens it to ~1/3; SFT->SFT+RL: up."""
EXPECTED_DIRECTION = {("RL", "Base"): "up", ("SFT", "Base"): "down", ("SFT+RL", "SFT"): "up"}


def _key_seed(seed: int, *key) -> np.random.Generator:
    h = int(hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:16], 16)
    return np.random.default_rng(np.random.SeedSequence([int(seed), h]))


def _ci(boot: np.ndarray) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def _median_ratio(a: np.ndarray, b: np.ndarray, idx: np.ndarray | None) -> tuple[float, float, float]:
    """``(median(a) / median(b), ci_low, ci_high)``; the CI from the bootstrap rows ``idx`` (rows
    of problem positions; ``None``: no CI). Pairs stay paired: both medians use the same rows."""
    if a.size == 0:
        return math.nan, math.nan, math.nan
    mb = float(np.median(b))
    ratio = float(np.median(a)) / mb if mb != 0 else math.nan
    if idx is None:
        return ratio, math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    return (ratio, *_ci(boot))


RATIO_COLUMNS = ["family", "benchmark", "metric", "comparison", "after", "before", "n_problems", "beta_after",
                 "beta_before", "ratio", "ci_low", "ci_high", "paper_value", "expected_direction", "agrees",
                 "n_nodes_after", "n_nodes_before", "node_ratio", "node_ci_low", "node_ci_high", "shape_after",
                 "shape_before", "shape_ratio", "shape_ci_low", "shape_ci_high", "parts_product",
                 "matched_ratio", "matched_ci_low", "matched_ci_high", "matched_n_problems", "matched_agrees",
                 "note"]
"""Columns of :func:`decay_ratios`."""


def decay_ratios(decay_df, n_boot: int = 1000, seed: int = 0, by_benchmark: bool = False,
                 comparisons: Sequence[tuple[str, str]] = COMPARISONS, matched=None):
    """Median-beta ratios per (family, metric, comparison) with a paired bootstrap CI (§6.4), and
    their decomposition into a node-count part and a shape part.

    ``ratio = median_p beta_after(p) / median_p beta_before(p)`` over the problems p (pooled over
    benchmarks; ``benchmark="all"``) where both variants have a finite beta (paired). ``ci_low`` /
    ``ci_high``: 2.5 / 97.5 percentiles of the ratio over ``n_boot`` resamplings of the paired problems
    (``n_boot=0``: NaN). ``by_benchmark=True`` adds one row per benchmark. Deterministic given ``seed``
    (each row draws from its own stream, seeded by ``seed`` and the row's key).

    beta is fitted on the raw rank R = 1..N, so for the same shape of decay a graph with half the
    nodes N has twice the beta. The row therefore also gives, from the same bootstrap draws:

    - ``node_ratio`` = median N before / median N after (N = ``n_nodes``, the nodes in the fit), with
      ``node_ci_low`` / ``node_ci_high``: the part of the ratio that node count alone explains;
    - ``shape_ratio`` = median (beta N) after / median (beta N) before (beta N is the slope against
      the normalised rank R/N), with ``shape_ci_low`` / ``shape_ci_high``: the shape part;
    - ``parts_product`` = node_ratio * shape_ratio, which is close to ``ratio`` but not equal to it
      (a median of products is not the product of medians).

    ``matched``: a :func:`rlsft.controls.matched_decay` table; its ratio of medians (same pairing and
    bootstrap, its own stream) fills ``matched_ratio``, ``matched_ci_low``, ``matched_ci_high``,
    ``matched_n_problems`` and ``matched_agrees`` (NaN without it).

    ``agrees`` (and ``matched_agrees``): :func:`rlsft.headline.ci_agreement`, ``"yes"`` only when the
    CI excludes 1 on the paper's side, ``"unclear"`` when it holds 1 (or there is no CI), ``"no"``
    otherwise, empty without a ratio. ``note`` says why a row has no ratio. Columns:
    :data:`RATIO_COLUMNS` (``paper_value``: 2.5, 1/3, NaN; ``expected_direction``: up/down/up).

    >>> import pandas as pd
    >>> d = pd.DataFrame({"family": "f", "variant": ["Base", "RL"] * 3, "benchmark": "b",
    ...                   "problem": ["p", "p", "q", "q", "r", "r"], "metric": "degree",
    ...                   "beta": [0.1, 0.2] * 3, "n_nodes": [20, 10] * 3})
    >>> r = decay_ratios(d, n_boot=10, comparisons=[("RL", "Base")]).iloc[0]
    >>> float(r["ratio"]), float(r["node_ratio"]), float(r["shape_ratio"]), r["agrees"]
    (2.0, 2.0, 1.0, 'yes')
    """
    need = list(GRAPH_KEYS) + ["metric", "beta", "n_nodes"]
    missing = [c for c in need if c not in decay_df.columns]
    if missing:
        raise ValueError(f"decay_df lacks columns {missing}; build it with decay_table_from_graphs")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    for after, before in comparisons:
        for v in (after, before):
            if v not in VARIANTS:
                raise ValueError(f"unknown variant {v!r} in comparisons; expected one of {VARIANTS}")
    d = decay_df[need].copy()
    d["problem"] = d["problem"].astype(str)
    idx = ["family", "metric", "benchmark", "problem", "variant"]
    dup = d.duplicated(idx)
    if dup.any():
        raise ValueError(f"decay_df has {int(dup.sum())} duplicate (family, metric, benchmark, problem, variant) "
                         "rows; concatenate decay tables of different settings into separate frames")
    wide = d.set_index(idx)[["beta", "n_nodes"]].unstack("variant").sort_index()
    mwide = _matched_wide(matched)
    rows = []
    for (family, metric), sub in wide.groupby(level=["family", "metric"], sort=True):
        scopes = [("all", sub)]
        if by_benchmark:
            scopes += [(b, s) for b, s in sub.groupby(level="benchmark", sort=True)]
        for bench, s in scopes:
            for after, before in comparisons:
                row = _ratio_row(s, family, bench, metric, after, before, n_boot, seed)
                row.update(_matched_part(mwide, family, bench, metric, after, before, n_boot, seed))
                rows.append(row)
    out = pd.DataFrame(rows, columns=RATIO_COLUMNS)
    for c in ("agrees", "matched_agrees", "note"):
        out[c] = out[c].astype(object)
    return out


def _ratio_row(s, family, bench, metric, after, before, n_boot, seed) -> dict:
    def col(name, v):
        return s[(name, v)].to_numpy(dtype=np.float64) if (name, v) in s.columns else np.full(len(s), np.nan)

    a, b = col("beta", after), col("beta", before)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    na, nb = col("n_nodes", after)[ok], col("n_nodes", before)[ok]
    comp = (after, before)
    direction = EXPECTED_DIRECTION.get(comp, "up")
    idx = None
    note = ""
    if a.size and n_boot > 0:
        # the same draws as before the decomposition existed, shared by the three ratios
        idx = _key_seed(seed, family, bench, metric, after, before).integers(0, a.size, size=(n_boot, a.size))
    if not a.size:
        absent = [v for v in (after, before) if ("beta", v) not in s.columns]
        note = (f"no graphs of {' and '.join(absent)}" if absent else
                "no problem where both variants have a finite beta (a fit needs >= 3 nodes with X > 0)")
        log.info("decay_ratios: no paired problems for %s %s/%s (%s, %s)", family, after, before, metric, bench)
    ratio, lo, hi = _median_ratio(a, b, idx)
    node, node_lo, node_hi = _median_ratio(nb, na, idx)
    shape, shape_lo, shape_hi = _median_ratio(a * na, b * nb, idx)
    return dict(family=family, benchmark=bench, metric=metric, comparison=f"{after}/{before}", after=after,
                before=before, n_problems=int(a.size), beta_after=float(np.median(a)) if a.size else math.nan,
                beta_before=float(np.median(b)) if a.size else math.nan, ratio=ratio, ci_low=lo, ci_high=hi,
                paper_value=PAPER_RATIO.get(comp, math.nan), expected_direction=direction,
                agrees=ci_agreement(ratio, lo, hi, direction),
                n_nodes_after=float(np.median(na)) if na.size else math.nan,
                n_nodes_before=float(np.median(nb)) if nb.size else math.nan,
                node_ratio=node, node_ci_low=node_lo, node_ci_high=node_hi,
                shape_after=float(np.median(a * na)) if a.size else math.nan,
                shape_before=float(np.median(b * nb)) if a.size else math.nan,
                shape_ratio=shape, shape_ci_low=shape_lo, shape_ci_high=shape_hi,
                parts_product=node * shape, note=note)


def _matched_wide(matched):
    if matched is None:
        return None
    need = ["family", "benchmark", "problem", "comparison", "metric", "beta_after", "beta_before"]
    missing = [c for c in need if c not in matched.columns]
    if missing:
        raise ValueError(f"matched lacks columns {missing}; build it with matched_decay")
    m = matched[need].copy()
    m["problem"] = m["problem"].astype(str)
    return m


def _matched_part(m, family, bench, metric, after, before, n_boot, seed) -> dict:
    empty = dict(matched_ratio=math.nan, matched_ci_low=math.nan, matched_ci_high=math.nan, matched_n_problems=0,
                 matched_agrees=None)
    if m is None:
        return empty
    sel = (m["family"] == family) & (m["metric"] == metric) & (m["comparison"] == f"{after}/{before}")
    if bench != "all":
        sel &= m["benchmark"] == bench
    a, b = m.loc[sel, "beta_after"].to_numpy(np.float64), m.loc[sel, "beta_before"].to_numpy(np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if not a.size:
        return empty
    idx = (_key_seed(seed, "matched", family, bench, metric, after, before).integers(0, a.size, size=(n_boot, a.size))
           if n_boot > 0 else None)
    ratio, lo, hi = _median_ratio(a, b, idx)
    return dict(matched_ratio=ratio, matched_ci_low=lo, matched_ci_high=hi, matched_n_problems=int(a.size),
                matched_agrees=ci_agreement(ratio, lo, hi, EXPECTED_DIRECTION.get((after, before), "up")))


def geomean_ratios(ratios_df, by: Sequence[str] = ("comparison",), columns: Sequence[str] = ("ratio",)):
    """Geometric mean of ``ratio`` (and of each other column of ``columns``, as
    ``<column>_geomean``) over the other rows (metrics, families) of ``benchmark == "all"``.

    PAPER.md §6.4's default aggregation before comparing with 2.5 and 1/3. Non-positive or NaN
    ratios are left out (and, for ``ratio``, counted in ``n_left_out``). :func:`decay_geomeans`
    gives the same point values with bootstrap intervals.

    >>> import pandas as pd
    >>> r = pd.DataFrame({"benchmark": "all", "comparison": "RL/Base", "ratio": [2.0, 8.0], "shape_ratio": [1., 4.]})
    >>> geomean_ratios(r, columns=("ratio", "shape_ratio"))[["ratio_geomean", "shape_ratio_geomean"]].values.tolist()
    [[4.0, 2.0]]
    """
    d = ratios_df[ratios_df["benchmark"] == "all"] if "benchmark" in ratios_df.columns else ratios_df

    def gm(s):
        s = s.astype(float)
        ok = s[np.isfinite(s) & (s > 0)]
        return float(np.exp(np.log(ok).mean())) if len(ok) else math.nan

    def agg(g):
        s = g["ratio"].astype(float)
        ok = np.isfinite(s) & (s > 0)
        out = {"ratio_geomean": gm(s), "n": int(ok.sum()), "n_left_out": int(len(s) - ok.sum())}
        out.update({f"{c}_geomean": gm(g[c]) for c in columns if c != "ratio"})
        return pd.Series(out)

    cols = ["ratio_geomean", "n", "n_left_out", *[f"{c}_geomean" for c in columns if c != "ratio"]]
    if d.empty:
        return pd.DataFrame(columns=[*by, *cols])
    out = pd.DataFrame([{**dict(zip(by, k if isinstance(k, tuple) else (k,))), **agg(g)}
                        for k, g in d.groupby(list(by), sort=True)])
    out["n"] = out["n"].astype(int)
    out["n_left_out"] = out["n_left_out"].astype(int)
    return out[[*by, *cols]]


GEOMEAN_COLUMNS = ["comparison", "after", "before", "n_ratios", "ratio", "ci_low", "ci_high", "node_ratio",
                   "node_ci_low", "node_ci_high", "shape_ratio", "shape_ci_low", "shape_ci_high", "paper_value",
                   "expected_direction", "agrees", "shape_agrees"]
"""Columns of :func:`decay_geomeans`."""


def _family_arrays(d, family, metrics, after, before):
    """beta and n_nodes of ``after`` and ``before`` per metric over one family's problems (NaN where absent)."""
    sub = d[d["family"] == family]
    probs = sorted(set(zip(sub["benchmark"], sub["problem"])))
    pos = {p: i for i, p in enumerate(probs)}
    out = {}
    for metric in metrics:
        arr = {k: np.full(len(probs), np.nan) for k in ("a", "b", "na", "nb")}
        for v, (kb, kn) in ((after, ("a", "na")), (before, ("b", "nb"))):
            part = sub[(sub["metric"] == metric) & (sub["variant"] == v)]
            ii = [pos[p] for p in zip(part["benchmark"], part["problem"])]
            arr[kb][ii] = part["beta"].to_numpy(np.float64)
            arr[kn][ii] = part["n_nodes"].to_numpy(np.float64)
        ok = np.isfinite(arr["a"]) & np.isfinite(arr["b"])
        for k in arr:
            arr[k][~ok] = np.nan
        out[metric] = arr
    return len(probs), out


def _nanmedian_ratio(a, b, idx):
    """Ratio of nan-medians, for the point (``idx`` None) or per bootstrap row."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if idx is None:
            return np.nanmedian(a) / np.nanmedian(b)
        return np.nanmedian(a[idx], axis=1) / np.nanmedian(b[idx], axis=1)


def decay_geomeans(decay_df, n_boot: int = 1000, seed: int = 0, comparisons: Sequence[tuple[str, str]] = COMPARISONS):
    """The headline of §6.4: per comparison, the geometric mean over metrics and families of the
    ratio of median beta (``ratio``), of its node-count part (``node_ratio``) and of its shape part
    (``shape_ratio``), each with a 95% bootstrap interval.

    The point values equal :func:`geomean_ratios` of :func:`decay_ratios`' rows (paired problems
    per metric). The interval resamples each family's problems once per draw, for all metrics
    together (the metrics of one problem are not independent), and takes the geometric mean of the
    resampled ratios. ``agrees`` / ``shape_agrees``: :func:`rlsft.headline.ci_agreement` of the raw
    and the shape geometric mean. Columns: :data:`GEOMEAN_COLUMNS`.

    >>> import pandas as pd
    >>> d = pd.DataFrame({"family": "f", "variant": ["Base", "RL"] * 3, "benchmark": "b",
    ...                   "problem": ["p", "p", "q", "q", "r", "r"], "metric": "degree",
    ...                   "beta": [0.1, 0.4] * 3, "n_nodes": [20, 10] * 3})
    >>> g = decay_geomeans(d, n_boot=10, comparisons=[("RL", "Base")]).iloc[0]
    >>> float(g["ratio"]), float(g["node_ratio"]), float(g["shape_ratio"])
    (4.0, 2.0, 2.0)
    """
    need = list(GRAPH_KEYS) + ["metric", "beta", "n_nodes"]
    missing = [c for c in need if c not in decay_df.columns]
    if missing:
        raise ValueError(f"decay_df lacks columns {missing}; build it with decay_table_from_graphs")
    d = decay_df[need].copy()
    d["problem"] = d["problem"].astype(str)
    rows = []
    for after, before in comparisons:
        rng = _key_seed(seed, "geomean", after, before)
        logs = {k: [] for k in ("ratio", "node", "shape")}
        boots = {k: [] for k in logs}
        for family in sorted(d["family"].unique(), key=str):
            metrics = sorted(d.loc[d["family"] == family, "metric"].unique(), key=str)
            n, arrays = _family_arrays(d, family, metrics, after, before)
            idx = rng.integers(0, n, size=(n_boot, n)) if (n and n_boot > 0) else None
            for metric in metrics:
                x = arrays[metric]
                parts = {"ratio": (x["a"], x["b"]), "node": (x["nb"], x["na"]), "shape": (x["a"] * x["na"], x["b"] * x["nb"])}
                points = {k: float(_nanmedian_ratio(u, v, None)) for k, (u, v) in parts.items()}
                if not all(np.isfinite(p) and p > 0 for p in points.values()):
                    continue
                for k, (u, v) in parts.items():
                    logs[k].append(math.log(points[k]))
                    if idx is not None:
                        with np.errstate(divide="ignore", invalid="ignore"):
                            boots[k].append(np.log(_nanmedian_ratio(u, v, idx)))
        row = dict(comparison=f"{after}/{before}", after=after, before=before, n_ratios=len(logs["ratio"]),
                   paper_value=PAPER_RATIO.get((after, before), math.nan),
                   expected_direction=EXPECTED_DIRECTION.get((after, before), "up"))
        for k, name in (("ratio", "ratio"), ("node", "node_ratio"), ("shape", "shape_ratio")):
            point = float(np.exp(np.mean(logs[k]))) if logs[k] else math.nan
            lo = hi = math.nan
            if boots[k]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    b = np.exp(np.nanmean(np.where(np.isfinite(np.vstack(boots[k])), np.vstack(boots[k]), np.nan), axis=0))
                lo, hi = _ci(b)
            prefix = "" if k == "ratio" else f"{k}_"
            row.update({name: point, f"{prefix}ci_low": lo, f"{prefix}ci_high": hi})
        row["agrees"] = ci_agreement(row["ratio"], row["ci_low"], row["ci_high"], row["expected_direction"])
        row["shape_agrees"] = ci_agreement(row["shape_ratio"], row["shape_ci_low"], row["shape_ci_high"],
                                           row["expected_direction"])
        rows.append(row)
    out = pd.DataFrame(rows, columns=GEOMEAN_COLUMNS)
    for c in ("agrees", "shape_agrees"):
        out[c] = out[c].astype(object)
    return out


def summarize_seed_spread(spread_df):
    """Per (family, benchmark, metric, comparison): n_seeds, ratio min / median / max, and
    ``all_on_paper_side``: every seed's ratio lies on the paper's side of 1 (the spread has no
    bootstrap intervals, so this is about the point values only, not an ``agrees`` verdict).

    >>> import pandas as pd
    >>> d = pd.DataFrame({"clustering_seed": [0, 1], "family": "f", "benchmark": "all", "metric": "degree",
    ...                   "comparison": "RL/Base", "ratio": [2.0, 3.0], "paper_value": 2.5, "expected_direction": "up"})
    >>> summarize_seed_spread(d)[["ratio_min", "ratio_median", "ratio_max", "all_on_paper_side"]].values.tolist()
    [[2.0, 2.5, 3.0, True]]
    """
    keys = ["family", "benchmark", "metric", "comparison"]
    d = spread_df.copy()
    r = d["ratio"].astype(float)
    d["_side"] = np.where(d["expected_direction"] == "down", r < 1, r > 1) & np.isfinite(r)
    g = d.groupby(keys, sort=True)
    out = g.agg(n_seeds=("clustering_seed", "nunique"), ratio_min=("ratio", "min"),
                ratio_median=("ratio", "median"), ratio_max=("ratio", "max"),
                paper_value=("paper_value", "first"), expected_direction=("expected_direction", "first"),
                all_on_paper_side=("_side", "all"))
    return out.reset_index()


__all__ = [
    "PAPER_RATIO", "EXPECTED_DIRECTION", "RATIO_COLUMNS", "GEOMEAN_COLUMNS", "decay_ratios", "geomean_ratios",
    "decay_geomeans", "summarize_seed_spread",
]
