"""Tests of rlsft.trajectories (PAPER.md §5): chrF matrix == sacrebleu, UPGMA counts == scipy,
the stage's cache, and the bootstrap summaries."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import ClusterWarning, fcluster, linkage
from scipy.spatial.distance import squareform

import rlsft.trajectories as tr
from rlsft.trajectories import (chrf_cache_key, chrf_matrices, chrf_matrix, cluster_labels, count_unique,
                                distance_matrix, summarise_unique, symmetrize, unique_ratios,
                                unique_trajectories)

ROOT = Path(__file__).resolve().parents[1]
WORDS = "we let so the sum of and then check wait factor root answer is x y prime equal".split()


def reasoning(rng: np.random.Generator, chars: int) -> str:
    """Reasoning-like text: shared words, numbers, LaTeX-ish tokens."""
    parts, n = [], 0
    while n < chars:
        if rng.random() < 0.4:
            a, b = rng.integers(1, 40, 2)
            s = rf"Then $\frac{{{a}}}{{{b}}} = {a / b:.3f}$ so \boxed{{{a * b}}}."
        else:
            s = " ".join(rng.choice(WORDS, rng.integers(3, 10))).capitalize() + "."
        parts.append(s)
        n += len(s) + 1
    return " ".join(parts)[:chars]


def corpus() -> list[str]:
    rng = np.random.default_rng(0)
    fixed = [
        "", " ", "\t\n  \r", "\x1c\x1d\x1e\x1f", "\u00a0\u3000\u2028",           # empty / whitespace only
        "a", "x", "x", "ab", "a b", "abcde", "abcdef", "abcdefg", "aaaaaaa",     # shorter than char_order
        "ab" * 20, "abc abc abc", "ab\x1ccd", "abcd",                            # repeats, Python-only space
        "héllo wörld", "e\u0301te\u0301", "你好世界，今天天气很好。你好", "😀 smile 😀😃",
        "مرحبا بالعالم", "\ud800 lone surrogate", "zero\u200bwidth space",         # unicode
        "(hi) there! ,x y. -- a.b.c ...", "x. x, (x) x!",                         # chrF++ punctuation
        r"Let $x = 3$. Then $\frac{1}{2} + x = 3.5$, so the answer is \boxed{3.5}.",
        r"Let $x = 3$. Then $\frac{1}{2} + x = 3.5$, so the answer is \boxed{3.5}",
    ]
    rand = ["".join(rng.choice(list("abcde "), 60)) for _ in range(4)]
    rand += ["".join(chr(c) for c in rng.integers(32, 127, 150)) for _ in range(3)]
    reas = [reasoning(rng, int(n)) for n in (300, 500, 800, 1200)]
    return fixed + rand + reas + [reas[0]]                                         # an identical pair


def sacrebleu_matrix(texts, char_order=6, word_order=0, beta=2.0, rows=None) -> np.ndarray:
    from sacrebleu.metrics import CHRF

    m = CHRF(char_order=char_order, word_order=word_order, beta=beta)
    rows = range(len(texts)) if rows is None else rows
    return np.array([[m.sentence_score(texts[i], [r]).score for r in texts] for i in rows])


# --------------------------------------------------------------------------------------------------
# chrF matrix
# --------------------------------------------------------------------------------------------------

CORPUS = corpus()


@pytest.mark.parametrize("char_order,word_order,beta", [(6, 0, 2.0), (6, 0, 2), (6, 2, 2.0), (3, 0, 1.0),
                                                        (4, 1, 0.5), (1, 0, 3.0), (0, 2, 2.0)])
def test_matches_sacrebleu(char_order, word_order, beta):
    C = chrf_matrix(CORPUS, char_order=char_order, word_order=word_order, beta=beta)
    R = sacrebleu_matrix(CORPUS, char_order, word_order, beta)
    assert C.dtype == np.float64 and C.shape == (len(CORPUS), len(CORPUS))
    np.testing.assert_allclose(C, R, rtol=0, atol=1e-9)


def test_long_texts_match_sacrebleu():
    rng = np.random.default_rng(1)
    texts = [reasoning(rng, 6000), reasoning(rng, 9000)] + CORPUS[-6:]
    C = chrf_matrix(texts)
    R = sacrebleu_matrix(texts, rows=[0, 1])
    np.testing.assert_allclose(C[:2], R, rtol=0, atol=1e-9)
    np.testing.assert_allclose(C[2:, :2], sacrebleu_matrix(texts)[2:, :2], rtol=0, atol=1e-9)


def test_large_alphabet_uses_generic_path_and_matches():
    rng = np.random.default_rng(2)
    cjk = [chr(c) for c in rng.integers(0x4E00, 0x4E00 + 3000, 4000)]
    texts = ["".join(cjk[i:i + 300]) for i in range(0, 3000, 250)] + ["abc", ""]
    sym, lens = tr._char_symbols(texts)
    assert 6 * int(sym.max()).bit_length() + 4 > 63  # too wide to pack: the rank path runs
    np.testing.assert_allclose(chrf_matrix(texts), sacrebleu_matrix(texts), rtol=0, atol=1e-9)


def test_packed_and_rank_paths_agree():
    sym, lens = tr._char_symbols(CORPUS)
    a = tr._stats(sym, lens, 6, packed=True)
    b = tr._stats(sym, lens, 6, packed=False)
    for (ia, ta), (ib, tb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize("dense_min,chunk", [(2, 3), (2, 8192), (10 ** 9, 8192)])
def test_dense_and_sparse_products_agree(monkeypatch, dense_min, chunk):
    ref = chrf_matrix(CORPUS)
    monkeypatch.setattr(tr, "_DENSE_MIN_DF", dense_min)
    monkeypatch.setattr(tr, "_CHUNK_COLS", chunk)
    np.testing.assert_array_equal(chrf_matrix(CORPUS), ref)


def test_chrf_edge_cases():
    assert chrf_matrix([]).shape == (0, 0)
    assert chrf_matrix([""]).tolist() == [[0.0]]
    assert chrf_matrix(["  \t"]).tolist() == [[0.0]]
    C = chrf_matrix(["abc", "abc", "", "a b c"])
    assert C[0, 1] == C[1, 0] == C[0, 3] == 100.0
    assert (C[2] == 0).all() and (C[:, 2] == 0).all()
    assert chrf_matrix(("x", "y")).shape == (2, 2)          # any sequence
    assert chrf_matrix(pd.Series(["x", "y"])).shape == (2, 2)


@pytest.mark.parametrize("bad,exc", [("abc", TypeError), (["a", None], TypeError), (["a", 3], TypeError)])
def test_chrf_rejects_bad_texts(bad, exc):
    with pytest.raises(exc):
        chrf_matrix(bad)


@pytest.mark.parametrize("kw", [dict(char_order=0, word_order=0), dict(char_order=-1), dict(word_order=1.5),
                                dict(beta=-1.0), dict(beta=float("nan")), dict(n_jobs=0)])
def test_chrf_rejects_bad_parameters(kw):
    with pytest.raises(ValueError):
        chrf_matrix(["a", "b"], **kw)


def test_chrf_matrices_parallel_equals_sequential():
    lists = [CORPUS[:10], CORPUS[10:25], [], ["one"]]
    seq = chrf_matrices(lists, n_jobs=1)
    par = chrf_matrices(lists, n_jobs=2)
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# fastchrf: what it computes
# --------------------------------------------------------------------------------------------------


def test_fastchrf_agrees_except_python_only_whitespace_and_surrogates():
    fastchrf = pytest.importorskip("fastchrf")
    odd = {"\x1c", "\x1d", "\x1e", "\x1f"}
    texts = [t for t in CORPUS if not (odd & set(t)) and "\ud800" not in t]
    F = np.asarray(fastchrf.pairwise_chrf([texts], [texts])[0], dtype=np.float64)
    np.testing.assert_allclose(F, chrf_matrix(texts), rtol=0, atol=1e-9)
    for beta, order in [(1.0, 6), (3.0, 3)]:
        F = np.asarray(fastchrf.pairwise_chrf([texts], [texts], char_order=order, beta=beta)[0])
        np.testing.assert_allclose(F, chrf_matrix(texts, char_order=order, beta=beta), rtol=0, atol=1e-9)
    # U+001C..U+001F: whitespace for Python's str.split (sacrebleu removes them), not for Rust
    pair = ["ab\x1ccd", "abcd"]
    assert chrf_matrix(pair)[0, 1] == sacrebleu_matrix(pair)[0, 1] == 100.0
    assert fastchrf.pairwise_chrf([pair[:1]], [pair[1:]])[0][0][0] < 50
    # lone surrogates: fine in Python, not convertible to a Rust String
    assert chrf_matrix(["\ud800a", "a"])[0, 1] == sacrebleu_matrix(["\ud800a", "a"])[0, 1]
    with pytest.raises(UnicodeEncodeError):
        fastchrf.pairwise_chrf([["\ud800a"]], [["a"]])


# --------------------------------------------------------------------------------------------------
# Symmetrisation and UPGMA
# --------------------------------------------------------------------------------------------------


def direct_scipy(C, threshold):
    S = (C + C.T) / 2
    D = 1 - S / 100
    np.fill_diagonal(D, 0)
    return fcluster(linkage(squareform(D, checks=False), method="average"), t=1 - threshold / 100,
                    criterion="distance")


def same_partition(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return len(set(zip(a, b))) == len(set(a)) == len(set(b))


def test_symmetrize_and_distance():
    C = np.array([[100.0, 40.0], [60.0, 90.0]])
    assert symmetrize(C).tolist() == [[100.0, 50.0], [50.0, 90.0]]
    assert distance_matrix(C).tolist() == [[0.0, 0.5], [0.5, 0.0]]


@pytest.mark.parametrize("seed", range(6))
def test_count_unique_equals_direct_scipy(seed):
    rng = np.random.default_rng(seed)
    M = int(rng.integers(2, 40))
    centres = rng.integers(0, 5, M)                           # cluster structure plus noise, asymmetric
    C = np.where(centres[:, None] == centres[None, :], 75.0, 25.0) + rng.normal(0, 12, (M, M))
    C = np.clip(C, 0, 100)
    np.fill_diagonal(C, 100)
    for threshold in (40.0, 60.0, 80.0):
        ref = direct_scipy(C, threshold)
        k, labels = count_unique(chrf=C, threshold=threshold, return_labels=True)
        assert k == count_unique(chrf=C, threshold=threshold) == len(set(ref))
        assert same_partition(labels, ref)
        assert sorted(set(labels.tolist())) == list(range(k)) and labels[0] == 0


def test_count_unique_from_texts():
    texts = ["we factor the sum and check", "we factor the sum and check.", "zzzz qqqq", "zzzz qqqq!", "1 2 3"]
    k, labels = count_unique(texts, return_labels=True)
    assert k == len(set(direct_scipy(chrf_matrix(texts), 60.0))) == 3
    assert labels.tolist() == [0, 0, 1, 1, 2]
    assert count_unique(texts, threshold=0.0) == 1 and count_unique(texts, threshold=100.0) == 5


def test_count_unique_zero_and_one():
    assert count_unique([]) == 0 and count_unique(chrf=np.zeros((0, 0))) == 0
    assert count_unique(["only one"]) == 1 and count_unique(chrf=[[100.0]]) == 1
    k, labels = count_unique([], return_labels=True)
    assert k == 0 and labels.shape == (0,)
    k, labels = count_unique([""], return_labels=True)
    assert k == 1 and labels.tolist() == [0]


def test_square_vs_condensed_trap():
    """linkage() on a square matrix silently treats its rows as observations: count_unique must
    refuse condensed / non-square input and always use squareform(D)."""
    rng = np.random.default_rng(3)
    differs = 0
    for _ in range(20):
        C = rng.uniform(0, 100, (8, 8))
        np.fill_diagonal(C, 100)
        right = direct_scipy(C, 60.0)
        D = distance_matrix(C)
        with pytest.warns(ClusterWarning):                   # scipy only warns
            wrong = fcluster(linkage(D, method="average"), t=0.4, criterion="distance")  # the trap
        differs += not same_partition(right, wrong)
        assert count_unique(chrf=C) == len(set(right))
    assert differs > 0                                        # the trap does change results
    D = distance_matrix(rng.uniform(0, 100, (5, 5)))
    with pytest.raises(ValueError, match="square"):
        count_unique(chrf=squareform(D, checks=False))        # condensed vector
    with pytest.raises(ValueError, match="square"):
        count_unique(chrf=np.full((3, 4), 50.0))
    with pytest.raises(ValueError, match="square"):
        symmetrize(np.zeros(6))


@pytest.mark.parametrize("kw", [dict(), dict(chrf=[[100, np.nan], [1, 100]]), dict(chrf=[[100, 150], [1, 100]]),
                                dict(chrf=[[100.0]], texts=["a", "b"]), dict(texts=["a"], threshold=120),
                                dict(chrf=[[100.0]], beta=1.0)])
def test_count_unique_validates(kw):
    with pytest.raises(ValueError):
        count_unique(**kw)


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def strategy(rng, i: int) -> str:
    """A distinct 'strategy': random letters; its samples differ by a short suffix."""
    return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), 120)) + f" step {i}"


def make_samples():
    """2 variants x 2 problems; the number of distinct strategies per (group, correctness) is known."""
    rng = np.random.default_rng(4)
    plan = {("Base", "p1"): (3, 5), ("Base", "p2"): (2, 4), ("RL", "p1"): (2, 1), ("RL", "p2"): (0, 2)}
    rows = []
    for (variant, problem), (n_c, n_i) in plan.items():
        sample = 0
        for correct, k in ((True, n_c), (False, n_i)):
            for s in range(k):
                base = strategy(rng, s)
                for rep in range(3):                           # 3 near-identical samples per strategy
                    rows.append(dict(family="1.5B", variant=variant, benchmark="AIME24", problem=problem,
                                     sample=sample, text=base + f" variant {rep}", correct=correct))
                    sample += 1
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order of rows must not matter
    return df, plan


def test_unique_trajectories_counts_and_cache(tmp_path, monkeypatch):
    samples, plan = make_samples()
    out = unique_trajectories(samples, tmp_path, progress=False)
    assert list(out.columns) == ["family", "variant", "benchmark", "problem", "n_correct", "n_incorrect",
                                 "unique_correct", "unique_incorrect", "diversity_correct", "diversity_incorrect"]
    assert len(out) == 4 and len(list(tmp_path.glob("chrf_*.npy"))) == 4
    for r in out.itertuples():
        n_c, n_i = plan[(r.variant, r.problem)]
        assert (r.unique_correct, r.unique_incorrect, r.n_correct, r.n_incorrect) == (n_c, n_i, 3 * n_c, 3 * n_i)
        if n_c:
            assert r.diversity_correct == pytest.approx(1 / 3)
        else:
            assert math.isnan(r.diversity_correct)

    def boom(*a, **k):
        raise AssertionError("chrF recomputed despite the cache")

    monkeypatch.setattr(tr, "chrf_matrix", boom)
    again = unique_trajectories(samples, tmp_path, progress=False)
    pd.testing.assert_frame_equal(out, again)
    labels = cluster_labels(samples, tmp_path, progress=False)
    assert list(labels.columns) == ["family", "variant", "benchmark", "problem", "sample", "correct", "cluster",
                                    "cluster_size"]
    assert len(labels) == len(samples) and (labels["cluster_size"] == 3).all()
    merged = labels.merge(samples, on=["family", "variant", "benchmark", "problem", "sample", "correct"])
    assert len(merged) == len(samples)
    k = labels.groupby(["variant", "problem", "correct"])["cluster"].nunique()
    for (variant, problem, correct), n in k.items():
        assert n == plan[(variant, problem)][0 if correct else 1]


def test_unique_trajectories_parallel_and_cached_matrix_equal(tmp_path):
    samples, _ = make_samples()
    a = unique_trajectories(samples, tmp_path / "a", n_jobs=2, progress=False)
    b = unique_trajectories(samples, tmp_path / "b", n_jobs=1, progress=False)
    pd.testing.assert_frame_equal(a, b)
    g = samples[(samples.variant == "Base") & (samples.problem == "p1")].sort_values("sample")
    path = tmp_path / "a" / f"chrf_{chrf_cache_key(g['text'].tolist())}.npy"
    np.testing.assert_array_equal(np.load(path), chrf_matrix(g["text"].tolist()))


def test_unique_trajectories_validates(tmp_path):
    samples, _ = make_samples()
    with pytest.raises(ValueError, match="lacks columns"):
        unique_trajectories(samples.drop(columns="correct"), tmp_path)
    with pytest.raises(ValueError, match="duplicate"):
        unique_trajectories(pd.concat([samples, samples.iloc[:1]]), tmp_path)
    bad = samples.copy()
    bad.loc[bad.index[0], "text"] = None
    with pytest.raises(ValueError, match="no 'text'"):
        unique_trajectories(bad, tmp_path)
    with pytest.raises(ValueError):
        unique_trajectories(samples.to_dict(), tmp_path)


def test_cache_key_is_unambiguous():
    assert chrf_cache_key(["a\0b", "c"]) != chrf_cache_key(["a", "b\0c"])
    assert chrf_cache_key(["a", "b"]) != chrf_cache_key(["b", "a"])
    assert chrf_cache_key(["a"]) != chrf_cache_key(["a"], beta=1.0)
    assert chrf_cache_key(["a"], beta=2) == chrf_cache_key(["a"], beta=2.0)


# --------------------------------------------------------------------------------------------------
# Summaries and ratios
# --------------------------------------------------------------------------------------------------


def make_table(seed=0, n=30):
    rng = np.random.default_rng(seed)
    means = {"Base": (20, 80), "RL": (18, 25), "SFT": (35, 45), "SFT+RL": (30, 15)}
    rows = []
    for bench in ("AIME24", "AMC23"):
        for p in range(n):
            for v, (mc, mi) in means.items():
                rows.append(dict(family="1.5B", variant=v, benchmark=bench, problem=str(p),
                                 unique_correct=int(rng.poisson(mc)), unique_incorrect=int(rng.poisson(mi))))
    return pd.DataFrame(rows)


def test_summarise_unique():
    t = make_table()
    s = summarise_unique(t, n_boot=300, seed=1)
    assert list(s.columns) == ["family", "variant", "benchmark", "n_problems", "unique_correct", "uc_low",
                               "uc_high", "unique_incorrect", "ui_low", "ui_high"]
    assert len(s) == 8 and (s["n_problems"] == 30).all()
    assert s["variant"].tolist()[:4] == ["Base", "RL", "SFT", "SFT+RL"]
    means = t.groupby(["variant", "benchmark"])[["unique_correct", "unique_incorrect"]].mean()
    for r in s.itertuples():
        assert r.unique_correct == pytest.approx(means.loc[(r.variant, r.benchmark), "unique_correct"])
        assert r.uc_low <= r.unique_correct <= r.uc_high and r.ui_low <= r.unique_incorrect <= r.ui_high
    pd.testing.assert_frame_equal(s, summarise_unique(t, n_boot=300, seed=1))
    assert not s.equals(summarise_unique(t, n_boot=300, seed=2))
    one = summarise_unique(t[t.variant == "RL"], n_boot=300, seed=1)       # rows independent of others
    pd.testing.assert_frame_equal(one, s[s.variant == "RL"].reset_index(drop=True))
    assert summarise_unique(t, n_boot=0)["uc_low"].isna().all()


def test_unique_ratios():
    t = make_table()
    r = unique_ratios(t, n_boot=300, seed=0)
    assert list(r.columns)[:9] == ["family", "benchmark", "quantity", "comparison", "ratio", "ci_low", "ci_high",
                                   "direction_expected", "agrees"]
    assert len(r) == 6
    row = r[(r.benchmark == "AIME24") & (r.comparison == "RL/Base")].iloc[0]
    sub = t[t.benchmark == "AIME24"].groupby("variant")["unique_incorrect"].mean()
    assert row.quantity == "unique_incorrect" and row.direction_expected == "down"
    assert row.ratio == pytest.approx(sub["RL"] / sub["Base"]) and row.ci_low < row.ratio < row.ci_high
    assert set(r.loc[r.comparison == "SFT/Base", "quantity"]) == {"unique_correct"}
    assert set(r.loc[r.comparison == "SFT/Base", "direction_expected"]) == {"up"}
    assert (r["agrees"] == "yes").all()                       # the synthetic table follows the paper, CIs clear of 1
    pd.testing.assert_frame_equal(r, unique_ratios(t, n_boot=300, seed=0))
    assert not r.equals(unique_ratios(t, n_boot=300, seed=5))
    # paired: only problems both variants have; a missing variant skips the comparison
    t2 = t[~((t.variant == "RL") & (t.problem.astype(int) >= 10))]
    r2 = unique_ratios(t2[t2.variant != "SFT+RL"], n_boot=50)
    assert set(r2.comparison) == {"RL/Base", "SFT/Base"}
    assert r2.loc[r2.comparison == "RL/Base", "n_problems"].tolist() == [10, 10]


def test_bench_script_imports_without_side_effects(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_chrf", ROOT / "benchmarks" / "bench_chrf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    texts = mod.make_texts(4, 300, seed=0)
    assert texts == mod.make_texts(4, 300, seed=0) and {len(x) for x in texts} == {300}
    out = tmp_path / "chrf.csv"
    assert mod.main(["--n-texts", "6", "--chars", "300", "--sacrebleu-pairs", "5", "--repeats", "1",
                     "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df["method"]) >= {"rlsft.chrf_matrix", "sacrebleu.CHRF.sentence_score"}
    assert (df["max_abs_diff"] < 1e-9).all()
