"""Growing the organism: tokenizer, the three recipes, save/reload, determinism (tiny sizes)."""
import random

import pytest
import torch

from rlsft import organism as O
from rlsft import task as T


@pytest.fixture(scope="module")
def setup():
    world = T.World.generate(n_places=10, out_degree=3, seed=0)
    evals, train = T.make_splits(world, {"e": {"n": 3, "levels": [2]}}, seed=0)
    docs = T.base_corpus(world, train[:20], 2, seed=0, n_facts=1)
    sft_pairs = [(p.prompt, T.teacher_solution(world, p, random.Random(i))) for i, p in enumerate(train[:12])]
    tok = O.build_tokenizer(docs + [a + b for a, b in sft_pairs] + [p.prompt for p in evals["e"]])
    return world, train, docs, sft_pairs, tok


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before, model):
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_tokenizer_round_trip(setup):
    world, train, docs, sft_pairs, tok = setup
    for text in docs[:20] + [a + b for a, b in sft_pairs]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_tokenizer_survives_save_and_reload(setup, tmp_path):
    *_, tok = setup
    model = O.new_model(tok, n_layer=1, n_embd=16, n_head=2)
    O.save_model(model, tok, tmp_path / "m")
    _, tok2 = O.load_model(tmp_path / "m")
    s = "Find a route from " + setup[0].names[0] + " to " + setup[0].names[1] + ".\n"
    assert tok2(s)["input_ids"] == tok(s)["input_ids"] and tok2.decode(tok2(s)["input_ids"]) == s


def test_pretrain_changes_parameters_and_lowers_loss(setup):
    world, train, docs, sft_pairs, tok = setup
    model = O.new_model(tok, n_layer=1, n_embd=32, n_head=2, seed=0)
    before = _params(model)
    logs = O.pretrain(model, tok, docs, epochs=3, batch_size=8, lr=3e-3, seed=0, log_every=1)
    assert _changed(before, model)
    assert logs[-1]["loss"] < logs[0]["loss"]


def test_pretraining_is_deterministic(setup):
    world, train, docs, sft_pairs, tok = setup
    outs = []
    for _ in range(2):
        m = O.new_model(tok, n_layer=1, n_embd=16, n_head=2, seed=0)
        O.pretrain(m, tok, docs, epochs=1, batch_size=8, seed=0)
        outs.append(_params(m))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_sft_with_trl_changes_parameters(setup, tmp_path):
    world, train, docs, sft_pairs, tok = setup
    model = O.new_model(tok, n_layer=1, n_embd=16, n_head=2, seed=0)
    before = _params(model)
    hist = O.sft(model, tok, sft_pairs, epochs=1, batch_size=4, lr=1e-3, seed=0, output_dir=tmp_path / "sft",
                 log_every=1)
    assert _changed(before, model)
    assert any("loss" in h for h in hist)


def test_grpo_with_trl_changes_parameters(setup, tmp_path):
    world, train, docs, sft_pairs, tok = setup
    model = O.new_model(tok, n_layer=1, n_embd=16, n_head=2, seed=0)
    before = _params(model)
    rows = [{"prompt": p.prompt, "problem": p.id, "start": p.start, "goal": p.goal, "level": p.level} for p in train[:4]]
    # a dense reward so that groups have variance even for an untrained model
    reward = lambda text, row: float(len(text) % 3 == 0)
    hist = O.grpo(model, tok, rows, reward, steps=2, prompts_per_step=2, num_generations=4, lr=1e-3,
                  max_completion_length=12, seed=0, output_dir=tmp_path / "grpo", log_every=1)
    assert _changed(before, model)
    assert any("reward" in h for h in hist)


def test_save_and_reload_gives_identical_model(setup, tmp_path):
    *_, tok = setup
    model = O.new_model(tok, n_layer=1, n_embd=16, n_head=2, seed=1)
    O.save_model(model, tok, tmp_path / "m", extra={"variant": "Base"})
    model2, _ = O.load_model(tmp_path / "m")
    assert all(torch.equal(v, model2.state_dict()[k]) for k, v in model.state_dict().items())
    ids = torch.tensor([[tok.bos_token_id, 5, 6]])
    assert torch.equal(model(ids).logits, model2(ids).logits)
    assert O.read_training_log(tmp_path / "m")["variant"] == "Base"


def test_load_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the training stage"):
        O.load_model(tmp_path / "nothing")


def test_training_order_parents_first():
    v = {"Base": {"recipe": "pretrain"}, "RL": {"recipe": "grpo", "from": "Base"},
         "SFT": {"recipe": "sft", "from": "Base"}, "SFT+RL": {"recipe": "grpo", "from": "SFT"}}
    order = O.training_order(v)
    assert order.index("Base") < order.index("SFT") < order.index("SFT+RL") and order.index("Base") < order.index("RL")


def test_train_stage_lists_recipe_variants_and_tabulates_them():
    from rlsft.stages import train

    prof = {"families": {"f": {"variants": {"Base": {"recipe": "pretrain"}, "RL": {"model": "org/rl"}}}}}
    assert train.trainable(prof) == [("f", "Base")]
    empty = train.trained_table([])
    assert list(empty.columns) == train.TRAINED_COLUMNS and empty.empty  # every variant a model: no rows
    rec = {"family": "f", "variant": "Base", "recipe": "pretrain", "from": None, "n_params": 10, "wall_time_s": 1.5,
           "history": []}  # a log written before the device was recorded: trained on the CPU
    assert train.trained_table([rec]).values.tolist() == [["f", "Base", "pretrain", None, 10, "cpu", 1.5]]
    rec["device"] = "cuda"
    assert train.trained_table([rec])["device"].tolist() == ["cuda"]


@pytest.mark.parametrize("cuda", [False, True])
def test_resolve_device(monkeypatch, cuda):
    from rlsft.context import Context, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if cuda else "cpu")
    assert Context(name="train", profile={"device": "auto"}, params=None, root=None).device == resolve_device("auto")
    if cuda:
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(RuntimeError, match="no CUDA GPU.*device: cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="cpu, cuda or auto"):
        resolve_device("gpu")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_trainers_are_told_the_device(setup, tmp_path, monkeypatch, device):
    """SFT and GRPO hand TRL ``use_cpu`` from the device (stand-in trainers: no GPU needed here)."""
    import trl

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(*a, args, **kw):
        seen[type(args).__name__] = args.use_cpu
        raise Stop

    monkeypatch.setattr(trl, "SFTTrainer", fake_trainer)
    monkeypatch.setattr(trl, "GRPOTrainer", fake_trainer)
    monkeypatch.setattr(trl.SFTConfig, "__post_init__", lambda self: None)
    monkeypatch.setattr(trl.GRPOConfig, "__post_init__", lambda self: None)
    world, train, docs, sft_pairs, tok = setup
    model = O.new_model(tok, n_layer=1, n_embd=16, n_head=2, seed=0)
    rows = [{"prompt": p.prompt, "problem": p.id} for p in train[:2]]
    with pytest.raises(Stop):
        O.sft(model, tok, sft_pairs, epochs=1, output_dir=tmp_path / "s", device=device)
    with pytest.raises(Stop):
        O.grpo(model, tok, rows, lambda t, r: 0.0, steps=1, prompts_per_step=2, num_generations=2,
               output_dir=tmp_path / "g", device=device)
    assert seen == {"SFTConfig": device == "cpu", "GRPOConfig": device == "cpu"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")
def test_the_three_recipes_train_on_a_gpu(setup, tmp_path):
    """Pretraining, SFT and GRPO on ``cuda``; the saved model reloads on the CPU with the same outputs."""
    world, train, docs, sft_pairs, tok = setup
    model = O.new_model(tok, n_layer=1, n_embd=32, n_head=2, seed=0)
    logs = O.pretrain(model, tok, docs, epochs=3, batch_size=8, lr=3e-3, seed=0, log_every=1, device="cuda")
    assert next(model.parameters()).device.type == "cuda" and logs[-1]["loss"] < logs[0]["loss"]
    before = _params(model)
    O.sft(model, tok, sft_pairs, epochs=1, batch_size=4, seed=0, output_dir=tmp_path / "sft", device="cuda")
    rows = [{"prompt": p.prompt, "problem": p.id} for p in train[:4]]
    O.grpo(model, tok, rows, lambda text, row: float(len(text) % 3 == 0), steps=2, prompts_per_step=2,
           num_generations=4, lr=1e-3, max_completion_length=12, seed=0, output_dir=tmp_path / "grpo", device="cuda")
    assert next(model.parameters()).device.type == "cuda" and _changed(before, model)
    ids = torch.tensor([[tok.bos_token_id, 5, 6]])
    with torch.no_grad():
        on_gpu = model(ids.cuda()).logits.cpu()
    model.to("cpu")
    O.save_model(model, tok, tmp_path / "m")
    again, _ = O.load_model(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, on_gpu, atol=1e-4)
