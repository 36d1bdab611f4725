"""Sampling: prompts, the backends, per-problem shards and resume after a kill, the task
verifiers, and the samples stage's loop over a profile."""
import dataclasses
import os

import pandas as pd
import pytest

from rlsft import backends as B
from rlsft import organism as O
from rlsft import sampling as SM
from rlsft import task as T
from rlsft import tasks
from rlsft import verify as V
from rlsft.io import finished_files
from rlsft.schema import SAMPLE_COLUMNS
from rlsft.stages import samples as S


def sp(**kw):
    """SamplingParams (which has no defaults of its own) for a test: n=2, T=0.6, top_p=0.95, 8 tokens."""
    return B.SamplingParams(**{"n": 2, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 8, **kw})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    world = T.World.generate(n_places=10, out_degree=3, seed=0)
    evals, train = T.make_splits(world, {"e": {"n": 5, "levels": [2]}}, seed=0)
    docs = T.base_corpus(world, train, 2, seed=0, n_facts=2)
    tok = O.build_tokenizer(docs + [p.prompt for p in evals["e"]])
    model = O.new_model(tok, n_layer=1, n_embd=32, n_head=2, seed=0)
    O.pretrain(model, tok, docs, epochs=2, batch_size=16, seed=0)
    path = tmp_path_factory.mktemp("m") / "Base"
    O.save_model(model, tok, path)
    problems = T.problems_frame(evals["e"], "e")
    return world, problems, path


def _run(tiny, shard_dir, factory=None):
    world, problems, path = tiny
    params = B.SamplingParams(n=6, temperature=1.0, top_p=0.95, max_new_tokens=24, seed=0)
    return SM.sample_model(
        family="f", variant="Base", problems=problems, prompt_spec={"style": "raw", "user": "{question}"},
        backend_factory=factory or (lambda: B.TransformersBackend(str(path))), params=params,
        verifier=lambda text, row: T.check(world, T.problem_from_row(row), text),
        shard_dir=shard_dir, fingerprint=SM.model_fingerprint(str(path), None), chunk=2, backend="transformers")


def test_table_has_every_sample_and_column(tiny, tmp_path):
    df = _run(tiny, tmp_path)
    assert list(df.columns) == SAMPLE_COLUMNS
    assert len(df) == 5 * 6 and set(df["finish_reason"]) <= {"stop", "length"}
    assert df.groupby("problem")["sample"].apply(sorted).map(lambda s: s == list(range(6))).all()


def test_same_seed_same_samples(tiny, tmp_path):
    a, b = _run(tiny, tmp_path / "a"), _run(tiny, tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)


def test_resume_after_kill_gives_the_same_table(tiny, tmp_path):
    full = _run(tiny, tmp_path / "full")

    class Killed(RuntimeError):
        pass

    calls = {"n": 0}

    def dying_factory():
        backend = B.TransformersBackend(str(tiny[2]))
        real = backend.generate

        def generate(prompts, params):
            calls["n"] += 1
            if calls["n"] == 2:  # the run dies while sampling its second chunk of problems
                raise Killed
            return real(prompts, params)

        backend.generate = generate
        return backend

    with pytest.raises(Killed):
        _run(tiny, tmp_path / "resumed", factory=dying_factory)
    shards = finished_files(tmp_path / "resumed", "*.parquet", recursive=True)
    assert 0 < len(shards) < 5  # some problems done, not all
    resumed = _run(tiny, tmp_path / "resumed")
    pd.testing.assert_frame_equal(full, resumed)


def test_finished_problems_never_reload_the_model(tiny, tmp_path):
    _run(tiny, tmp_path)
    df = _run(tiny, tmp_path, factory=lambda: (_ for _ in ()).throw(AssertionError("model loaded")))
    assert len(df) == 30


def test_build_prompt_styles():
    assert B.build_prompt("Q?", {"style": "raw", "system": "S", "user": "{question} A:"}) == "S\nQ? A:"
    with pytest.raises(ValueError, match="question"):
        B.build_prompt("Q?", {"user": "no placeholder"})
    with pytest.raises(ValueError, match="chat template"):
        B.build_prompt("Q?", {"style": "chat"}, tokenizer=None)


@pytest.mark.parametrize("bad", [dict(n=0), dict(temperature=0), dict(top_p=0), dict(max_new_tokens=0)])
def test_sampling_params_are_validated(bad):
    with pytest.raises(ValueError):
        sp(**bad)


def test_sampling_defaults_have_one_source():
    """The samples stage's Params is the one source of the sampling defaults: SamplingParams has none
    (issue 15: n = 64 and max_new_tokens = 256 there drifted from the notebook's 64 and 160)."""
    with pytest.raises(TypeError):
        B.SamplingParams()
    fields = {f.name: f for f in dataclasses.fields(B.SamplingParams)}
    for name in ("n", "temperature", "top_p", "max_new_tokens"):
        assert fields[name].default is dataclasses.MISSING, name
    p = S.Params()
    assert S.sampling_params(p, seed=3) == B.SamplingParams(n=p.M, temperature=p.temperature, top_p=p.top_p,
                                                            max_new_tokens=p.max_new_tokens, seed=3)
    assert (p.M, p.max_new_tokens) == (64, 160)


def test_vllm_backend_without_vllm_or_its_environment_is_a_clear_error(monkeypatch):
    """No vllm here and no vLLM environment: the error says how to make one (the real backend is
    tests/test_vllm_real.py, in .venv-vllm)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this environment")
    monkeypatch.setenv("RLSFT_VLLM_PYTHON", "")
    assert B.vllm_python() is None
    with pytest.raises(RuntimeError, match=r"chosen but vllm is not installed.*--setup-vllm"):
        B.make_backend("vllm", "some/model", None)


def test_vllm_environment_python_that_cannot_start_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("RLSFT_VLLM_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(RuntimeError, match="cannot start the vLLM environment's Python"):
        B.VLLMWorkerBackend(str(tmp_path / "no-python"), str(tmp_path))  # a folder: "on disk"


def test_vllm_request_seeds_never_share_sample_streams():
    """vLLM seeds the n samples of a request seed, seed + 1, ..., seed + n - 1; the request seeds of
    different problems are multiples of n (and distinct), so their streams never overlap. With the
    old 31-bit per-problem seeds, 3000 problems at n = 256 had overlapping streams (shown here)."""
    n = 256
    keys = [f"aime24__{i}" for i in range(3000)] + [f"nav-a__p{i}" for i in range(3000)]
    seeds = sorted(B.vllm_request_seed(0, k, n) for k in keys)
    assert all(s % n == 0 and 0 <= s <= 2**63 - 1 - n for s in seeds)
    assert min(b - a for a, b in zip(seeds, seeds[1:])) >= n
    old = sorted(B._problem_seed(0, k) for k in keys)
    assert min(b - a for a, b in zip(old, old[1:])) < n  # what the per-problem 31-bit seeds gave
    assert B.vllm_request_seed(0, keys[0], n) != B.vllm_request_seed(1, keys[0], n)


def test_vllm_worker_loop_answers_each_request_and_reports_errors(monkeypatch):
    """The worker's protocol without vLLM: one JSON reply per request line, errors as replies."""
    import io
    import json

    class Fake:
        def __init__(self, path, revision, **options):
            self.max_model_len, self.engine_args = 32, {"model": path, **options}

        def generate(self, prompts, params):
            if "bad" in prompts:
                raise ValueError("prompt of bad fills max_model_len")
            return {k: [B.Completion(f"{v}!", 2, "stop")] * params.n for k, v in prompts.items()}

    monkeypatch.setattr(B, "VLLMBackend", Fake)
    params = dataclasses.asdict(sp(n=2))
    lines = [json.dumps({"op": "start", "path": "m", "revision": None, "options": {"dtype": "auto"}}),
             json.dumps({"op": "generate", "prompts": {"a": "x"}, "params": params}),
             json.dumps({"op": "generate", "prompts": {"bad": "y"}, "params": params})]
    out = io.StringIO()
    assert B._vllm_worker(lines, out) == 0
    start, gen, err = (json.loads(x) for x in out.getvalue().splitlines())
    assert start["max_model_len"] == 32 and start["engine_args"] == {"model": "m", "dtype": "auto"}
    assert gen["out"] == {"a": [["x!", 2, "stop"]] * 2}
    assert err["type"] == "ValueError" and "max_model_len" in err["error"]


def test_vllm_engine_args_on_cpu_follow_the_weights_unless_the_profile_says(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert B.weights_dtype(str(tmp_path)) == "bfloat16"
    cpu = B.vllm_engine_args("cpu", str(tmp_path), checkpoint_dtype="float32")
    assert (cpu["dtype"], cpu["enforce_eager"]) == ("float32", True)
    chosen = B.vllm_engine_args("cpu", "m", dtype="float16", enforce_eager=False, checkpoint_dtype="float32")
    assert (chosen["dtype"], chosen["enforce_eager"]) == ("float16", False)
    assert "distributed_executor_backend" not in B.vllm_engine_args("cpu", "m", tensor_parallel_size=2)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown sampling backend"):
        B.make_backend("magic", "x", None)


def test_select_shard_partitions():
    df = pd.DataFrame({"problem": list("abcdefg")})
    parts = [S.select_shard(df, f"{i}/3")["problem"].tolist() for i in range(3)]
    assert sorted(sum(parts, [])) == list("abcdefg")
    with pytest.raises(ValueError):
        S.select_shard(df, "3/3")


# ------------------------------------------------------------- shard keys: what resamples, what not

class FakeBackend:
    """Echoes each prompt as its completions and logs which problems it was asked to sample."""

    name, tokenizer = "fake", None

    def __init__(self, calls: list):
        self.calls = calls

    def generate(self, prompts, params):
        self.calls.append(sorted(prompts))
        return {k: [B.Completion(f"{p} #{i}", 3, "stop") for i in range(params.n)] for k, p in prompts.items()}


PROBLEMS = pd.DataFrame({"benchmark": ["b1", "b1", "b1", "b2"], "problem": ["p1", "p2", "p3", "p4"],
                         "prompt": ["one", "two", "three", "four"], "answer": ["1", "2", "3", "4"],
                         "meta": ["{}", "{}", "{}", '{"x": 1}']})


def exact(text, row):
    return text.split(" #")[0], text.split(" #")[0] == row["answer"]


def other_exact(text, row):
    return exact(text, row)


def _fake(tmp_path, problems=PROBLEMS, **over):
    """Run sample_model with the fake backend; returns (table, [problems sampled by each call])."""
    calls = []
    kw = dict(family="f", variant="Base", problems=problems, prompt_spec={"style": "raw", "user": "{question}"},
              backend_factory=lambda: FakeBackend(calls), params=sp(), verifier=exact,
              shard_dir=tmp_path, fingerprint="model@abc", chunk=2, backend="vllm", max_model_len=4096)
    kw.update(over)
    return SM.sample_model(**kw), sorted(k for c in calls for k in c)


def _edit(col, value, row=0):
    df = PROBLEMS.copy()
    df.loc[row, col] = value
    return df


ALL = ["b1__p1", "b1__p2", "b1__p3", "b2__p4"]


def test_unchanged_rerun_samples_nothing(tmp_path):
    first, sampled = _fake(tmp_path)
    assert sampled == ALL
    again, sampled = _fake(tmp_path)
    assert sampled == []
    pd.testing.assert_frame_equal(first, again)


@pytest.mark.parametrize("change, expected", [
    (dict(problems=_edit("prompt", "one, reworded")), ["b1__p1"]),
    (dict(problems=_edit("answer", "11")), ["b1__p1"]),
    (dict(problems=_edit("meta", '{"x": 2}', row=3)), ["b2__p4"]),
    (dict(verifier=other_exact), ALL),
    (dict(backend="transformers"), ALL),
    (dict(max_model_len=8192), ALL),
    (dict(max_model_len=None), ALL),
    (dict(params=sp(stop_token_ids=(151645, 151643))), ALL),
    (dict(params=sp(stop=("<|im_start|>",))), ALL),
    (dict(params=sp(temperature=1.0)), ALL),
    (dict(prompt_spec={"style": "raw", "user": "Q: {question}"}), ALL),
    (dict(fingerprint="model@def"), ALL),
])
def test_a_change_resamples_exactly_the_affected_problems(tmp_path, change, expected):
    _fake(tmp_path)
    table, sampled = _fake(tmp_path, **change)
    assert sampled == expected
    assert len(table) == 4 * 2
    _, sampled = _fake(tmp_path, **change)  # and the changed setting is then reused
    assert sampled == []


def test_a_changed_problem_gets_new_samples_and_verdicts(tmp_path):
    _fake(tmp_path)
    table, _ = _fake(tmp_path, problems=_edit("prompt", "eleven").pipe(lambda d: d.assign(
        answer=d["answer"].where(d["problem"] != "p1", "eleven"))))
    p1 = table[table["problem"] == "p1"]
    assert p1["text"].str.startswith("eleven").all() and p1["correct"].all()


def test_verifier_identity_per_benchmark(tmp_path):
    _fake(tmp_path)

    def verify(text, row):
        return exact(text, row)

    verify.identity = lambda row: "exact" if row["benchmark"] == "b1" else "exact-v2"
    _, sampled = _fake(tmp_path, verifier=verify)
    assert sampled == ALL  # a new identity for every benchmark
    verify.identity = lambda row: "exact" if row["benchmark"] == "b1" else "exact-v3"
    _, sampled = _fake(tmp_path, verifier=verify)
    assert sampled == ["b2__p4"]  # only the benchmark whose verifier changed


def test_benchmark_verifier_identity_follows_the_registry(tmp_path, monkeypatch):
    fn = tasks.make_verifier("benchmarks", tmp_path)
    row = {"benchmark": "aime24", "problem": "aime24-01", "prompt": "Q", "answer": "3", "meta": "{}"}
    before = fn.identity(row)
    assert "math" in before and fn.identity({**row, "benchmark": "humaneval"}) != before
    monkeypatch.setitem(V.VERIFIERS, "math", lambda text, problem: (text, True))
    assert fn.identity(row) != before


# ------------------------------------------------------------------------------ verify status

def test_samples_carry_a_verify_status(tiny, tmp_path):
    df = _run(tiny, tmp_path)
    assert set(df["verify_status"]) == {"ok"}  # the organism's checker always judges


def test_three_tuple_verifier_statuses_reach_the_table(tmp_path):
    def verify(text, row):
        return (None, False, "no_box") if row["problem"] == "p2" else (*exact(text, row), "ok")

    table, _ = _fake(tmp_path, verifier=verify)
    got = table.groupby("problem")["verify_status"].first().to_dict()
    assert got == {"p1": "ok", "p2": "no_box", "p3": "ok", "p4": "ok"}
    assert list(table.columns) == SAMPLE_COLUMNS


def test_verify_record_normalises_and_rejects():
    row = {"answer": "4"}
    assert V.verify_record(lambda t, r: ("4", 1), "4", row) == {"extracted": "4", "correct": True,
                                                                 "verify_status": "ok"}
    assert V.verify_record(lambda t, r: ("4", False, "timeout"), "4", row)["verify_status"] == "timeout"
    with pytest.raises(ValueError, match="status 'maybe'"):
        V.verify_record(lambda t, r: ("4", False, "maybe"), "4", row)
    with pytest.raises(TypeError, match="must return"):
        V.verify_record(lambda t, r: True, "4", row)


def test_make_verifier_benchmarks_reports_statuses(tmp_path):
    fn = tasks.make_verifier("benchmarks", tmp_path)
    row = {"benchmark": "aime24", "problem": "aime24-01", "prompt": "Q", "answer": "3", "meta": "{}"}
    assert V.verify_record(fn, r"so \boxed{3}", row) == {"extracted": "3", "correct": True, "verify_status": "ok"}
    assert V.verify_record(fn, "no box", row)["verify_status"] == "no_box"
    assert V.verify_record(fn, r"\boxed{\,}", row)["verify_status"] == "parse_error"


# ----------------------------------------------------------------------- stop settings and BOS

def test_sampling_params_stop_settings():
    p = sp(stop_token_ids=[151645, 151643], stop=["</s>"])
    assert p.stop_token_ids == (151645, 151643) and p.stop == ("</s>",)  # hashable, key-stable
    for bad in (dict(stop_token_ids=[-1]), dict(stop_token_ids=["5"]), dict(stop_token_ids=[True]),
                dict(stop=[""]), dict(stop=[3])):
        with pytest.raises(ValueError, match="stop"):
            sp(**bad)


def test_transformers_backend_stops_at_stop_tokens_and_strings(tiny):
    world, problems, path = tiny
    backend = B.TransformersBackend(str(path))
    tok = backend.tokenizer
    prompts = {r.problem: r.prompt for r in problems.itertuples()}
    base = sp(n=4, temperature=1.0, max_new_tokens=24)
    plain = backend.generate(prompts, base)
    assert any("\n" in c.text for cs in plain.values() for c in cs)  # the model does write newlines
    newline = tok.convert_tokens_to_ids("\n")
    by_id = backend.generate(prompts, sp(n=4, temperature=1.0, max_new_tokens=24, stop_token_ids=(newline,)))
    comps = [c for cs in by_id.values() for c in cs]
    assert not any("\n" in c.text for c in comps)
    assert any(c.finish_reason == "stop" for c in comps)
    by_str = backend.generate(prompts, sp(n=4, temperature=1.0, max_new_tokens=24, stop=("\n",)))
    comps = [c for cs in by_str.values() for c in cs]
    assert not any("\n" in c.text for c in comps)
    assert any(c.finish_reason == "stop" and c.n_tokens < 24 for c in comps)  # stopped there, not cut later


def _bos_tokenizer():
    """A word-level tokenizer that adds BOS by default and whose chat template writes the BOS too
    (as DeepSeek-R1-Distill's does), the case where vLLM's own tokenization doubles the BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<|user|>": 4, "<|assistant|>": 5}
    for w in "what is 1 + 2 ? Question: Answer:".split():
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = ("{{ bos_token }}{% for m in messages %}<|user|> {{ m['content'] }} {% endfor %}"
                          "<|assistant|>")
    return fast


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in for the vllm package on a CUDA platform (LLM, SamplingParams, inputs.TokensPrompt,
    platforms.current_platform) that records what the backend passes. Only for what real vLLM on
    this CPU cannot reach: the GPU options (tests/test_vllm_real.py runs real vLLM for the rest)."""
    import sys
    import types

    seen = {}

    class LLM:
        def __init__(self, **kw):
            seen["llm_kwargs"] = kw

        def get_tokenizer(self):
            return _bos_tokenizer()

        def generate(self, prompts, sampling_params, use_tqdm=True):
            seen["prompts"], seen["sampling_params"] = prompts, sampling_params
            out = types.SimpleNamespace(text="the answer", token_ids=[7, 8, 2], finish_reason="stop")
            return [types.SimpleNamespace(outputs=[out] * sp.kw["n"]) for sp in sampling_params]

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda **kw: dict(kw)
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type="cuda")
    vllm.inputs, vllm.platforms = inputs, platforms
    for name, mod in (("vllm", vllm), ("vllm.inputs", inputs), ("vllm.platforms", platforms)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(B.importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else None)
    monkeypatch.setattr(B, "_require_on_disk", lambda path, revision: None)  # "org/model" is not downloaded
    seen["platform"] = platforms.current_platform
    return seen


def test_vllm_backend_gpu_options_reach_the_engine(fake_vllm):
    """GPU only (no real vLLM here can take them): tensor parallelism, the GPU memory share and
    vLLM's own dtype and compilation choices on CUDA reach ``LLM``; the prompts still go as token
    ids with one BOS and the context still caps max_tokens."""
    backend = B.make_backend("vllm", "org/model", "abc", max_model_len=64, seed=3, tensor_parallel_size=2)
    kw = fake_vllm["llm_kwargs"]
    assert (kw["tensor_parallel_size"], kw["gpu_memory_utilization"], kw["dtype"], kw["max_model_len"]) == (2, 0.9, "auto", 64)
    assert "enforce_eager" not in kw and "distributed_executor_backend" not in kw and kw["revision"] == "abc"
    tok = backend.tokenizer
    chat = B.build_prompt("what is 1 + 2 ?", {"style": "chat"}, tok)
    out = backend.generate({"b__chat": chat}, sp(n=3, max_new_tokens=100, stop_token_ids=(151645,)))
    ids = fake_vllm["prompts"][0]["prompt_token_ids"]
    assert ids.count(tok.bos_token_id) == 1 and fake_vllm["sampling_params"][0].kw["max_tokens"] == 64 - len(ids)
    assert len(out["b__chat"]) == 3


def test_vllm_model_not_on_disk_is_a_clear_error(monkeypatch):
    """Checked before vLLM starts (vLLM itself would try the hub, retrying for a minute)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="hf download no-org/no-model"):
        B._require_on_disk("no-org/no-model", None)


def test_vllm_without_a_platform_is_a_clear_error(fake_vllm):
    """vllm importable but no platform (the CUDA build on a machine without a GPU)."""
    fake_vllm["platform"].device_type = ""
    with pytest.raises(RuntimeError, match="finds no platform.*--setup-vllm"):
        B.make_backend("vllm", "org/model", None)


def test_vllm_backend_refuses_two_problems_on_one_seed_stream(fake_vllm, monkeypatch):
    backend = B.make_backend("vllm", "org/model", None)
    monkeypatch.setattr(B, "vllm_request_seed", lambda seed, key, n: 4 * n)  # a forced hash collision
    backend.generate({"b__1": "what is 1 + 2 ?"}, sp(n=2))
    backend.generate({"b__1": "what is 1 + 2 ?"}, sp(n=2))  # the same problem again is fine
    with pytest.raises(RuntimeError, match="same vLLM seed"):
        backend.generate({"b__2": "what is 2 + 1 ?"}, sp(n=2))


def test_sample_profile_passes_variant_stop_settings(tmp_path, monkeypatch):
    """sample_profile hands each variant's stop settings, backend and max_model_len to sample_model."""
    seen = {}

    def fake_sample_model(**kw):
        seen[kw["variant"]] = (kw["params"].stop_token_ids, kw["params"].stop, kw["backend"], kw["max_model_len"])
        return pd.DataFrame(columns=SAMPLE_COLUMNS)

    monkeypatch.setattr(S, "sample_model", fake_sample_model)
    monkeypatch.setattr(tasks, "make_verifier", lambda task, data_dir: exact)
    monkeypatch.setattr(S, "model_fingerprint", lambda path, rev: "fp")
    monkeypatch.setattr(S, "resolved_commit", lambda path, rev: None)
    variants = {"Base": {"model": "org/base", "max_model_len": 4096, "stop_token_ids": [151645, 151643]},
                "RL": {"model": "org/rl", "stop": ["<|im_start|>"]}}
    profile = {"name": "t", "seed": 0, "families": {"f": {"variants": variants}}}
    params = S.Params(M=2, max_new_tokens=8, task="benchmarks", backend="vllm", batch_size=4, chunk=2)
    S.sample_profile(profile, tmp_path, params, PROBLEMS)
    assert seen["Base"] == ((151645, 151643), (), "vllm", 4096)
    assert seen["RL"] == ((), ("<|im_start|>",), "vllm", None)


def test_sample_profile_imports_completions_with_the_math_fallback(tmp_path, monkeypatch):
    """A variant that names completions files is imported, not sampled: verified with the benchmark's
    verifier, ``math`` for a benchmark that is not registered (``amc``); the stage has no ``verifier``
    parameter for it (issue 15), and a repeated stage reuses the verified table."""
    import json

    from rlsft import completions as CP

    assert "verifier" not in {f.name for f in dataclasses.fields(S.Params)}
    f = tmp_path / "amc.jsonl"
    f.write_text("\n".join(json.dumps({"id": i, "prompt": f"Q{i}", "answer": str(i), "outputs": [f"\\boxed{{{i}}}", "no"]})
                           for i in range(3)))
    profile = {"name": "t", "seed": 0, "path": str(tmp_path / "t.yaml"),
               "families": {"f": {"variants": {"Base": {"completions": str(f)}, "RL": {"completions": str(f)}}}}}
    problems = CP.problems_from_profile(profile, progress=False)
    out = S.sample_profile(profile, tmp_path, S.Params(task="completions"), problems)
    base = out[("f", "Base")]
    assert list(base.columns) == SAMPLE_COLUMNS and set(base["benchmark"]) == {"amc"}
    assert base["correct"].tolist() == [True, False] * 3
    assert base["verify_status"].tolist() == ["ok", "no_box"] * 3
    cached = list((tmp_path / "samples" / ".imported" / "f").rglob("*.parquet"))
    assert len(cached) == 2
    models = json.loads((tmp_path / "samples" / "models.json").read_text())
    assert [m["variant"] for m in models] == ["Base", "RL"] and models[0]["model"] == "completions (1 file(s))"
    with monkeypatch.context() as m:
        m.setattr(CP, "import_variant", lambda **kw: pytest.fail("verified again"))
        again = S.sample_profile(profile, tmp_path, S.Params(task="completions"), problems)
    pd.testing.assert_frame_equal(again[("f", "Base")], base)
    f.write_text(f.read_text().replace('"no"', '"\\\\boxed{0}"'))  # an edited file is verified again
    edited = S.sample_profile(profile, tmp_path, S.Params(task="completions"), problems)[("f", "Base")]
    assert edited["correct"].tolist() == [True, True, True, False, True, False]


def test_shard_cli_needs_the_data_stage_first(tmp_path):
    """``python -m rlsft.stages.samples --shard i/n`` (scale-out) stops with the command to run first."""
    with pytest.raises(SystemExit, match=r"run `./run_all.sh --profile ci --only data` first"):
        S.main(["--profile", "ci", "--shard", "0/2", "--results", str(tmp_path)])


# ------------------------------------------------------------------ compact decoding equals generate
@pytest.mark.parametrize("temperature,top_p,max_new_tokens,batch_size", [
    (0.6, 0.95, 12, 512),   # the organism's settings; some rows stop, some run to the cap
    (1.0, 1.0, 40, 7),      # no warper at all; several batches per call (the random stream carries over)
    (1.3, 0.5, 3, 4),       # a tight nucleus; every row cut at the cap
])
@pytest.mark.parametrize("compact_at", [0.0, B.COMPACT_AT, 1.0])  # at every stop, the default, never
def test_compact_decoding_gives_the_tokens_of_generate(tiny, monkeypatch, temperature, top_p, max_new_tokens,
                                                       batch_size, compact_at):
    """transformers_generate with decode="compact" (rows leave the batch once they stop) returns the
    very completions of decode="generate" (model.generate on every row to the end), whenever the
    finished rows leave the batch."""
    monkeypatch.setattr(B, "COMPACT_AT", compact_at)
    _, problems, path = tiny
    backend = B.TransformersBackend(str(path))
    prompts = dict(zip(problems["problem"], problems["prompt"]))
    params = sp(n=9, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=3)
    ours = B.transformers_generate(backend.model, backend.tokenizer, prompts, params, batch_size=batch_size)
    ref = B.transformers_generate(backend.model, backend.tokenizer, prompts, params, batch_size=batch_size,
                                  decode="generate")
    assert ours == ref
    finished = {c.finish_reason for cs in ours.values() for c in cs}
    if max_new_tokens >= 12:
        assert finished == {"stop", "length"}  # both ways a row can end were exercised


def test_compact_decoding_stops_at_every_stop_token_and_falls_back_where_it_does_not_apply(tiny, monkeypatch):
    _, problems, path = tiny
    backend = B.TransformersBackend(str(path))
    tok, model = backend.tokenizer, backend.model
    prompts = dict(zip(problems["problem"], problems["prompt"]))
    stop_id = tok.convert_tokens_to_ids("▁to")
    params = sp(n=6, max_new_tokens=30, seed=1, stop_token_ids=(stop_id,))
    ours = B.transformers_generate(model, tok, prompts, params)
    assert ours == B.transformers_generate(model, tok, prompts, params, decode="generate")
    assert any(c.finish_reason == "stop" and not c.text.endswith("to") for cs in ours.values() for c in cs)
    # a generation config with another logits processor, or stop strings: model.generate itself
    calls = []
    monkeypatch.setattr(B, "compact_sample", lambda *a, **k: calls.append(1))
    model.generation_config.repetition_penalty = 1.2
    assert not B.plain_sampling(model)
    B.transformers_generate(model, tok, prompts, sp(n=2))
    model.generation_config.repetition_penalty = None
    assert B.plain_sampling(model)
    B.transformers_generate(model, tok, prompts, sp(n=2, stop=("birch",)))
    assert calls == []
    with pytest.raises(ValueError, match="unknown decode"):
        B.TransformersBackend(str(path), decode="fast")


def test_compact_generate_replaces_generate_as_trl_calls_it(tiny):
    """GRPO samples its groups through model.generate(input_ids, attention_mask, generation_config):
    compact_generate returns the same ids for plain sampling and hands anything else to generate."""
    import torch
    from transformers import GenerationConfig

    _, problems, path = tiny
    model, tok = O.load_model(path)
    enc = tok([p for p in problems["prompt"] for _ in range(4)], return_tensors="pt", padding=True,
              add_special_tokens=False)
    cfg = GenerationConfig(max_new_tokens=20, do_sample=True, pad_token_id=tok.pad_token_id,
                           eos_token_id=[tok.eos_token_id], temperature=1.0, top_p=1.0, top_k=0, min_p=None,
                           repetition_penalty=1.0, disable_compile=True)
    torch.manual_seed(5)
    ref = model.generate(**enc, generation_config=cfg)
    fast = B.compact_generate(model)
    torch.manual_seed(5)
    assert torch.equal(fast(**enc, generation_config=cfg), ref)
    torch.manual_seed(5)
    model.generate(**enc, generation_config=cfg)
    want_next = torch.rand(3)
    torch.manual_seed(5)
    fast(**enc, generation_config=cfg)
    assert torch.equal(torch.rand(3), want_next)  # so GRPO's next group draws the same numbers
    greedy = GenerationConfig(max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
    assert torch.equal(fast(**enc, generation_config=greedy), model.generate(**enc, generation_config=greedy))
    assert not B._plain_config(greedy) and B._plain_config(cfg)
    assert not B._plain_config(GenerationConfig(**{**cfg.to_dict(), "top_k": 50}))


def test_variants_sampled_in_worker_processes_are_the_samples_of_one_process(tiny, tmp_path):
    """workers = 2: the variants are sampled at once in two spawned processes with one torch thread
    each; the tables equal those of workers = 1 (one process, all threads) row for row."""
    from rlsft import io

    world, problems, path = tiny
    for run in ("one", "two"):
        io.write_json(tmp_path / run / "data" / "world.json", T.world_to_json(world))
    variants = {"Base": {"model": str(path)}, "RL": {"model": str(path), "prompt": {"style": "raw", "user": "Q: {question}"}}}
    profile = {"name": "t", "seed": 0, "device": "cpu",
               "families": {"f": {"prompt": {"style": "raw", "user": "{question}"}, "variants": variants}}}
    params = S.Params(M=4, max_new_tokens=16, batch_size=8, chunk=2)
    assert S.parallel_workers(params, profile, 2) == min(2, os.cpu_count())
    one = S.sample_profile(profile, tmp_path / "one", dataclasses.replace(params, workers=1), problems)
    two = S.sample_profile(profile, tmp_path / "two", params, problems)
    assert list(two) == [("f", "Base"), ("f", "RL")]
    for key in one:
        pd.testing.assert_frame_equal(one[key], two[key])
    assert not one[("f", "Base")]["text"].equals(one[("f", "RL")]["text"])  # the two variants differ
