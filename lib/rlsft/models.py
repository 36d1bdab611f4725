"""Where each variant's weights come from: trained here (a recipe) or a hub id / local path.

A hub model must already be on disk (a local folder or the Hugging Face cache) before a run starts;
otherwise the runner stops before any work and names each missing model with the command that
fetches it. ``plan_lines`` is what ``--dry-run`` prints about models and generation cost.
"""
from __future__ import annotations

from pathlib import Path

from . import config as C


def trained_path(root: Path, family: str, variant: str) -> Path:
    """Where the train stage saves a variant: ``results/<profile>/train/<family>/<variant>``."""
    return Path(root) / "train" / family / variant.replace("+", "_")


def _cached(model_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(model_id, revision=revision, local_files_only=True,
                          allow_patterns=["config.json"])
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        return False


def is_local_path(model: str) -> bool:
    """Whether ``model`` is written as a local path (``/``, ``~`` or ``.`` first), not a hub id.

    >>> is_local_path("~/models/x"), is_local_path("Qwen/Qwen2.5-Math-1.5B")
    (True, False)
    """
    return str(model).startswith(("/", "~", "."))


def available(spec: dict) -> bool:
    model = spec["model"]
    if Path(model).expanduser().exists() or is_local_path(model):
        return (Path(model).expanduser() / "config.json").exists()
    return _cached(model, spec.get("revision"))


def embedders(profile: dict) -> list[str]:
    """The sentence-transformers models the step-level stages use (graphs, ablations)."""
    from .notebooks import effective_params

    names = []
    try:
        names.append(effective_params(profile, "graphs").get("embedder"))
        names += [o.get("embedder") for o in (effective_params(profile, "ablations").get("ablations") or {}).values()]
    except C.ConfigError:  # a stage without a notebook: nothing to check
        pass
    return sorted({n for n in names if n})


def missing_models(profile: dict) -> list[str]:
    """``["org/id@revision", ...]`` for hub models that are neither local paths nor cached:
    the variants' models and the embedders of the step-level stages."""
    out = []
    for _, _, spec in C.variant_specs(profile):
        if "model" in spec and not available(spec):
            out.append(spec["model"] + (f"@{spec['revision']}" if spec.get("revision") else ""))
    from .steps import TFIDF, EmbedderUnavailableError, _resolve_st_path

    for name in embedders(profile):
        if name == TFIDF:
            continue
        try:
            _resolve_st_path(name)
        except EmbedderUnavailableError:
            out.append(name)
    return sorted(set(out))


def download_hint(entry: str) -> str:
    """``hf download`` command line for ``org/id@revision``.

    >>> download_hint("Qwen/Qwen2.5-Math-1.5B@abc")
    'hf download Qwen/Qwen2.5-Math-1.5B --revision abc'
    """
    model, _, rev = entry.partition("@")
    if is_local_path(model):
        return (f"{model} is a local path, not a hub id, and holds no model (config.json): put a "
                f"checkpoint there yourself (the profile's comments say what it should be)")
    return f"hf download {model}" + (f" --revision {rev}" if rev else "")


def resolve(profile: dict, root: Path, family: str, variant: str) -> tuple[str, str | None]:
    """``(path or hub id, revision)`` to pass to ``from_pretrained`` / vLLM."""
    spec = profile["families"][family]["variants"][variant]
    if "recipe" in spec:
        return str(trained_path(root, family, variant)), None
    model = spec["model"]
    p = Path(model).expanduser()
    return (str(p) if p.exists() else model), spec.get("revision")


def plan_lines(profile: dict) -> list[str]:
    """What a run would fetch and roughly generate (upper bound: every sample hits max tokens)."""
    missing = missing_models(profile)
    lines = []
    if missing:
        lines.append("would need to fetch (not available offline):")
        lines += [f"  {m}    ({download_hint(m)})" for m in missing]
    else:
        lines.append("models: all available locally (or trained by the pipeline)")
    from .notebooks import effective_params

    sp = effective_params(profile, "samples")
    n_problems = _n_problems(profile)
    specs = [spec for _, _, spec in C.variant_specs(profile) if "completions" not in spec]
    n_imported = sum("completions" in spec for _, _, spec in C.variant_specs(profile))
    if n_imported:
        lines.append(f"imported: {n_imported} variant(s) read from completions files (nothing generated for them)")
    if n_problems and specs:
        m, cap = int(sp.get("M", 0) or 0), int(sp.get("max_new_tokens", 0) or 0)
        total = len(specs) * n_problems * m
        # a variant's max_model_len (its context) caps its completions below max_new_tokens
        caps = [min(cap, int(s["max_model_len"])) if s.get("max_model_len") else cap for s in specs]
        lines.append(f"generation: {len(specs)} models x {n_problems} problems x M={m} = {total:,} completions, "
                     f"at most {sum(caps) * n_problems * m:,} new tokens (cap {cap} per completion"
                     + (", less where a variant's max_model_len is smaller" if min(caps, default=cap) < cap else "")
                     + ")")
    return lines


def _n_problems(profile: dict) -> int:
    from .notebooks import effective_params

    data = effective_params(profile, "data")
    if data.get("benchmarks"):
        limit = data.get("limit")
        sizes = {"aime24": 30, "aime25": 30, "amc23": 40, "humaneval": 164}
        return sum(min(sizes.get(b, 0), limit or 10**9) for b in data["benchmarks"])
    return sum(int(s.get("n", 0)) for s in (data.get("eval_sets") or {}).values())
