"""Stage ``samples`` (20_sample.ipynb). TODO: describe."""
from __future__ import annotations

import dataclasses

from rlsft.params import param

NOTEBOOK = "20_sample.ipynb"
KIND = "compute"
INPUTS = ('data', 'train')
OUTPUTS = ('samples',)


@dataclasses.dataclass(frozen=True)
class Params:
    """The parameters of stage ``samples``; defaults are the organism profile's."""

    backend: str = param("transformers", "'transformers' (CPU/GPU) or 'vllm' (GPU)")
    M: int = param(64, "samples per problem (paper: 256)")
    temperature: float = param(0.6, "paper: 0.6")
    top_p: float = param(0.95, "paper: unknown; 0.95 with T = 0.6 (DeepSeek-R1 convention)")
    max_new_tokens: int = param(160, "completion cap (record the truncation rate)")
    batch_size: int = param(512, "transformers backend: sequences per generate call")
    chunk: int = param(8, "problems per backend call (vLLM batches them)")
    task: str = param("navigation", "'navigation' (organism checker) or 'benchmarks' (math-verify / HumanEval)")


def run(ctx, params: Params) -> dict:
    """TODO: the stage's logic, moved from its notebook; returns its tables by name."""
    raise NotImplementedError
