"""Stage ``graphs`` (40_step_graphs.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "40_step_graphs.ipynb"
KIND = "compute"
INPUTS = ('samples',)
OUTPUTS = ('graphs',)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``graphs``; defaults are the organism profile's."""

    embedder: str = param("all-MiniLM-L6-v2", "paper: BAAI/bge-large-en-v1.5; 'tfidf-char' is the offline second embedder")
    normalize: bool = param(False, "L2-normalise embeddings (BGE's default is True; paper unclear)")
    segment_rule: str = param("sentence", "'sentence' (newline, then sentence split) or 'line'")
    min_chars: int = param(5, "drop fragments of <= this many characters")
    mask_digits: bool = param(False, "replace digit runs by 0 before embedding (a deviation; off in the paper)")
    k: int = param(40, "K-means clusters per pooled group (paper: 2000), capped at distinct steps")
    scope: str = param("problem", "pool per 'problem' (default) or per 'benchmark'")
    metric: str = param("euclidean", "'euclidean' (paper) or 'cosine'")
    sparsify_k: int | None = param(None, "keep each node's k nearest out-edges (paper ablation: 10 or 20); None = off")
    spread_seeds: list = param([0, 1, 2], "clustering seeds for the spread of the ratios")
    n_boot: int = param(1000, "bootstrap resamples of problems")


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
