"""Stage ``topology`` (50_topology.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "50_topology.ipynb"
KIND = "compute"
INPUTS = ('graphs', 'samples')
OUTPUTS = ('topology',)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``topology``; defaults are the organism profile's."""

    max_exact: int = param(50000000, "count graphlets exactly up to this many 2-paths, else sample")
    n_samples: int = param(200000, "path samples for the graphlet sampler")
    smape_freq: str = param("proportion", "visitation as 'proportion' of a model's visits, or raw 'count'")


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
