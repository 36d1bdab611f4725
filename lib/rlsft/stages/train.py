"""Stage ``train`` (10_train.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "10_train.ipynb"
KIND = "compute"
INPUTS = ('data',)
OUTPUTS = ('train',)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``train``; defaults are the organism profile's."""

    # model size (a small Llama)
    n_layer: int = param(4, "transformer blocks")
    n_embd: int = param(128, "hidden size")
    n_head: int = param(4, "attention heads")
    # Base: pretraining from scratch
    pretrain_epochs: int = param(8, "passes over the base corpus")
    pretrain_lr: float = param(0.003, "peak learning rate (AdamW, cosine)")
    pretrain_batch: int = param(32, "documents per step")
    # SFT (TRL SFTTrainer)
    sft_epochs: int = param(2, "passes over the teacher traces")
    sft_lr: float = param(0.001, "learning rate (cosine)")
    sft_batch: int = param(32, "sequences per step")
    # RL and SFT+RL (TRL GRPOTrainer)
    grpo_steps: int = param(60, "optimisation steps")
    grpo_prompts_per_step: int = param(8, "problems per step")
    grpo_generations: int = param(16, "completions per problem (the group)")
    grpo_lr: float = param(0.0002, "learning rate (constant)")
    grpo_beta: float = param(0.04, "KL coefficient against the starting model")
    grpo_temperature: float = param(1.0, "sampling temperature during training")
    grpo_max_tokens: int = param(160, "completion cap during training")


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
