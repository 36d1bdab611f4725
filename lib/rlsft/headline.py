"""The headline tables, computed once from the stage tables and used alike by the figure stages,
the HTML report and the README results block (:mod:`rlsft.report` only renders them).

Pure functions, DataFrames in and DataFrames out:

- :func:`decay_headline`: the decay-rate ratios over all benchmarks, each with its node-count part,
  shape part and node-count-matched control, with the spread over clustering seeds (stage
  ``fig_decay`` writes it as ``figures/headline_decay_ratios.csv``); :func:`decomposition_notes`
  explains rows whose parts do not multiply to the ratio; :func:`geomean_headline`: the geometric
  means over metrics (``figures/headline_decay_geomeans.csv``).
- :func:`ci_agreement` (the tri-state ``agrees`` of every ratio table) and :func:`magnitude_verdict`
  (is the paper's value inside the CI?).
- :func:`ratio_headline`: the rows of a ratio table (decay rates, unique trajectories) that the
  headline shows (:func:`present_comparisons`), each with its verdict against the paper
  (:func:`direction_verdict`, column ``direction_as_paper``).
- :func:`accuracy_table` and :func:`pass_at_1_table`: accuracy and pass@k per variant, and
  pass@1 as one row per variant and one column per benchmark (the README's table).
- :func:`sort_family_variant_benchmark` (the report's row order) and
  :func:`sort_family_benchmark_variant` (the figure tables' row order).
"""
from __future__ import annotations

import math

import pandas as pd

from rlsft import VARIANTS

DECAY_HEADLINE_COLUMNS = ("family", "metric", "comparison", "n_problems", "ratio", "ci_low", "ci_high",
                          "node_ratio", "node_ci_low", "node_ci_high", "shape_ratio", "shape_ci_low", "shape_ci_high",
                          "parts_product", "matched_ratio", "matched_ci_low", "matched_ci_high", "matched_agrees",
                          "n_nodes_after", "n_nodes_before", "paper_value", "expected_direction", "agrees", "note")
"""The columns of the decay headline (those the ratio table has), then ``seed_min`` / ``seed_max``."""
VERDICT_COLUMN = "direction_as_paper"
"""The column :func:`ratio_headline` adds: ``yes`` / ``no`` / ``unclear (CI spans 1)`` / ``—``."""
MAGNITUDE_COLUMN = "magnitude_as_paper"
"""The column :func:`ratio_headline` adds to a table with ``paper_value``: is the paper's value in the CI?"""
ACCURACY_COLUMNS = ("family", "variant", "benchmark", "n_problems", "M", "accuracy", "pass_at_1", "pass_at_M",
                    "truncation_rate", "mean_tokens")
"""The columns of ``samples/summary.csv`` the accuracy table keeps (those present), in this order."""
PASS_AT_1_COLUMNS = ("variant", "benchmark", "pass_at_1")
"""The columns :func:`pass_at_1_table` needs."""


def decay_headline(ratios: pd.DataFrame, spread: pd.DataFrame) -> pd.DataFrame:
    """The ratios of median β over all benchmarks (rows with ``benchmark == "all"``): each with its
    node-count part, its shape part, their product and the node-count-matched control (the columns
    of :data:`DECAY_HEADLINE_COLUMNS` that ``ratios`` has), and the smallest and largest ratio over
    the clustering seeds of ``spread`` (``seed_min``, ``seed_max``).

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
    keys = ["family", "metric", "comparison"]
    if spread is None or spread.empty or not set(keys + ["ratio"]) <= set(spread.columns):
        return head.assign(seed_min=float("nan"), seed_max=float("nan"))
    sp = spread.groupby(keys)["ratio"].agg(seed_min="min", seed_max="max").reset_index()
    return head.merge(sp, on=keys, how="left")


def decomposition_notes(head: pd.DataFrame, digits: int = 2) -> list[str]:
    """One line per row whose ``ratio`` and ``parts_product`` (node-count part x shape part) differ
    at ``digits`` decimals, saying why: the three are medians over problems taken separately, and
    a median of products is not the product of medians.

    >>> h = pd.DataFrame({"family": "f", "metric": ["degree", "frequency"], "comparison": "RL/Base",
    ...                   "ratio": [1.57, 2.0], "node_ratio": [1.31, 2.0], "shape_ratio": [1.18, 1.0],
    ...                   "parts_product": [1.5458, 2.0]})
    >>> [line[:40] for line in decomposition_notes(h)]
    ['f degree RL/Base: β ratio 1.57, node-cou']
    """
    out = []
    need = {"ratio", "node_ratio", "shape_ratio", "parts_product"}
    if not need <= set(head.columns):
        return out
    for _, r in head.iterrows():
        vals = [r["ratio"], r["parts_product"]]
        if any(is_missing(v) for v in vals) or round(float(vals[0]), digits) == round(float(vals[1]), digits):
            continue
        out.append(f"{_get(r, 'family', '')} {_get(r, 'metric', '')} {_get(r, 'comparison', '')}: β ratio "
                   f"{float(r['ratio']):.{digits}f}, node-count part x shape part = {float(r['node_ratio']):.{digits}f}"
                   f" x {float(r['shape_ratio']):.{digits}f} = {float(r['parts_product']):.{digits}f}: each is a "
                   f"median over problems taken on its own (median β, median N, median β·N), and a median of "
                   f"products is not the product of medians; the problems whose β sits at the median are not "
                   f"those whose N or β·N do.")
    return out


def _side(lo, hi) -> int:
    """+1 when a CI lies above 1, -1 below 1, 0 when it holds 1 or is missing."""
    if is_missing(lo) or is_missing(hi):
        return 0
    return 1 if float(lo) > 1 + _TOL else -1 if float(hi) < 1 - _TOL else 0


def decomposition_sentence(r) -> str:
    """One sentence on what carries a comparison's β ratio (a row of the geometric-mean headline):
    the node-count part, the shape part, both, or neither, judged by which CIs exclude 1.

    >>> decomposition_sentence(pd.Series({"comparison": "RL/Base", "ratio": 1.5, "ci_low": 1.3, "ci_high": 1.7,
    ...     "node_ratio": 1.45, "node_ci_low": 1.3, "node_ci_high": 1.6, "shape_ratio": 1.03,
    ...     "shape_ci_low": 0.95, "shape_ci_high": 1.1}))
    'RL/Base: β ratio 1.50 [1.30, 1.70] is carried by node count (RL visits fewer nodes than Base, part 1.45 [1.30, 1.60]); the shape part 1.03 [0.95, 1.10] holds 1.'
    """
    def ci(v, lo, hi):
        return f"{float(_get(r, v)):.2f} [{float(_get(r, lo)):.2f}, {float(_get(r, hi)):.2f}]"

    comp = str(_get(r, "comparison", ""))
    after, before = (comp.split("/") + [""])[:2]
    if any(is_missing(_get(r, c)) for c in ("ratio", "node_ratio", "shape_ratio")):
        return f"{comp}: no decomposition (a part is missing)."
    raw, node, shape = (_side(_get(r, f"{p}ci_low"), _get(r, f"{p}ci_high")) for p in ("", "node_", "shape_"))
    head = f"{comp}: β ratio {ci('ratio', 'ci_low', 'ci_high')}"
    nodes = (f"{after} visits {'fewer' if node > 0 else 'more'} nodes than {before}, part "
             f"{ci('node_ratio', 'node_ci_low', 'node_ci_high')}")
    shp = (f"{'steeper' if shape > 0 else 'flatter'} decay against R/N, part "
           f"{ci('shape_ratio', 'shape_ci_low', 'shape_ci_high')}")
    if raw == 0:
        return (f"{head} holds 1: no clear change (node-count part {ci('node_ratio', 'node_ci_low', 'node_ci_high')}, "
                f"shape part {ci('shape_ratio', 'shape_ci_low', 'shape_ci_high')}).")
    if node == raw and shape == raw:
        return f"{head} is carried by both parts: {nodes}, and a {shp}."
    if node == raw and shape == 0:
        return (f"{head} is carried by node count ({nodes}); the shape part "
                f"{ci('shape_ratio', 'shape_ci_low', 'shape_ci_high')} holds 1.")
    if shape == raw and node == 0:
        return (f"{head} is carried by shape ({shp}); the node-count part "
                f"{ci('node_ratio', 'node_ci_low', 'node_ci_high')} holds 1.")
    return (f"{head}: the parts pull apart or are unclear (node-count part "
            f"{ci('node_ratio', 'node_ci_low', 'node_ci_high')}, shape part "
            f"{ci('shape_ratio', 'shape_ci_low', 'shape_ci_high')}).")


GEOMEAN_HEADLINE_COLUMNS = ("comparison", "n_ratios", "ratio", "ci_low", "ci_high", "node_ratio", "node_ci_low",
                            "node_ci_high", "shape_ratio", "shape_ci_low", "shape_ci_high", "paper_value",
                            "expected_direction", "agrees", "shape_agrees")
"""The columns of the geometric-mean headline (``figures/headline_decay_geomeans.csv``)."""


def geomean_headline(geomeans: pd.DataFrame) -> pd.DataFrame:
    """The geometric means over metrics and families (``graphs/decay_geomeans.csv``) as the headline
    shows them: the columns of :data:`GEOMEAN_HEADLINE_COLUMNS` it has, comparisons with a ratio.

    >>> g = pd.DataFrame({"comparison": ["RL/Base", "SFT/Base"], "ratio": [1.4, float("nan")], "after": "x"})
    >>> geomean_headline(g).values.tolist()
    [['RL/Base', 1.4]]
    """
    cols = [c for c in GEOMEAN_HEADLINE_COLUMNS if c in geomeans.columns]
    out = geomeans[cols]
    if "ratio" in out.columns:
        out = out[out["ratio"].notna()]
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------ verdicts

AGREES = ("yes", "unclear", "no")
"""The values of an ``agrees`` column (:func:`ci_agreement`); empty where there is no ratio."""


_TOL = 1e-9


def ci_agreement(ratio, ci_low, ci_high, direction: str) -> str | None:
    """Does a ratio move the paper's way, judged by its 95% interval? ``"yes"`` only when the
    interval excludes 1 on the paper's side (``direction`` ``"up"``: above 1, ``"down"``: below),
    ``"no"`` when it excludes 1 on the other side, ``"unclear"`` when it holds 1 or is missing
    (no bootstrap); ``None`` without a ratio.

    >>> ci_agreement(2.0, 1.2, 3.0, "up"), ci_agreement(1.1, 0.9, 1.3, "up"), ci_agreement(0.5, 0.4, 0.7, "up")
    ('yes', 'unclear', 'no')
    >>> ci_agreement(0.5, 0.4, 0.7, "down"), ci_agreement(0.5, None, None, "down"), ci_agreement(None, 1, 2, "up")
    ('yes', 'unclear', None)
    """
    if is_missing(ratio) or not math.isfinite(float(ratio)):
        return None
    if is_missing(ci_low) or is_missing(ci_high):
        return "unclear"
    lo, hi = float(ci_low), float(ci_high)
    above, below = lo > 1.0 + _TOL, hi < 1.0 - _TOL  # an interval at 1 up to rounding holds 1
    if not (above or below):
        return "unclear"
    return "yes" if (above if direction != "down" else below) else "no"


def magnitude_verdict(paper_value, ci_low, ci_high) -> str:
    """Is the paper's value (2.5, 1/3) inside the 95% interval? ``yes`` / ``no`` / ``—`` (no paper
    value or no interval).

    >>> magnitude_verdict(2.5, 1.9, 3.0), magnitude_verdict(2.5, 1.1, 1.4), magnitude_verdict(float("nan"), 1, 2)
    ('yes', 'no', '—')
    """
    if is_missing(paper_value) or is_missing(ci_low) or is_missing(ci_high):
        return "—"
    return "yes" if float(ci_low) <= float(paper_value) <= float(ci_high) else "no"


def is_missing(x) -> bool:
    """None, NaN or anything whose float is NaN (pandas' NA too); strings are not missing.

    >>> is_missing(None), is_missing(float("nan")), is_missing(pd.NA), is_missing(0.0), is_missing("x")
    (True, True, True, False, False)
    """
    if x is None or x is pd.NA:
        return True
    try:
        return bool(isinstance(x, float) and math.isnan(x)) or (hasattr(x, "__float__") and math.isnan(float(x)))
    except (TypeError, ValueError):
        return False


def agreement_word(x) -> str:
    """``yes`` / ``unclear`` / ``no`` / ``—`` for an ``agrees`` value as read from a CSV: the
    tri-state word of :func:`ci_agreement`, or a flag of a table written before it (bool,
    ``'True'``), or NaN.

    >>> agreement_word("unclear"), agreement_word(True), agreement_word("false"), agreement_word(float("nan"))
    ('unclear', 'yes', 'no', '—')
    """
    if isinstance(x, str):
        word = x.strip().lower()
        if word in AGREES:
            return word
        x = {"true": True, "false": False}.get(word)
    if is_missing(x):
        return "—"
    return "yes" if bool(x) else "no"


def _get(row, col, default=None):
    return row[col] if col in row.index else default


def direction_verdict(row) -> str:
    """Does a ratio move the paper's way? ``unclear (CI spans 1)`` when its 95% interval
    (``ci_low``, ``ci_high``) holds 1, else :func:`agreement_word` of its ``agrees`` flag.

    >>> direction_verdict(pd.Series({"agrees": True, "ci_low": 0.9, "ci_high": 1.1}))
    'unclear (CI spans 1)'
    >>> direction_verdict(pd.Series({"agrees": False, "ci_low": 1.1, "ci_high": 1.3}))
    'no'
    """
    lo, hi = _get(row, "ci_low"), _get(row, "ci_high")
    if not (is_missing(lo) or is_missing(hi)) and float(lo) <= 1.0 <= float(hi):
        return "unclear (CI spans 1)"
    word = agreement_word(_get(row, "agrees"))
    return "unclear (no CI)" if word == "unclear" else word


def with_verdicts(ratios: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``ratios`` with the column ``direction_as_paper`` (:func:`direction_verdict`) and,
    when it has ``paper_value``, ``magnitude_as_paper`` (:func:`magnitude_verdict`).

    >>> r = pd.DataFrame({"ratio": [2.4, 1.0], "ci_low": [1.9, 0.8], "ci_high": [3.0, 1.2], "agrees": [True, False],
    ...                   "paper_value": [2.5, 2.5]})
    >>> with_verdicts(r)[["direction_as_paper", "magnitude_as_paper"]].values.tolist()
    [['yes', 'yes'], ['unclear (CI spans 1)', 'no']]
    """
    out = ratios.copy()
    out[VERDICT_COLUMN] = [direction_verdict(r) for _, r in ratios.iterrows()]
    if "paper_value" in out.columns:
        out[MAGNITUDE_COLUMN] = [magnitude_verdict(_get(r, "paper_value"), _get(r, "ci_low"), _get(r, "ci_high"))
                                 for _, r in ratios.iterrows()]
    return out


# ------------------------------------------------------------------------------- ratio tables

def present_comparisons(ratios: pd.DataFrame | None, summary: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of a ratio table whose comparison ("RL/Base") names two variants the family has.

    A family may hold only some variants (imported completions of Base and RL, say); its tables
    still carry the paper's other comparisons as empty rows, which the headline leaves out (a row
    with a ratio is always kept). The variants present are those of ``summary``
    (``samples/summary.csv``); families come in its order. Without a summary, or without a
    ``comparison`` column, ``ratios`` is returned as is.

    >>> s = pd.DataFrame({"family": ["f", "f"], "variant": ["Base", "RL"]})
    >>> r = pd.DataFrame({"family": "f", "comparison": ["RL/Base", "SFT/Base", "SFT+RL/SFT"], "ratio": [1.5, None, 2.0]})
    >>> present_comparisons(r, s)["comparison"].tolist()
    ['RL/Base', 'SFT+RL/SFT']
    """
    if ratios is None or summary is None or "comparison" not in ratios.columns or "variant" not in summary.columns:
        return ratios
    fam_col = "family" in ratios.columns and "family" in summary.columns
    have = set(zip(summary["family"], summary["variant"])) if fam_col else {(None, v) for v in summary["variant"]}

    def keep(r):  # a row with a number is always kept
        fam = r["family"] if fam_col else None
        has_number = "ratio" in r.index and pd.notna(r["ratio"])
        return has_number or all((fam, v) in have for v in str(r["comparison"]).split("/"))

    out = ratios[[keep(r) for _, r in ratios.iterrows()]]
    if fam_col:  # families in profile order (the summary's), not alphabetical
        rank = {f: i for i, f in enumerate(dict.fromkeys(summary["family"]))}
        out = out.iloc[sorted(range(len(out)), key=lambda i: rank.get(out["family"].iloc[i], len(rank)))]
    return out.reset_index(drop=True)


def ratio_headline(ratios: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """The headline rows of a ratio table (``figures/headline_decay_ratios.csv``,
    ``trajectories/unique_ratios.csv``): :func:`present_comparisons`, then :func:`with_verdicts`.

    >>> r = pd.DataFrame({"family": "f", "comparison": ["RL/Base", "SFT/Base"], "ratio": [0.5, None],
    ...                   "ci_low": [0.4, None], "ci_high": [0.6, None], "agrees": [True, None]})
    >>> ratio_headline(r)[["comparison", "direction_as_paper"]].values.tolist()
    [['RL/Base', 'yes'], ['SFT/Base', '—']]
    >>> len(ratio_headline(r, pd.DataFrame({"family": ["f", "f"], "variant": ["Base", "RL"]})))
    1
    """
    return with_verdicts(present_comparisons(ratios, summary))


# ----------------------------------------------------------------------- accuracy and pass@1

def sort_family_variant_benchmark(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` sorted by family (in order of first appearance: the profile's order), the variants in
    the canonical order (unknown ones last), then benchmark; a stable sort.

    >>> d = pd.DataFrame({"family": ["g", "g", "f"], "variant": ["SFT", "Base", "RL"], "benchmark": "b"})
    >>> sort_family_variant_benchmark(d)[["family", "variant"]].values.tolist()
    [['g', 'Base'], ['g', 'SFT'], ['f', 'RL']]
    """
    if df is None or "variant" not in df.columns:
        return df
    df = df.copy()
    df["_v"] = df["variant"].map({v: i for i, v in enumerate(VARIANTS)}).fillna(len(VARIANTS))
    if "family" in df.columns:
        df["_f"] = df["family"].map({f: i for i, f in enumerate(dict.fromkeys(df["family"]))})
    keys = [k for k in ("_f", "_v", "variant", "benchmark") if k in df.columns]
    return df.sort_values(keys, kind="stable").drop(columns=["_v", "_f"], errors="ignore")


def sort_family_benchmark_variant(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with ``variant`` an ordered categorical (``VARIANTS``), sorted by family,
    benchmark and variant: the row order of the tables beside the figures
    (``figures/table_pass_at_k.csv``, ``figures/fig2_table.csv``).

    >>> d = pd.DataFrame({"family": "f", "benchmark": ["b", "a", "a"], "variant": ["RL", "SFT", "Base"]})
    >>> sort_family_benchmark_variant(d)[["benchmark", "variant"]].values.tolist()
    [['a', 'Base'], ['a', 'SFT'], ['b', 'RL']]
    """
    table = df.copy()
    table["variant"] = pd.Categorical(table["variant"], VARIANTS, ordered=True)
    return table.sort_values(["family", "benchmark", "variant"])


def accuracy_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, pass@1, pass@M, truncation and length per (family, variant, benchmark): the
    columns of ``ACCURACY_COLUMNS`` that ``summary`` has, rows in
    :func:`sort_family_variant_benchmark` order.

    >>> s = pd.DataFrame({"family": "f", "variant": ["SFT", "Base"], "benchmark": "b", "pass_at_1": [0.5, 0.6],
    ...                   "mean_chars": [10.0, 12.0]})
    >>> accuracy_table(s).values.tolist()
    [['f', 'Base', 'b', 0.6], ['f', 'SFT', 'b', 0.5]]
    """
    df = sort_family_variant_benchmark(summary)
    return df[[c for c in ACCURACY_COLUMNS if c in df.columns]]


def pass_at_1_table(summary: pd.DataFrame) -> pd.DataFrame:
    """pass@1 with one row per (family, variant) and one column per benchmark (sorted by name);
    NaN where a variant lacks a benchmark. Rows in :func:`sort_family_variant_benchmark` order;
    ``family`` is None when ``summary`` has no family column.

    >>> s = pd.DataFrame({"family": "f", "variant": ["SFT", "Base", "Base"], "benchmark": ["b", "b", "a"],
    ...                   "pass_at_1": [0.5, 0.6, 0.7]})
    >>> pass_at_1_table(s).values.tolist()
    [['f', 'Base', 0.7, 0.6], ['f', 'SFT', nan, 0.5]]
    """
    missing = [c for c in PASS_AT_1_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks the columns {missing}")
    df = sort_family_variant_benchmark(summary)
    fams = list(dict.fromkeys(df["family"])) if "family" in df.columns else [None]
    benches = list(dict.fromkeys(sorted(map(str, df["benchmark"]))))
    rows = []
    for fam in fams:
        sub = df if fam is None else df[df["family"] == fam]
        for v in dict.fromkeys(sub["variant"]):
            row = [fam, v]
            for b in benches:
                hit = sub[(sub["variant"] == v) & (sub["benchmark"].astype(str) == b)]["pass_at_1"]
                row.append(float(hit.iloc[0]) if len(hit) else math.nan)
            rows.append(row)
    return pd.DataFrame(rows, columns=["family", "variant", *benches])
