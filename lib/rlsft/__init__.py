"""rlsft: the shared code of the "RL Squeezes, SFT Expands" companion.

One module per pipeline stage:

- ``config``       profiles (YAML), validation, notebook parameters
- ``io``           atomic writes and small file helpers
- ``store``        the results store: manifest, stage cache keys, skip logic
- ``runner``       the papermill runner behind ``run_all.sh``
- ``task``         the model organism's synthetic navigation task
- ``organism``     tokenizer, pretraining, SFT (TRL) and GRPO (TRL) of the organism
- ``sampling``     M answers per problem (transformers or vLLM backend)
- ``verify``       answer checking (organism checker, math-verify), pass@k
- ``trajectories`` chrF matrices, UPGMA unique trajectories (Fig. 2)
- ``steps``        sentence segmentation, embedding, K-means nodes
- ``graphs``       reasoning graphs, node metrics, decay rates (Fig. 6, 26)
- ``topology``     eight global metrics, graphlets, sMAPE (Fig. 8, 9, 31)
- ``figures``      one visual style for every figure
- ``report``       the HTML report
"""

VARIANTS = ("Base", "RL", "SFT", "SFT+RL")
"""The four variants, always in this order (tables, figures, legends)."""

COMPARISONS = (("RL", "Base"), ("SFT", "Base"), ("SFT+RL", "SFT"))
"""The paper's three training steps as (after, before) pairs: Base->RL, Base->SFT, SFT->SFT+RL."""

__version__ = "0.1.0"
