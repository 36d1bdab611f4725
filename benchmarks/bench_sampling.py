"""Sampling throughput of the transformers backend on the organism (and vLLM where a GPU is present).

    python benchmarks/bench_sampling.py [--profile organism] [--problems 8] [--M 64] [--variant Base]

Uses a trained model of the profile (run ./run_all.sh first). The transformers backend runs twice on
the same prompts and seed: ``decode="compact"`` (the default, :func:`rlsft.backends.compact_sample`:
rows leave the batch once they stop) and ``decode="generate"`` (``model.generate``, the reference).
Prints completions/s and tokens/s per backend, the speed-up of compact decoding over generate and
whether the two gave the same completions (they must), and writes results/benchmarks/sampling.csv.
A third run compacts the batch at every step at which a row stops (``COMPACT_AT = 0``, the first
version) instead of once the finished rows are ``COMPACT_AT`` of it: ``speedup_vs_eager_compaction``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from rlsft import io
from rlsft.config import REPO_ROOT, load_profile
from rlsft import backends as B
from rlsft.backends import SamplingParams, build_prompt, make_backend
from rlsft.models import resolve
from rlsft.stages.samples import Params, sampling_params


def bench(backend_name: str, path: str, prompts: dict, params: SamplingParams, batch_size: int,
          decode: str | None = None) -> tuple[dict, dict]:
    """One backend's row and its completions."""
    t0 = time.time()
    backend = make_backend(backend_name, path, None, batch_size=batch_size)
    if decode is not None:
        backend.decode = decode
    load = time.time() - t0
    prompts = {k: build_prompt(q, {"style": "raw", "user": "{question}"}, backend.tokenizer) for k, q in prompts.items()}
    t0 = time.time()
    out = backend.generate(prompts, params)
    dt = time.time() - t0
    n = sum(len(v) for v in out.values())
    toks = sum(c.n_tokens for v in out.values() for c in v)
    return {"backend": backend_name + (f" ({decode})" if decode else ""), "completions": n, "tokens": toks,
            "seconds": round(dt, 2), "load_s": round(load, 2), "completions_per_s": round(n / dt, 1),
            "tokens_per_s": round(toks / dt, 1)}, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="organism")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--M", type=int, default=64)
    ap.add_argument("--variant", default="Base")
    ap.add_argument("--out", default=str(REPO_ROOT / "results" / "benchmarks" / "sampling.csv"))
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    root = REPO_ROOT / "results" / profile["name"]
    fam = next(iter(profile["families"]))
    path, _ = resolve(profile, root, fam, args.variant)
    problems = pd.read_parquet(root / "data" / "problems.parquet").head(args.problems)
    prompts = dict(zip(problems["problem"], problems["prompt"]))
    stage = Params(M=args.M)  # the samples stage's defaults (temperature, top_p, max_new_tokens, batch size)
    params = sampling_params(stage, seed=0)
    ref, ref_out = bench("transformers", path, prompts, params, stage.batch_size, decode="generate")
    ours, ours_out = bench("transformers", path, prompts, params, stage.batch_size, decode="compact")
    ours["speedup_vs_generate"] = round(ref["seconds"] / ours["seconds"], 2)
    ours["same_completions"] = ours_out == ref_out
    # the same without the deferred compaction: finished rows leave the cache at every step
    default_at, B.COMPACT_AT = B.COMPACT_AT, 0.0
    try:
        eager, eager_out = bench("transformers", path, prompts, params, stage.batch_size, decode="compact")
    finally:
        B.COMPACT_AT = default_at
    eager["backend"] += ", compacted at every stop"
    eager["speedup_vs_generate"] = round(ref["seconds"] / eager["seconds"], 2)
    eager["same_completions"] = eager_out == ref_out
    ours["speedup_vs_eager_compaction"] = round(eager["seconds"] / ours["seconds"], 2)
    rows = [ref, eager, ours]
    try:
        import torch

        if torch.cuda.is_available():
            rows.append(bench("vllm", path, prompts, params, stage.batch_size)[0])
    except Exception as exc:  # noqa: BLE001 - report and carry on
        print("vllm skipped:", exc)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    io.write_csv(Path(args.out), df)
    return 0 if ours["same_completions"] and eager["same_completions"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
