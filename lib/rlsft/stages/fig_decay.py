"""Stage ``fig_decay`` (41_fig6_decay.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "41_fig6_decay.ipynb"
KIND = "figure"
INPUTS = ('graphs',)
OUTPUTS = ('figures/fig4_*', 'figures/fig5_*', 'figures/fig6_*', 'figures/fig26_*', 'figures/headline_*')


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``fig_decay``; defaults are the organism profile's."""

    example: int = param(0, "which problem (index in sorted order) to draw as rank plot and graph")


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
