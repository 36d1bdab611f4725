"""Sampling one model: M answers per problem, verified, one parquet shard per problem.

Storage: ``<shard_dir>/<key>/<benchmark>__<problem>__<problem key>.parquet``, written atomically,
then merged into one table per model; an interrupted run resumes at the first unfinished problem
and produces the same table as an uninterrupted one. ``<key>`` (:func:`model_key`) hashes what
every problem of a model shares (sampling parameters with the stop settings, prompt spec, model
fingerprint, backend, ``max_model_len``); the problem key (:func:`problem_key`) hashes what is the
problem's own (its text, gold answer and metadata, and the identity of the verifier that judges
it). Change any of these and the affected problems are sampled again; the others are reused.

Every sample carries a ``verify_status`` (``rlsft.verify.STATUSES``): ``ok`` when the verifier
judged it, else why it could not (``no_box``, ``parse_error``, ``timeout``).

The backends and prompts are :mod:`rlsft.backends`; the verifiers of the tasks
:mod:`rlsft.tasks`; the loop over a profile's variants is the samples stage
(:mod:`rlsft.stages.samples`).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from rlsft.backends import SamplingParams, build_prompt
from rlsft.io import finished_files, sha256_file, sha256_text, write_parquet
from rlsft.progress import bar as progress_bar
from rlsft.schema import SAMPLE_COLUMNS
from rlsft.verify import verify_record

log = logging.getLogger(__name__)

PROBLEM_KEY_COLUMNS = ("prompt", "answer", "meta", "start", "goal", "level")
"""Columns of the problem table that make a problem what it is (its text, gold answer, metadata,
and the organism's start, goal and level): a change in any of them resamples that problem."""


def resolved_commit(model_id: str, revision: str | None) -> str | None:
    """The commit hash of the cached snapshot of a hub model (its HF-cache folder name), or None
    when it is not in the local cache. Resolves branch names and an unset revision (``main``)."""
    try:
        from huggingface_hub import snapshot_download

        snap = snapshot_download(model_id, revision=revision, local_files_only=True,
                                 allow_patterns=["config.json"])
        return Path(snap).name
    except Exception:  # noqa: BLE001 - not cached: no commit to report
        return None


def model_fingerprint(path: str, revision: str | None) -> str:
    """Identity of a model for cache keys: the weights' sha256 for a local folder, else
    ``id@commit`` with the commit of the cached snapshot (``id@revision`` when not cached)."""
    p = Path(path)
    if p.is_dir():
        files = finished_files(p, "*.safetensors") + finished_files(p, "*.bin")
        return sha256_text(*[sha256_file(f) for f in files]) if files else sha256_text(str(p.resolve()))
    return f"{path}@{resolved_commit(path, revision) or revision or 'main'}"


def verifier_identity(verifier: Callable, row) -> str:
    """What identifies the verifier that judges ``row``, for the shard keys: ``verifier.identity``
    (a string, or a function of the row; the verifiers of :mod:`rlsft.tasks` set it), else the function's module
    and qualified name.

    >>> def exact(text, row): return text, text == row["answer"]
    >>> verifier_identity(exact, {}).endswith("exact")
    True
    >>> exact.identity = lambda row: f"exact:{row['benchmark']}"
    >>> verifier_identity(exact, {"benchmark": "b"})
    'exact:b'
    """
    ident = getattr(verifier, "identity", None)
    if callable(ident):
        return str(ident(row))
    if ident is not None:
        return str(ident)
    return f"{getattr(verifier, '__module__', '?')}.{getattr(verifier, '__qualname__', type(verifier).__name__)}"


def _canon(value) -> str | None:
    """A value of the problem table as stable text (None for a missing value; 3.0 -> '3')."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def problem_key(row, verifier_id: str) -> str:
    """16 hex digits of sha256 over a problem's ``PROBLEM_KEY_COLUMNS`` and its verifier: the part
    of a shard's name that changes when the problem text, gold answer, metadata or verifier does.

    >>> a = problem_key({"prompt": "Q", "answer": "1", "source": "x"}, "math")
    >>> a == problem_key({"prompt": "Q", "answer": 1.0}, "math"), a == problem_key({"prompt": "Q", "answer": "2"}, "math")
    (True, False)
    >>> a == problem_key({"prompt": "Q", "answer": "1"}, "humaneval")
    False
    """
    parts = [f"verifier={verifier_id}"]
    for col in PROBLEM_KEY_COLUMNS:
        value = _canon(row.get(col)) if col in row else None
        if value is not None:
            parts.append(f"{col}={value}")
    return sha256_text(*parts)[:16]


def model_key(params: SamplingParams, prompt_spec: dict | None, fingerprint: str, backend: str,
              max_model_len: int | None) -> str:
    """16 hex digits of sha256 over what all problems of one model share: the sampling parameters
    (with the stop settings), the prompt spec, the model fingerprint, the backend and the context
    length. It names the model's shard folder.

    >>> sp = SamplingParams(n=2, temperature=0.6, top_p=0.95, max_new_tokens=8)
    >>> model_key(sp, None, "m", "vllm", 4096) == model_key(sp, {}, "m", "vllm", 4096)
    True
    >>> len({model_key(sp, None, "m", b, n) for b in ("vllm", "transformers") for n in (None, 4096)})
    4
    """
    return sha256_text(repr(dataclasses.asdict(params)), repr(sorted((prompt_spec or {}).items())), fingerprint,
                       f"backend={backend}", f"max_model_len={max_model_len}")[:16]


def sample_model(*, family: str, variant: str, backend_factory: Callable, problems, prompt_spec: dict,
                 params: SamplingParams, verifier: Callable, shard_dir: Path, fingerprint: str,
                 chunk: int, backend: str, max_model_len: int | None = None):
    """Sample and verify every problem of one model, one parquet shard per problem.

    Shards are ``shard_dir/<model_key>/<benchmark>__<problem>__<problem_key>.parquet``: the
    folder's key hashes the sampling parameters (with stop settings), prompt spec, model
    fingerprint, ``backend`` (the name of what ``backend_factory`` builds) and ``max_model_len``;
    the problem key hashes the problem's text, gold answer and metadata and the identity of its
    verifier (``verifier_identity``). Problems whose shard exists are skipped (resume, and reuse
    of unchanged problems); within a chunk only the missing problems are sampled. The backend is
    built only if some problem is left. Every sample is verified by ``verify_record``. Returns the
    concatenated table in problem order.
    """
    folder = Path(shard_dir) / model_key(params, prompt_spec, fingerprint, backend, max_model_len)
    rows = list(problems.to_dict("records"))
    names = {id(r): f"{r['benchmark']}__{r['problem']}__{problem_key(r, verifier_identity(verifier, r))}.parquet"
             for r in rows}
    shard = lambda r: folder / names[id(r)]  # noqa: E731
    # chunk boundaries are fixed over the whole problem list and a chunk's missing problems are
    # sampled together, so a run resumed after a kill (which loses whole chunks) regenerates exactly
    # the chunks an uninterrupted run would have generated, with the same seeds
    chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    todo = [part for part in ([r for r in c if not shard(r).exists()] for c in chunks) if part]
    n_left = sum(map(len, todo))
    if n_left < len(rows):
        log.info("sample %s/%s: %d of %d problems already sampled, resuming", family, variant,
                 len(rows) - n_left, len(rows))
    if todo:
        model = backend_factory()
        t0, n_tok, n_done = time.time(), 0, 0
        bar = progress_bar(total=n_left, desc=f"sample {family}/{variant}", leave=False)
        for part in todo:
            prompts = {f"{r['benchmark']}__{r['problem']}": build_prompt(r["prompt"], prompt_spec, model.tokenizer)
                       for r in part}
            outs = model.generate(prompts, params)
            for r in part:
                k = f"{r['benchmark']}__{r['problem']}"
                recs = []
                for i, c in enumerate(outs[k]):
                    recs.append({"family": family, "variant": variant, "benchmark": r["benchmark"],
                                 "problem": str(r["problem"]), "sample": i, "text": c.text, "n_tokens": c.n_tokens,
                                 "finish_reason": c.finish_reason, **verify_record(verifier, c.text, r)})
                    n_tok += c.n_tokens
                write_parquet(shard(r), pd.DataFrame(recs, columns=SAMPLE_COLUMNS))
                n_done += 1
            bar.update(len(part))
        bar.close()
        dt = time.time() - t0
        log.info("sample %s/%s: %d completions, %d tokens in %.1f s (%.0f tokens/s)", family, variant,
                 n_done * params.n, n_tok, dt, n_tok / max(dt, 1e-9))
        del model
    parts = [pd.read_parquet(shard(r)) for r in rows]
    return pd.concat(parts, ignore_index=True)
