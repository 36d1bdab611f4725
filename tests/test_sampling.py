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
