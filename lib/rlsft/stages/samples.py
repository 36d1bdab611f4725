"""Stage ``samples`` (notebook ``20_sample.ipynb``): M answers per problem from every variant,
each judged by the task's verifier; the same samples feed every later analysis.

For each family and variant (in the canonical variant order) the problems of ``data/`` are sampled
with the chosen backend (:mod:`rlsft.backends`), one parquet shard per problem under
``samples/.shards/`` (resume; a changed problem, verifier or setting resamples only what it
touches, :func:`rlsft.sampling.sample_model`), or, for a variant that names ``completions:``, its
answers are read from files and verified (kept under ``samples/.imported/``). Writes:

- ``samples/<family>/<variant>/<benchmark>.parquet``: one table per model and benchmark;
- ``samples/all_samples.parquet``: every answer (``rlsft.schema.SAMPLE_COLUMNS``);
- ``samples/summary.csv`` and ``samples/pass_at_k.csv``: accuracy, pass@1, pass@M, truncation,
  length and unjudged answers per model and benchmark, and unbiased pass@k for k = 1, 2, 4, ..., M;
- ``samples/models.json``: what each variant was sampled from;
- ``samples/imported_checks.csv`` (profiles that import completions): per family, variant and
  benchmark the problems and samples per problem in the files and those kept, and what was done
  (:func:`balance_imported`): the variants of a family are compared on the problems they share,
  each with the same number of samples.

Scale-out: ``python -m rlsft.stages.samples --profile NAME --shard i/n`` samples one shard of the
problems (one worker per GPU or machine on a shared results folder); the stage run afterwards
merges them, sampling nothing twice.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

import pandas as pd

from rlsft import VARIANTS
from rlsft import completions as CP
from rlsft import config as C
from rlsft import io
from rlsft import tasks
from rlsft import verify
from rlsft.backends import SamplingParams, make_backend
from rlsft.models import resolve
from rlsft.params import build, param
from rlsft.sampling import model_fingerprint, resolved_commit, sample_model

NOTEBOOK = "20_sample.ipynb"
KIND = "compute"
INPUTS = ("data", "train")
OUTPUTS = ("samples",)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``samples``; defaults are the organism profile's (the one source of
    the sampling defaults: ``rlsft.backends.SamplingParams`` has none)."""

    backend: str = param("transformers", "'transformers' (CPU/GPU) or 'vllm' (GPU; on CPU through .venv-vllm)",
                         choices=("transformers", "vllm"))
    M: int = param(64, "samples per problem (paper: 256)", ge=1)
    temperature: float = param(0.6, "paper: 0.6", gt=0, le=2)
    top_p: float = param(0.95, "paper: unknown; 0.95 with T 0.6 (DeepSeek-R1 convention)", gt=0, le=1)
    max_new_tokens: int = param(160, "completion cap (record the truncation rate)", ge=1)
    batch_size: int = param(512, "transformers backend: sequences per generate call", ge=1)
    chunk: int = param(8, "problems per backend call (vLLM batches them)", ge=1)
    task: str = param("navigation", "whose verifier judges the answers: 'navigation' (organism checker), "
                      "'benchmarks' (math-verify / HumanEval) or 'completions' (as benchmarks, math "
                      "for unregistered ones)", choices=tasks.NAMES)
    workers: int = param(2, "transformers backend on CPU: variants sampled at once, each in its own process with "
                         "its share of the torch threads (1: one after another); the samples are the same", ge=1)
    imported_balance: str = param("subsample", "families with imported completions whose variants differ in "
                                  "problems or samples per problem: 'subsample' (the common problems, the first "
                                  "n samples by sample index; logged, samples/imported_checks.csv) or 'refuse'",
                                  choices=CP.BALANCE_MODES)


def sampling_params(params: Params, seed: int) -> SamplingParams:
    """The backends' sampling settings from the stage's parameters and the profile's seed.

    >>> sampling_params(Params(), 0)
    SamplingParams(n=64, temperature=0.6, top_p=0.95, max_new_tokens=160, seed=0, stop_token_ids=(), stop=())
    """
    return SamplingParams(n=params.M, temperature=params.temperature, top_p=params.top_p,
                          max_new_tokens=params.max_new_tokens, seed=int(seed))


def variant_params(params: SamplingParams, vspec: dict) -> SamplingParams:
    """The stage's sampling parameters with a variant's stop settings (``stop_token_ids``, ``stop``).

    >>> variant_params(sampling_params(Params(), 0), {"stop_token_ids": [151645, 151643]}).stop_token_ids
    (151645, 151643)
    """
    return dataclasses.replace(params, stop_token_ids=tuple(vspec.get("stop_token_ids") or ()),
                               stop=tuple(vspec.get("stop") or ()))


def select_shard(problems, shard: str | None):
    """Rows of ``problems`` in shard ``"i/n"`` (every n-th problem from i); all rows for None.

    >>> select_shard(pd.DataFrame({"problem": list("abcde")}), "1/2")["problem"].tolist()
    ['b', 'd']
    """
    if not shard:
        return problems
    try:
        i, n = (int(x) for x in str(shard).split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise ValueError(f"shard must look like 'i/n' with 0 <= i < n, got {shard!r}") from None
    return problems.iloc[i::n]


def import_completions(profile: dict, root: Path, family: str, variant: str, problems):
    """``(samples table, models.json record)`` of a variant that names ``completions:`` files.

    The files are read and every completion verified (:func:`rlsft.completions.import_variant`,
    ``completions.DEFAULT_VERIFIER`` for benchmarks that are not registered); the verified table
    is kept under ``samples/.imported/`` keyed by the files' contents, the problems and that
    verifier, so a resumed or repeated stage does not verify again.
    """
    files = C.completion_files(profile, family, variant)
    CP.check_files(files, f"{family}/{variant}")
    verifier = CP.DEFAULT_VERIFIER
    fp = CP.fingerprint(files)
    probs = problems.astype({"problem": str})
    key = io.sha256_text(fp, verifier, pd.util.hash_pandas_object(
        probs[["benchmark", "problem", "prompt", "answer"]], index=False).to_numpy().tobytes().hex())[:16]
    cached = Path(root) / "samples" / ".imported" / family / variant.replace("+", "_") / f"{key}.parquet"
    if cached.exists():
        log.info("import %s/%s: verified completions found (%s), not verifying again", family, variant, cached.name)
        table = pd.read_parquet(cached)
    else:
        table = CP.import_variant(family=family, variant=variant, files=files, problems=probs, verifier=verifier)
        io.write_parquet(cached, table)
    rec = {"family": family, "variant": variant, "model": f"completions ({len(files)} file(s))",
           "path": {b or "*": str(p) for b, p in files.items()}, "revision": None, "resolved_commit": None,
           "max_model_len": None, "fingerprint": fp}
    return table, rec


def _sample_variant(profile: dict, root: Path, params: Params, sp: SamplingParams, verifier, fam: str, v: str,
                    subset):
    """``(samples table, models.json record)`` of a variant sampled from its model; ``verifier``
    None: the task's (``params.task``), built here (so a worker process can build its own)."""
    if verifier is None:
        verifier = tasks.make_verifier(params.task, Path(root) / "data")
    fspec = profile["families"][fam]
    vspec = fspec["variants"][v]
    path, rev = resolve(profile, root, fam, v)
    fingerprint = model_fingerprint(path, rev)
    rec = {"family": fam, "variant": v, "model": vspec.get("model", f"recipe {vspec.get('recipe')}"),
           "path": path, "revision": rev, "resolved_commit": None if Path(path).is_dir() else resolved_commit(path, rev),
           "max_model_len": vspec.get("max_model_len"), "fingerprint": fingerprint}

    def factory():
        return make_backend(params.backend, path, rev, device=profile.get("device", "cpu"),
                            seed=int(profile.get("seed", 0)), batch_size=params.batch_size,
                            tensor_parallel_size=vspec.get("tensor_parallel_size", 1),
                            max_model_len=vspec.get("max_model_len"), dtype=vspec.get("dtype", "auto"))

    table = sample_model(family=fam, variant=v, backend_factory=factory, problems=subset,
                         prompt_spec=vspec.get("prompt", fspec.get("prompt")), params=variant_params(sp, vspec),
                         verifier=verifier, shard_dir=Path(root) / "samples" / ".shards" / fam / v.replace("+", "_"),
                         fingerprint=fingerprint, chunk=params.chunk, backend=params.backend,
                         max_model_len=vspec.get("max_model_len"))
    return table, rec


def parallel_workers(params: Params, profile: dict, n_models: int) -> int:
    """How many worker processes sample the ``n_models`` variants: ``params.workers`` (at most one
    per variant and per CPU core) for the transformers backend on the CPU, else 1 (vLLM and GPUs
    batch on their own).

    >>> prof = {"device": "cpu"}
    >>> parallel_workers(Params(workers=2), prof, 4), parallel_workers(Params(workers=8), prof, 3) <= 3
    (2, True)
    >>> parallel_workers(Params(workers=2, backend="vllm"), prof, 4), parallel_workers(Params(), {"device": "cuda"}, 4)
    (1, 1)
    """
    if params.backend != "transformers" or str(profile.get("device", "cpu")) != "cpu":
        return 1
    return max(1, min(params.workers, n_models, os.cpu_count() or 1))


def _init_worker(threads: int) -> None:
    """A sampling worker: its share of the torch threads, and the parent's log format."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _sample_in_workers(profile: dict, root: Path, params: Params, sp: SamplingParams, models: list, subset,
                       workers: int) -> dict:
    """``{(family, variant): (table, record)}``: each variant of ``models`` sampled by
    :func:`_sample_variant` in one of ``workers`` processes, the torch threads split between them.
    A variant's samples do not depend on which process draws them or on how many threads it has
    (its seeds come from the problems, and on CPU a row's logits do not depend on the thread
    count; tests/test_sampling.py compares them with a run in one process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    threads = max(1, torch.get_num_threads() // workers)
    log.info("sampling %d variants in %d worker processes, %d torch thread(s) each", len(models), workers, threads)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        jobs = {m: pool.submit(_sample_variant, profile, root, params, sp, None, *m, subset) for m in models}
        return {m: job.result() for m, job in jobs.items()}


def sample_profile(profile: dict, root: Path, params: Params, problems, *, shard: str | None = None) -> dict:
    """Sample every variant of every family of a profile on ``problems`` (the stage's loop).

    ``params`` are the stage's ``Params``. With ``shard="i/n"`` only that shard of the problems is
    sampled (scale-out: run one shard per GPU or machine on a shared results folder, then run the
    stage once more without a shard to merge; finished problems are never sampled twice).
    Writes ``<root>/samples/models.json``: per variant the model entry, the path or hub id, the
    requested revision and the resolved commit of the cached snapshot.
    Returns ``{(family, variant): DataFrame}`` for the problems sampled or already on disk.
    """
    sp = sampling_params(params, profile.get("seed", 0))
    verifier = tasks.make_verifier(params.task, Path(root) / "data")
    subset = select_shard(problems, shard)
    models = [(fam, v) for fam, fspec in profile["families"].items() for v in VARIANTS
              if v in fspec["variants"] and "completions" not in fspec["variants"][v]]
    workers = parallel_workers(params, profile, len(models))
    sampled = _sample_in_workers(profile, root, params, sp, models, subset, workers) if workers > 1 else {}
    out, records = {}, []
    for fam, fspec in profile["families"].items():
        for v in VARIANTS:
            if v not in fspec["variants"]:
                continue  # a family may name only some variants (e.g. Base and RL)
            if "completions" in fspec["variants"][v]:  # import existing completions instead of sampling
                table, rec = import_completions(profile, root, fam, v, problems)
                out[(fam, v)] = table[table.set_index(["benchmark", "problem"]).index.isin(
                    subset.set_index(["benchmark", "problem"]).index)].reset_index(drop=True)
            elif (fam, v) in sampled:
                out[(fam, v)], rec = sampled[(fam, v)]
            else:
                out[(fam, v)], rec = _sample_variant(profile, root, params, sp, verifier, fam, v, subset)
            records.append(rec)
    # what each variant was sampled from (hub models: the resolved commit of the cached snapshot)
    io.write_json(Path(root) / "samples" / "models.json", records)
    return out


def write_tables(folder: Path, per_model: dict) -> dict:
    """Write the per-model tables, ``all_samples.parquet``, ``summary.csv`` and ``pass_at_k.csv``
    under ``folder``; returns ``{"samples", "summary", "passk"}`` (``samples.variant`` ordered
    like ``VARIANTS``)."""
    for (fam, v), df in per_model.items():
        for bench, part in df.groupby("benchmark", sort=False):
            io.write_parquet(folder / fam / v.replace("+", "_") / f"{bench}.parquet", part)
    samples = pd.concat(list(per_model.values()), ignore_index=True)
    if samples.empty:
        raise ValueError("the sample set is empty: no problems or no models; check the profile's data stage")
    samples["variant"] = pd.Categorical(samples["variant"], VARIANTS, ordered=True)
    flat = samples.astype({"variant": str})
    io.write_parquet(folder / "all_samples.parquet", flat)
    summary = verify.summary_table(flat)
    passk = verify.pass_at_k_table(flat)
    io.write_csv(folder / "summary.csv", summary)
    io.write_csv(folder / "pass_at_k.csv", passk)
    return {"samples": samples, "summary": summary, "passk": passk}


def balance_imported(profile: dict, per_model: dict, mode: str) -> tuple[dict, pd.DataFrame]:
    """``(per_model, report)``: in each family that imports completions, its variants restricted to
    the problems they share, each problem with the same number of samples in every variant (the
    fewest any variant has, the first by sample index; :func:`rlsft.completions.balance_family`).
    ``mode`` ``"refuse"`` stops instead. Families that import nothing are left as they are.
    ``report``: one row per family, variant and benchmark (``rlsft.completions.CHECK_COLUMNS``)."""
    out, reports = dict(per_model), []
    for fam, fspec in profile["families"].items():
        if not any("completions" in vs for vs in fspec["variants"].values()):
            continue
        tables = {v: df for (f, v), df in per_model.items() if f == fam}
        balanced, report = CP.balance_family(fam, tables, mode)
        out.update({(fam, v): df for v, df in balanced.items()})
        reports.append(report)
    report = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame(columns=CP.CHECK_COLUMNS)
    return out, report


def run(ctx, params: Params) -> dict:
    """Sample and verify every variant on the data stage's problems, balance the families that
    import completions (:func:`balance_imported`) and write the stage's tables; returns
    ``problems``, ``samples`` (every answer), ``summary``, ``passk`` and ``imported_checks``."""
    problems = pd.read_parquet(ctx.input("data") / "problems.parquet")
    per_model = sample_profile(ctx.profile, ctx.root, params, problems)
    per_model, checks = balance_imported(ctx.profile, per_model, params.imported_balance)
    checks_file = Path(ctx.dir) / "imported_checks.csv"
    if len(checks):
        io.write_csv(checks_file, checks)
    else:
        checks_file.unlink(missing_ok=True)
    return {"problems": problems, **write_tables(ctx.dir, per_model), "imported_checks": checks}


def main(argv=None) -> int:
    """``python -m rlsft.stages.samples --profile NAME --shard i/n``: sample one shard of the problems."""
    ap = argparse.ArgumentParser(prog="python -m rlsft.stages.samples", description=main.__doc__)
    ap.add_argument("--profile", default="organism")
    ap.add_argument("--shard", required=True, help="i/n: this worker's share of the problems")
    ap.add_argument("--results", default=str(C.REPO_ROOT / "results"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    profile = C.load_profile(args.profile)
    params = build(Params, C.stage_params(profile, "samples"), f"profile {profile['name']!r}, stages.samples")
    root = Path(args.results) / profile["name"]
    problems_file = root / "data" / "problems.parquet"
    if not problems_file.exists():
        raise SystemExit(f"no {problems_file}: run `./run_all.sh --profile {args.profile} --only data` first")
    sample_profile(profile, root, params, pd.read_parquet(problems_file), shard=args.shard)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
