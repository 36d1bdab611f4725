"""Stage ``fig_trajectories`` (31_fig2_trajectories.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "31_fig2_trajectories.ipynb"
KIND = "figure"
INPUTS = ('trajectories',)
OUTPUTS = ('figures/fig2_*',)


@dataclasses.dataclass(frozen=True)
class Params:
    """Stage ``fig_trajectories`` has no parameters of its own."""


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
