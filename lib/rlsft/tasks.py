"""The task registry: per task, the problems it builds and the verifier that judges its answers.

A profile names its task in ``stages.data.task`` (which problems the data stage builds) and
``stages.samples.task`` (which verifier the samples stage uses):

- ``navigation``: the model organism. Builds the world, the held-out evaluation sets (the
  problems), the training problems, the Base corpus and the teacher's SFT traces
  (:func:`rlsft.task.make_task_data`); answers are judged by the step-replaying checker.
- ``benchmarks``: the paper's benchmarks (:mod:`rlsft.benchmarks`), from the hub or the profile's
  ``benchmark_folder``; answers are judged by each benchmark's registered verifier (math-verify on
  the last ``\\boxed{}``, or HumanEval's tests).
- ``completions``: the problems of the completions files a profile imports
  (:func:`rlsft.completions.problems_from_profile`); answers are judged like ``benchmarks``, with
  ``math`` for benchmarks that are not registered (as imported answers are).

A builder returns ``{name: table}``: ``problems`` (every task) and the task's other tables; the
data stage writes each DataFrame to ``<name>.parquet`` and the organism's ``world`` to
``world.json``. A verifier is ``fn(text, problems_row) -> (extracted, correct, status)`` with
``fn.identity(row)``, the text that enters the shard keys.

>>> sorted(TASKS)
['benchmarks', 'completions', 'navigation']
>>> get("chess")
Traceback (most recent call last):
...
rlsft.errors.ConfigError: unknown task 'chess'; known tasks: ['benchmarks', 'completions', 'navigation']
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pandas as pd

from rlsft import completions as CP
from rlsft import task as T
from rlsft.benchmarks import get_spec, load_benchmark, verifier_for
from rlsft.errors import ConfigError
from rlsft.io import read_json, sha256_file
from rlsft.schema import problem_row, verifier_problem
from rlsft.verify import get_verifier, run_verifier


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: ``build(profile, params, seed) -> {name: table}`` (``params``: the data stage's
    ``Params``) and ``verifier(data_dir) -> fn`` (``data_dir``: the data stage's folder)."""

    name: str
    build: Callable
    verifier: Callable
    doc: str


# ------------------------------------------------------------------------------------ navigation

def build_navigation(profile: dict, params, seed: int) -> dict:
    """The organism's data (``world``, ``problems``, ``train_problems``, ``base_corpus``, ``sft``)."""
    d = T.make_task_data(n_places=params.n_places, out_degree=params.out_degree, world_seed=params.world_seed,
                         eval_sets=params.eval_sets, base_per_problem=params.base_per_problem,
                         base_styles=params.base_styles, teacher_per_problem=params.teacher_per_problem,
                         n_facts=params.n_facts, seed=seed, teacher_slack=params.teacher_slack,
                         teacher_explore=params.teacher_explore,
                         teacher_check=params.teacher_check)
    return {"world": d["world"], "problems": d["eval"], "train_problems": d["train"],
            "base_corpus": d["base_corpus"], "sft": d["sft"]}


def navigation_verifier(data_dir: Path) -> Callable:
    """The organism's exact step-replaying checker on the data stage's world (status ``ok``); its
    identity names the checker and the world file's hash."""
    world_file = Path(data_dir) / "world.json"
    world = T.world_from_json(read_json(world_file))
    world_id = f"navigation:{T.check.__module__}.{T.check.__qualname__}:world={sha256_file(world_file)[:16]}"

    def check(text, row):
        return T.check(world, T.problem_from_row(row), text)

    check.identity = lambda row: world_id
    return check


# ------------------------------------------------------------------------------------ benchmarks

def build_benchmarks(profile: dict, params, seed: int) -> dict:
    """The problems of ``params.benchmarks`` (first ``params.limit`` of each), from the profile's
    ``benchmark_folder`` or the hub."""
    folder = profile.get("benchmark_folder")
    rows = [problem_row(name, r) for name in params.benchmarks
            for r in load_benchmark(name, source="folder" if folder else "hub", folder=folder, limit=params.limit)]
    if not rows:
        raise ConfigError("task='benchmarks' but no problems were loaded: set stages.data.benchmarks in the profile")
    return {"problems": pd.DataFrame(rows)}


def benchmark_verifier(data_dir: Path) -> Callable:
    """Each benchmark's registered verifier, through ``rlsft.verify.run_verifier``; its identity
    names the benchmark's verifier and function (so re-registering a verifier resamples)."""

    def verify(text, row):
        return run_verifier(verifier_for(row["benchmark"]), text, verifier_problem(row))

    def identity(row):
        fn = verifier_for(row["benchmark"])
        return f"benchmarks:{get_spec(row['benchmark']).verifier}:{fn.__module__}.{fn.__qualname__}"

    verify.identity = identity
    return verify


# ----------------------------------------------------------------------------------- completions

def build_completions(profile: dict, params, seed: int) -> dict:
    """The problems of the profile's imported completions files (first ``params.limit`` of each benchmark)."""
    return {"problems": CP.problems_from_profile(profile, limit=params.limit)}


def completions_verifier(data_dir: Path) -> Callable:
    """Like :func:`benchmark_verifier`, with ``math`` (``completions.DEFAULT_VERIFIER``) for
    benchmarks that are not registered."""

    def verify(text, row):
        return run_verifier(get_verifier(CP.verifier_name(row["benchmark"])), text, verifier_problem(row))

    def identity(row):
        fn = get_verifier(CP.verifier_name(row["benchmark"]))
        return f"completions:{CP.verifier_name(row['benchmark'])}:{fn.__module__}.{fn.__qualname__}"

    verify.identity = identity
    return verify


TASKS: dict[str, Task] = {
    "navigation": Task("navigation", build_navigation, navigation_verifier,
                       "the model organism: route finding in a memorised world"),
    "benchmarks": Task("benchmarks", build_benchmarks, benchmark_verifier,
                       "the paper's benchmarks (AIME24, AIME25, AMC23, HumanEval)"),
    "completions": Task("completions", build_completions, completions_verifier,
                        "the problems of imported completions files"),
}
"""name -> :class:`Task`."""

NAMES = tuple(TASKS)
"""The task names, for the stages' ``choices``."""


def get(name: str) -> Task:
    """The task ``name``; a ConfigError names the known tasks."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None


def make_verifier(name: str, data_dir: Path) -> Callable:
    """``fn(text, problems_row) -> (extracted, correct, status)`` of task ``name``, with
    ``fn.identity(row)`` for the shard keys (:func:`rlsft.sampling.verifier_identity`)."""
    return get(name).verifier(data_dir)
