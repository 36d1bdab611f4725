"""The paper's benchmarks (PAPER.md §3): AIME24, AIME25, AMC23 (math) and HumanEval (code, 7B only).

``load_benchmark(name, source="hub" | "folder", folder=None, limit=None)`` returns a list of
problem dicts, the same keys from either source:

- every benchmark: ``id`` (str), ``problem`` (the text the model sees), ``answer`` (gold, str)
- humaneval also: ``prompt``, ``entry_point``, ``test``, ``canonical_solution``
  (``problem`` = ``prompt``, ``answer`` = ``canonical_solution``; correctness comes from the tests)

Hub source (``datasets.load_dataset``) and column mapping [default]:

==========  ===================================================  =======  ==========================
name        hub id (config)                                      split    problem / answer columns
==========  ===================================================  =======  ==========================
aime24      HuggingFaceH4/aime_2024                              train    problem / answer
aime25      opencompass/AIME2025 (AIME2025-I, then AIME2025-II)  test     question / answer
aime25 alt  yentinglin/aime_2025 (``hub_id=`` to choose it)       train    problem / answer
amc23       math-ai/amc23                                        test     question / answer
humaneval   openai/openai_humaneval                              test     task_id, prompt, entry_point,
                                                                          test, canonical_solution
==========  ===================================================  =======  ==========================

Math ids are ``<name>-NN`` in source order (1-based, as in the offline copies); humaneval ids are
the ``task_id`` (``HumanEval/0``). Answers are normalised: integral floats written as integers
(``27.0`` -> ``27``), a trailing ``^\\circ`` dropped.

Folder source: ``<folder>/aime24.jsonl``, ``aime25.jsonl``, ``amc23.jsonl`` (``id``, ``problem``,
``answer``) and ``humaneval.jsonl.gz`` (the file of github.com/openai/human-eval), the layout of
the shared offline copies (``benchmark_folder`` in a profile).

Offline: with ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``) only the local hub cache is
tried; otherwise the hub host is probed with a short TCP connect first, so an unreachable hub
fails in seconds (``BenchmarkUnavailable``) instead of retrying for minutes.

>>> sorted(BENCHMARKS)
['aime24', 'aime25', 'amc23', 'humaneval']
>>> BENCHMARKS["amc23"].n_problems, BENCHMARKS["humaneval"].verifier
(40, 'humaneval')
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlparse

from rlsft.verify import get_verifier

log = logging.getLogger(__name__)

ENV_FOLDER = "RLSFT_BENCHMARK_DIR"
"""Environment variable naming an offline benchmark folder (used when ``folder`` is not given)."""

HUMANEVAL_KEYS = ("prompt", "entry_point", "test", "canonical_solution")


class BenchmarkUnavailable(RuntimeError):
    """The benchmark could not be loaded from the hub (offline, unreachable, not cached)."""


@dataclasses.dataclass(frozen=True)
class HubSource:
    """One hub dataset: id, configs (loaded in order and concatenated), split, column mapping."""

    hub_id: str
    split: str
    problem_col: str
    answer_col: str | None
    configs: tuple[str | None, ...] = (None,)
    id_col: str | None = None  # None: ids are <benchmark>-NN in source order


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    kind: str  # "math" or "code"
    verifier: str  # a key of rlsft.verify.VERIFIERS
    n_problems: int
    filename: str
    hub: tuple[HubSource, ...]  # the first is the default; others are alternatives (hub_id=...)


BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec, overwrite: bool = False) -> None:
    """Add a benchmark to ``BENCHMARKS``."""
    if spec.name in BENCHMARKS and not overwrite:
        raise ValueError(f"benchmark {spec.name!r} is already registered (pass overwrite=True)")
    BENCHMARKS[spec.name] = spec


for _spec in (
    BenchmarkSpec("aime24", "math", "math", 30, "aime24.jsonl",
                  (HubSource("HuggingFaceH4/aime_2024", "train", "problem", "answer"),)),
    BenchmarkSpec("aime25", "math", "math", 30, "aime25.jsonl",
                  (HubSource("opencompass/AIME2025", "test", "question", "answer",
                             configs=("AIME2025-I", "AIME2025-II")),
                   HubSource("yentinglin/aime_2025", "train", "problem", "answer"))),
    BenchmarkSpec("amc23", "math", "math", 40, "amc23.jsonl",
                  (HubSource("math-ai/amc23", "test", "question", "answer"),)),
    BenchmarkSpec("humaneval", "code", "humaneval", 164, "humaneval.jsonl.gz",
                  (HubSource("openai/openai_humaneval", "test", "prompt", "canonical_solution",
                             id_col="task_id"),)),
):
    register_benchmark(_spec)


def get_spec(name: str) -> BenchmarkSpec:
    """The registered benchmark ``name``; a KeyError lists the known names."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}") from None


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------

def normalise_answer(answer: Any) -> str:
    """Gold answers as clean strings.

    >>> [normalise_answer(a) for a in (27.0, " 70 ", "240^\\\\circ", 5)]
    ['27', '70', '240', '5']
    >>> normalise_answer("\\\\frac{1}{2}")
    '\\\\frac{1}{2}'
    """
    if answer is None or isinstance(answer, bool):
        raise ValueError(f"missing or invalid gold answer: {answer!r}")
    if isinstance(answer, float):
        if answer != answer:
            raise ValueError("gold answer is NaN")
        return str(int(answer)) if answer.is_integer() else repr(answer)
    s = str(answer).strip()
    s = re.sub(r"\^\s*\{?\\circ\}?$", "", s).strip()
    if re.fullmatch(r"[-+]?\d+\.0+", s):
        s = s.split(".")[0]
    if not s:
        raise ValueError("gold answer is empty")
    return s


def _math_record(name: str, index: int, problem: Any, answer: Any, rid: Any = None) -> dict:
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{name} problem #{index + 1}: empty or missing problem text")
    return {"id": str(rid) if rid is not None else f"{name}-{index + 1:02d}",
            "problem": problem.strip(), "answer": normalise_answer(answer)}


def _humaneval_record(row: Mapping, where: str) -> dict:
    missing = [k for k in ("task_id", *HUMANEVAL_KEYS) if not isinstance(row.get(k), str)]
    if missing:
        raise ValueError(f"{where}: humaneval row lacks string fields {missing}")
    return {"id": row["task_id"], "problem": row["prompt"], "answer": row["canonical_solution"],
            **{k: row[k] for k in HUMANEVAL_KEYS}}


# ----------------------------------------------------------------------------------------------
# Folder source
# ----------------------------------------------------------------------------------------------

def default_folder() -> Path | None:
    """``$RLSFT_BENCHMARK_DIR`` if set, else the shared copies beside the repository, else None.

    The shared copies are ``<repo>/../shared/benchmarks`` (PAPER.md's offline folder).
    """
    env = os.environ.get(ENV_FOLDER)
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"
    return shared if shared.is_dir() else None


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def load_from_folder(name: str, folder: str | os.PathLike) -> list[dict]:
    """All problems of benchmark ``name`` from ``<folder>/<spec.filename>``."""
    spec = get_spec(name)
    path = Path(folder) / spec.filename
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} not found (expected the layout of the "
                                "offline copies: aime24.jsonl, aime25.jsonl, amc23.jsonl, "
                                "humaneval.jsonl.gz)")
    rows = _read_jsonl(path)
    if spec.kind == "code":
        out = [_humaneval_record(r, f"{path}:{i + 1}") for i, r in enumerate(rows)]
    else:
        out = []
        for i, r in enumerate(rows):
            missing = [k for k in ("problem", "answer") if k not in r]
            if missing:
                raise ValueError(f"{path}: row {i + 1} lacks keys {missing}")
            out.append(_math_record(name, i, r["problem"], r["answer"], r.get("id")))
    return out


# ----------------------------------------------------------------------------------------------
# Hub source
# ----------------------------------------------------------------------------------------------

def _hub_offline_env() -> bool:
    true = {"1", "ON", "YES", "TRUE"}
    return any(os.environ.get(v, "").upper() in true for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connect to the hub endpoint (``$HF_ENDPOINT``, default huggingface.co:443), or to
    the HTTP(S) proxy when one is configured."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    scheme = "HTTPS" if url.scheme == "https" else "HTTP"
    scheme_vars = (f"{scheme}_PROXY", f"{scheme.lower()}_proxy")
    proxy_vars = (*scheme_vars, "ALL_PROXY", "all_proxy")
    proxy = next((os.environ[v] for v in proxy_vars if os.environ.get(v)), None)
    if proxy:
        url = urlparse(proxy if "://" in proxy else "http://" + proxy)
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_load_dataset(hub_id: str, config: str | None, split: str) -> Iterable[Mapping]:
    """``datasets.load_dataset`` (a seam: tests replace it with a fake)."""
    import datasets

    return datasets.load_dataset(hub_id, config, split=split)


def _unavailable(name: str, hub_id: str, why: str) -> BenchmarkUnavailable:
    return BenchmarkUnavailable(
        f"benchmark {name!r}: cannot load hub dataset {hub_id!r} ({why}). Fix: set the profile's "
        f"benchmark_folder to a folder of offline copies (or pass source='folder', "
        f"folder=...; or set ${ENV_FOLDER}), or pre-download it on a connected machine with "
        f"`hf download {hub_id} --repo-type dataset` and run with HF_HUB_OFFLINE=1.")


def _map_hub_rows(spec: BenchmarkSpec, src: HubSource, rows: list[Mapping]) -> list[dict]:
    if rows:
        need = [c for c in (src.problem_col, src.answer_col, src.id_col) if c]
        if spec.kind == "code":
            need = ["task_id", *HUMANEVAL_KEYS]
        missing = [c for c in need if c not in rows[0]]
        if missing:
            raise ValueError(f"hub dataset {src.hub_id!r} lacks columns {missing} (has "
                             f"{sorted(rows[0])}); update the column mapping in rlsft.benchmarks")
    if spec.kind == "code":
        return [_humaneval_record(r, f"{src.hub_id} row {i + 1}") for i, r in enumerate(rows)]
    return [_math_record(spec.name, i, r[src.problem_col], r[src.answer_col],
                         r[src.id_col] if src.id_col else None) for i, r in enumerate(rows)]


def load_from_hub(name: str, hub_id: str | None = None, probe_timeout: float = 3.0) -> list[dict]:
    """All problems of benchmark ``name`` from the hub (``hub_id``: one of the spec's sources)."""
    spec = get_spec(name)
    sources = {s.hub_id: s for s in spec.hub}
    if hub_id is not None and hub_id not in sources:
        raise KeyError(f"{hub_id!r} is not a known source of {name!r}; known: {sorted(sources)}")
    src = sources[hub_id] if hub_id else spec.hub[0]
    offline = _hub_offline_env()
    if not offline and not hub_reachable(probe_timeout):
        raise _unavailable(name, src.hub_id, "the hub is unreachable; set HF_HUB_OFFLINE=1 to use "
                                             "a local hub cache")
    rows: list[Mapping] = []
    for config in src.configs:
        try:
            rows.extend(dict(r) for r in _hf_load_dataset(src.hub_id, config, src.split))
        except OSError as exc:  # ConnectionError, DatasetNotFoundError, ...
            why = ("offline mode and not in the local cache" if offline
                   else f"{type(exc).__name__}: {exc}")
            raise _unavailable(name, src.hub_id, why) from None
    return _map_hub_rows(spec, src, rows)


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------

def load_benchmark(name: str, source: str = "hub", folder: str | os.PathLike | None = None,
                   limit: int | None = None, hub_id: str | None = None) -> list[dict]:
    """The problems of benchmark ``name`` (see the module docstring for keys and sources).

    ``source="folder"`` reads ``folder`` (default: ``$RLSFT_BENCHMARK_DIR``); ``source="hub"``
    loads the hub dataset (``hub_id`` picks an alternative source). ``limit``: the first
    ``limit`` problems. A count other than the standard release's is logged as a warning.
    """
    spec = get_spec(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if source == "folder":
        folder = folder if folder is not None else os.environ.get(ENV_FOLDER)
        if folder is None:
            raise ValueError(f"source='folder' needs folder=... (or ${ENV_FOLDER})")
        problems = load_from_folder(name, folder)
        where = str(folder)
    elif source == "hub":
        if folder is not None:
            raise ValueError("folder is only used with source='folder'")
        problems = load_from_hub(name, hub_id)
        where = hub_id or spec.hub[0].hub_id
    else:
        raise ValueError(f"source must be 'hub' or 'folder', got {source!r}")
    ids = [p["id"] for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} from {where}: duplicate problem ids")
    if len(problems) != spec.n_problems:
        log.warning("%s from %s: %d problems, the standard release has %d", name, where,
                    len(problems), spec.n_problems)
    log.info("loaded %s: %d problems from %s", name, len(problems), where)
    return problems[:limit] if limit else problems


def load_benchmarks(names: Iterable[str], source: str = "hub", folder=None,
                    limit: int | None = None) -> dict[str, list[dict]]:
    """``{name: load_benchmark(name, ...)}`` for several benchmarks."""
    return {n: load_benchmark(n, source=source, folder=folder, limit=limit) for n in names}


def verifier_for(name: str) -> Callable:
    """The verifier function of benchmark ``name`` (``fn(text, problem) -> (extracted, correct)``)."""
    return get_verifier(get_spec(name).verifier)
