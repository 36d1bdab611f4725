"""Stage ``fig_ablations`` (61_fig32_33_ablations.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "61_fig32_33_ablations.ipynb"
KIND = "figure"
INPUTS = ('ablations',)
OUTPUTS = ('figures/fig32_*', 'figures/fig33_*')


@dataclasses.dataclass(frozen=True)
class Params:
    """Stage ``fig_ablations`` has no parameters of its own."""


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
