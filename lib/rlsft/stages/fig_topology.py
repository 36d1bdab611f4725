"""Stage ``fig_topology`` (51_fig8_fig9_topology.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "51_fig8_fig9_topology.ipynb"
KIND = "figure"
INPUTS = ('topology',)
OUTPUTS = ('figures/fig8_*', 'figures/fig9_*', 'figures/fig31_*', 'figures/fig7_*', 'figures/smape_*')


@dataclasses.dataclass(frozen=True)
class Params:
    """Stage ``fig_topology`` has no parameters of its own."""


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
