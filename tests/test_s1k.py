"""The s1K-1.1 single-response SFT recipe (rlsft.s1k) on a fake 3-row dataset and a tiny model."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlsft import organism as O
from rlsft import s1k

REPO = Path(__file__).resolve().parents[1]
ROWS = [
    {"question": "What is two plus two ?", "deepseek_thinking_trajectory": "two plus two is four .",
     "deepseek_attempt": "The answer is four .", "solution": "4"},
    {"question": "What is three plus one ?", "deepseek_thinking_trajectory": "three plus one is four .",
     "deepseek_attempt": "The answer is four .", "solution": "4"},
    {"question": "What is one plus one ?", "deepseek_thinking_trajectory": "one plus one is two .",
     "deepseek_attempt": "The answer is two .", "solution": "2"},
]
PROMPT = {"style": "raw", "user": "Question : {question}\nAnswer :\n"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [s1k.format_example(r, None, PROMPT, eos="")[k] for r in ROWS for k in ("prompt", "completion")]
    tok = O.build_tokenizer(texts)
    model = O.new_model(tok, n_layer=1, n_embd=32, n_head=2, seed=0)
    path = tmp_path_factory.mktemp("s1k") / "base"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_format_example_r1_layout():
    ex = s1k.format_example(ROWS[0], None, PROMPT, eos="<eos>")
    assert ex["prompt"] == "Question : What is two plus two ?\nAnswer :\n"
    assert ex["completion"] == "<think>\ntwo plus two is four .\n</think>\n\nThe answer is four .<eos>"


def test_format_example_does_not_repeat_an_opened_think():
    class Tok:  # a chat template that opens the thinking block itself (newer R1-Distill templates)
        chat_template, eos_token = "x", "</s>"

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
            return "<User>" + messages[-1]["content"] + "<Assistant><think>\n"

    ex = s1k.format_example(ROWS[1], Tok())
    assert ex["prompt"].startswith("<User>What is three plus one ?\n" + s1k.INSTRUCTION)
    assert ex["completion"].startswith("three plus one") and ex["completion"].endswith("four .</s>")


def test_train_changes_parameters_and_saves_a_loadable_model(tiny, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    out = tmp_path / "s1k-tiny"
    rec = s1k.train_s1k(str(tiny), out, rows=ROWS, prompt_spec=PROMPT, lr=5e-3, epochs=2, max_length=64,
                        batch_size=1, grad_accum=1, device="cpu", log_every=1)
    assert rec["n_examples"] == 3 and rec["bf16"] is False
    after_model = AutoModelForCausalLM.from_pretrained(out)
    after = after_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed no parameter"
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("Question : What is one plus one ?\nAnswer :\n", return_tensors="pt", add_special_tokens=False)
    assert after_model(**ids).logits.shape[-1] == len(tok)
    log = json.loads((out / "training_log.json").read_text())
    assert log["recipe"] == "s1k-sft" and log["data"] == "rows given by the caller"
    assert any("loss" in h for h in log["history"])


def test_local_copy_and_missing_columns(tmp_path):
    good = tmp_path / "s1k.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert [r["question"] for r in s1k.load_s1k(good)] == [r["question"] for r in ROWS]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "attempt": "a"}) + "\n")
    with pytest.raises(s1k.S1KUnavailable, match="deepseek_thinking_trajectory"):
        s1k.load_s1k(bad)


def test_offline_hub_is_a_clear_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "rlsft.s1k", "--model", "x", "--out", str(tmp_path / "o")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "hf download simplescaling/s1K-1.1 --repo-type dataset" in proc.stderr
    assert not (tmp_path / "o").exists()
