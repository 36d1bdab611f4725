"""What a run of a profile needs and would do, checked before any work: models that are not on
disk (``missing_models``), and the plan ``--dry-run`` prints (``plan_lines``).

>>> from rlsft import registry
>>> plan_lines(registry.load_profile("ci"))[0]
'models: all available locally (or trained by the pipeline)'
"""
from __future__ import annotations

from rlsft import config as C
from rlsft import registry as R
from rlsft.benchmarks import BENCHMARKS
from rlsft.embedders import TFIDF, EmbedderUnavailableError, _resolve_st_path
from rlsft.fast_embedders import RuntimeUnavailableError, parse_runtime
from rlsft.models import available, download_hint


def embedders(profile: dict) -> list[str]:
    """The sentence-transformers models the step-level stages use (graphs, ablations)."""
    names = [R.effective_params(profile, "graphs").embedder]
    names += [o.get("embedder") for o in (R.effective_params(profile, "ablations").ablations or {}).values()]
    return sorted({n for n in names if n})


MODEL_STAGES = ("train", "samples")  # stages that load the variants' models
EMBEDDER_STAGES = ("graphs", "ablations", "sweep")  # stages that embed step sentences


def missing_models(profile: dict, stages=None) -> list[str]:
    """``["org/id@revision", ...]`` for hub models that are neither local paths nor cached:
    the variants' models and the embedders of the step-level stages, or only those that the
    stages named in ``stages`` load (all stages when None).

    >>> missing_models({"families": {}, "stages": {"graphs": {"embedder": "nowhere/model"}}}, ["train"])
    []
    """
    out = []
    if stages is None or set(stages) & set(MODEL_STAGES):
        for _, _, spec in C.variant_specs(profile):
            if "model" in spec and not available(spec):
                out.append(spec["model"] + (f"@{spec['revision']}" if spec.get("revision") else ""))
    if stages is None or set(stages) & set(EMBEDDER_STAGES):
        out += [name for name in embedders(profile) if not embedder_available(name)]
    return sorted(set(out))


def embedder_available(name: str) -> bool:
    """Whether the embedder ``name`` runs offline: TF-IDF always; ``model@runtime[/N]`` when the
    runtime is known and ``model`` is local (the ONNX export or static table is built from it).

    >>> embedder_available("tfidf-char"), embedder_available("all-MiniLM-L6-v2@onnx-int8/64")
    (True, True)
    >>> embedder_available("all-MiniLM-L6-v2@gguf")
    False
    """
    if name == TFIDF:
        return True
    try:
        model, _, _ = parse_runtime(name)
        _resolve_st_path(model)
    except (EmbedderUnavailableError, RuntimeUnavailableError):
        return False
    return True


def plan_lines(profile: dict) -> list[str]:
    """What a run would fetch and roughly generate (upper bound: every sample hits max tokens)."""
    missing = missing_models(profile)
    lines = []
    if missing:
        lines.append("would need to fetch (not available offline):")
        lines += [f"  {m}    ({download_hint(m)})" for m in missing]
    else:
        lines.append("models: all available locally (or trained by the pipeline)")
    sp = R.effective_params(profile, "samples")
    n_problems = _n_problems(profile)
    specs = [spec for _, _, spec in C.variant_specs(profile) if "completions" not in spec]
    n_imported = sum("completions" in spec for _, _, spec in C.variant_specs(profile))
    if n_imported:
        lines.append(f"imported: {n_imported} variant(s) read from completions files (nothing generated for them)")
    if n_problems and specs:
        m, cap = sp.M, sp.max_new_tokens
        total = len(specs) * n_problems * m
        # a variant's max_model_len (its context) caps its completions below max_new_tokens
        caps = [min(cap, int(s["max_model_len"])) if s.get("max_model_len") else cap for s in specs]
        lines.append(f"generation: {len(specs)} models x {n_problems} problems x M={m} = {total:,} completions, "
                     f"at most {sum(caps) * n_problems * m:,} new tokens (cap {cap} per completion"
                     + (", less where a variant's max_model_len is smaller" if min(caps, default=cap) < cap else "")
                     + ")")
    return lines


def _n_problems(profile: dict) -> int:
    data = R.effective_params(profile, "data")
    if data.benchmarks:
        sizes = {b: BENCHMARKS[b].n_problems if b in BENCHMARKS else 0 for b in data.benchmarks}
        return sum(min(n, data.limit or 10**9) for n in sizes.values())
    return sum(int(s.get("n", 0)) for s in (data.eval_sets or {}).values())
