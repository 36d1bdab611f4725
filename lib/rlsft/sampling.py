"""Sampling: M answers per problem from every variant, behind one interface with two backends.

- ``transformers`` (CPU or GPU): batched ``generate`` with sampling, seeded per problem, so a
  problem's samples do not depend on which other problems were sampled with it (resume-safe).
- ``vllm`` (GPU): ``LLM.generate`` with ``SamplingParams(n=M, ...)`` and the profile's tensor
  parallelism. vllm is imported only when this backend is chosen.

Storage: one parquet shard per problem, ``<shard_dir>/<key>/<benchmark>__<problem>__<problem key>.parquet``,
written atomically, then merged into one table per (model, benchmark); an interrupted run resumes at
the first unfinished problem and produces the same table as an uninterrupted one. ``<key>`` hashes
what every problem of a model shares (sampling parameters with the stop settings, prompt spec, model
fingerprint, backend, ``max_model_len``); the problem key hashes what is the problem's own (its
text, gold answer and metadata, and the identity of the verifier that judges it). Change any of
these and the affected problems are sampled again; the others are reused.

Every sample carries a ``verify_status`` (``rlsft.verify.STATUSES``): ``ok`` when the verifier
judged it, else why it could not (``no_box``, ``parse_error``, ``timeout``).
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
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end a completion besides the tokenizer's EOS (a variant's ``stop_token_ids``)."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion (not kept in the text; a variant's ``stop``)."""

    def __post_init__(self):
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids or ()))
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be token ids (ints >= 0), got {list(self.stop_token_ids)}")
        if any(not isinstance(x, str) or not x for x in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {list(self.stop)}")
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


def _adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer(text)`` (special tokens on, the default) starts with the BOS token."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(probe) and probe[0] == bos


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The token ids of an already formatted prompt, with exactly one BOS where the model wants one.

    The text is tokenized without special tokens (a chat template's output already holds its BOS;
    tokenizing it with special tokens would add a second one); a BOS is put in front only when the
    tokenizer adds one by default and the text does not start with it (a raw prompt for Llama).

    >>> class Tok:  # a toy tokenizer: one id per character, BOS = 0 added by default
    ...     bos_token_id, bos_token = 0, "^"
    ...     def __call__(self, text, add_special_tokens=True):
    ...         ids = [0 if c == "^" else ord(c) for c in text]
    ...         return {"input_ids": ([0] if add_special_tokens else []) + ids}
    >>> encode_prompt(Tok(), "^hi"), encode_prompt(Tok(), "hi")
    ([0, 104, 105], [0, 104, 105])
    """
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos) and _adds_bos(tokenizer):
        ids = [bos] + ids
    return ids


def cut_at_stop(text: str, stop) -> tuple[str, bool]:
    """``text`` up to the first of the ``stop`` strings (which is dropped, as vLLM does), and
    whether one was found.

    >>> cut_at_stop("42<|im_end|>\\n<|im_start|>user", ["<|im_start|>", "<|im_end|>"])
    ('42', True)
    >>> cut_at_stop("42", ["<|im_end|>"])
    ('42', False)
    """
    hits = [i for i in (text.find(x) for x in stop or ()) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def _stop_strings_criteria(tokenizer, stop, prompt_len: int):
    """A ``StoppingCriteriaList`` that ends each sequence whose decoded completion holds one of
    ``stop`` (transformers' own ``stop_strings`` needs a tokenizer whose vocabulary it can map back to
    text, which a word-level tokenizer like the organism's is not)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            tails = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return torch.tensor([any(x in t for x in stop) for t in tails], dtype=torch.bool,
                                device=input_ids.device)

    return StoppingCriteriaList([StopStrings()])


def transformers_generate(model, tokenizer, prompts: dict, params: SamplingParams, batch_size: int = 512) -> dict:
    """``params.n`` sampled completions for each prompt of ``{key: prompt}``, with ``model.generate``.

    All prompts of one call are sampled together (left-padded batches of ``batch_size`` sequences),
    seeded by ``(params.seed, keys)``: the same group of problems always gives the same samples.
    Prompts are tokenized by ``encode_prompt`` (one BOS at most). A completion ends at the
    tokenizer's EOS, at any of ``params.stop_token_ids`` (``finish_reason`` "stop"; the stop token
    is counted in ``n_tokens``, not kept in the text) or at the first of ``params.stop`` (the text is
    cut before it), else at ``max_new_tokens`` ("length").
    """
    import torch

    keys = list(prompts)
    torch.manual_seed(_problem_seed(params.seed, "|".join(keys)))
    flat = [k for k in keys for _ in range(params.n)]
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stops = list(dict.fromkeys([eos, *params.stop_token_ids]))
    tokenizer.padding_side = "left"
    ids = {k: encode_prompt(tokenizer, prompts[k]) for k in keys}
    out: dict = {k: [] for k in keys}
    for start in range(0, len(flat), batch_size):
        part = flat[start:start + batch_size]
        enc = tokenizer.pad({"input_ids": [ids[k] for k in part]}, padding=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        extra = ({"stopping_criteria": _stop_strings_criteria(tokenizer, params.stop, enc["input_ids"].shape[1])}
                 if params.stop else {})
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=params.temperature, top_p=params.top_p,
                                 top_k=0, max_new_tokens=params.max_new_tokens, pad_token_id=pad,
                                 eos_token_id=stops if len(stops) > 1 else eos, **extra)
        for k, row in zip(part, gen[:, enc["input_ids"].shape[1]:].tolist()):
            end = next((i for i, t in enumerate(row) if t in stops), None)
            toks = row[:end] if end is not None else [t for t in row if t != pad]
            text, hit = cut_at_stop(tokenizer.decode(toks, skip_special_tokens=True), params.stop)
            finished = end is not None or hit
            out[k].append(Completion(text, len(toks) + int(end is not None), "stop" if finished else "length"))
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
    """GPU sampling with vLLM: ``LLM.generate`` with ``SamplingParams(n=M, ...)``.

    Prompts go to vLLM as token ids (``TokensPrompt``) made by ``encode_prompt``, so a chat
    template's BOS is not doubled by vLLM's own tokenization. Each request asks for at most
    ``max_model_len - prompt tokens`` new tokens (the context caps ``max_new_tokens``), and ends at
    the model's EOS, ``params.stop_token_ids`` or ``params.stop``.
    """

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
        self.max_model_len = max_model_len

    def _max_tokens(self, key: str, n_prompt: int, params: SamplingParams) -> int:
        """New tokens to ask for: ``max_new_tokens``, capped by what the context leaves."""
        if not self.max_model_len:
            return params.max_new_tokens
        room = int(self.max_model_len) - n_prompt
        if room < 1:
            raise ValueError(f"prompt of {key} has {n_prompt} tokens, which fills max_model_len "
                             f"{self.max_model_len}: raise the variant's max_model_len or shorten the prompt")
        return min(params.max_new_tokens, room)

    def generate(self, prompts: dict, params: SamplingParams) -> dict:
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        keys = list(prompts)
        out = {}
        ids = {k: encode_prompt(self.tokenizer, prompts[k]) for k in keys}
        # one request per problem, each seeded from (seed, key) so a resumed run gives the same text
        sps = [VSP(n=params.n, temperature=params.temperature, top_p=params.top_p,
                   max_tokens=self._max_tokens(k, len(ids[k]), params), seed=_problem_seed(params.seed, k),
                   stop_token_ids=list(params.stop_token_ids), stop=list(params.stop)) for k in keys]
        results = self.llm.generate([TokensPrompt(prompt_token_ids=ids[k]) for k in keys], sps)
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
                  "extracted", "correct", "verify_status"]

PROBLEM_KEY_COLUMNS = ("prompt", "answer", "meta", "start", "goal", "level")
"""Columns of the problem table that make a problem what it is (its text, gold answer, metadata,
and the organism's start, goal and level): a change in any of them resamples that problem."""


def verify_record(verifier: Callable, text: str, row) -> dict:
    """Verify one completion: ``{"extracted", "correct", "verify_status"}`` for the samples table.

    ``verifier(text, row)`` may return ``(extracted, correct)`` (status ``ok``) or
    ``(extracted, correct, status)`` with a status of ``rlsft.verify.STATUSES``; a verifier with a
    ``with_status`` twin (the built-in ones) is called through it.

    >>> verify_record(lambda text, row: (text.strip(), text.strip() == row["answer"]), " 4 ", {"answer": "4"})
    {'extracted': '4', 'correct': True, 'verify_status': 'ok'}
    >>> verify_record(lambda text, row: (None, False, "no_box"), "4", {})["verify_status"]
    'no_box'
    """
    from .verify import as_verify_result

    fn = getattr(verifier, "with_status", verifier)
    extracted, correct, status = as_verify_result(fn(text, row), "the sample stage's verifier")
    return {"extracted": extracted, "correct": correct, "verify_status": status}


def verifier_identity(verifier: Callable, row) -> str:
    """What identifies the verifier that judges ``row``, for the shard keys: ``verifier.identity``
    (a string, or a function of the row; ``make_verifier`` sets it), else the function's module
    and qualified name.

    >>> def exact(text, row): return text, text == row["answer"]
    >>> verifier_identity(exact, {}).endswith("exact")
    True
    >>> exact.identity = lambda row: f"exact:{row['benchmark']}"
    >>> verifier_identity(exact, {"benchmark": "b"})
    'exact:b'
    """
    ident = getattr(verifier, "identity", None)
    if callable(ident):
        return str(ident(row))
    if ident is not None:
        return str(ident)
    return f"{getattr(verifier, '__module__', '?')}.{getattr(verifier, '__qualname__', type(verifier).__name__)}"


def _canon(value) -> str | None:
    """A value of the problem table as stable text (None for a missing value; 3.0 -> '3')."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def problem_key(row, verifier_id: str) -> str:
    """16 hex digits of sha256 over a problem's ``PROBLEM_KEY_COLUMNS`` and its verifier: the part
    of a shard's name that changes when the problem text, gold answer, metadata or verifier does.

    >>> a = problem_key({"prompt": "Q", "answer": "1", "source": "x"}, "math")
    >>> a == problem_key({"prompt": "Q", "answer": 1.0}, "math"), a == problem_key({"prompt": "Q", "answer": "2"}, "math")
    (True, False)
    >>> a == problem_key({"prompt": "Q", "answer": "1"}, "humaneval")
    False
    """
    from .io import sha256_text

    parts = [f"verifier={verifier_id}"]
    for col in PROBLEM_KEY_COLUMNS:
        value = _canon(row.get(col)) if col in row else None
        if value is not None:
            parts.append(f"{col}={value}")
    return sha256_text(*parts)[:16]


def model_key(params: SamplingParams, prompt_spec: dict | None, fingerprint: str, backend: str,
              max_model_len: int | None) -> str:
    """16 hex digits of sha256 over what all problems of one model share: the sampling parameters
    (with the stop settings), the prompt spec, the model fingerprint, the backend and the context
    length. It names the model's shard folder.

    >>> sp = SamplingParams(n=2)
    >>> model_key(sp, None, "m", "vllm", 4096) == model_key(sp, {}, "m", "vllm", 4096)
    True
    >>> len({model_key(sp, None, "m", b, n) for b in ("vllm", "transformers") for n in (None, 4096)})
    4
    """
    from .io import sha256_text

    return sha256_text(repr(dataclasses.asdict(params)), repr(sorted((prompt_spec or {}).items())), fingerprint,
                       f"backend={backend}", f"max_model_len={max_model_len}")[:16]


def sample_model(*, family: str, variant: str, backend_factory: Callable, problems, prompt_spec: dict,
                 params: SamplingParams, verifier: Callable, shard_dir: Path, fingerprint: str,
                 chunk: int = 8, backend: str = "transformers", max_model_len: int | None = None):
    """Sample and verify every problem of one model, one parquet shard per problem.

    Shards are ``shard_dir/<model_key>/<benchmark>__<problem>__<problem_key>.parquet``: the
    folder's key hashes the sampling parameters (with stop settings), prompt spec, model
    fingerprint, ``backend`` (the name of what ``backend_factory`` builds) and ``max_model_len``;
    the problem key hashes the problem's text, gold answer and metadata and the identity of its
    verifier (``verifier_identity``). Problems whose shard exists are skipped (resume, and reuse
    of unchanged problems); within a chunk only the missing problems are sampled. The backend is
    built only if some problem is left. Every sample is verified by ``verify_record``. Returns the
    concatenated table in problem order.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .io import write_parquet

    folder = Path(shard_dir) / model_key(params, prompt_spec, fingerprint, backend, max_model_len)
    rows = list(problems.to_dict("records"))
    names = {id(r): f"{r['benchmark']}__{r['problem']}__{problem_key(r, verifier_identity(verifier, r))}.parquet"
             for r in rows}
    shard = lambda r: folder / names[id(r)]  # noqa: E731
    # chunk boundaries are fixed over the whole problem list and a chunk's missing problems are
    # sampled together, so a run resumed after a kill (which loses whole chunks) regenerates exactly
    # the chunks an uninterrupted run would have generated, with the same seeds
    chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    todo = [part for part in ([r for r in c if not shard(r).exists()] for c in chunks) if part]
    n_left = sum(map(len, todo))
    if n_left < len(rows):
        log.info("sample %s/%s: %d of %d problems already sampled, resuming", family, variant,
                 len(rows) - n_left, len(rows))
    if todo:
        model = backend_factory()
        t0, n_tok, n_done = time.time(), 0, 0
        bar = tqdm(total=n_left, desc=f"sample {family}/{variant}", leave=False)
        for part in todo:
            prompts = {f"{r['benchmark']}__{r['problem']}": build_prompt(r["prompt"], prompt_spec, model.tokenizer)
                       for r in part}
            outs = model.generate(prompts, params)
            for r in part:
                k = f"{r['benchmark']}__{r['problem']}"
                recs = []
                for i, c in enumerate(outs[k]):
                    recs.append({"family": family, "variant": variant, "benchmark": r["benchmark"],
                                 "problem": str(r["problem"]), "sample": i, "text": c.text, "n_tokens": c.n_tokens,
                                 "finish_reason": c.finish_reason, **verify_record(verifier, c.text, r)})
                    n_tok += c.n_tokens
                write_parquet(shard(r), pd.DataFrame(recs, columns=SAMPLE_COLUMNS))
                n_done += 1
            bar.update(len(part))
        bar.close()
        dt = time.time() - t0
        log.info("sample %s/%s: %d completions, %d tokens in %.1f s (%.0f tokens/s)", family, variant,
                 n_done * params.n, n_tok, dt, n_tok / max(dt, 1e-9))
        del model
    parts = [pd.read_parquet(shard(r)) for r in rows]
    return pd.concat(parts, ignore_index=True)


def make_verifier(task: str, data_dir: Path) -> Callable:
    """``fn(text, problem_row) -> (extracted, correct, verify_status)`` for the profile's task.

    The organism uses its exact step-replaying checker (status ``ok``); the paper's benchmarks use
    the verifier registered for each benchmark (math-verify on the last ``\\boxed{}``, or
    HumanEval's tests) through ``rlsft.verify.run_verifier``. ``fn.identity(row)`` names the
    verifier of a row for the shard keys: the task and the world file's hash (organism), or the
    benchmark's registered verifier name and function (benchmarks).
    """
    import json

    if task == "navigation":
        from . import task as T
        from .io import read_json, sha256_file

        world_file = Path(data_dir) / "world.json"
        world = T.world_from_json(read_json(world_file))
        world_id = f"navigation:{T.check.__module__}.{T.check.__qualname__}:world={sha256_file(world_file)[:16]}"

        def check(text, row):
            return T.check(world, T.problem_from_row(row), text)

        check.identity = lambda row: world_id
        return check
    if task == "benchmarks":
        from .benchmarks import get_spec, verifier_for
        from .verify import run_verifier

        def verify(text, row):
            meta = json.loads(row.get("meta") or "{}")
            problem = {"id": row["problem"], "problem": row["prompt"], "answer": row["answer"], **meta}
            return run_verifier(verifier_for(row["benchmark"]), text, problem)

        def identity(row):
            fn = verifier_for(row["benchmark"])
            return f"benchmarks:{get_spec(row['benchmark']).verifier}:{fn.__module__}.{fn.__qualname__}"

        verify.identity = identity
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


def import_completions(profile: dict, root: Path, family: str, variant: str, problems, params: dict):
    """``(samples table, models.json record)`` of a variant that names ``completions:`` files.

    The files are read and every completion verified (:func:`rlsft.completions.import_variant`);
    the verified table is kept under ``samples/.imported/`` keyed by the files' contents, the
    problems and the verifier, so a resumed or repeated stage does not verify again.
    """
    import pandas as pd

    from . import completions as CP
    from .config import completion_files
    from .io import sha256_text, write_parquet

    files = completion_files(profile, family, variant)
    CP.check_files(files, f"{family}/{variant}")
    verifier = params.get("verifier", "math")
    fp = CP.fingerprint(files)
    probs = problems.astype({"problem": str})
    key = sha256_text(fp, verifier, pd.util.hash_pandas_object(probs[["benchmark", "problem", "prompt", "answer"]],
                                                               index=False).to_numpy().tobytes().hex())[:16]
    cached = Path(root) / "samples" / ".imported" / family / variant.replace("+", "_") / f"{key}.parquet"
    if cached.exists():
        log.info("import %s/%s: verified completions found (%s), not verifying again", family, variant, cached.name)
        table = pd.read_parquet(cached)
    else:
        table = CP.import_variant(family=family, variant=variant, files=files, problems=probs, verifier=verifier)
        write_parquet(cached, table)
    rec = {"family": family, "variant": variant, "model": f"completions ({len(files)} file(s))",
           "path": {b or "*": str(p) for b, p in files.items()}, "revision": None, "resolved_commit": None,
           "max_model_len": None, "fingerprint": fp}
    return table, rec


def variant_params(params: SamplingParams, vspec: dict) -> SamplingParams:
    """The stage's sampling parameters with a variant's stop settings (``stop_token_ids``, ``stop``).

    >>> variant_params(SamplingParams(n=2), {"stop_token_ids": [151645, 151643]}).stop_token_ids
    (151645, 151643)
    """
    return dataclasses.replace(params, stop_token_ids=tuple(vspec.get("stop_token_ids") or ()),
                               stop=tuple(vspec.get("stop") or ()))


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
            if v not in fspec["variants"]:
                continue  # a family may name only some variants (e.g. Base and RL)
            vspec = fspec["variants"][v]
            if "completions" in vspec:  # import existing completions instead of sampling
                table, rec = import_completions(profile, root, fam, v, problems, params)
                out[(fam, v)] = table[table.set_index(["benchmark", "problem"]).index.isin(
                    subset.set_index(["benchmark", "problem"]).index)].reset_index(drop=True)
                records.append(rec)
                continue
            path, rev = resolve(profile, root, fam, v)
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
                prompt_spec=vspec.get("prompt", fspec.get("prompt")), params=variant_params(sp, vspec),
                verifier=verifier, shard_dir=Path(root) / "samples" / ".shards" / fam / v.replace("+", "_"),
                fingerprint=fingerprint, chunk=params["chunk"], backend=params["backend"],
                max_model_len=vspec.get("max_model_len"))
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
