"""Stage ``trajectories`` (30_trajectories.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "30_trajectories.ipynb"
KIND = "compute"
INPUTS = ('samples',)
OUTPUTS = ('trajectories',)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``trajectories``; defaults are the organism profile's."""

    threshold: float = param(60.0, "similarity cut (paper: 60 on sacrebleu's 0-100 scale)")
    n_jobs: int = param(2, "problems in parallel")
    n_boot: int = param(1000, "bootstrap resamples of problems for the intervals")


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
