"""Benchmark of the all-pairs chrF matrix (PAPER.md §5, §11): ``rlsft.trajectories.chrf_matrix`` vs
``fastchrf.pairwise_chrf`` vs ``sacrebleu.metrics.CHRF().sentence_score``, in the same run.

The workload is the paper's: M = 256 responses of one problem, each several kB of reasoning-like
text (sentences of a shared, Zipf-distributed vocabulary mixed with numbers and LaTeX-ish tokens,
so responses overlap as samples of one problem do). All M^2 ordered pairs are scored by
``chrf_matrix`` (single BLAS thread) and by ``fastchrf.pairwise_chrf([texts], [texts])`` (one batch
row: one thread). sacrebleu is far too slow for all pairs: it is timed on ``--sacrebleu-pairs``
random ordered pairs and the time is **extrapolated** linearly to M^2 pairs (the ``extrapolated``
column says so). Every method is also checked against ``chrf_matrix`` (max |difference|).

Usage::

    PYTHONPATH=lib python benchmarks/bench_chrf.py [--n-texts 256] [--chars 5000] [--seed 0]
        [--sacrebleu-pairs 300] [--skip-fastchrf] [--out results/benchmarks/chrf.csv]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rlsft.io import write_csv  # noqa: E402
from rlsft.trajectories import chrf_matrix  # noqa: E402

WORDS = """the of and to a in is that we for it this with as be by on are so then let which from can at
or have an not if number value sum each since therefore thus hence note compute find get gives equal
equals total case cases first second third next last step consider check wait actually verify again
correct answer final result possible integer integers positive negative real root roots equation
equations function term terms sequence series factor factors prime primes divisible remainder modulo
digit digits triangle circle angle side sides area length radius point points line lines probability
ways choose choices count counting pairs order ordered distinct same different both substituting
simplify solve solving expand expanding multiply dividing add adding subtract subtracting square
squares cube cubes minimum maximum greater less than least most all any only also but however because
must should would could might maybe hmm okay right now here there where when how what why one two
three four five six seven eight nine ten hundred thousand half quarter fraction ratio rate""".split()

TEMPLATES = (
    r"Let $x = {a}$ and $y = {b}$.", r"Then $\frac{{{a}}}{{{b}}} = {c}$.",
    r"So $x^2 + {a}x + {b} = 0$ gives $x = {c}$.", r"Wait, let me double-check: ${a} \times {b} = {c}$.",
    r"Therefore the answer is $\boxed{{{c}}}$.", r"Hmm, $\sqrt{{{a}}} \approx {c}$.",
    r"We have $a_{{{a}}} = a_{{{b}}} + {c}$.", r"Since ${a} \equiv {b} \pmod{{{c}}}$, we get",
    r"\[ \sum_{{k=1}}^{{{a}}} k^{{{b}}} = {c} \]", r"$\binom{{{a}}}{{{b}}} = {c}$ ways.",
)


def make_texts(n_texts: int, chars: int, seed: int = 0) -> list[str]:
    """``n_texts`` reasoning-like texts of exactly ``chars`` characters (deterministic in ``seed``).

    >>> t = make_texts(3, 200, seed=1)
    >>> len(t), {len(x) for x in t}, t == make_texts(3, 200, seed=1)
    (3, {200}, True)
    """
    if n_texts < 0 or chars < 0:
        raise ValueError(f"n_texts and chars must be >= 0, got {n_texts}, {chars}")
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1) ** 1.1
    p /= p.sum()
    out = []
    for _ in range(n_texts):
        parts, length = [], 0
        while length < chars:
            if rng.random() < 0.35:
                s = TEMPLATES[rng.integers(len(TEMPLATES))].format(
                    a=rng.integers(1, 60), b=rng.integers(1, 60), c=rng.integers(1, 1000))
            else:
                s = " ".join(rng.choice(WORDS, rng.integers(5, 16), p=p)).capitalize() + "."
            parts.append(s)
            length += len(s) + 1
        out.append(" ".join(parts)[:chars])
    return out


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(n_texts: int, chars: int, seed: int, sacrebleu_pairs: int, skip_fastchrf: bool, repeats: int):
    """Rows (one per method) of the benchmark table as a DataFrame."""
    texts = make_texts(n_texts, chars, seed)
    M = len(texts)
    print(f"{M} texts of {chars} characters (seed {seed}); {M * M} ordered pairs, {M * (M - 1) // 2} unordered",
          flush=True)
    t_ours = float("inf")
    for _ in range(max(1, repeats)):
        t, C = _timed(lambda: chrf_matrix(texts, n_jobs=1))
        t_ours = min(t_ours, t)
    rows = [dict(method="rlsft.chrf_matrix", seconds=t_ours, pairs_timed=M * M, extrapolated=False,
                 max_abs_diff=0.0, threads=1)]
    print(f"  rlsft.chrf_matrix     {t_ours:9.3f} s", flush=True)

    if not skip_fastchrf:
        import fastchrf

        t, F = _timed(lambda: np.asarray(fastchrf.pairwise_chrf([texts], [texts])[0], dtype=np.float64))
        rows.append(dict(method="fastchrf.pairwise_chrf", seconds=t, pairs_timed=M * M, extrapolated=False,
                         max_abs_diff=float(np.abs(F - C).max()), threads=1))
        print(f"  fastchrf.pairwise_chrf {t:9.3f} s", flush=True)

    from sacrebleu.metrics import CHRF

    metric = CHRF()
    rng = np.random.default_rng(seed + 1)
    k = min(sacrebleu_pairs, M * M)
    flat = rng.choice(M * M, size=k, replace=False)
    pairs = [(int(f // M), int(f % M)) for f in flat]
    t, S = _timed(lambda: [metric.sentence_score(texts[i], [texts[j]]).score for i, j in pairs])
    diff = max((abs(s - C[i, j]) for s, (i, j) in zip(S, pairs)), default=0.0)
    rows.append(dict(method="sacrebleu.CHRF.sentence_score", seconds=t / max(k, 1) * M * M, pairs_timed=k,
                     extrapolated=True, max_abs_diff=float(diff), threads=1))
    print(f"  sacrebleu ({k} pairs)  {t:9.3f} s -> {t / max(k, 1) * M * M:9.1f} s extrapolated to {M * M} pairs",
          flush=True)

    df = pd.DataFrame(rows)
    df.insert(1, "n_texts", M)
    df.insert(2, "chars", chars)
    df["slowdown_vs_rlsft"] = df["seconds"] / t_ours
    df["seed"] = seed
    df["cpu_count"] = os.cpu_count()
    return df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-texts", type=int, default=256)
    ap.add_argument("--chars", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sacrebleu-pairs", type=int, default=300,
                    help="ordered pairs scored by sacrebleu; its time is extrapolated to all pairs")
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs of chrf_matrix")
    ap.add_argument("--skip-fastchrf", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "chrf.csv"))
    args = ap.parse_args(argv)
    if args.n_texts < 1 or args.chars < 1 or args.sacrebleu_pairs < 1:
        ap.error("--n-texts, --chars and --sacrebleu-pairs must be >= 1")

    df = run(args.n_texts, args.chars, args.seed, args.sacrebleu_pairs, args.skip_fastchrf, args.repeats)
    table = df[["method", "seconds", "pairs_timed", "extrapolated", "slowdown_vs_rlsft", "max_abs_diff"]]
    print()
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    write_csv(args.out, df)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
