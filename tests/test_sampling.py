"""Sampling: prompts, the transformers backend, per-problem shards and resume after a kill."""
import pandas as pd
import pytest

from rlsft import organism as O
from rlsft import sampling as SM
from rlsft import task as T


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
    params = SM.SamplingParams(n=6, temperature=1.0, top_p=0.95, max_new_tokens=24, seed=0)
    return SM.sample_model(
        family="f", variant="Base", problems=problems, prompt_spec={"style": "raw", "user": "{question}"},
        backend_factory=factory or (lambda: SM.TransformersBackend(str(path))), params=params,
        verifier=lambda text, row: T.check(world, T.problem_from_row(row), text),
        shard_dir=shard_dir, fingerprint=SM.model_fingerprint(str(path), None), chunk=2)


def test_table_has_every_sample_and_column(tiny, tmp_path):
    df = _run(tiny, tmp_path)
    assert list(df.columns) == SM.SAMPLE_COLUMNS
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
        backend = SM.TransformersBackend(str(tiny[2]))
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
    shards = list((tmp_path / "resumed").rglob("*.parquet"))
    assert 0 < len(shards) < 5  # some problems done, not all
    resumed = _run(tiny, tmp_path / "resumed")
    pd.testing.assert_frame_equal(full, resumed)


def test_finished_problems_never_reload_the_model(tiny, tmp_path):
    _run(tiny, tmp_path)
    df = _run(tiny, tmp_path, factory=lambda: (_ for _ in ()).throw(AssertionError("model loaded")))
    assert len(df) == 30


def test_build_prompt_styles():
    assert SM.build_prompt("Q?", {"style": "raw", "system": "S", "user": "{question} A:"}) == "S\nQ? A:"
    with pytest.raises(ValueError, match="question"):
        SM.build_prompt("Q?", {"user": "no placeholder"})
    with pytest.raises(ValueError, match="chat template"):
        SM.build_prompt("Q?", {"style": "chat"}, tokenizer=None)


@pytest.mark.parametrize("bad", [dict(n=0), dict(temperature=0), dict(top_p=0), dict(max_new_tokens=0)])
def test_sampling_params_are_validated(bad):
    with pytest.raises(ValueError):
        SM.SamplingParams(**bad)


def test_vllm_backend_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        SM.make_backend("vllm", "some/model", None)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown sampling backend"):
        SM.make_backend("magic", "x", None)


def test_select_shard_partitions():
    df = pd.DataFrame({"problem": list("abcdefg")})
    parts = [SM.select_shard(df, f"{i}/3")["problem"].tolist() for i in range(3)]
    assert sorted(sum(parts, [])) == list("abcdefg")
    with pytest.raises(ValueError):
        SM.select_shard(df, "3/3")


# ------------------------------------------------------------- shard keys: what resamples, what not

class FakeBackend:
    """Echoes each prompt as its completions and logs which problems it was asked to sample."""

    name, tokenizer = "fake", None

    def __init__(self, calls: list):
        self.calls = calls

    def generate(self, prompts, params):
        self.calls.append(sorted(prompts))
        return {k: [SM.Completion(f"{p} #{i}", 3, "stop") for i in range(params.n)] for k, p in prompts.items()}


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
              backend_factory=lambda: FakeBackend(calls), params=SM.SamplingParams(n=2), verifier=exact,
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
    (dict(params=SM.SamplingParams(n=2, stop_token_ids=(151645, 151643))), ALL),
    (dict(params=SM.SamplingParams(n=2, stop=("<|im_start|>",))), ALL),
    (dict(params=SM.SamplingParams(n=2, temperature=1.0)), ALL),
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
    from rlsft import verify as V

    fn = SM.make_verifier("benchmarks", tmp_path)
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
    assert list(table.columns) == SM.SAMPLE_COLUMNS


def test_verify_record_normalises_and_rejects():
    row = {"answer": "4"}
    assert SM.verify_record(lambda t, r: ("4", 1), "4", row) == {"extracted": "4", "correct": True,
                                                                 "verify_status": "ok"}
    assert SM.verify_record(lambda t, r: ("4", False, "timeout"), "4", row)["verify_status"] == "timeout"
    with pytest.raises(ValueError, match="status 'maybe'"):
        SM.verify_record(lambda t, r: ("4", False, "maybe"), "4", row)
    with pytest.raises(TypeError, match="must return"):
        SM.verify_record(lambda t, r: True, "4", row)


def test_make_verifier_benchmarks_reports_statuses(tmp_path):
    fn = SM.make_verifier("benchmarks", tmp_path)
    row = {"benchmark": "aime24", "problem": "aime24-01", "prompt": "Q", "answer": "3", "meta": "{}"}
    assert SM.verify_record(fn, r"so \boxed{3}", row) == {"extracted": "3", "correct": True, "verify_status": "ok"}
    assert SM.verify_record(fn, "no box", row)["verify_status"] == "no_box"
    assert SM.verify_record(fn, r"\boxed{\,}", row)["verify_status"] == "parse_error"


# ----------------------------------------------------------------------- stop settings and BOS

def test_sampling_params_stop_settings():
    sp = SM.SamplingParams(stop_token_ids=[151645, 151643], stop=["</s>"])
    assert sp.stop_token_ids == (151645, 151643) and sp.stop == ("</s>",)  # hashable, key-stable
    for bad in (dict(stop_token_ids=[-1]), dict(stop_token_ids=["5"]), dict(stop_token_ids=[True]),
                dict(stop=[""]), dict(stop=[3])):
        with pytest.raises(ValueError, match="stop"):
            SM.SamplingParams(**bad)


def test_transformers_backend_stops_at_stop_tokens_and_strings(tiny):
    world, problems, path = tiny
    backend = SM.TransformersBackend(str(path))
    tok = backend.tokenizer
    prompts = {r.problem: r.prompt for r in problems.itertuples()}
    base = SM.SamplingParams(n=4, temperature=1.0, max_new_tokens=24)
    plain = backend.generate(prompts, base)
    assert any("\n" in c.text for cs in plain.values() for c in cs)  # the model does write newlines
    newline = tok.convert_tokens_to_ids("\n")
    by_id = backend.generate(prompts, SM.SamplingParams(n=4, temperature=1.0, max_new_tokens=24,
                                                        stop_token_ids=(newline,)))
    comps = [c for cs in by_id.values() for c in cs]
    assert not any("\n" in c.text for c in comps)
    assert any(c.finish_reason == "stop" for c in comps)
    by_str = backend.generate(prompts, SM.SamplingParams(n=4, temperature=1.0, max_new_tokens=24, stop=("\n",)))
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
    """A stand-in for the vllm package (LLM, SamplingParams, inputs.TokensPrompt) that records
    what the backend passes, on a machine without a GPU or vllm."""
    import sys
    import types

    import torch

    seen = {}

    class LLM:
        def __init__(self, **kw):
            seen["llm_kwargs"] = kw

        def get_tokenizer(self):
            return _bos_tokenizer()

        def generate(self, prompts, sampling_params):
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
    vllm.inputs = inputs
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return seen


def test_vllm_backend_passes_token_ids_with_one_bos_and_the_stop_settings(fake_vllm):
    backend = SM.make_backend("vllm", "org/model", "abc", max_model_len=64, seed=3, tensor_parallel_size=2)
    assert fake_vllm["llm_kwargs"]["max_model_len"] == 64 and fake_vllm["llm_kwargs"]["tensor_parallel_size"] == 2
    tok = backend.tokenizer
    chat = SM.build_prompt("what is 1 + 2 ?", {"style": "chat"}, tok)
    assert chat.startswith("<s>") and tok(chat)["input_ids"][:2] == [1, 1]  # text in: a second BOS
    prompts = {"b__chat": chat, "b__raw": "Question: what is 1 + 2 ? Answer:"}
    params = SM.SamplingParams(n=3, max_new_tokens=100, stop_token_ids=(151645, 151643), stop=("<|user|>",))
    out = backend.generate(prompts, params)
    sent = fake_vllm["prompts"]
    assert all(set(p) == {"prompt_token_ids"} for p in sent)  # token ids, not text
    for ids in (p["prompt_token_ids"] for p in sent):
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert sent[0]["prompt_token_ids"] == tok(chat, add_special_tokens=False)["input_ids"]
    assert sent[1]["prompt_token_ids"] == tok(prompts["b__raw"])["input_ids"]  # the raw prompt gets its BOS
    for sp, p in zip(fake_vllm["sampling_params"], sent):
        assert sp.kw["stop_token_ids"] == [151645, 151643] and sp.kw["stop"] == ["<|user|>"]
        assert sp.kw["n"] == 3 and sp.kw["max_tokens"] == 64 - len(p["prompt_token_ids"])  # the context caps
    assert [len(out[k]) for k in prompts] == [3, 3] and out["b__chat"][0].finish_reason == "stop"


def test_vllm_backend_prompt_longer_than_the_context_is_a_clear_error(fake_vllm):
    backend = SM.make_backend("vllm", "org/model", None, max_model_len=4)
    with pytest.raises(ValueError, match="max_model_len"):
        backend.generate({"b__p": "what is 1 + 2 ? what is 1 + 2 ?"}, SM.SamplingParams(n=1))


def test_sample_profile_passes_variant_stop_settings(tmp_path, monkeypatch):
    """sample_profile hands each variant's stop settings, backend and max_model_len to sample_model."""
    seen = {}

    def fake_sample_model(**kw):
        seen[kw["variant"]] = (kw["params"].stop_token_ids, kw["params"].stop, kw["backend"], kw["max_model_len"])
        return pd.DataFrame(columns=SM.SAMPLE_COLUMNS)

    monkeypatch.setattr(SM, "sample_model", fake_sample_model)
    monkeypatch.setattr(SM, "make_verifier", lambda task, data_dir: exact)
    monkeypatch.setattr(SM, "model_fingerprint", lambda path, rev: "fp")
    monkeypatch.setattr(SM, "resolved_commit", lambda path, rev: None)
    variants = {"Base": {"model": "org/base", "max_model_len": 4096, "stop_token_ids": [151645, 151643]},
                "RL": {"model": "org/rl", "stop": ["<|im_start|>"]}}
    profile = {"name": "t", "seed": 0, "families": {"f": {"variants": variants}}}
    params = {"M": 2, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 8, "task": "benchmarks",
              "backend": "vllm", "batch_size": 4, "chunk": 2}
    SM.sample_profile(profile, tmp_path, params, PROBLEMS)
    assert seen["Base"] == ((151645, 151643), (), "vllm", 4096)
    assert seen["RL"] == ((), ("<|im_start|>",), "vllm", None)
