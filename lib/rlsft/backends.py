"""Sampling backends: M answers per prompt from a model, behind one interface.

- ``transformers`` (CPU or GPU): batched ``generate`` with sampling, seeded per group of problems,
  so a problem's samples do not depend on which other problems were sampled with it (resume-safe).
- ``vllm`` (GPU): ``LLM.generate`` with ``SamplingParams(n=M, ...)`` and the profile's tensor
  parallelism. vllm is imported only when this backend is chosen.

Both take a ``{key: prompt}`` mapping of prompts built by :func:`build_prompt` (the family's prompt
spec) and return ``{key: [Completion] * n}``. The per-problem shards, cache keys and verification
around them live in :mod:`rlsft.sampling`; the loop over a profile's variants in
:mod:`rlsft.stages.samples`.
"""
from __future__ import annotations

import dataclasses
import hashlib


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
                               "stages.samples.backend: transformers on this machine") from None
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
                 tensor_parallel_size: int = 1, max_model_len: int | None = None, batch_size: int | None = None,
                 dtype: str = "auto"):
    """The backend ``name`` (``transformers`` or ``vllm``) loaded with the model at ``path``.

    ``batch_size`` (transformers only; the samples stage passes its own) defaults to the backend's.
    """
    if name == "transformers":
        return TransformersBackend(path, revision, device=device,
                                   **({"batch_size": batch_size} if batch_size is not None else {}))
    if name == "vllm":
        return VLLMBackend(path, revision, tensor_parallel_size=tensor_parallel_size,
                           max_model_len=max_model_len, dtype=dtype, seed=seed)
    raise ValueError(f"unknown sampling backend {name!r}: use 'transformers' or 'vllm'")
