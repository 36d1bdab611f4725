"""Stage ``train`` (notebook ``10_train.ipynb``): grows the variants that have a recipe.

Base is pretrained from scratch on the data stage's messy corpus (plain PyTorch), SFT is fine-tuned
on the teacher's traces (TRL ``SFTTrainer``), RL and SFT+RL are GRPO from Base and SFT (TRL
``GRPOTrainer``) with the organism's checker as the reward (:mod:`rlsft.organism`). Each is saved
with ``save_pretrained`` under ``train/<family>/<variant>/`` with its ``training_log.json``;
variants given as hub ids or paths are not trained here. A variant already trained with the same
parameters, seed and parent is kept, so a killed run resumes. Writes ``train/trained.csv`` (one
row per trained variant; no rows when every variant is a model).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd

from rlsft import io
from rlsft import organism as O
from rlsft import task as T
from rlsft.models import trained_path
from rlsft.params import param

NOTEBOOK = "10_train.ipynb"
KIND = "compute"
INPUTS = ("data",)
OUTPUTS = ("train",)

log = logging.getLogger(__name__)

TRAINED_COLUMNS = ["family", "variant", "recipe", "from", "parameters", "device", "wall time (s)"]
"""Columns of ``train/trained.csv``."""


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``train``; defaults are the organism profile's."""

    # model size (a small Llama)
    n_layer: int = param(4, "transformer blocks", ge=1)
    n_embd: int = param(128, "hidden size", ge=1)
    n_head: int = param(4, "attention heads (must divide n_embd)", ge=1)
    # Base: pretraining from scratch
    pretrain_epochs: int = param(12, "passes over the base corpus", ge=1)
    pretrain_lr: float = param(0.003, "peak learning rate (AdamW, cosine)", gt=0)
    pretrain_batch: int = param(8, "documents per step", ge=1)
    pretrain_weight_decay: float = param(0.01, "AdamW weight decay", ge=0)
    # SFT (TRL SFTTrainer)
    sft_epochs: int = param(2, "passes over the teacher traces", ge=1)
    sft_lr: float = param(0.001, "learning rate (cosine)", gt=0)
    sft_batch: int = param(32, "sequences per step", ge=1)
    # RL and SFT+RL (TRL GRPOTrainer)
    grpo_steps: int = param(30, "optimisation steps", ge=1)
    grpo_prompts_per_step: int = param(8, "problems per step", ge=1)
    grpo_generations: int = param(16, "completions per problem (the group)", ge=2)
    grpo_lr: float = param(0.0002, "learning rate (constant)", gt=0)
    grpo_beta: float = param(0.04, "KL coefficient against the starting model", ge=0)
    grpo_temperature: float = param(1.0, "sampling temperature during training", gt=0)
    grpo_max_tokens: int = param(160, "completion cap during training", ge=1)


def load_stage_data(data_dir: Path) -> dict:
    """The data stage's organism files, as ``organism.train_variant`` wants them."""
    world = T.world_from_json(io.read_json(data_dir / "world.json"))
    sft_df = pd.read_parquet(data_dir / "sft.parquet")
    evals = pd.read_parquet(data_dir / "problems.parquet")
    return {"world": world, "base_corpus": pd.read_parquet(data_dir / "base_corpus.parquet")["text"].tolist(),
            "sft": sft_df, "sft_texts": (sft_df["prompt"] + sft_df["completion"]).tolist(),
            "eval_texts": evals["prompt"].tolist(), "train": pd.read_parquet(data_dir / "train_problems.parquet"),
            "eval": evals}


def train_profile(profile: dict, root: Path, params: Params | dict, data_dir: Path, seed: int,
                  device: str = "cpu") -> list[dict]:
    """Train every variant that has a recipe, parents first. A variant whose saved model was trained
    with the same parameters, seed and parent is kept (so a killed run resumes where it stopped).

    ``params`` is the stage's ``Params`` (or the same as a dict); it enters each variant's key and
    training log as a dict. ``device`` (``cpu`` or ``cuda``, resolved) is where new variants are
    trained; it is not in the key, so a kept model may come from another device: its training log
    and ``trained.csv`` say which.
    """
    params = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(params)
    data = load_stage_data(data_dir)
    reward = O.organism_reward(data["world"])
    records = []
    for fam, fspec in profile["families"].items():
        variants = fspec["variants"]
        done_keys: dict[str, str] = {}
        for v in O.training_order(variants):
            spec = variants[v]
            out = trained_path(root, fam, v)
            parent_key = done_keys.get(spec.get("from"), "")
            key = io.sha256_text(repr(sorted(params.items())), repr(sorted(spec.items())), str(seed), parent_key,
                                 io.sha256_text(*map(str, data["base_corpus"][:50])))
            old = O.read_training_log(out)
            if old.get("key") == key and (out / "config.json").exists():
                log.info("train %s/%s: kept (already trained with these settings)", fam, v)
                records.append(old)
            else:
                log.info("train %s/%s: recipe %s%s", fam, v, spec["recipe"],
                         f" from {spec['from']}" if spec.get("from") else "")
                parent = trained_path(root, fam, spec["from"]) if spec.get("from") else None
                rec = O.train_variant(v, spec, params, data, out, parent, seed, reward, device=device)
                rec["key"] = key
                rec["family"] = fam
                io.write_json(out / "training_log.json", rec)
                records.append(rec)
            done_keys[v] = key
    return records


def trainable(profile: dict) -> list[tuple[str, str]]:
    """``[(family, variant)]`` of the variants that have a recipe (trained here).

    >>> trainable({"families": {"f": {"variants": {"Base": {"recipe": "pretrain"}, "RL": {"model": "x"}}}}})
    [('f', 'Base')]
    """
    return [(f, v) for f, s in profile["families"].items() for v, vs in s["variants"].items() if "recipe" in vs]


def nothing_to_do(profile: dict) -> str | None:
    """Why the runner may skip this stage for ``profile`` (no variant is trained here), or None.

    >>> nothing_to_do({"families": {"f": {"variants": {"Base": {"model": "m"}, "RL": {"completions": "r.jsonl"}}}}})
    'no variant has a recipe (all are models or imported completions)'
    >>> nothing_to_do({"families": {"f": {"variants": {"Base": {"recipe": "pretrain"}}}}}) is None
    True
    """
    return None if trainable(profile) else "no variant has a recipe (all are models or imported completions)"


def trained_table(records: list[dict]) -> pd.DataFrame:
    """``trained.csv``: one row per trained variant (``TRAINED_COLUMNS``)."""
    return pd.DataFrame([{"family": r.get("family"), "variant": r["variant"], "recipe": r["recipe"], "from": r["from"],
                          "parameters": r["n_params"], "device": r.get("device", "cpu"),
                          "wall time (s)": r["wall_time_s"]} for r in records],
                        columns=TRAINED_COLUMNS)


def run(ctx, params: Params) -> dict:
    """Train the profile's recipe variants and write ``train/trained.csv``; returns ``trainable``
    (the (family, variant) pairs), ``records`` (each variant's training log, with its loss /
    reward history) and ``trained`` (the table)."""
    todo = trainable(ctx.profile)
    records = train_profile(ctx.profile, ctx.root, params, ctx.input("data"), seed=ctx.seed,
                            device=ctx.device) if todo else []
    summary = trained_table(records)
    io.write_csv(ctx.dir / "trained.csv", summary)  # one row per trained variant; no rows when all are models
    return {"trainable": todo, "records": records, "trained": summary}
