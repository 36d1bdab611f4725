"""Answer checking and pass@k (PAPER.md §4).

- ``last_boxed``     the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` of a response
- ``verify_math``    last boxed answer vs. the gold answer with ``math-verify`` [default]
- ``verify_math_status``  the same, also returning the verify status (below)
- ``pass_at_k``      the unbiased estimator of Chen et al. (2021), product form
- ``pass_at_k_table`` / ``summary_table``  per-model tables from a samples DataFrame
- ``VERIFIERS``      a registry: name -> ``fn(text, problem) -> (extracted, correct)``
- ``run_verifier`` / ``as_verify_result``  any verifier's answer as ``(extracted, correct, status)``

Every registered verifier takes the response text and the benchmark problem (the dict that
``rlsft.benchmarks.load_benchmark`` returns; math verifiers also accept the gold answer string)
and returns ``(extracted, correct)``: the extracted answer (None when nothing could be
extracted) and a bool; or ``(extracted, correct, status)``.

The verify status (``STATUSES``) says why an answer counts as incorrect when the verifier could
not judge it: ``ok`` (the verifier ran; ``correct`` is its verdict), ``no_box`` (no ``\\boxed{}``
answer), ``parse_error`` (math-verify could not parse the answer or the gold), ``timeout`` (the
check ran out of time). A verifier that returns a 2-tuple reports ``ok``; a built-in verifier
carries its status-reporting twin as ``fn.with_status``, which ``run_verifier`` uses.

math-verify times its parsing and comparison with ``signal.alarm``, which only works in the main
thread. ``verify_math`` therefore uses math-verify's own timeouts in the main thread and, in any
other thread (or with ``isolate=True``), runs the check in a helper process that is killed when
it overruns, so a pathological answer can never hang the caller.

>>> last_boxed(r"so \\boxed{\\frac{1}{2}} and finally \\boxed{3}")
'3'
>>> verify_math(r"The answer is $\\boxed{\\dfrac{1}{2}}$.", "0.5")
('\\\\dfrac{1}{2}', True)
>>> verify_math_status("no box: 7", "7")
(None, False, 'no_box')
>>> round(pass_at_k(10, 3, 2), 4)
0.5333
"""
from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from itertools import product
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from rlsft import humaneval

log = logging.getLogger(__name__)

SAMPLE_KEY = ("family", "variant", "benchmark")
"""The columns that identify one model on one benchmark."""

STATUSES = ("ok", "no_box", "parse_error", "timeout")
"""Values of the ``verify_status`` column: the verifier ran (``ok``), or why it could not judge."""

# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at ``text[start] == '{'`` and the index after it.

    Escaped braces (``\\{``, ``\\}``) do not count. None when the group is not closed.

    >>> _braced("{a{b}c}d", 0)
    ('a{b}c', 7)
    >>> _braced(r"{\\{1\\}}", 0)
    ('\\\\{1\\\\}', 7)
    >>> _braced("{open", 0) is None
    True
    """
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    return None


def last_boxed(text: str | None) -> str | None:
    """Content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    Also accepts ``\\boxed 5`` (no braces: the token up to the next space or ``$``). When the last
    box is not closed (a truncated response) the result is None: the answer was never finished.
    None also when there is no box.

    >>> last_boxed(r"\\boxed{1} then \\boxed{\\frac{a}{b}}")
    '\\\\frac{a}{b}'
    >>> last_boxed(r"\\fbox{7}")
    '7'
    >>> last_boxed(r"so $\\boxed 42$") , last_boxed("no box") , last_boxed(r"\\boxed{12")
    ('42', None, None)
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    pos = matches[-1].end()
    rest = text[pos:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        found = _braced(text, pos + len(rest) - len(stripped))
        return None if found is None else found[0]
    if rest[:1].isspace() and stripped:
        return re.split(r"[\s$]", stripped, maxsplit=1)[0]
    return None


# ----------------------------------------------------------------------------------------------
# math-verify
# ----------------------------------------------------------------------------------------------

MAX_ANSWER_CHARS = 1000
"""Boxed answers longer than this are not parsed (marked incorrect): a guard against inputs that
make the LaTeX parser crawl. Competition answers are far shorter."""


def _normalise_answer(s: str) -> str:
    """Small clean-ups math-verify does not do itself (unicode degree sign, thin spaces).

    >>> _normalise_answer("30°")
    '30^\\\\circ'
    """
    s = s.replace("\u00b0", "^\\circ").replace("\u2212", "-")
    s = re.sub(r"\\[,;:! ]|~", " ", s)
    return s.strip()


def _gold_text(gold: Any) -> str:
    if isinstance(gold, Mapping):
        if "answer" not in gold:
            raise KeyError(f"problem dict has no 'answer' key (keys: {sorted(gold)})")
        gold = gold["answer"]
    if isinstance(gold, bool) or gold is None:
        raise TypeError(f"gold answer must be a str or a number, got {gold!r}")
    if isinstance(gold, float) and gold.is_integer():
        gold = int(gold)
    gold = str(gold).strip()
    if not gold:
        raise ValueError("gold answer is empty")
    return gold


class GoldParseError(ValueError):
    """math-verify could not parse a gold answer (a data problem, not a model's)."""


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(f"${_normalise_answer(gold)}$", [LatexExtractionConfig(), ExprExtractionConfig()],
                   parsing_timeout=timeout)
    if not parsed:
        raise GoldParseError(f"math-verify could not parse the gold answer {gold!r}")
    return parsed


def _check_math(content: str, gold: str, timeout: int | None) -> tuple[bool, str]:
    """math-verify comparison of an extracted answer with the gold (no thread handling):
    ``(correct, status)`` with status ``ok``, ``parse_error`` (answer not parsed) or ``timeout``.

    Each (gold, answer) reading is compared on its own, as ``math_verify.verify`` does, so that a
    timed-out comparison is told apart from a wrong answer.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    gold_parsed = _parse_gold(gold, timeout)
    try:
        pred = parse(f"${_normalise_answer(content)}$", [LatexExtractionConfig(), ExprExtractionConfig()],
                     parsing_timeout=timeout, raise_on_error=True)
    except TimeoutException:
        return False, "timeout"
    if not pred:
        return False, "parse_error"
    timed_out = False
    for g, t in product(gold_parsed, pred):
        try:
            if verify(g, t, timeout_seconds=timeout, raise_on_error=True):
                return True, "ok"
        except TimeoutException:
            timed_out = True
        except Exception:  # noqa: BLE001 - this reading cannot be compared: try the next one
            continue
    return False, "timeout" if timed_out else "ok"


def verify_math(text: str, gold: Any, timeout: int = 5, isolate: bool | None = None
                ) -> tuple[str | None, bool]:
    """Extract the last boxed answer of ``text`` and check it against ``gold`` with math-verify.

    ``gold`` is the gold answer (str or number) or a benchmark problem dict with an ``answer``.
    Returns ``(extracted, correct)``; ``extracted`` is None when the response has no (closed)
    box. Never raises on odd *responses*: parser errors and timeouts count as incorrect (logged;
    ``verify_math_status`` also says which). A gold answer math-verify cannot parse raises
    ``GoldParseError`` (a ``ValueError``). ``timeout`` (whole seconds) bounds parsing and
    comparison each. ``isolate``: run the check in a helper process killed on overrun; default
    (None) = only when not in the main thread, where math-verify's signal-based timeout cannot work.

    >>> verify_math(r"\\boxed{12\\text{ cm}}", "12")
    ('12\\\\text{ cm}', True)
    >>> verify_math(r"\\boxed{1,000}", 1000)
    ('1,000', True)
    >>> verify_math(r"\\boxed{30^\\circ}", "30")[1], verify_math("no box: 204", "204")
    (True, (None, False))
    """
    extracted, correct, _ = _verify_math(text, gold, timeout, isolate, strict_gold=True)
    return extracted, correct


def verify_math_status(text: str, gold: Any, timeout: int = 5, isolate: bool | None = None
                       ) -> tuple[str | None, bool, str]:
    """``verify_math`` that also says how the check went: ``(extracted, correct, status)``.

    ``status`` is ``ok`` (math-verify compared the answer; ``correct`` is the verdict),
    ``no_box`` (no closed, non-empty ``\\boxed{}``), ``parse_error`` (math-verify could not parse
    the answer, or the gold answer: logged as a warning, since that is a data problem) or
    ``timeout`` (parsing or comparison ran out of time). ``correct`` is False unless ``ok``.

    >>> verify_math_status(r"\\boxed{\\frac{1}{2}}", "0.5")
    ('\\\\frac{1}{2}', True, 'ok')
    >>> verify_math_status(r"\\boxed{7}", "8"), verify_math_status(r"\\boxed{}", "8")
    (('7', False, 'ok'), ('', False, 'no_box'))
    >>> verify_math_status(r"\\boxed{\\,}", "8")  # a box holding only a thin space
    ('\\\\,', False, 'parse_error')
    """
    return _verify_math(text, gold, timeout, isolate, strict_gold=False)


verify_math.with_status = verify_math_status


def _verify_math(text: str, gold: Any, timeout: int, isolate: bool | None, strict_gold: bool
                 ) -> tuple[str | None, bool, str]:
    """The check behind ``verify_math`` (``strict_gold``: an unparseable gold raises) and
    ``verify_math_status`` (it is a ``parse_error``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout must be a whole number of seconds >= 1, got {timeout!r}")
    gold_s = _gold_text(gold)
    content = last_boxed(text)
    if content is None or not content.strip():
        return content, False, "no_box"
    if len(content) > MAX_ANSWER_CHARS:
        log.warning("boxed answer of %d chars not parsed (> MAX_ANSWER_CHARS=%d): incorrect",
                    len(content), MAX_ANSWER_CHARS)
        return content, False, "parse_error"
    if isolate is None:
        isolate = threading.current_thread() is not threading.main_thread()
    try:
        if isolate:
            ok, status = _isolated_check(content, gold_s, timeout)
            return content, ok, status
        _parse_gold(gold_s, timeout)  # a gold that cannot be parsed is a data error
    except GoldParseError as exc:
        if strict_gold:
            raise
        log.warning("%s: every answer to it is a parse_error", exc)
        return content, False, "parse_error"
    try:
        ok, status = _check_math(content, gold_s, timeout)
        return content, ok, status
    except Exception as exc:  # noqa: BLE001 - odd responses must not stop a run
        log.warning("math-verify failed on %r vs %r (%s: %s): incorrect", content[:80], gold_s,
                    type(exc).__name__, exc)
        return content, False, "parse_error"


# -- helper process for non-main threads ---------------------------------------------------------

_WORKER_CODE = "from rlsft.verify import _worker_loop; _worker_loop()"


def _worker_loop() -> None:
    """Entry point of the helper process: JSON lines in, JSON lines out (main thread: signals work)."""
    import math_verify  # noqa: F401 - warm the import before announcing readiness

    out = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol channel ...
    os.dup2(2, 1)                                  # ... and stray prints go to stderr
    sys.stdout = sys.stderr
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        try:
            (ok, status), err = _check_math(req["content"], req["gold"], req["timeout"]), None
        except Exception as exc:  # noqa: BLE001
            ok, status, err = False, "parse_error", f"{type(exc).__name__}: {exc}"
        out.write(json.dumps({"ok": bool(ok), "status": status, "err": err}) + "\n")
        out.flush()


class _Worker:
    """One helper process, used by one thread at a time; restarted after a kill."""

    START_TIMEOUT = 120.0
    WALL_FACTOR, WALL_GRACE = 3, 5.0  # hard limit per check: 3 x timeout + 5 s (parse + verify)

    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        lib = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     text=True, bufsize=1)
        if self._read(self.START_TIMEOUT) is None:
            self.close()
            raise RuntimeError("the math-verify helper process did not start")

    def _read(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def check(self, content: str, gold: str, timeout: int) -> tuple[bool, str]:
        """``(correct, status)``; an overrun kills the helper and is a ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps({"content": content, "gold": gold, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(self.WALL_FACTOR * timeout + self.WALL_GRACE)
        if reply is None:
            log.warning("math-verify helper overran on %r vs %r: killed, incorrect", content[:80], gold)
            self.close()
            return False, "timeout"
        if reply["err"]:
            if reply["err"].startswith("GoldParseError: "):
                raise GoldParseError(reply["err"].split(": ", 1)[1])
            log.warning("math-verify failed on %r vs %r (%s): incorrect", content[:80], gold,
                        reply["err"])
        return reply["ok"], reply.get("status", "ok")

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                pass
            for fh in (self.proc.stdin, self.proc.stdout):
                try:
                    fh.close()
                except Exception:  # noqa: BLE001
                    pass
            self.proc = None


_local = threading.local()
_workers: list[_Worker] = []
_workers_lock = threading.Lock()


def _isolated_check(content: str, gold: str, timeout: int) -> tuple[bool, str]:
    worker = getattr(_local, "worker", None)
    if worker is None:
        worker = _local.worker = _Worker()
        with _workers_lock:
            _workers.append(worker)
    return worker.check(content, gold, timeout)


@atexit.register
def shutdown_workers() -> None:
    """Stop the helper processes used by ``verify_math`` outside the main thread."""
    with _workers_lock:
        for w in _workers:
            w.close()


# ----------------------------------------------------------------------------------------------
# pass@k
# ----------------------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)``.

    Product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``: no huge binomials, stable for n = 256+.

    >>> pass_at_k(256, 0, 1), pass_at_k(256, 256, 1), pass_at_k(4, 1, 4)
    (0.0, 1.0, 1.0)
    >>> pass_at_k(5, 2, 1)
    0.4
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if n < 1:
        raise ValueError(f"n (samples) must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c (correct samples) must be in [0, n={n}], got {c}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"pass@k needs k <= n: k={k} > n={n} samples")
    if n - c < k:
        return 1.0
    if k == 1:
        return c / n
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def default_ks(m: int) -> list[int]:
    """k = 1, 2, 4, ... up to ``m``, and ``m`` itself.

    >>> default_ks(256), default_ks(6), default_ks(1)
    ([1, 2, 4, 8, 16, 32, 64, 128, 256], [1, 2, 4, 6], [1])
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    ks = [1 << i for i in range(m.bit_length()) if (1 << i) <= m]
    return ks if ks[-1] == m else ks + [m]


def _per_problem(samples: pd.DataFrame) -> pd.DataFrame:
    """Validated per-problem counts: family, variant, benchmark, problem, n, c."""
    if not isinstance(samples, pd.DataFrame):
        raise TypeError(f"samples must be a pandas DataFrame, got {type(samples).__name__}")
    need = [*SAMPLE_KEY, "problem", "sample", "correct"]
    missing = [c for c in need if c not in samples.columns]
    if missing:
        raise ValueError(f"samples lacks columns {missing}; it has {list(samples.columns)}")
    if samples.empty:
        raise ValueError("samples is empty: no answers to score")
    if samples["correct"].isna().any():
        raise ValueError(f"samples has {int(samples['correct'].isna().sum())} rows with correct = NaN")
    dup = samples.duplicated([*SAMPLE_KEY, "problem", "sample"])
    if dup.any():
        first = samples.loc[dup, [*SAMPLE_KEY, "problem", "sample"]].iloc[0].to_dict()
        raise ValueError(f"samples has {int(dup.sum())} duplicate (model, problem, sample) rows, "
                         f"e.g. {first}")
    df = samples[[*SAMPLE_KEY, "problem"]].copy()
    df["correct"] = samples["correct"].astype(bool).astype(int)
    g = df.groupby([*SAMPLE_KEY, "problem"], sort=False)["correct"]
    return g.agg(n="size", c="sum").reset_index()


def _mean_pass(counts: pd.DataFrame, k: int, label: str) -> tuple[float, int]:
    """Mean pass@k over the problems with n >= k (the others are logged and skipped)."""
    ok = counts["n"] >= k
    if (~ok).any():
        log.info("%s: pass@%d skips %d problem(s) with fewer than %d samples", label, k,
                 int((~ok).sum()), k)
    if not ok.any():
        return float("nan"), 0
    vals = [pass_at_k(int(n), int(c), k) for n, c in zip(counts.loc[ok, "n"], counts.loc[ok, "c"])]
    return float(np.mean(vals)), int(ok.sum())


def pass_at_k_table(samples: pd.DataFrame, ks: Iterable[int] | None = None) -> pd.DataFrame:
    """Mean over problems of pass@k, per (family, variant, benchmark) and k.

    ``samples``: one row per answer with family, variant, benchmark, problem, sample, correct.
    ``ks`` default: 1, 2, 4, ..., M (and M), M = the most samples any problem of that model has.
    Each problem uses its own n; a k above a problem's n skips that problem (logged).
    Columns: family, variant, benchmark, k, pass_at_k, n_problems (problems averaged).

    >>> df = pd.DataFrame({"family": "f", "variant": "Base", "benchmark": "b",
    ...                    "problem": ["p1"] * 4 + ["p2"] * 4, "sample": list(range(4)) * 2,
    ...                    "correct": [1, 0, 0, 0, 1, 1, 1, 1]})
    >>> pass_at_k_table(df)[["k", "pass_at_k"]].to_dict("list")
    {'k': [1, 2, 4], 'pass_at_k': [0.625, 0.75, 1.0]}
    """
    counts = _per_problem(samples)
    if ks is not None:
        ks = sorted({int(k) for k in ks})
        if not ks or ks[0] < 1:
            raise ValueError(f"ks must be positive integers, got {ks}")
    rows = []
    for key, grp in counts.groupby(list(SAMPLE_KEY), sort=False):
        label = "/".join(map(str, key))
        for k in ks or default_ks(int(grp["n"].max())):
            value, n_probs = _mean_pass(grp, k, label)
            if n_probs:
                rows.append((*key, k, value, n_probs))
            else:
                log.info("%s: no problem has >= %d samples; pass@%d left out", label, k, k)
    return pd.DataFrame(rows, columns=[*SAMPLE_KEY, "k", "pass_at_k", "n_problems"])


def _truncation_rate(grp: pd.DataFrame) -> float:
    """Share of ``finish_reason == "length"`` among answers whose finish reason is known (imported
    completions may say ``"unknown"``); NaN when none is known.

    >>> _truncation_rate(pd.DataFrame({"finish_reason": ["stop", "length", "unknown"]}))
    0.5
    """
    if "finish_reason" not in grp:
        return float("nan")
    known = grp["finish_reason"][grp["finish_reason"].notna() & (grp["finish_reason"] != "unknown")]
    return float((known == "length").mean()) if len(known) else float("nan")


def summary_table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, variant, benchmark): sizes, accuracy, pass@1, pass@M, lengths.

    Columns: n_problems, n_samples, M (most samples per problem), accuracy (mean of correct over
    all answers), pass_at_1 and pass_at_M (means over problems; pass_at_M over the problems with
    M samples), truncation_rate (share of finish_reason == "length" among known reasons), mean_tokens (n_tokens),
    mean_chars (length of text), and per verify status other than ``ok`` the number of answers
    with it: n_no_box, n_parse_error, n_timeout (answers the verifier could not judge, counted as
    incorrect). Columns whose input column is absent are NaN (older sample tables have no
    ``verify_status``).

    >>> df = pd.DataFrame({"family": "f", "variant": "RL", "benchmark": "b", "problem": "p",
    ...                    "sample": [0, 1], "correct": [True, False], "text": ["ab", "abcd"],
    ...                    "finish_reason": ["stop", "length"], "n_tokens": [1, 3]})
    >>> cols = ["M", "pass_at_1", "pass_at_M", "truncation_rate", "mean_chars"]
    >>> summary_table(df)[cols].iloc[0].astype(float).tolist()
    [2.0, 0.5, 1.0, 0.5, 3.0]
    >>> df["verify_status"] = ["ok", "no_box"]
    >>> summary_table(df)[["n_no_box", "n_parse_error", "n_timeout"]].iloc[0].tolist()
    [1, 0, 0]
    """
    counts = _per_problem(samples)
    rows = []
    for key, grp in samples.groupby(list(SAMPLE_KEY), sort=False):
        cnt = counts
        for col, v in zip(SAMPLE_KEY, key):
            cnt = cnt[cnt[col] == v]
        m = int(cnt["n"].max())
        label = "/".join(map(str, key))
        rows.append({
            **dict(zip(SAMPLE_KEY, key)),
            "n_problems": int(len(cnt)),
            "n_samples": int(len(grp)),
            "M": m,
            "accuracy": float(grp["correct"].astype(bool).mean()),
            "pass_at_1": _mean_pass(cnt, 1, label)[0],
            "pass_at_M": _mean_pass(cnt, m, label)[0],
            "truncation_rate": _truncation_rate(grp),
            "mean_tokens": float(grp["n_tokens"].mean()) if "n_tokens" in grp else float("nan"),
            "mean_chars": (float(grp["text"].fillna("").astype(str).str.len().mean())
                           if "text" in grp else float("nan")),
            **_status_counts(grp),
        })
    return pd.DataFrame(rows)


def _status_counts(grp: pd.DataFrame) -> dict:
    """``{"n_no_box": .., "n_parse_error": .., "n_timeout": ..}`` of one model's answers (NaN
    without a ``verify_status`` column); an unknown status is an error naming the known ones."""
    names = [f"n_{s}" for s in STATUSES[1:]]
    if "verify_status" not in grp:
        return dict.fromkeys(names, float("nan"))
    counts = grp["verify_status"].dropna().astype(str).value_counts()
    unknown = sorted(set(counts.index) - set(STATUSES))
    if unknown:
        raise ValueError(f"samples has verify_status values {unknown}; known statuses: {list(STATUSES)}")
    return {n: int(counts.get(s, 0)) for n, s in zip(names, STATUSES[1:])}


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

Verifier = Callable[[str, Any], "tuple[str | None, bool]"]


def _verify_humaneval(text: str, problem: Mapping) -> tuple[str | None, bool]:
    """``rlsft.humaneval.verify_humaneval``, looked up at call time (so a patched grader is used)."""
    return humaneval.verify_humaneval(text, problem)


def _verify_humaneval_status(text: str, problem: Mapping) -> tuple[str | None, bool, str]:
    """``rlsft.humaneval.verify_humaneval_status`` (a sandbox timeout: ``timeout``), looked up at call time."""
    return humaneval.verify_humaneval_status(text, problem)


_verify_humaneval.with_status = _verify_humaneval_status


VERIFIERS: dict[str, Verifier] = {"math": verify_math, "humaneval": _verify_humaneval}
"""name -> ``fn(text, problem) -> (extracted, correct)``. Extend with ``register_verifier``."""


def register_verifier(name: str, fn: Verifier, overwrite: bool = False) -> None:
    """Register ``fn(text, problem) -> (extracted, correct)`` under ``name``.

    ``fn`` may also return ``(extracted, correct, status)`` with a status of ``STATUSES``, or
    carry such a function as ``fn.with_status`` (see ``run_verifier``).

    >>> register_verifier("exact", lambda text, p: (text.strip(), text.strip() == str(p)))
    >>> get_verifier("exact")(" 4 ", "4")
    ('4', True)
    >>> _ = VERIFIERS.pop("exact")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"verifier name must be a non-empty str, got {name!r}")
    if not callable(fn):
        raise TypeError(f"verifier {name!r} must be callable, got {type(fn).__name__}")
    if name in VERIFIERS and VERIFIERS[name] is not fn and not overwrite:
        raise ValueError(f"a verifier named {name!r} is already registered (pass overwrite=True)")
    VERIFIERS[name] = fn


def get_verifier(name: str) -> Verifier:
    """The verifier registered under ``name``; a KeyError lists the known names."""
    try:
        return VERIFIERS[name]
    except KeyError:
        raise KeyError(f"unknown verifier {name!r}; known: {sorted(VERIFIERS)} "
                       "(add one with rlsft.verify.register_verifier)") from None


def as_verify_result(out: Any, where: str = "verifier") -> tuple[str | None, bool, str]:
    """A verifier's answer as ``(extracted, correct, status)``: a 2-tuple ``(extracted, correct)``
    means the verifier ran (status ``ok``); a 3-tuple carries its own status.

    >>> as_verify_result(("42", 1)), as_verify_result((None, False, "no_box"))
    (('42', True, 'ok'), (None, False, 'no_box'))
    >>> as_verify_result(True)
    Traceback (most recent call last):
    ...
    TypeError: verifier returned True; a verifier must return (extracted, correct) or (extracted, correct, status)
    """
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise TypeError(f"{where} returned {out!r:.200}; a verifier must return (extracted, correct) "
                        "or (extracted, correct, status)")
    extracted, correct, status = (*out, "ok") if len(out) == 2 else out
    if status not in STATUSES:
        raise ValueError(f"{where} returned the status {status!r}; use one of {list(STATUSES)}")
    return extracted, bool(correct), status


def run_verifier(fn: Callable, text: str, problem: Any) -> tuple[str | None, bool, str]:
    """Call a verifier and return ``(extracted, correct, status)``: its ``with_status`` twin when
    it has one (the built-in ``math`` and ``humaneval`` verifiers do), else ``fn`` itself.

    >>> run_verifier(get_verifier("math"), r"\\boxed{3}", "3")
    ('3', True, 'ok')
    >>> run_verifier(lambda text, p: (text, text == p), "4", "4")
    ('4', True, 'ok')
    """
    return as_verify_result(getattr(fn, "with_status", fn)(text, problem),
                            getattr(fn, "__qualname__", "verifier"))


def verify_record(verifier: Callable, text: str, row) -> dict:
    """Verify one answer: ``{"extracted", "correct", "verify_status"}`` for the samples table.

    ``verifier(text, row)`` may return ``(extracted, correct)`` (status ``ok``) or
    ``(extracted, correct, status)`` with a status of ``STATUSES``; a verifier with a
    ``with_status`` twin (the built-in ones) is called through it.

    >>> verify_record(lambda text, row: (text.strip(), text.strip() == row["answer"]), " 4 ", {"answer": "4"})
    {'extracted': '4', 'correct': True, 'verify_status': 'ok'}
    >>> verify_record(lambda text, row: (None, False, "no_box"), "4", {})["verify_status"]
    'no_box'
    """
    fn = getattr(verifier, "with_status", verifier)
    extracted, correct, status = as_verify_result(fn(text, row), "the sample stage's verifier")
    return {"extracted": extracted, "correct": correct, "verify_status": status}
