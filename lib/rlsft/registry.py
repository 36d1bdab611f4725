"""The pipeline's stages, in order: names, notebooks, typed parameters, inputs and outputs.

This is the one place that knows which stages exist. Each stage is a module of
:mod:`rlsft.stages` paired with its notebook ``notebooks/NN_<name>.ipynb``; the registry checks a
profile's ``stages:`` block against the stages' ``Params`` (names, types, ranges) and builds the
:class:`~rlsft.context.Context` a notebook runs with.

>>> [s.stage for s in STAGES][:3]
['data', 'train', 'samples']
>>> get("40").stage, get("fig_decay").kind
('graphs', 'figure')
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import ModuleType

from rlsft import config as C
from rlsft import deps
from rlsft import notebooks as NB
from rlsft.context import Context
from rlsft.errors import ConfigError
from rlsft.params import as_dict, build
from rlsft.stages import (ablations, data, fig_ablations, fig_decay, fig_passk, fig_sweep, fig_topology,
                          fig_trajectories, graphs, samples, sweep, topology, train, trajectories)

MODULES = (data, train, samples, fig_passk, trajectories, fig_trajectories, graphs, fig_decay,
           topology, fig_topology, ablations, fig_ablations, sweep, fig_sweep)
"""The stage modules in run order (their notebooks' numbers agree; a test checks it)."""


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: its module, notebook and what it reads and writes."""

    stage: str
    module: ModuleType
    path: Path       # the notebook
    number: int      # the notebook's number
    kind: str        # "compute" | "figure"
    inputs: tuple
    outputs: tuple

    @property
    def params(self) -> type:
        """The stage's ``Params`` dataclass."""
        return self.module.Params

    @property
    def code(self) -> tuple[str, ...]:
        """The ``rlsft`` modules the stage module and its notebook import, transitively (these
        enter the cache key)."""
        return deps.closure([self.module.__name__], NB.code_source(NB.read(self.path)))


def _spec(mod: ModuleType) -> StageSpec:
    name = mod.__name__.rpartition(".")[2]
    path = C.NOTEBOOK_DIR / mod.NOTEBOOK
    m = NB.NAME_RE.match(mod.NOTEBOOK)
    if not m:
        raise ConfigError(f"stage {name!r}: notebook name {mod.NOTEBOOK!r} is not NN_name.ipynb")
    return StageSpec(stage=name, module=mod, path=path, number=int(m.group(1)), kind=mod.KIND,
                     inputs=tuple(mod.INPUTS), outputs=tuple(mod.OUTPUTS))


STAGES: tuple[StageSpec, ...] = tuple(_spec(m) for m in MODULES)


def stage_names() -> list[str]:
    return [s.stage for s in STAGES]


def get(name: str) -> StageSpec:
    """A stage by name, notebook stem (``40_step_graphs``) or number (``40``)."""
    for s in STAGES:
        if str(name) in (s.stage, s.path.stem, s.path.name, f"{s.number:02d}", str(s.number)):
            return s
    raise ConfigError(f"unknown stage {name!r}; stages are {stage_names()}")


def check_stages(profile: dict) -> dict:
    """``{stage: Params}`` for every stage, the profile's ``stages:`` values checked by name, type
    and range (a ConfigError names the full path, e.g. ``profile 'ci', stages.graphs.k``)."""
    where = f"profile {profile.get('name', '?')!r}"
    block = profile.get("stages") or {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: 'stages' must be a mapping of stage: {{parameter: value}}, "
                          f"got {block!r}")
    known = stage_names()
    for stage in block:
        if stage not in known:
            raise ConfigError(f"{where}: unknown stage {stage!r} under 'stages'; stages are {known}")
    return {s.stage: build(s.params, block.get(s.stage) or {}, f"{where}, stages.{s.stage}") for s in STAGES}


def load_profile(name: str) -> dict:
    """A profile (see :func:`rlsft.config.load_profile`) with its stage parameters checked too."""
    prof = C.load_profile(name)
    check_stages(prof)
    return prof


def effective_params(profile: dict, stage: str):
    """A stage's ``Params`` for a profile: the defaults overridden by the profile's values."""
    s = get(stage)
    return build(s.params, C.stage_params(profile, s.stage), f"profile {profile.get('name', '?')!r}, "
                                                             f"stages.{s.stage}")


def declared_parameters(stage: str) -> dict:
    """``{name: default}`` of a stage's parameters."""
    return as_dict(get(stage).params())


def open_stage(name: str, namespace: dict) -> Context:
    """Called by a notebook right after its parameters cell.

    Reads ``profile``, ``results_root`` and the stage's parameters from ``namespace`` (the
    notebook's globals), so that values injected by papermill and values edited by hand are both
    honoured, checks them, and sets up logging so that library log lines appear in the notebook.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    spec = get(name)
    prof = load_profile(namespace.get("profile", "organism"))
    declared = [f.name for f in dataclasses.fields(spec.params)]
    values = {k: namespace[k] for k in declared if k in namespace}
    missing = sorted(set(declared) - set(values))
    if missing:
        raise ConfigError(f"{spec.path.name}: parameters {missing} are not defined in the notebook's "
                          f"parameters cell; restore them (defaults: rlsft.stages.{spec.stage}.Params)")
    params = build(spec.params, values, f"{spec.path.name}, parameters")
    root = Path(namespace.get("results_root", "results"))
    if not root.is_absolute():
        root = C.REPO_ROOT / root
    prof = dict(prof)
    prof["stages"] = {**(prof.get("stages") or {}), spec.stage: as_dict(params)}
    ctx = Context(name=spec.stage, profile=prof, params=params, root=root / prof["name"])
    ctx.dir.mkdir(parents=True, exist_ok=True)
    return ctx
