"""The s1K-1.1 single-response SFT ablation (PAPER.md §2.3, §8): an optional training recipe.

The camera-ready checks that the conclusions hold when SFT is *single-response* distillation (one
DeepSeek-R1 trace per prompt) rather than R1-Distill's multi-response distillation. Who trained
that model, from which base and with which hyper-parameters is [unknown]; this module gives a
documented default: full fine-tuning of a Base model on ``simplescaling/s1K-1.1`` (1,000 questions,
one R1 thinking trace and answer each) with TRL's ``SFTTrainer``, loss on the completion only.
The result is saved with ``save_pretrained`` and can be used as the SFT variant of a profile
(``SFT: {model: /path/to/out}``).

Data (hub columns of s1K-1.1): ``question``; ``deepseek_thinking_trajectory`` (the R1 reasoning)
and ``deepseek_attempt`` (R1's answer); also ``solution``, ``cot_type``, ``source_type``,
``metadata``, ``gemini_*``, ``deepseek_grade`` (not used). Each row becomes::

    prompt     = the question in the model's prompt format (default: its chat template, the user
                 turn "{question}\\nPlease reason step by step, and put your final answer within
                 \\boxed{}.", the format the paper profiles sample with)
    completion = "<think>\\n" + thinking trajectory + "\\n</think>\\n\\n" + attempt + EOS

(the R1 format; ``<think>\\n`` is left out of the completion when the chat template already ends
the prompt with it, as newer DeepSeek-R1-Distill templates do).

Defaults follow s1 (lr 1e-5, 5 epochs, AdamW betas (0.9, 0.95), weight decay 1e-4, cosine with 5 %
warmup, an effective batch of 16 sequences, bf16 on a GPU) except the sequence cap, 16,384 tokens
by default (s1.1 used longer blocks; a longer trace is truncated, which drops its answer).

Run it (one GPU, or several with ``accelerate launch``; see docs/paper_profiles.md)::

    python -m rlsft.s1k --model Qwen/Qwen2.5-Math-1.5B --out models/s1k-qwen-1.5b
    accelerate launch --num_processes 8 -m rlsft.s1k --model Qwen/Qwen2.5-Math-7B --out models/s1k-qwen-7b \\
        --batch-size 1 --grad-accum 2        # add FSDP flags for 7B/14B full fine-tuning

>>> ex = format_example({"question": "1+1?", "deepseek_thinking_trajectory": "Add.", "deepseek_attempt": "\\\\boxed{2}"},
...                     None, {"style": "raw", "user": "Q: {question}\\nA: "}, eos="</s>")
>>> ex["prompt"], ex["completion"]
('Q: 1+1?\\nA: ', '<think>\\nAdd.\\n</think>\\n\\n\\\\boxed{2}</s>')
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Iterable, Mapping

from rlsft.backends import build_prompt
from rlsft.io import finished_files
from rlsft.context import resolve_device
from rlsft.benchmarks import _hub_offline_env, hub_reachable

log = logging.getLogger(__name__)

HUB_ID = "simplescaling/s1K-1.1"
QUESTION, THINKING, ATTEMPT = "question", "deepseek_thinking_trajectory", "deepseek_attempt"
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
DEFAULT_PROMPT = {"style": "chat", "user": "{question}\n" + INSTRUCTION}
THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"


class S1KUnavailable(RuntimeError):
    """The s1K-1.1 data could not be loaded (offline and not cached, or a bad local file)."""


# --------------------------------------------------------------------------------------------- data
def _check_columns(rows: list[Mapping], where: str) -> list[dict]:
    if not rows:
        raise S1KUnavailable(f"{where}: no rows")
    missing = [c for c in (QUESTION, THINKING, ATTEMPT) if c not in rows[0]]
    if missing:
        raise S1KUnavailable(f"{where}: lacks columns {missing} (has {sorted(rows[0])}); s1K-1.1 has "
                             f"{QUESTION!r}, {THINKING!r} and {ATTEMPT!r}")
    return [dict(r) for r in rows]


def _read_local(path: Path) -> list[dict]:
    """Rows of a local copy: a .parquet / .jsonl / .json file, or a folder holding parquet files
    (a hub snapshot: ``data/train-*.parquet``)."""
    import pandas as pd

    if path.is_dir():
        files = finished_files(path, "*.parquet", recursive=True)
        if not files:
            raise S1KUnavailable(f"{path}: a folder without parquet files")
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).to_dict("records")
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_dict("records")
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=path.suffix == ".jsonl").to_dict("records")
    raise S1KUnavailable(f"{path}: expected a .parquet, .jsonl or .json file, or a folder of parquet files")


def load_s1k(source: str | os.PathLike | None = None, probe_timeout: float = 3.0) -> list[dict]:
    """The rows of s1K-1.1: from the hub (``source=None`` or a hub id) or a local copy (a path).

    Offline (``HF_HUB_OFFLINE=1``) only the local hub cache is tried; otherwise the hub is probed
    first so that an unreachable hub fails in seconds with the fix, not after minutes of retries.
    """
    if source is not None and Path(source).expanduser().exists():
        path = Path(source).expanduser()
        return _check_columns(_read_local(path), str(path))
    hub_id = str(source or HUB_ID)
    fix = (f"Fix: on a machine with hub access run `hf download {hub_id} --repo-type dataset` (then "
           f"HF_HUB_OFFLINE=1 uses the cache), or pass a local copy (a parquet/jsonl file or the "
           f"downloaded folder) as source / --data.")
    offline = _hub_offline_env()
    if not offline and not hub_reachable(probe_timeout):
        raise S1KUnavailable(f"cannot load {hub_id!r}: the hub is unreachable. {fix}")
    try:
        import datasets

        rows = [dict(r) for r in datasets.load_dataset(hub_id, split="train")]
    except Exception as exc:  # noqa: BLE001 - ConnectionError, DatasetNotFoundError, offline cache miss
        why = "offline mode and not in the local cache" if offline else f"{type(exc).__name__}: {exc}"
        raise S1KUnavailable(f"cannot load {hub_id!r} ({why}). {fix}") from None
    return _check_columns(rows, hub_id)


def format_example(row: Mapping, tokenizer, prompt_spec: dict | None = None, eos: str | None = None) -> dict:
    """One ``{"prompt", "completion"}`` pair: the question in the prompt format, the R1 thinking
    trace and answer as the completion (ending with the tokenizer's EOS)."""
    prompt = build_prompt(str(row[QUESTION]), prompt_spec or DEFAULT_PROMPT, tokenizer)
    eos = eos if eos is not None else getattr(tokenizer, "eos_token", None) or ""
    opener = "" if prompt.rstrip().endswith("<think>") else THINK_OPEN
    completion = opener + str(row[THINKING]).strip() + THINK_CLOSE + str(row[ATTEMPT]).strip() + eos
    return {"prompt": prompt, "completion": completion}


def format_dataset(rows: Iterable[Mapping], tokenizer, prompt_spec: dict | None = None):
    """A ``datasets.Dataset`` of prompt/completion pairs for ``SFTTrainer``."""
    from datasets import Dataset

    return Dataset.from_list([format_example(r, tokenizer, prompt_spec) for r in rows])


# ----------------------------------------------------------------------------------------- training
def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def train_s1k(model: str, out: str | os.PathLike, *, rows: list[Mapping] | None = None,
              data: str | None = None, revision: str | None = None, prompt_spec: dict | None = None,
              lr: float = 1e-5, epochs: float = 5.0, max_length: int = 16384, batch_size: int = 1,
              grad_accum: int = 16, weight_decay: float = 1e-4, warmup: float = 0.05,
              gradient_checkpointing: bool | None = None, device: str = "auto", seed: int = 0,
              limit: int | None = None, log_every: int = 10) -> dict:
    """Fine-tune ``model`` (hub id or local folder) on s1K-1.1 and save it to ``out``.

    ``rows``: the data itself (else :func:`load_s1k` of ``data``); ``limit``: the first N rows.
    On a GPU the model trains in bf16 with gradient checkpointing; on the CPU in fp32. Under
    ``accelerate launch`` each process trains its share and ``save_model`` gathers the weights.
    Returns the training record, also written to ``out/training_log.json``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    t0 = time.time()
    source = "rows given by the caller" if rows is not None else str(data or HUB_ID)
    rows = list(rows) if rows is not None else load_s1k(data)
    rows = rows[:limit] if limit else rows
    gpu = resolve_device(device) == "cuda"
    tok = AutoTokenizer.from_pretrained(model, revision=revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ds = format_dataset(rows, tok, prompt_spec)
    net = AutoModelForCausalLM.from_pretrained(model, revision=revision,
                                               dtype=torch.bfloat16 if gpu else torch.float32)
    out = Path(out)
    steps_per_epoch = math.ceil(len(ds) / (batch_size * grad_accum * _world_size()))
    cfg = SFTConfig(
        output_dir=str(out / ".trainer"), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, lr_scheduler_type="cosine",
        warmup_steps=warmup, weight_decay=weight_decay, adam_beta1=0.9, adam_beta2=0.95,
        logging_steps=log_every, save_strategy="no", report_to=[], seed=seed, data_seed=seed,
        use_cpu=not gpu, bf16=gpu, gradient_checkpointing=gpu if gradient_checkpointing is None else gradient_checkpointing,
        completion_only_loss=True, max_length=max_length, dataloader_num_workers=0,
        eos_token=tok.eos_token, pad_token=tok.pad_token)
    trainer = SFTTrainer(model=net, args=cfg, train_dataset=ds, processing_class=tok)
    log.info("s1K-1.1 SFT of %s: %d examples, %g epochs, ~%d optimiser steps, lr %g, max_length %d, %s",
             model, len(ds), epochs, math.ceil(steps_per_epoch * epochs), lr, max_length,
             "bf16 GPU" if gpu else "fp32 CPU")
    trainer.train()
    trainer.save_model(str(out))  # save_pretrained, gathering sharded weights under accelerate
    record = {"recipe": "s1k-sft", "base_model": model, "revision": revision,
              "data": source, "n_examples": len(ds),
              "prompt": prompt_spec or DEFAULT_PROMPT, "lr": lr, "epochs": epochs, "max_length": max_length,
              "batch_size": batch_size, "grad_accum": grad_accum, "world_size": _world_size(),
              "weight_decay": weight_decay, "warmup": warmup, "seed": seed, "bf16": gpu,
              "wall_time_s": round(time.time() - t0, 1), "history": trainer.state.log_history}
    if trainer.is_world_process_zero():
        tok.save_pretrained(out)
        (out / "training_log.json").write_text(json.dumps(record, indent=1, default=str))
    return record


def main(argv=None) -> int:
    """``python -m rlsft.s1k --model ID_OR_PATH --out FOLDER [options]``: the s1K-1.1 SFT ablation."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m rlsft.s1k", description=main.__doc__)
    ap.add_argument("--model", required=True, help="the Base model: hub id or local folder")
    ap.add_argument("--revision", default=None)
    ap.add_argument("--out", required=True, help="folder for the fine-tuned model (save_pretrained)")
    ap.add_argument("--data", default=None, help=f"hub id or local copy of the data (default {HUB_ID})")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--epochs", type=float, default=5.0)
    ap.add_argument("--max-length", type=int, default=16384, help="tokens per example (longer ones are truncated)")
    ap.add_argument("--batch-size", type=int, default=1, help="sequences per device per step")
    ap.add_argument("--grad-accum", type=int, default=16, help="steps per optimiser update")
    ap.add_argument("--prompt", type=json.loads, default=None,
                    help="prompt spec as JSON, e.g. '{\"style\": \"raw\", \"user\": \"Q: {question}\\nA: \"}' "
                         "(default: the chat template with the step-by-step / \\boxed{} instruction)")
    ap.add_argument("--limit", type=int, default=None, help="use the first N examples only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        train_s1k(args.model, args.out, data=args.data, revision=args.revision, prompt_spec=args.prompt,
                  lr=args.lr, epochs=args.epochs,
                  max_length=args.max_length, batch_size=args.batch_size, grad_accum=args.grad_accum,
                  limit=args.limit, seed=args.seed)
    except S1KUnavailable as exc:
        print(f"rlsft.s1k: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
