"""rlsft: the shared code of the "RL Squeezes, SFT Expands" companion.

One module per pipeline stage, in ``rlsft.stages`` (named like the stage and its notebook):
``data``, ``train``, ``samples``, ``fig_passk``, ``trajectories``, ``fig_trajectories``,
``graphs``, ``fig_decay``, ``topology``, ``fig_topology``, ``ablations``, ``fig_ablations``; each
has a typed ``Params`` and ``run(ctx, params)``. Around them, from the top down:

- ``runner``        the papermill runner behind ``run_all.sh``; ``console`` its logs and bars;
                    ``plan`` the pre-flight checks and ``--dry-run``; ``report`` the HTML report
                    and the results summary; ``compare`` two results folders table by table
- ``registry``      the stages in order, their notebooks, typed parameter checks, ``open_stage``
- ``config``        profiles (YAML); ``completions`` imported completions; ``models`` where
                    weights come from; ``tasks`` the task registry (problems and verifier per task);
                    ``store`` the manifest and cache keys
- methods, each importable alone:
  ``task`` the organism's navigation task; ``organism`` tokenizer and model of the organism;
  ``backends`` generation (transformers, vLLM); ``sampling`` the per-model sampling loop and keys;
  ``schema`` the samples/problems tables; ``verify`` answer checking and pass@k; ``humaneval`` the
  HumanEval grader; ``benchmarks`` the paper's benchmarks; ``s1k`` s1K traces;
  ``trajectories`` chrF matrices and UPGMA unique trajectories (Fig. 2); ``segmentation`` steps;
  ``embedders`` sentence embedders and the embedding cache; ``clustering`` K-means;
  ``steps`` the step-table pipeline; ``graphs`` reasoning graphs, node metrics, decay rates
  (Fig. 6, 26); ``ratios`` the decay-rate ratios and their bootstrap CIs; ``controls`` their
  node-count controls (matched node counts, subsampled responses, saturation at K);
  ``topology`` eight global metrics, graphlets, sMAPE (Fig. 8, 9, 31); ``headline``
  the headline tables; ``figures`` one visual style for every figure
- base: ``errors``, ``io`` (atomic writes), ``params`` (typed fields), ``context``, ``deps``
  (the import graph behind the cache keys), ``notebooks`` (reading notebook files), ``progress``
"""

VARIANTS = ("Base", "RL", "SFT", "SFT+RL")
"""The four variants, always in this order (tables, figures, legends)."""

COMPARISONS = (("RL", "Base"), ("SFT", "Base"), ("SFT+RL", "SFT"))
"""The paper's three training steps as (after, before) pairs: Base->RL, Base->SFT, SFT->SFT+RL."""

__version__ = "0.1.0"
