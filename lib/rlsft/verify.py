"""Answer checking and pass@k (PAPER.md §4).

- ``last_boxed``     the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` of a response
- ``verify_math``    last boxed answer vs. the gold answer with ``math-verify`` [default]
- ``pass_at_k``      the unbiased estimator of Chen et al. (2021), product form
- ``pass_at_k_table`` / ``summary_table``  per-model tables from a samples DataFrame
- ``VERIFIERS``      a registry: name -> ``fn(text, problem) -> (extracted, correct)``

Every registered verifier takes the response text and the benchmark problem (the dict that
``rlsft.benchmarks.load_benchmark`` returns; math verifiers also accept the gold answer string)
and returns ``(extracted, correct)``: the extracted answer (None when nothing could be
extracted) and a bool.

math-verify times its parsing and comparison with ``signal.alarm``, which only works in the main
thread. ``verify_math`` therefore uses math-verify's own timeouts in the main thread and, in any
other thread (or with ``isolate=True``), runs the check in a helper process that is killed when
it overruns, so a pathological answer can never hang the caller.

>>> last_boxed(r"so \\boxed{\\frac{1}{2}} and finally \\boxed{3}")
'3'
>>> verify_math(r"The answer is $\\boxed{\\dfrac{1}{2}}$.", "0.5")
('\\\\dfrac{1}{2}', True)
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
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SAMPLE_KEY = ("family", "variant", "benchmark")
"""The columns that identify one model on one benchmark."""

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


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(f"${_normalise_answer(gold)}$", [LatexExtractionConfig(), ExprExtractionConfig()],
                   parsing_timeout=timeout)
    if not parsed:
        raise ValueError(f"math-verify could not parse the gold answer {gold!r}")
    return parsed


def _check_math(content: str, gold: str, timeout: int | None) -> bool:
    """math-verify comparison of an extracted answer with the gold (no thread handling)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold_parsed = _parse_gold(gold, timeout)
    pred = parse(f"${_normalise_answer(content)}$", [LatexExtractionConfig(), ExprExtractionConfig()],
                 parsing_timeout=timeout)
    if not pred:
        return False
    return bool(verify(gold_parsed, pred, timeout_seconds=timeout))


def verify_math(text: str, gold: Any, timeout: int = 5, isolate: bool | None = None
                ) -> tuple[str | None, bool]:
    """Extract the last boxed answer of ``text`` and check it against ``gold`` with math-verify.

    ``gold`` is the gold answer (str or number) or a benchmark problem dict with an ``answer``.
    Returns ``(extracted, correct)``; ``extracted`` is None when the response has no (closed)
    box. Never raises on odd *responses*: parser errors and timeouts count as incorrect (logged).
    ``timeout`` (whole seconds) bounds parsing and comparison each. ``isolate``: run the check in
    a helper process killed on overrun; default (None) = only when not in the main thread, where
    math-verify's signal-based timeout cannot work.

    >>> verify_math(r"\\boxed{12\\text{ cm}}", "12")
    ('12\\\\text{ cm}', True)
    >>> verify_math(r"\\boxed{1,000}", 1000)
    ('1,000', True)
    >>> verify_math(r"\\boxed{30^\\circ}", "30")[1], verify_math("no box: 204", "204")
    (True, (None, False))
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout must be a whole number of seconds >= 1, got {timeout!r}")
    gold_s = _gold_text(gold)
    content = last_boxed(text)
    if content is None:
        return None, False
    if not content.strip():
        return content, False
    if len(content) > MAX_ANSWER_CHARS:
        log.warning("boxed answer of %d chars not parsed (> MAX_ANSWER_CHARS=%d): incorrect",
                    len(content), MAX_ANSWER_CHARS)
        return content, False
    if isolate is None:
        isolate = threading.current_thread() is not threading.main_thread()
    if isolate:
        return content, _isolated_check(content, gold_s, timeout)
    _parse_gold(gold_s, timeout)  # a gold that cannot be parsed is a data error: raise
    try:
        return content, _check_math(content, gold_s, timeout)
    except Exception as exc:  # noqa: BLE001 - odd responses must not stop a run
        log.warning("math-verify failed on %r vs %r (%s: %s): incorrect", content[:80], gold_s,
                    type(exc).__name__, exc)
        return content, False


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
            ok, err = _check_math(req["content"], req["gold"], req["timeout"]), None
        except Exception as exc:  # noqa: BLE001
            ok, err = False, f"{type(exc).__name__}: {exc}"
        out.write(json.dumps({"ok": bool(ok), "err": err}) + "\n")
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

    def check(self, content: str, gold: str, timeout: int) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps({"content": content, "gold": gold, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(self.WALL_FACTOR * timeout + self.WALL_GRACE)
        if reply is None:
            log.warning("math-verify helper overran on %r vs %r: killed, incorrect", content[:80], gold)
            self.close()
            return False
        if reply["err"]:
            if reply["err"].startswith("ValueError: math-verify could not parse the gold"):
                raise ValueError(reply["err"].split(": ", 1)[1])
            log.warning("math-verify failed on %r vs %r (%s): incorrect", content[:80], gold,
                        reply["err"])
        return reply["ok"]

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


def _isolated_check(content: str, gold: str, timeout: int) -> bool:
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


def summary_table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, variant, benchmark): sizes, accuracy, pass@1, pass@M, lengths.

    Columns: n_problems, n_samples, M (most samples per problem), accuracy (mean of correct over
    all answers), pass_at_1 and pass_at_M (means over problems; pass_at_M over the problems with
    M samples), truncation_rate (share of finish_reason == "length"), mean_tokens (n_tokens),
    mean_chars (length of text). Columns whose input column is absent are NaN.

    >>> df = pd.DataFrame({"family": "f", "variant": "RL", "benchmark": "b", "problem": "p",
    ...                    "sample": [0, 1], "correct": [True, False], "text": ["ab", "abcd"],
    ...                    "finish_reason": ["stop", "length"], "n_tokens": [1, 3]})
    >>> cols = ["M", "pass_at_1", "pass_at_M", "truncation_rate", "mean_chars"]
    >>> summary_table(df)[cols].iloc[0].astype(float).tolist()
    [2.0, 0.5, 1.0, 0.5, 3.0]
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
            "truncation_rate": (float((grp["finish_reason"] == "length").mean())
                                if "finish_reason" in grp else float("nan")),
            "mean_tokens": float(grp["n_tokens"].mean()) if "n_tokens" in grp else float("nan"),
            "mean_chars": (float(grp["text"].fillna("").astype(str).str.len().mean())
                           if "text" in grp else float("nan")),
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

Verifier = Callable[[str, Any], "tuple[str | None, bool]"]


def _verify_humaneval(text: str, problem: Mapping) -> tuple[str | None, bool]:
    """Lazy wrapper: ``rlsft.humaneval.verify_humaneval`` (imported on first use)."""
    from rlsft.humaneval import verify_humaneval

    return verify_humaneval(text, problem)


VERIFIERS: dict[str, Verifier] = {"math": verify_math, "humaneval": _verify_humaneval}
"""name -> ``fn(text, problem) -> (extracted, correct)``. Extend with ``register_verifier``."""


def register_verifier(name: str, fn: Verifier, overwrite: bool = False) -> None:
    """Register ``fn(text, problem) -> (extracted, correct)`` under ``name``.

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
