"""Stage ``ablations`` (60_ablations.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "60_ablations.ipynb"
KIND = "compute"
INPUTS = ('samples', 'graphs')
OUTPUTS = ('ablations',)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``ablations``; defaults are the organism profile's."""

    ablations: dict = param({"K x0.5": {"k_scale": 0.5}, "K x1.5": {"k_scale": 1.5}, "cosine": {"metric": "cosine"}, "tfidf-char embedder": {"embedder": "tfidf-char"}, "top-10 edges": {"sparsify_k": 10}, "top-20 edges": {"sparsify_k": 20}}, "")
    n_boot: int = param(1000, "bootstrap resamples of problems")


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
