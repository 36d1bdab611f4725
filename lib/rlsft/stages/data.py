"""Stage ``data`` (notebook ``00_data.ipynb``): the problems every variant is sampled on, and for
the model organism the data that grows the four variants.

The task (``params.task``, see :mod:`rlsft.tasks`) builds the tables; this stage writes them under
``data/``: ``problems.parquet`` always (``rlsft.schema``: benchmark, problem, prompt, answer, and
``meta`` or the organism's level / start / goal), and for the organism ``world.json``,
``train_problems.parquet``, ``base_corpus.parquet`` and ``sft.parquet``.
"""
from __future__ import annotations

import dataclasses

from rlsft import io
from rlsft import task as T
from rlsft import tasks
from rlsft.params import param

NOTEBOOK = "00_data.ipynb"
KIND = "compute"
INPUTS = ()
OUTPUTS = ("data",)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``data``; defaults are the organism profile's."""

    task: str = param("navigation", "'navigation' (the organism), 'benchmarks' (the paper's data) or "
                      "'completions' (the problems of imported completions files)", choices=tasks.NAMES)
    # organism world and splits
    n_places: int = param(36, "places in the world", ge=4, le=len(T.PLACE_NAMES))
    out_degree: int = param(3, "roads leaving each place", ge=1)
    world_seed: int = param(0, "the world's layout")
    eval_sets: dict = param({"nav-a": {"n": 30, "levels": [4]}, "nav-b": {"n": 30, "levels": [3, 4]},
                             "nav-c": {"n": 40, "levels": [2, 3]}},
                            "held-out evaluation sets (the organism's benchmarks): name -> {n: problems, "
                            "levels: shortest-route lengths in hops}")
    base_per_problem: int = param(5, "pretraining attempts per training problem", ge=0)
    base_styles: dict = param({style: w for style, w in T.BASE_STYLES.items() if w},  # the task's own mixture
                              "writer style -> share of the Base corpus's attempts (rlsft.task.base_attempt)")
    teacher_per_problem: int = param(2, "teacher traces per training problem (SFT data)", ge=0)
    teacher_slack: int = param(1, "teacher's depth limit: shortest distance + slack hops", ge=0)
    teacher_explore: float = param(0.1, "probability that the teacher tries a wrong road and backtracks", ge=0, le=1)
    teacher_check: float = param(0.0, "probability that the teacher recalls a place's roads before it picks one "
                                 "(a step Base's attempts never write)", ge=0, le=1)
    n_facts: int = param(20, "copies of the world's road list in pretraining", ge=0)
    # paper benchmarks
    benchmarks: list[str] = param([], "task 'benchmarks': e.g. ['aime24', 'aime25', 'amc23'] or ['humaneval']")
    limit: int | None = param(None, "first N problems of each benchmark (None: all)", ge=1)


def write_tables(folder, tables: dict) -> None:
    """Each DataFrame of ``tables`` as ``<name>.parquet`` under ``folder``, the organism's world as
    ``world.json``."""
    for name, table in tables.items():
        if isinstance(table, T.World):
            io.write_json(folder / f"{name}.json", T.world_to_json(table))
        else:
            io.write_parquet(folder / f"{name}.parquet", table)


def run(ctx, params: Params) -> dict:
    """Build the task's tables, write them under ``data/`` and return them by name: ``problems``
    and the task's others (organism: ``world``, ``train_problems``, ``base_corpus``, ``sft``), and
    ``counts`` (problems per benchmark, for the notebook)."""
    tables = tasks.get(params.task).build(ctx.profile, params, ctx.seed)
    write_tables(ctx.dir, tables)
    counts = tables["problems"].groupby("benchmark").size().rename("problems").to_frame()
    return {**tables, "counts": counts}
