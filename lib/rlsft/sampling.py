"""Sampling: M answers per problem from every variant, behind one interface with two backends.

- ``transformers`` (CPU or GPU): batched ``generate`` with sampling, seeded per problem, so a
  problem's samples do not depend on which other problems were sampled with it (resume-safe).
- ``vllm`` (GPU): ``LLM.generate`` with ``SamplingParams(n=M, ...)`` and the profile's tensor
  parallelism. vllm is imported only when this backend is chosen.

Storage: one parquet shard per problem under ``<out>/<family>/<variant>/<benchmark>/``, written
atomically, then merged into one table per (model, benchmark); an interrupted run resumes at the
first unfinished problem and produces the same table as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """The sampling settings that enter the stage cache key (PAPER.md §4)."""

    n: int = 64
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n (samples per problem, M) must be >= 1, got {self.n}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclasses.dataclass
class Completion:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" or "length"


def _problem_seed(seed: int, key: str) -> int:
    import hashlib

    return (seed * 1_000_003 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)) % (2**31)


def transformers_generate(model, tokenizer, prompts: dict, params: SamplingParams, batch_size: int = 512) -> dict:
    """``params.n`` sampled completions for each prompt of ``{key: prompt}``, with ``model.generate``.

    All prompts of one call are sampled together (left-padded batches of ``batch_size`` sequences),
    seeded by ``(params.seed, keys)``: the same group of problems always gives the same samples.
    """
    import torch

    keys = list(prompts)
    torch.manual_seed(_problem_seed(params.seed, "|".join(keys)))
    flat = [k for k in keys for _ in range(params.n)]
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    tokenizer.padding_side = "left"
    out: dict = {k: [] for k in keys}
    for start in range(0, len(flat), batch_size):
        part = flat[start:start + batch_size]
        enc = tokenizer([prompts[k] for k in part], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=params.temperature, top_p=params.top_p,
                                 top_k=0, max_new_tokens=params.max_new_tokens, eos_token_id=eos, pad_token_id=pad)
        for k, row in zip(part, gen[:, enc["input_ids"].shape[1]:].tolist()):
            finished = eos in row
            toks = row[: row.index(eos)] if finished else [t for t in row if t != pad]
            out[k].append(Completion(tokenizer.decode(toks, skip_special_tokens=True),
                                     len(toks) + int(finished), "stop" if finished else "length"))
    return out


def build_prompt(question: str, prompt_spec: dict | None, tokenizer=None) -> str:
    """The text fed to the model for one question, per the family's prompt spec.

    ``style: raw`` writes ``system`` (if any) then ``user`` with ``{question}`` filled in;
    ``style: chat`` applies the tokenizer's chat template with a generation prompt.

    >>> build_prompt("Find a route from a to b.\\n", {"style": "raw", "user": "{question}"})
    'Find a route from a to b.\\n'
    """
    spec = prompt_spec or {}
    user = spec.get("user", "{question}")
    if "{question}" not in user:
        raise ValueError(f"prompt.user must contain '{{question}}', got {user!r}")
    content = user.replace("{question}", question)
    if spec.get("style", "raw") == "raw":
        return (spec["system"] + "\n" if spec.get("system") else "") + content
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt.style is 'chat' but the model's tokenizer has no chat template; use style: raw")
    messages = ([{"role": "system", "content": spec["system"]}] if spec.get("system") else []) + \
               [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def resolved_commit(model_id: str, revision: str | None) -> str | None:
    """The commit hash of the cached snapshot of a hub model (its HF-cache folder name), or None
    when it is not in the local cache. Resolves branch names and an unset revision (``main``)."""
    try:
        from huggingface_hub import snapshot_download

        snap = snapshot_download(model_id, revision=revision, local_files_only=True,
                                 allow_patterns=["config.json"])
        return Path(snap).name
    except Exception:  # noqa: BLE001 - not cached: no commit to report
        return None


def model_fingerprint(path: str, revision: str | None) -> str:
    """Identity of a model for cache keys: the weights' sha256 for a local folder, else
    ``id@commit`` with the commit of the cached snapshot (``id@revision`` when not cached)."""
    from .io import sha256_file, sha256_text

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin"))
        return sha256_text(*[sha256_file(f) for f in files]) if files else sha256_text(str(p.resolve()))
    return f"{path}@{resolved_commit(path, revision) or revision or 'main'}"


class TransformersBackend:
    """CPU/GPU sampling with ``model.generate``."""

    name = "transformers"

    def __init__(self, path: str, revision: str | None = None, device: str = "cpu", batch_size: int = 512):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(path, revision=revision)
        except OSError as exc:
            raise FileNotFoundError(f"cannot load model {path!r} (revision {revision}): {exc}. If it is a hub id, "
                                    f"pre-download it with `hf download {path}`") from None
        self.tokenizer.padding_side = "left"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device).eval()
        self.batch_size = batch_size

    def generate(self, prompts: dict, params: SamplingParams) -> dict:
        """``{key: prompt}`` -> ``{key: [Completion] * n}``."""
        return transformers_generate(self.model, self.tokenizer, prompts, params, batch_size=self.batch_size)


class VLLMBackend:
    """GPU sampling with vLLM: ``LLM.generate`` with ``SamplingParams(n=M, ...)``."""

    name = "vllm"

    def __init__(self, path: str, revision: str | None = None, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0,
                 gpu_memory_utilization: float = 0.9):
        try:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError
        except (ImportError, RuntimeError):
            raise RuntimeError("backend 'vllm' needs a CUDA GPU, and none is visible: use "
                               "stages.sample.backend: transformers on this machine") from None
        try:
            from vllm import LLM
        except ImportError:
            raise RuntimeError("backend 'vllm' chosen but vllm is not installed: set up with "
                               "RLSFT_EXTRAS=gpu,dev ./run_all.sh --setup (pip install -e '.[gpu]')") from None
        kw = {"max_model_len": max_model_len} if max_model_len else {}
        self.llm = LLM(model=path, revision=revision, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                       seed=seed, gpu_memory_utilization=gpu_memory_utilization, **kw)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: dict, params: SamplingParams) -> dict:
        from vllm import SamplingParams as VSP

        keys = list(prompts)
        out = {}
        # one request per problem, each seeded from (seed, key) so a resumed run gives the same text
        sps = [VSP(n=params.n, temperature=params.temperature, top_p=params.top_p,
                   max_tokens=params.max_new_tokens, seed=_problem_seed(params.seed, k)) for k in keys]
        results = self.llm.generate([prompts[k] for k in keys], sps)
        for k, res in zip(keys, results):
            out[k] = [Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                      for o in res.outputs]
        return out


def make_backend(name: str, path: str, revision: str | None, *, device: str = "cpu", seed: int = 0,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None, batch_size: int = 256,
                 dtype: str = "auto"):
    if name == "transformers":
        return TransformersBackend(path, revision, device=device, batch_size=batch_size)
    if name == "vllm":
        return VLLMBackend(path, revision, tensor_parallel_size=tensor_parallel_size,
                           max_model_len=max_model_len, dtype=dtype, seed=seed)
    raise ValueError(f"unknown sampling backend {name!r}: use 'transformers' or 'vllm'")


SAMPLE_COLUMNS = ["family", "variant", "benchmark", "problem", "sample", "text", "n_tokens", "finish_reason",
                  "extracted", "correct"]


def sample_model(*, family: str, variant: str, backend_factory: Callable, problems, prompt_spec: dict,
                 params: SamplingParams, verifier: Callable, shard_dir: Path, fingerprint: str,
                 chunk: int = 8):
    """Sample and verify every problem of one model, one parquet shard per problem.

    Shards live under ``shard_dir/<key>/`` where the key hashes the sampling parameters, prompt spec
    and model fingerprint; problems whose shard exists are skipped (resume). The backend is built
    only if some problem is left. Returns the concatenated table in problem order.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .io import sha256_text, write_parquet

    key = sha256_text(repr(dataclasses.asdict(params)), repr(sorted((prompt_spec or {}).items())), fingerprint)[:16]
    folder = Path(shard_dir) / key
    rows = list(problems.to_dict("records"))
    shard = lambda r: folder / f"{r['benchmark']}__{r['problem']}.parquet"  # noqa: E731
    # chunk boundaries are fixed over the whole problem list, so a resumed run regenerates exactly
    # the chunks an uninterrupted run would have generated, with the same seeds
    chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    todo = [c for c in chunks if not all(shard(r).exists() for r in c)]
    if len(todo) < len(chunks):
        log.info("sample %s/%s: %d of %d problem chunks already sampled, resuming", family, variant,
                 len(chunks) - len(todo), len(chunks))
    if todo:
        backend = backend_factory()
        t0, n_tok, n_done = time.time(), 0, 0
        bar = tqdm(total=sum(len(c) for c in todo), desc=f"sample {family}/{variant}", leave=False)
        for part in todo:
            prompts = {f"{r['benchmark']}__{r['problem']}": build_prompt(r["prompt"], prompt_spec, backend.tokenizer)
                       for r in part}
            outs = backend.generate(prompts, params)
            for r in part:
                k = f"{r['benchmark']}__{r['problem']}"
                recs = []
                for i, c in enumerate(outs[k]):
                    extracted, correct = verifier(c.text, r)
                    recs.append({"family": family, "variant": variant, "benchmark": r["benchmark"],
                                 "problem": str(r["problem"]), "sample": i, "text": c.text, "n_tokens": c.n_tokens,
                                 "finish_reason": c.finish_reason, "extracted": extracted, "correct": bool(correct)})
                    n_tok += c.n_tokens
                write_parquet(shard(r), pd.DataFrame(recs, columns=SAMPLE_COLUMNS))
                n_done += 1
            bar.update(len(part))
        bar.close()
        dt = time.time() - t0
        log.info("sample %s/%s: %d completions, %d tokens in %.1f s (%.0f tokens/s)", family, variant,
                 n_done * params.n, n_tok, dt, n_tok / max(dt, 1e-9))
        del backend
    parts = [pd.read_parquet(shard(r)) for r in rows]
    return pd.concat(parts, ignore_index=True)


def make_verifier(task: str, data_dir: Path) -> Callable:
    """``fn(text, problem_row) -> (extracted, correct)`` for the profile's task.

    The organism uses its exact step-replaying checker; the paper's benchmarks use the verifier
    registered for each benchmark (math-verify on the last ``\\boxed{}``, or HumanEval's tests).
    """
    import json

    if task == "navigation":
        from . import task as T
        from .io import read_json

        world = T.world_from_json(read_json(Path(data_dir) / "world.json"))
        return lambda text, row: T.check(world, T.problem_from_row(row), text)
    if task == "benchmarks":
        from .benchmarks import verifier_for

        def verify(text, row):
            meta = json.loads(row.get("meta") or "{}")
            problem = {"id": row["problem"], "problem": row["prompt"], "answer": row["answer"], **meta}
            return verifier_for(row["benchmark"])(text, problem)

        return verify
    raise ValueError(f"unknown task {task!r}: use 'navigation' or 'benchmarks'")


def select_shard(problems, shard: str | None):
    """Rows of ``problems`` in shard ``"i/n"`` (every n-th problem from i); all rows for None.

    >>> import pandas as pd
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


def sample_profile(profile: dict, root: Path, params: dict, problems, *, shard: str | None = None):
    """Sample every variant of every family of a profile on ``problems`` (the sample stage's loop).

    ``params`` are the stage's parameters (backend, M, temperature, top_p, max_new_tokens,
    batch_size, chunk, task). With ``shard="i/n"`` only that shard of the problems is sampled
    (scale-out: run one shard per GPU or machine on a shared results folder, then run the stage
    once more without a shard to merge; finished problems are never sampled twice).
    Writes ``<root>/samples/models.json``: per variant the model entry, the path or hub id, the
    requested revision and the resolved commit of the cached snapshot.
    Returns ``{(family, variant): DataFrame}`` for the problems sampled or already on disk.
    """
    from . import VARIANTS
    from .models import resolve

    sp = SamplingParams(n=params["M"], temperature=params["temperature"], top_p=params["top_p"],
                        max_new_tokens=params["max_new_tokens"], seed=int(profile.get("seed", 0)))
    verifier = make_verifier(params["task"], Path(root) / "data")
    subset = select_shard(problems, shard)
    out, records = {}, []
    for fam, fspec in profile["families"].items():
        for v in VARIANTS:
            path, rev = resolve(profile, root, fam, v)
            vspec = fspec["variants"][v]
            fingerprint = model_fingerprint(path, rev)
            records.append({"family": fam, "variant": v, "model": vspec.get("model", f"recipe {vspec.get('recipe')}"),
                            "path": path, "revision": rev,
                            "resolved_commit": None if Path(path).is_dir() else resolved_commit(path, rev),
                            "max_model_len": vspec.get("max_model_len"), "fingerprint": fingerprint})

            def factory(path=path, rev=rev, vspec=vspec):
                return make_backend(params["backend"], path, rev, device=profile.get("device", "cpu"),
                                    seed=int(profile.get("seed", 0)), batch_size=params["batch_size"],
                                    tensor_parallel_size=vspec.get("tensor_parallel_size", 1),
                                    max_model_len=vspec.get("max_model_len"), dtype=vspec.get("dtype", "auto"))

            out[(fam, v)] = sample_model(
                family=fam, variant=v, backend_factory=factory, problems=subset,
                prompt_spec=vspec.get("prompt", fspec.get("prompt")), params=sp, verifier=verifier,
                shard_dir=Path(root) / "samples" / ".shards" / fam / v.replace("+", "_"),
                fingerprint=fingerprint, chunk=params["chunk"])
    # what each variant was sampled from (hub models: the resolved commit of the cached snapshot)
    from .io import write_json

    write_json(Path(root) / "samples" / "models.json", records)
    return out


def main(argv=None) -> int:
    """``python -m rlsft.sampling --profile NAME --shard i/n``: sample one shard of the problems."""
    import argparse

    import pandas as pd

    from .config import REPO_ROOT, load_profile
    from .notebooks import effective_params

    ap = argparse.ArgumentParser(prog="python -m rlsft.sampling", description=main.__doc__)
    ap.add_argument("--profile", default="organism")
    ap.add_argument("--shard", required=True, help="i/n: this worker's share of the problems")
    ap.add_argument("--results", default=str(REPO_ROOT / "results"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    profile = load_profile(args.profile)
    root = Path(args.results) / profile["name"]
    problems_file = root / "data" / "problems.parquet"
    if not problems_file.exists():
        raise SystemExit(f"no {problems_file}: run `./run_all.sh --profile {args.profile} --only data` first")
    sample_profile(profile, root, effective_params(profile, "samples"), pd.read_parquet(problems_file),
                   shard=args.shard)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
