"""The paper profiles (profiles/paper-*.yaml, docs/paper_profiles.md), checked on a CPU machine
without the models: they load and validate, carry the paper's settings, build the per-family
prompts of PAPER.md §3, and the runner plans them offline (``--dry-run``) and otherwise stops at
once, naming every missing model with the command that fetches it.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlsft import VARIANTS
from rlsft import backends as B
from rlsft import config as C
from rlsft import models as M
from rlsft.plan import missing_models
from rlsft.registry import effective_params

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted(p.stem for p in (REPO / "profiles").glob("paper-*.yaml"))
MAIN = ["paper-1.5b", "paper-7b", "paper-14b", "paper-llama-8b"]
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_MATH = ("<|im_start|>system\n" + INSTRUCTION + "<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n"
             "<|im_start|>assistant\n")
SHA = re.compile(r"^[0-9a-f]{40}$")


def _offline_env(tmp_path) -> dict:
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir(exist_ok=True)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}


def _runner(args, env, timeout=60):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "rlsft.runner", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - t0


def test_the_paper_profiles_exist():
    assert set(MAIN + ["paper-7b-humaneval", "paper-smoke"]) <= set(PAPER)


@pytest.mark.parametrize("name", PAPER)
def test_paper_profile_loads_and_validates(name):
    p = C.load_profile(name)
    assert p["device"] == "cuda"
    assert len(p["families"]) == 1, "one family per profile (the others extend paper-1.5b and drop its family)"
    for fam, v, spec in C.variant_specs(p):
        assert "model" in spec and "recipe" not in spec, f"{fam}/{v}: every paper variant is a public model"
        if spec.get("revision"):
            assert SHA.match(spec["revision"]), f"{fam}/{v}: pin a full commit SHA, got {spec['revision']!r}"
        assert spec.get("max_model_len"), f"{fam}/{v}: record the context used"
    data, samples, graphs = (effective_params(p, s) for s in ("data", "samples", "graphs"))
    assert data.task == samples.task == "benchmarks"
    assert samples.backend == "vllm" and samples.temperature == 0.6 and samples.top_p == 0.95
    assert graphs.embedder == "BAAI/bge-large-en-v1.5" and graphs.mask_digits is False
    if name == "paper-smoke":
        assert (data.limit, samples.M, samples.max_new_tokens, graphs.k) == (4, 16, 2048, 200)
    else:
        assert (data.limit, samples.M, samples.max_new_tokens, graphs.k) == (None, 256, 16384, 2000)
        expected = ["humaneval"] if name == "paper-7b-humaneval" else ["aime24", "aime25", "amc23"]
        assert data.benchmarks == expected


def test_table1_checkpoints():
    ids = {name: {v: s["model"] for _, v, s in C.variant_specs(C.load_profile(name))} for name in MAIN}
    assert ids["paper-1.5b"] == {"Base": "Qwen/Qwen2.5-Math-1.5B", "RL": "sail/Qwen2.5-Math-1.5B-Oat-Zero",
                                 "SFT": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
                                 "SFT+RL": "nvidia/Nemotron-Research-Reasoning-Qwen-1.5B"}
    assert ids["paper-7b"] == {"Base": "Qwen/Qwen2.5-Math-7B", "RL": "sail/Qwen2.5-Math-7B-Oat-Zero",
                               "SFT": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "SFT+RL": "nvidia/AceReason-Nemotron-7B"}
    assert ids["paper-14b"] == {"Base": "Qwen/Qwen2.5-14B", "RL": "hkust-nlp/Qwen-2.5-14B-SimpleRL-Zoo",
                                "SFT": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
                                "SFT+RL": "nvidia/AceReason-Nemotron-14B"}
    llama = ids["paper-llama-8b"]
    assert (llama["Base"], llama["RL"], llama["SFT"]) == (
        "meta-llama/Llama-3.1-8B", "hkust-nlp/Llama-3.1-8B-SimpleRL-Zoo", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    # no public SFT+RL Llama-8B: a local folder the user must provide, never a stand-in hub model
    assert M.is_local_path(llama["SFT+RL"])


def test_qwen_math_context_caps_base_and_rl():
    for name in ("paper-1.5b", "paper-7b"):
        v = C.load_profile(name)["families"]
        (spec,) = v.values()
        assert spec["variants"]["Base"]["max_model_len"] == spec["variants"]["RL"]["max_model_len"] == 4096


class _ChatTok:
    """A tokenizer stand-in with a chat template that shows the roles."""

    chat_template = "x"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"[{m['role']}]{m['content']}" for m in messages) + "[assistant]"


def _prompt(name, variant, q="What is 1+1?"):
    (fspec,) = C.load_profile(name)["families"].values()
    spec = fspec["variants"][variant].get("prompt", fspec.get("prompt"))
    return B.build_prompt(q, spec, _ChatTok())


@pytest.mark.parametrize("name", ["paper-1.5b", "paper-7b"])
def test_qwen_math_template_for_base_and_oat_zero(name):
    for v in ("Base", "RL"):
        assert _prompt(name, v) == QWEN_MATH.replace("{q}", "What is 1+1?")


@pytest.mark.parametrize("name", MAIN)
def test_distilled_models_use_their_chat_template_with_the_instruction(name):
    for v in ("SFT", "SFT+RL"):
        assert _prompt(name, v) == f"[user]What is 1+1?\n{INSTRUCTION}[assistant]"


def test_simplerl_zoo_prompt_for_14b_base_and_rl():
    for v in ("Base", "RL"):
        assert _prompt("paper-14b", v) == (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 1+1?\n"
            f"{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("name", PAPER)
def test_raw_chatml_variants_stop_at_the_end_of_the_turn(name):
    """A Base/RL model prompted with the raw ChatML template ends its turn with <|im_end|> (151645)
    and may go on with an invented next turn: those variants stop there and at <|endoftext|>
    (151643); the chat-template variants rely on their generation config's EOS."""
    (fspec,) = C.load_profile(name)["families"].values()
    for v, spec in fspec["variants"].items():
        prompt = spec.get("prompt", fspec.get("prompt"))
        chatml = prompt["style"] == "raw" and prompt["user"].startswith("<|im_start|>")
        assert spec.get("stop_token_ids") == ([151645, 151643] if chatml else None), f"{name} {v}"


def test_humaneval_prompts_ask_for_a_code_block():
    for v in VARIANTS:
        text = _prompt("paper-7b-humaneval", v, q="def f(x):\n")
        assert "```python\ndef f(x):\n```" in text and "\\boxed" not in text


def test_dry_run_plans_offline(tmp_path):
    results = tmp_path / "results"
    proc, _ = _runner(["--profile", "paper-1.5b", "--dry-run", "--results", str(results)], _offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for _, _, spec in C.variant_specs(C.load_profile("paper-1.5b")):
        assert M.download_hint(spec["model"] + (f"@{spec['revision']}" if spec.get("revision") else "")) in out
    assert "hf download BAAI/bge-large-en-v1.5" in out  # the step embedder is a model to fetch too
    # 4 models x (30 + 30 + 40) problems x 256 samples; Base/RL capped by their 4096-token context
    assert "4 models x 100 problems x M=256 = 102,400 completions" in out
    assert f"at most {100 * 256 * (2 * 4096 + 2 * 16384):,} new tokens" in out
    assert "20_sample.ipynb" in out and not results.exists()


def test_dry_run_of_the_smoke_profile(tmp_path):
    proc, _ = _runner(["--profile", "paper-smoke", "--dry-run", "--results", str(tmp_path / "r")],
                      _offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "4 models x 12 problems x M=16 = 768 completions" in proc.stdout


def test_run_without_models_fails_fast_and_clearly(tmp_path):
    results = tmp_path / "results"
    proc, wall = _runner(["--profile", "paper-1.5b", "--results", str(results)], _offline_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert wall < 20
    err = proc.stderr
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    assert err.count("run_all.sh: error:") == 1
    for m in missing_models(C.load_profile("paper-1.5b")):
        assert f"  - {m}" in err and M.download_hint(m) in err
    assert not results.exists(), "nothing may be written before the models are there"


def test_preflight_asks_only_for_the_models_of_the_selected_stages(monkeypatch):
    """A machine without the embedder can still train and sample (``--until samples``); one
    without the checkpoints can still analyse saved samples (``--from trajectories``)."""
    from rlsft import plan

    prof = C.load_profile("paper-1.5b")
    monkeypatch.setattr(plan, "available", lambda spec: False)
    monkeypatch.setattr(plan, "embedder_available", lambda name: False)
    models = sorted({s["model"] + (f"@{s['revision']}" if s.get("revision") else "")
                     for _, _, s in C.variant_specs(prof)})
    embedders = plan.embedders(prof)
    assert models and embedders
    assert missing_models(prof) == sorted(models + embedders)
    assert missing_models(prof, ["data"]) == []
    assert missing_models(prof, ["data", "samples"]) == models
    assert missing_models(prof, ["trajectories", "graphs"]) == embedders


def test_llama_sft_rl_is_a_folder_to_provide(tmp_path):
    proc, _ = _runner(["--profile", "paper-llama-8b", "--results", str(tmp_path / "r")], _offline_env(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "~/rlsft-models/Llama-3.1-8B-SFT_RL is a local path, not a hub id" in proc.stderr


def test_vllm_backend_here_is_a_clear_error(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("RLSFT_VLLM_PYTHON", "")  # no separate vLLM environment either (.venv-vllm)
    import torch

    try:
        import vllm  # noqa: F401

        has_vllm = True
    except ImportError:
        has_vllm = False
    if torch.cuda.is_available() and has_vllm:
        pytest.skip("this machine can run vLLM")
    with pytest.raises(RuntimeError,
                       match=r"backend 'vllm' (needs a CUDA GPU|chosen but vllm is not installed).*--setup-vllm"):
        B.make_backend("vllm", "Qwen/Qwen2.5-Math-1.5B", None)


def test_unpinned_hub_model_is_fingerprinted_by_its_cached_commit(tmp_path):
    """With revision unset, the cache key and samples/models.json carry the cached snapshot's commit."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf_home" / "hub" / "models--org--tiny"
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    code = ("from rlsft import sampling as S, models as M\n"
            "print(S.resolved_commit('org/tiny', None), S.model_fingerprint('org/tiny', None),\n"
            "      S.model_fingerprint('org/absent', None), M.available({'model': 'org/tiny'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_offline_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [sha, f"org/tiny@{sha}", "org/absent@main", "True"]
