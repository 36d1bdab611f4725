"""Growing the model organism: tokenizer, Base pretraining, SFT (TRL), GRPO (TRL).

- ``build_tokenizer``: a word-level tokenizer built with ``tokenizers`` and wrapped as a
  ``PreTrainedTokenizerFast`` (saved and reloaded like any hub tokenizer).
- ``new_model``: a small ``LlamaForCausalLM`` from a config dict.
- ``pretrain``: Base from scratch with a plain PyTorch loop (faster than TRL for pretraining).
- ``sft``: TRL ``SFTTrainer`` on prompt/completion pairs (loss on the completion only).
- ``grpo``: TRL ``GRPOTrainer`` with a binary verifiable reward.

Every trained model is written with ``save_pretrained`` (model and tokenizer) into a temporary
folder that is renamed into place only when complete, and loaded back with
``AutoModelForCausalLM.from_pretrained(path)``, the same code path as a hub checkpoint. The loop
over a profile's variants (which to train, in which order, resume) is the train stage
(:mod:`rlsft.stages.train`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from rlsft import task as T
from rlsft.backends import compact_generate
from rlsft.progress import bar as progress_bar

log = logging.getLogger(__name__)

SPECIAL = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>"}


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch; single-threaded determinism is what CPU training gives."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_tokenizer(texts: list[str]):
    """A word-level tokenizer over ``texts``: words, punctuation and newlines are tokens; spaces
    are carried by a ``▁`` prefix so that decoding restores the text exactly.

    >>> tok = build_tokenizer(["Find a route from amber to birch.\\nRoute: amber birch."])
    >>> s = "Find a route from amber to birch.\\nRoute: amber birch."
    >>> tok.decode(tok(s)["input_ids"]) == s
    True
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n|[.,:;!?]"), behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
    ])
    vocab: dict[str, int] = {v: i for i, v in enumerate(SPECIAL.values())}
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=SPECIAL["pad"], bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"], unk_token=SPECIAL["unk"], clean_up_tokenization_spaces=False)
    fast.padding_side = "left"
    return fast


def new_model(tokenizer, n_layer: int = 4, n_embd: int = 128, n_head: int = 4,
              intermediate: int | None = None, max_len: int = 512, seed: int = 0):
    """A fresh small Llama (the same architecture family as the paper's Qwen/Llama models)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=n_embd, intermediate_size=intermediate or 3 * n_embd,
        num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
        max_position_embeddings=max_len, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """``save_pretrained`` model and tokenizer into ``path`` atomically (temp folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            (tmp / "training_log.json").write_text(json.dumps(extra, indent=1, default=str))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def load_model(path: str | os.PathLike):
    """Load ``(model, tokenizer)`` exactly as a hub checkpoint would be loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no model at {path} (config.json missing): run the training stage first")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path)
    return model, tok


def read_training_log(path: str | os.PathLike) -> dict:
    p = Path(path) / "training_log.json"
    return json.loads(p.read_text()) if p.exists() else {}


# ------------------------------------------------------------------------------------ pretraining
def pretrain(model, tokenizer, docs: list[str], *, epochs: float = 4.0, batch_size: int = 32,
             lr: float = 3e-3, warmup: int = 50, seed: int = 0, log_every: int = 25,
             max_len: int = 256, device: str = "cpu", weight_decay: float = 0.01) -> list[dict]:
    """Causal-LM pretraining on whole documents with a plain PyTorch loop (AdamW, cosine decay).

    Documents are sorted into length buckets so batches carry little padding. ``device`` is
    ``cpu`` or ``cuda`` (the model is moved there). Returns the log (step, epoch, loss, lr,
    tokens, seconds).
    """
    import torch

    set_seed(seed)
    model.to(device)
    eos = tokenizer.eos_token
    enc = [tokenizer(d + eos, add_special_tokens=False)["input_ids"][:max_len] for d in docs]
    n_steps = max(1, int(math.ceil(len(enc) / batch_size) * epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, n_steps) / n_steps)))
    rng = random.Random(seed)
    pad = tokenizer.pad_token_id
    model.train()
    logs, t0, tokens, step = [], time.time(), 0, 0

    def batches():
        while True:
            order = sorted(range(len(enc)), key=lambda i: (len(enc[i]), rng.random()))
            chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
            rng.shuffle(chunks)
            yield from chunks

    bar = progress_bar(total=n_steps, desc="pretrain Base", leave=False)
    for idx in batches():
        if step >= n_steps:
            break
        width = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), width), pad)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(enc[i])] = torch.tensor(enc[i])
            mask[r, : len(enc[i])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        tokens += int(mask.sum())
        bar.update(1)
        if step % log_every == 0 or step == n_steps:
            logs.append({"step": step, "epoch": step * batch_size / len(enc), "loss": float(loss.detach()),
                         "lr": sched.get_last_lr()[0], "tokens": tokens, "seconds": time.time() - t0})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    model.eval()
    return logs


# --------------------------------------------------------------------------------------------- SFT
def sft(model, tokenizer, pairs: list[tuple[str, str]], *, epochs: float = 2.0, batch_size: int = 32,
        lr: float = 1e-3, seed: int = 0, output_dir: str | os.PathLike, log_every: int = 10,
        device: str = "cpu") -> list[dict]:
    """Supervised fine-tuning with TRL ``SFTTrainer`` on (prompt, completion) pairs; the loss is on
    the completion only. ``device`` ``cuda`` lets the trainer use the GPU (float32, as on CPU).
    Returns TRL's log history."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    ds = Dataset.from_list([{"prompt": p, "completion": c + tokenizer.eos_token} for p, c in pairs])
    cfg = SFTConfig(
        output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=10, logging_steps=log_every,
        save_strategy="no", report_to=[], seed=seed, data_seed=seed, use_cpu=device == "cpu", bf16=False,
        completion_only_loss=True, max_length=512, dataloader_num_workers=0, disable_tqdm=False,
        eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tokenizer)
    trainer.train()
    model.eval()
    return [dict(h) for h in trainer.state.log_history]


# -------------------------------------------------------------------------------------------- GRPO
def grpo(model, tokenizer, prompts: list[dict], reward: Callable[[str, dict], float], *,
         steps: int = 60, prompts_per_step: int = 8, num_generations: int = 16, lr: float = 5e-5,
         beta: float = 0.0, temperature: float = 1.0, max_completion_length: int = 160,
         seed: int = 0, output_dir: str | os.PathLike, log_every: int = 5, device: str = "cpu") -> list[dict]:
    """GRPO with TRL ``GRPOTrainer`` and a binary verifiable reward on the final answer.

    ``prompts`` are dicts with a ``prompt`` key plus whatever ``reward(completion, row)`` needs.
    In TRL, ``per_device_train_batch_size`` counts completions, so a step sees
    ``prompts_per_step * num_generations`` completions. Returns TRL's log history (reward,
    ``completions/mean_length``, KL when ``beta > 0``).
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    keys = [k for k in prompts[0] if k != "prompt"]

    def reward_fn(completions, **cols):
        return [float(reward(c, {k: cols[k][i] for k in keys})) for i, c in enumerate(completions)]

    reward_fn.__name__ = "verifiable_reward"
    ds = Dataset.from_list(prompts)
    cfg = GRPOConfig(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=prompts_per_step * num_generations,
        num_generations=num_generations, learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
        beta=beta, temperature=temperature, max_completion_length=max_completion_length,
        logging_steps=log_every, save_strategy="no", report_to=[], seed=seed, data_seed=seed,
        use_cpu=device == "cpu", bf16=False, gradient_checkpointing=False, dataloader_num_workers=0,
        loss_type="dr_grpo", scale_rewards="none", disable_tqdm=False)
    trainer = GRPOTrainer(model=model, args=cfg, reward_funcs=reward_fn, train_dataset=ds,
                          processing_class=tokenizer)
    # TRL samples each group with model.generate; compact_generate gives the same tokens without
    # computing the completions that have ended (rlsft.backends.compact_sample)
    model.generate = compact_generate(model)
    try:
        trainer.train()
    finally:
        del model.generate
    model.eval()
    return [dict(h) for h in trainer.state.log_history]


# ------------------------------------------------------------------------------- recipes in order
RECIPE_ORDER = {"pretrain": 0, "sft": 1, "grpo": 2}


def training_order(variants: dict) -> list[str]:
    """Variants with a recipe, parents before children.

    >>> training_order({"Base": {"recipe": "pretrain"}, "RL": {"recipe": "grpo", "from": "Base"},
    ...                 "SFT": {"recipe": "sft", "from": "Base"}, "SFT+RL": {"recipe": "grpo", "from": "SFT"}})
    ['Base', 'SFT', 'RL', 'SFT+RL']
    """
    todo = {v: s for v, s in variants.items() if "recipe" in s}
    order: list[str] = []
    while todo:
        ready = sorted((v for v, s in todo.items() if s.get("from") in (None, *order) or s.get("from") not in todo),
                       key=lambda v: (RECIPE_ORDER[todo[v]["recipe"]], v))
        if not ready:
            raise ValueError(f"variants {sorted(todo)} depend on each other in a loop")
        order.append(ready[0])
        todo.pop(ready[0])
    return order


def train_variant(variant: str, spec: dict, params: dict, data: dict, out: Path, parent: Path | None,
                  seed: int, checker, device: str = "cpu") -> dict:
    """Train one variant by its recipe on ``device`` (``cpu`` or ``cuda``) and save it; returns
    the training log, which names the device (CPU and GPU arithmetic differ, so do their models).

    ``data`` holds ``base_corpus`` (texts), ``sft`` (prompt/completion pairs), ``train`` (problem
    rows for GRPO) and ``eval_texts`` for the tokenizer's vocabulary; ``checker(text, row)``
    gives the binary reward.
    """
    set_seed(seed)
    t0 = time.time()
    recipe = spec["recipe"]
    if recipe == "pretrain":
        tok = build_tokenizer(list(data["base_corpus"]) + list(data["sft_texts"]) + list(data["eval_texts"]))
        model = new_model(tok, n_layer=params["n_layer"], n_embd=params["n_embd"], n_head=params["n_head"],
                          seed=seed)
        history = pretrain(model, tok, list(data["base_corpus"]), epochs=params["pretrain_epochs"],
                           lr=params["pretrain_lr"], batch_size=params["pretrain_batch"], seed=seed,
                           device=device, weight_decay=params["pretrain_weight_decay"])
    else:
        model, tok = load_model(parent)
        if recipe == "sft":
            history = sft(model, tok, list(zip(data["sft"]["prompt"], data["sft"]["completion"])),
                          epochs=params["sft_epochs"], lr=params["sft_lr"], batch_size=params["sft_batch"],
                          seed=seed, output_dir=out.parent / f".{out.name}.trainer", device=device)
        else:
            rows = [dict(r) for r in data["train"].to_dict("records")]
            history = grpo(model, tok, rows, checker, steps=params["grpo_steps"],
                           prompts_per_step=params["grpo_prompts_per_step"],
                           num_generations=params["grpo_generations"], lr=params["grpo_lr"],
                           beta=params["grpo_beta"], temperature=params["grpo_temperature"],
                           max_completion_length=params["grpo_max_tokens"], seed=seed,
                           output_dir=out.parent / f".{out.name}.trainer", device=device)
    record = {"variant": variant, "recipe": recipe, "from": spec.get("from"), "params": params, "seed": seed,
              "n_params": n_params(model), "wall_time_s": round(time.time() - t0, 1), "device": device,
              "history": history}
    model.to("cpu")
    save_model(model, tok, out, extra=record)
    shutil.rmtree(out.parent / f".{out.name}.trainer", ignore_errors=True)
    return record


def organism_reward(world):
    """The binary verifiable reward for GRPO: 1 if the organism's checker accepts the response."""

    def reward(text: str, row: dict) -> float:
        return float(T.check(world, T.problem_from_row(row), text)[1])

    return reward
