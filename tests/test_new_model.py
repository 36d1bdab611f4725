"""Adapting the companion to a new model family (docs/new_model.md), end to end on the CPU.

Three tiny local checkpoints (1-layer Llamas with a tokenizer over the ci task's texts, written with
``save_pretrained``) stand in for a new family. A profile in tmp_path ``extends: ci`` and replaces
the families with that one new family (``organism: null`` drops the inherited one); nothing else
changes. The runner then runs every stage on it: data, train (nothing to train), sampling with a
per-variant prompt (one variant through a chat template), the trajectory, graph, topology and
ablation analyses, and the figures.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rlsft import VARIANTS
from rlsft import config as C
from rlsft import organism as O
from rlsft import task as T
from rlsft.registry import effective_params

REPO = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def _ci_texts() -> list[str]:
    """Every text of the ci profile's task data (what its tokenizer must cover)."""
    d = effective_params(C.load_profile("ci"), "data")
    data = T.make_task_data(n_places=d.n_places, out_degree=d.out_degree, world_seed=d.world_seed,
                            eval_sets=d.eval_sets, base_per_problem=d.base_per_problem,
                            base_styles=d.base_styles, teacher_per_problem=d.teacher_per_problem,
                            n_facts=d.n_facts, seed=0)
    return (list(data["base_corpus"]["text"]) + list(data["eval"]["prompt"])
            + list(data["sft"]["prompt"] + data["sft"]["completion"]))


def _tiny_model(path: Path, seed: int, chat: bool = False) -> Path:
    tok = O.build_tokenizer(_ci_texts())
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    model = O.new_model(tok, n_layer=1, n_embd=32, n_head=2, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def new_family(tmp_path_factory):
    root = tmp_path_factory.mktemp("newmodel")
    base = _tiny_model(root / "models" / "tiny-base", seed=1)
    sft = _tiny_model(root / "models" / "tiny-sft", seed=2, chat=True)
    sft_rl = _tiny_model(root / "models" / "tiny-sft-rl", seed=3, chat=True)
    profile = {
        "description": "ci with a new model family instead of the organism",
        "extends": "ci",
        "families": {
            "organism": None,  # drop the inherited family
            "tiny": {
                "label": "Tiny local Llamas",
                "size": 0.0001,
                "prompt": {"style": "raw", "user": "{question}"},
                "variants": {
                    "Base": {"model": str(base)},
                    # the same weights as Base with its own prompt: a variant's prompt overrides the family's
                    "RL": {"model": str(base), "prompt": {"style": "raw", "system": "Route:", "user": "{question}"}},
                    "SFT": {"model": str(sft), "prompt": {"style": "chat", "user": "{question}"}},
                    "SFT+RL": {"model": str(sft_rl)},
                },
            },
        },
    }
    path = root / "newmodel.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return root, path


def test_profile_replaces_the_family(new_family):
    _, path = new_family
    p = C.load_profile(str(path))
    assert p["name"] == "newmodel" and p["chain"][1:] == ["ci", "organism"]
    assert list(p["families"]) == ["tiny"]
    assert all("model" in s for _, _, s in C.variant_specs(p))
    # the ci stage settings are inherited unchanged
    assert p["stages"]["samples"] == C.load_profile("ci")["stages"]["samples"]


def test_null_family_needs_a_replacement(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("extends: ci\nfamilies:\n  organism: null\n")
    with pytest.raises(C.ConfigError, match="'families' is empty"):
        C.load_profile(str(path))


def test_variant_prompt_is_validated(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("extends: ci\nfamilies:\n  organism:\n    variants:\n      RL: {prompt: {style: html}}\n")
    with pytest.raises(C.ConfigError, match="variant 'RL'.*style"):
        C.load_profile(str(path))


def test_runner_samples_and_analyses_the_new_family(new_family):
    root, path = new_family
    results = root / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "rlsft.runner", "--profile", str(path), "--results", str(results)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = results / "newmodel"

    # the train stage was skipped with its reason and trained nothing (every variant is a model)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "no variant" in manifest["stages"]["train"]["skipped"], manifest["stages"]["train"]
    assert not list((out / "train").rglob("config.json"))
    assert "stage train" in proc.stdout and "skipped: nothing to do" in proc.stdout

    # the samples table holds the four variants of the new family, and only them
    samples = pd.read_parquet(out / "samples" / "all_samples.parquet")
    assert set(samples["family"]) == {"tiny"}
    assert sorted(set(samples["variant"]), key=VARIANTS.index) == list(VARIANTS)
    m = effective_params(C.load_profile(str(path)), "samples").M
    assert (samples.groupby(["variant", "benchmark", "problem"]).size() == m).all()

    # each variant was sampled from its own local folder, and that is recorded
    models = {r["variant"]: r for r in json.loads((out / "samples" / "models.json").read_text())}
    assert models["SFT"]["path"].endswith("tiny-sft") and models["Base"]["resolved_commit"] is None
    assert models["RL"]["fingerprint"] == models["Base"]["fingerprint"] != models["SFT"]["fingerprint"]

    # the analyses ran on it and drew their figures
    for stage in ("trajectories", "graphs", "topology", "ablations"):
        assert stage in manifest["stages"], stage
    figures = {p.name.split("_")[0] for p in (out / "figures").iterdir()}
    assert {"fig2", "fig6", "fig8", "fig32"} <= figures, figures
