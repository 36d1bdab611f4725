"""Tests of rlsft.verify: boxed extraction, math-verify checking, pass@k, tables, registry."""
from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from math import comb

import numpy as np
import pandas as pd
import pytest

from rlsft import verify as V
from rlsft.verify import (VERIFIERS, get_verifier, last_boxed, pass_at_k, pass_at_k_table,
                          register_verifier, summary_table, verify_math)


# ---------------------------------------------------------------------------------- last_boxed

@pytest.mark.parametrize("text, expected", [
    (r"The answer is \boxed{204}.", "204"),
    (r"\boxed{1} wait, no: \boxed{2}", "2"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{3}}{2}} done", r"\frac{\sqrt{3}}{2}"),
    (r"\fbox{42}", "42"),
    (r"\boxed{5} then \fbox{6}", "6"),
    (r"set \boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"$\boxed 7$", "7"),
    (r"\boxed {9}", "9"),
    ("no box here, the answer is 5", None),
    (r"\boxed{12", None),                      # truncated: never closed
    (r"\boxed{3} and then \boxed{", None),     # the last box is unfinished
    (r"\boxed{}", ""),
    (r"\boxedx{3}", None),                     # not a box command
    ("", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_last_boxed_rejects_non_str():
    assert last_boxed(None) is None
    with pytest.raises(TypeError):
        last_boxed(12)


# --------------------------------------------------------------------------------- verify_math

@pytest.mark.parametrize("text, gold, ok", [
    (r"so \boxed{204}", "204", True),
    (r"so \boxed{205}", "204", False),
    (r"\boxed{\frac{1}{2}}", "1/2", True),
    (r"\boxed{\dfrac{1}{2}}", r"\frac12", True),
    (r"\boxed{0.5}", r"\frac{1}{2}", True),
    (r"\boxed{\tfrac{5}{6}}", r"\frac{5}{6}", True),
    (r"\boxed{12\text{ cm}}", "12", True),
    (r"\boxed{12 \text{cm}^2}", "12", True),
    (r"\boxed{30^\circ}", "30", True),
    (r"\boxed{30^{\circ}}", "30", True),
    ("\\boxed{30\u00b0}", "30", True),         # unicode degree sign
    (r"\boxed{1,000}", "1000", True),
    (r"\boxed{1{,}000}", "1000", True),
    (r"\boxed{\$12}", "12", True),
    (r"\boxed{x = 5}", "5", True),
    (r"\boxed{-1}", "-1", True),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", True),
    (r"\boxed{3.0}", "3", True),
    (r"first \boxed{7} then finally \boxed{8}", "8", True),   # last box wins
    (r"first \boxed{8} then finally \boxed{7}", "8", False),
    ("the answer is 204", "204", False),                     # no box: incorrect
    (r"\boxed{}", "204", False),
    (r"\boxed{\text{(A)}}", "204", False),
    (r"\boxed{{{{", "204", False),
])
def test_verify_math_cases(text, gold, ok):
    extracted, correct = verify_math(text, gold)
    assert correct is ok
    assert extracted == last_boxed(text)


def test_verify_math_no_box_extracts_none():
    assert verify_math("I think it is 204.", "204") == (None, False)


def test_verify_math_gold_types():
    assert verify_math(r"\boxed{27}", 27) == ("27", True)
    assert verify_math(r"\boxed{27}", 27.0) == ("27", True)
    assert verify_math(r"\boxed{27}", {"id": "x", "answer": "27"}) == ("27", True)
    with pytest.raises(KeyError):
        verify_math(r"\boxed{27}", {"id": "x"})
    with pytest.raises(ValueError):
        verify_math(r"\boxed{27}", "  ")
    with pytest.raises(TypeError):
        verify_math(None, "1")
    with pytest.raises(ValueError):
        verify_math(r"\boxed{1}", "1", timeout=0)


def test_verify_math_huge_answer_is_guarded(caplog):
    text = r"\boxed{" + "1+" * 1000 + "1}"
    with caplog.at_level(logging.WARNING, logger="rlsft.verify"):
        assert verify_math(text, "1001")[1] is False
    assert "MAX_ANSWER_CHARS" in caplog.text


def test_verify_math_parser_crash_is_incorrect(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("parser exploded")
    monkeypatch.setattr(V, "_check_math", boom)
    assert verify_math(r"\boxed{1}", "1") == ("1", False)


def test_verify_math_in_threads():
    """math-verify's signal timeout needs the main thread: other threads use the helper process."""
    cases = [(r"\boxed{\frac12}", "0.5", True), (r"\boxed{205}", "204", False),
             (r"x \boxed{204}", "204", True)]
    results = {}

    def run(i, text, gold):
        results[i] = verify_math(text, gold)

    threads = [threading.Thread(target=run, args=(i, t, g)) for i, (t, g, _) in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [results[i][1] for i in range(len(cases))] == [ok for _, _, ok in cases]


def test_verify_math_isolated_overrun_is_bounded():
    """A comparison that would run for ages is cut off (math-verify timeout, helper kill)."""
    t0 = time.monotonic()
    extracted, ok = verify_math(r"\boxed{10^{10^{10}}}", "5", timeout=1, isolate=True)
    assert (extracted, ok) == ("10^{10^{10}}", False)
    assert time.monotonic() - t0 < 60


# ------------------------------------------------------------------------------------ pass@k

def _exact(n, c, k):
    if n - c < k:
        return 1.0
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


@pytest.mark.parametrize("n", [1, 2, 5, 16, 100, 256])
def test_pass_at_k_matches_binomial_formula(n):
    rng = np.random.default_rng(n)
    for c in sorted({0, n, *rng.integers(0, n + 1, size=5).tolist()}):
        for k in sorted({1, n, *rng.integers(1, n + 1, size=5).tolist()}):
            assert pass_at_k(n, c, k) == pytest.approx(_exact(n, c, k), abs=1e-12)


def test_pass_at_k_edges_and_errors():
    assert pass_at_k(256, 0, 256) == 0.0
    assert pass_at_k(256, 1, 256) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert 0 <= pass_at_k(1024, 1, 512) <= 1
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(0, 0, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 0)
    with pytest.raises(TypeError):
        pass_at_k(4.0, 1, 1)


def _samples(correct_by_problem, family="f", variant="Base", benchmark="aime24", **extra):
    rows = []
    for p, flags in correct_by_problem.items():
        for i, ok in enumerate(flags):
            rows.append({"family": family, "variant": variant, "benchmark": benchmark,
                         "problem": p, "sample": i, "correct": bool(ok), **extra})
    return pd.DataFrame(rows)


def test_pass_at_k_table_values_and_ks():
    df = _samples({"p1": [1, 0, 0, 0, 0, 0], "p2": [1] * 6, "p3": [0] * 6})
    out = pass_at_k_table(df)
    assert list(out.columns) == ["family", "variant", "benchmark", "k", "pass_at_k", "n_problems"]
    assert out["k"].tolist() == [1, 2, 4, 6]                     # M = 6 included
    for k, v in zip(out["k"], out["pass_at_k"]):
        assert v == pytest.approx((_exact(6, 1, k) + 1 + 0) / 3)
    assert (out["n_problems"] == 3).all()


def test_pass_at_k_table_per_model_and_custom_ks():
    a = _samples({"p1": [1, 0, 0, 0]}, variant="Base")
    b = _samples({"p1": [1, 1, 1, 1]}, variant="RL")
    out = pass_at_k_table(pd.concat([a, b]), ks=[1, 4])
    got = {(r.variant, r.k): r.pass_at_k for r in out.itertuples()}
    assert got == {("Base", 1): 0.25, ("Base", 4): 1.0, ("RL", 1): 1.0, ("RL", 4): 1.0}


def test_pass_at_k_table_unequal_n_skips_with_note(caplog):
    df = _samples({"p1": [1, 0, 0, 0, 0, 0, 0, 0], "p2": [0, 1]})
    with caplog.at_level(logging.INFO, logger="rlsft.verify"):
        out = pass_at_k_table(df)
    rows = {r.k: (r.pass_at_k, r.n_problems) for r in out.itertuples()}
    assert rows[1] == (pytest.approx((1 / 8 + 1 / 2) / 2), 2)
    assert rows[2][1] == 2 and rows[4] == (pytest.approx(_exact(8, 1, 4)), 1)
    assert rows[8] == (pytest.approx(1.0), 1)
    assert "skips 1 problem" in caplog.text


def test_pass_at_k_table_errors():
    with pytest.raises(ValueError, match="empty"):
        pass_at_k_table(_samples({"p": [1]}).iloc[:0])
    with pytest.raises(ValueError, match="lacks columns"):
        pass_at_k_table(_samples({"p": [1]}).drop(columns="correct"))
    dup = pd.concat([_samples({"p": [1, 0]})] * 2)
    with pytest.raises(ValueError, match="duplicate"):
        pass_at_k_table(dup)
    nan = _samples({"p": [1, 0]}).astype({"correct": object})
    nan.loc[0, "correct"] = None
    with pytest.raises(ValueError, match="NaN"):
        pass_at_k_table(nan)
    with pytest.raises(ValueError, match="positive"):
        pass_at_k_table(_samples({"p": [1]}), ks=[0])
    with pytest.raises(TypeError):
        pass_at_k_table([{"a": 1}])


def test_summary_table():
    df = _samples({"p1": [1, 0, 0, 0], "p2": [1, 1, 0, 0]})
    df["finish_reason"] = ["stop", "length", "stop", "stop"] * 2
    df["n_tokens"] = [10, 20, 30, 40] * 2
    df["text"] = ["ab", "abcd", "", "x"] * 2
    out = summary_table(df)
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["n_problems"], row["n_samples"], row["M"]) == (2, 8, 4)
    assert row["accuracy"] == pytest.approx(3 / 8)
    assert row["pass_at_1"] == pytest.approx((0.25 + 0.5) / 2)
    assert row["pass_at_M"] == pytest.approx(1.0)
    assert row["truncation_rate"] == pytest.approx(0.25)
    assert row["mean_tokens"] == pytest.approx(25.0)
    assert row["mean_chars"] == pytest.approx(7 / 4)


def test_summary_table_without_optional_columns():
    out = summary_table(_samples({"p1": [1, 0]}))
    assert out[["truncation_rate", "mean_tokens", "mean_chars"]].isna().all(axis=None)


# ---------------------------------------------------------------------------------- registry

def test_registry():
    assert get_verifier("math") is verify_math
    assert callable(get_verifier("humaneval"))
    with pytest.raises(KeyError, match="known"):
        get_verifier("nope")

    def exact(text, problem):
        return text.strip(), text.strip() == str(problem["answer"])

    register_verifier("organism_exact", exact)
    try:
        assert get_verifier("organism_exact")(" 4 ", {"answer": 4}) == ("4", True)
        with pytest.raises(ValueError, match="already registered"):
            register_verifier("organism_exact", lambda t, p: (None, False))
        register_verifier("organism_exact", exact)                   # same function: fine
        with pytest.raises(TypeError):
            register_verifier("bad", 3)
    finally:
        VERIFIERS.pop("organism_exact", None)


def test_math_verifier_takes_a_problem_dict():
    problem = {"id": "amc23-01", "problem": "...", "answer": r"\frac{5}{6}"}
    assert get_verifier("math")(r"so \boxed{\frac{10}{12}}", problem) == (r"\frac{10}{12}", True)


def test_humaneval_verifier_via_registry():
    problem = {"prompt": "def f(x):\n", "entry_point": "f",
               "test": "def check(c):\n    assert c(3) == 9\n"}
    assert get_verifier("humaneval")("    return x * x\n", problem)[1] is True


def test_helper_process_that_hangs_is_killed(monkeypatch):
    """A hang math-verify's own alarm cannot break (e.g. in C code) is cut by killing the helper."""
    hang = ("import sys, time; print('{\"ready\": true}', flush=True); sys.stdin.readline(); "
            "time.sleep(600)")
    monkeypatch.setattr(V, "_WORKER_CODE", hang)
    monkeypatch.setattr(V._Worker, "WALL_FACTOR", 1)
    monkeypatch.setattr(V._Worker, "WALL_GRACE", 0.5)
    out = {}

    def run():
        out["result"] = verify_math(r"\boxed{1}", "1", timeout=1)
        out["worker"] = V._local.worker

    t0 = time.monotonic()
    th = threading.Thread(target=run)
    th.start()
    th.join(timeout=60)
    assert out["result"] == ("1", False)
    assert time.monotonic() - t0 < 30
    assert out["worker"].proc is None        # killed and forgotten; the next call starts afresh


# ------------------------------------------------------------------------------- verify status

@pytest.mark.parametrize("text, gold, expected", [
    (r"so \boxed{204}", "204", ("204", True, "ok")),
    (r"so \boxed{205}", "204", ("205", False, "ok")),
    ("the answer is 204", "204", (None, False, "no_box")),
    (r"\boxed{12", "12", (None, False, "no_box")),            # never closed (truncated)
    (r"\boxed{}", "204", ("", False, "no_box")),
    (r"\boxed{ }", "204", (" ", False, "no_box")),
    (r"\boxed{\,}", "204", (r"\,", False, "parse_error")),     # a box math-verify cannot read
    (r"\boxed{" + "1+" * 1000 + "1}", "1001", ("1+" * 1000 + "1", False, "parse_error")),  # too long
])
def test_verify_math_status(text, gold, expected):
    assert V.verify_math_status(text, gold) == expected
    assert verify_math(text, gold) == expected[:2]           # the 2-tuple API is unchanged


def test_verify_math_status_timeout_main_thread_and_isolated():
    for isolate in (False, True):
        t0 = time.monotonic()
        assert V.verify_math_status(r"\boxed{10^{10^{10}}}", "5", timeout=1, isolate=isolate) == \
            ("10^{10^{10}}", False, "timeout")
        assert time.monotonic() - t0 < 60


def test_verify_math_status_parser_crash_is_a_parse_error(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("parser exploded")
    monkeypatch.setattr(V, "_check_math", boom)
    assert V.verify_math_status(r"\boxed{1}", "1") == ("1", False, "parse_error")


def test_unparseable_gold_raises_for_verify_math_but_is_a_status_otherwise(monkeypatch, caplog):
    monkeypatch.setattr(V, "_parse_gold", lambda gold, timeout: (_ for _ in ()).throw(
        V.GoldParseError(f"math-verify could not parse the gold answer {gold!r}")))
    with pytest.raises(ValueError, match="gold answer"):
        verify_math(r"\boxed{1}", "1")
    with caplog.at_level(logging.WARNING, logger="rlsft.verify"):
        assert V.verify_math_status(r"\boxed{1}", "1") == ("1", False, "parse_error")
    assert "gold answer" in caplog.text


def test_helper_process_overrun_is_a_timeout(monkeypatch):
    hang = ("import sys, time; print('{\"ready\": true}', flush=True); sys.stdin.readline(); "
            "time.sleep(600)")
    monkeypatch.setattr(V, "_WORKER_CODE", hang)
    monkeypatch.setattr(V._Worker, "WALL_FACTOR", 1)
    monkeypatch.setattr(V._Worker, "WALL_GRACE", 0.5)
    V.shutdown_workers()  # this thread's helper (if any) restarts with the hanging code
    assert V.verify_math_status(r"\boxed{1}", "1", timeout=1, isolate=True) == ("1", False, "timeout")
    assert V._local.worker.proc is None  # killed; the next check starts a fresh (real) helper


def test_run_verifier_uses_the_status_twin_and_accepts_user_verifiers():
    assert get_verifier("math").with_status is V.verify_math_status
    assert V.run_verifier(get_verifier("math"), "no box", {"answer": "3"}) == (None, False, "no_box")

    def exact(text, problem):                      # a user's verifier, the old 2-tuple API
        return text.strip(), text.strip() == str(problem["answer"])

    def exact3(text, problem):                     # ... or one that reports its own status
        return None, False, "timeout"

    register_verifier("user_exact", exact)
    try:
        assert V.run_verifier(get_verifier("user_exact"), " 4 ", {"answer": 4}) == ("4", True, "ok")
        assert V.run_verifier(exact3, "4", {}) == (None, False, "timeout")
        with pytest.raises(ValueError, match="status"):
            V.run_verifier(lambda t, p: (None, False, "weird"), "4", {})
        with pytest.raises(TypeError, match="must return"):
            V.run_verifier(lambda t, p: ("4", True, "ok", "extra"), "4", {})
    finally:
        VERIFIERS.pop("user_exact", None)


def test_humaneval_status_names_a_sandbox_timeout():
    from rlsft.humaneval import verify_humaneval_status

    problem = {"prompt": "def f(x):\n", "entry_point": "f", "test": "def check(c):\n    assert c(3) == 9\n"}
    assert V.run_verifier(get_verifier("humaneval"), "    return x * x\n", problem) == \
        ("    return x * x\n", True, "ok")
    assert verify_humaneval_status("    return x\n", problem)[1:] == (False, "ok")    # failed: judged
    assert verify_humaneval_status("    while True:\n        pass\n", problem, timeout=1)[1:] == (False, "timeout")


def test_summary_table_counts_statuses():
    df = _samples({"p1": [1, 0, 0, 0], "p2": [0, 0, 0, 0]})
    df["verify_status"] = ["ok", "no_box", "no_box", "timeout", "parse_error", "ok", "ok", "ok"]
    other = _samples({"p1": [1, 1]}, variant="RL")
    other["verify_status"] = "ok"
    out = summary_table(pd.concat([df, other], ignore_index=True)).set_index("variant")
    assert out.loc["Base", ["n_no_box", "n_parse_error", "n_timeout"]].tolist() == [2, 1, 1]
    assert out.loc["RL", ["n_no_box", "n_parse_error", "n_timeout"]].tolist() == [0, 0, 0]
    bad = df.assign(verify_status="maybe")
    with pytest.raises(ValueError, match="verify_status"):
        summary_table(bad)


def test_summary_table_of_an_old_table_without_statuses():
    out = summary_table(_samples({"p1": [1, 0]}))
    assert out[["n_no_box", "n_parse_error", "n_timeout"]].isna().all(axis=None)
    assert out["accuracy"].iloc[0] == 0.5
