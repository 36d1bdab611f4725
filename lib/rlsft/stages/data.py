"""Stage ``data`` (00_data.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "00_data.ipynb"
KIND = "compute"
INPUTS = ()
OUTPUTS = ('data',)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``data``; defaults are the organism profile's."""

    task: str = param("navigation", "'navigation' (the organism), 'benchmarks' (the paper's data) or 'completions' (the problems of imported completions files)")
    # organism world and splits
    n_places: int = param(36, "places in the world")
    out_degree: int = param(3, "roads leaving each place")
    world_seed: int = param(0, "the world's layout")
    eval_sets: dict = param({"nav-a": {"n": 30, "levels": [4]}, "nav-b": {"n": 30, "levels": [3, 4]}, "nav-c": {"n": 40, "levels": [2, 3]}}, "")
    base_per_problem: int = param(5, "pretraining attempts per training problem")
    base_styles: dict = param({"habit": 0.25, "shortest": 0.05, "wander": 0.3, "greedy": 0.2, "hallucinate": 0.1, "shortcut": 0.05, "teacher": 0.05}, "")
    teacher_per_problem: int = param(2, "teacher traces per training problem (SFT data)")
    teacher_slack: int = param(1, "teacher's depth limit: shortest distance + slack hops")
    teacher_explore: float = param(0.1, "probability that the teacher tries a wrong road and backtracks")
    n_facts: int = param(20, "copies of the world's road list in pretraining")
    # paper benchmarks
    benchmarks: list = param([], "e.g. ['aime24', 'aime25', 'amc23'] or ['humaneval']")
    limit: int | None = param(None, "first N problems of each benchmark (None: all)")


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
