"""The notebooks as pipeline stages.

Each notebook in ``notebooks/`` is one stage, run in its numbered order. A notebook says what it
is in its metadata (``metadata.rlsft``)::

    {"stage": "trajectories", "kind": "compute" | "figure",
     "inputs": ["samples"],              # stages whose outputs it reads
     "code": ["trajectories"],           # rlsft modules whose source enters its cache key
     "outputs": ["trajectories"]}        # folders/globs under results/<profile>/ it writes

Its ``parameters`` cell (tagged ``parameters``, as papermill wants) is a flat block of literals
whose defaults are the organism profile's values, so a notebook opened by hand runs the default.
The first code cell after it calls :func:`stage`, which loads the profile, applies the parameters
and returns a :class:`Stage` with the folders to read and write.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
from functools import lru_cache
from pathlib import Path

from .config import NOTEBOOK_DIR, REPO_ROOT, ConfigError, load_profile, stage_params

_NAME_RE = re.compile(r"^(\d+)_([\w-]+)\.ipynb$")


@dataclasses.dataclass(frozen=True)
class NotebookInfo:
    path: Path
    number: int
    stage: str
    kind: str
    inputs: tuple
    code: tuple
    outputs: tuple
    parameters: dict  # name -> default literal


def _parameters(nb: dict, path: Path) -> dict:
    cells = [c for c in nb["cells"] if "parameters" in (c.get("metadata", {}).get("tags") or [])]
    if len(cells) != 1:
        raise ConfigError(f"{path.name}: needs exactly one cell tagged 'parameters', found {len(cells)}")
    src = "".join(cells[0]["source"])
    params = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                params[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ConfigError(f"{path.name}: parameter {node.targets[0].id!r} must be a literal") from exc
    return params


@lru_cache(maxsize=None)
def _read_notebook(path: Path, mtime: float) -> NotebookInfo:
    nb = json.loads(path.read_text())
    m = _NAME_RE.match(path.name)
    meta = nb.get("metadata", {}).get("rlsft") or {}
    if not m or "stage" not in meta:
        raise ConfigError(f"{path.name}: a stage notebook is named NN_name.ipynb and has metadata.rlsft.stage")
    kind = meta.get("kind", "compute")
    if kind not in ("compute", "figure"):
        raise ConfigError(f"{path.name}: metadata.rlsft.kind must be 'compute' or 'figure', got {kind!r}")
    return NotebookInfo(path=path, number=int(m.group(1)), stage=meta["stage"], kind=kind,
                        inputs=tuple(meta.get("inputs", ())), code=tuple(meta.get("code", ())),
                        outputs=tuple(meta.get("outputs", (meta["stage"],))),
                        parameters=_parameters(nb, path))


def discover(folder: Path = NOTEBOOK_DIR) -> list[NotebookInfo]:
    """All stage notebooks in numbered order."""
    infos = [_read_notebook(p, p.stat().st_mtime) for p in sorted(folder.glob("*.ipynb"))
             if _NAME_RE.match(p.name)]
    infos.sort(key=lambda i: (i.number, i.path.name))
    seen = {}
    for i in infos:
        if i.stage in seen:
            raise ConfigError(f"stage {i.stage!r} is declared by both {seen[i.stage]} and {i.path.name}")
        seen[i.stage] = i.path.name
    return infos


def stage_names() -> list[str]:
    return [i.stage for i in discover()]


def info(stage: str) -> NotebookInfo:
    for i in discover():
        if i.stage == stage:
            return i
    raise ConfigError(f"unknown stage {stage!r}; stages are {stage_names()}")


def effective_params(profile: dict, stage: str) -> dict:
    """A stage's parameters for a profile: the notebook's defaults overridden by the profile."""
    return {**declared_parameters(stage), **stage_params(profile, stage)}


def declared_parameters(stage: str) -> dict:
    """The parameters (and defaults) a stage's notebook declares, besides profile/results_root."""
    return {k: v for k, v in info(stage).parameters.items() if k not in ("profile", "results_root")}


@dataclasses.dataclass
class Stage:
    """What a running notebook needs: its profile, parameters and folders."""

    name: str
    profile: dict
    params: dict
    root: Path  # results/<profile>

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def seed(self) -> int:
        return int(self.profile.get("seed", 0))

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def input(self, stage: str) -> Path:
        return self.root / stage


def stage(name: str, namespace: dict) -> Stage:
    """Called by a notebook right after its parameters cell.

    Reads ``profile``, ``results_root`` and the notebook's declared parameters from ``namespace``
    (the notebook's globals), so that values injected by papermill and values edited by hand are
    both honoured. Sets up logging so that library log lines appear in the notebook.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    prof = load_profile(namespace.get("profile", "organism"))
    declared = declared_parameters(name)
    params = {k: namespace[k] for k in declared if k in namespace}
    missing = sorted(set(declared) - set(params))
    if missing:
        raise ConfigError(f"stage {name!r}: parameters {missing} are not defined in the notebook")
    root = Path(namespace.get("results_root", "results"))
    if not root.is_absolute():
        root = REPO_ROOT / root
    prof = dict(prof)
    prof.setdefault("stages", {})[name] = {**stage_params(prof, name), **params}
    st = Stage(name=name, profile=prof, params=params, root=root / prof["name"])
    st.dir.mkdir(parents=True, exist_ok=True)
    return st
