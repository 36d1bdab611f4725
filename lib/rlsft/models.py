"""Where each variant's weights come from: trained here (a recipe) or a hub id / local path.

A hub model must already be on disk (a local folder or the Hugging Face cache) before a run starts;
otherwise the runner stops before any work and names each missing model with the command that
fetches it (that check, and what ``--dry-run`` prints, live in :mod:`rlsft.plan`).
"""
from __future__ import annotations

from pathlib import Path


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
