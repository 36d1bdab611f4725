"""The stages as committed: one module per stage under lib/rlsft/stages/ paired with its notebook.
Notebooks are clean (no outputs), hold one ``parameters`` cell whose literals equal the stage's
``Params()`` defaults (the organism profile), and open the stage with ``registry.open_stage`` right
after it. Fast: the notebooks are read as JSON, nothing is executed."""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from rlsft import config as C
from rlsft import registry as R
from rlsft.params import as_dict

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]
STAGE_IDS = [s.stage for s in R.STAGES]


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def parameters_index(nb: dict) -> int:
    idx = [i for i, c in enumerate(nb["cells"]) if "parameters" in (c.get("metadata", {}).get("tags") or [])]
    assert len(idx) == 1, f"expected exactly one cell tagged 'parameters', found {len(idx)}"
    return idx[0]


def test_every_notebook_is_a_registered_stage_and_back():
    assert len(NOTEBOOKS) >= 12
    assert sorted(s.path for s in R.STAGES) == NOTEBOOKS, "every .ipynb in notebooks/ is a stage's notebook"
    modules = {p.stem for p in (REPO / "lib" / "rlsft" / "stages").glob("*.py")} - {"__init__"}
    assert modules == set(STAGE_IDS), "every module of rlsft.stages is a registered stage"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_is_clean(path):
    nb = read(path)
    assert "papermill" not in nb.get("metadata", {}), "an executed (papermill) copy was committed"
    for i, cell in enumerate(nb["cells"]):
        tags = cell.get("metadata", {}).get("tags") or []
        assert "injected-parameters" not in tags, f"cell {i}: papermill's injected parameters committed"
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {i} has outputs"
            assert cell.get("execution_count") is None, f"cell {i} has an execution count"


@pytest.mark.parametrize("stage", STAGE_IDS)
def test_parameters_cell_equals_params_defaults(stage):
    """nanoGPT's configurator pattern: a flat block of commented literals, equal to ``Params()``."""
    spec = R.get(stage)
    nb = read(spec.path)
    assert nb["metadata"].get("rlsft") == {"stage": stage}, "metadata.rlsft names the stage, nothing else"
    cell = nb["cells"][parameters_index(nb)]
    assert cell["cell_type"] == "code"
    names, values = [], {}
    for line in "".join(cell["source"]).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        node = ast.parse(line).body[0]
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"the parameters cell holds only `name = literal  # comment` lines: {line!r}"
        assert "#" in line, f"every parameter is commented: {line!r}"
        assert line.count("=") == 1, (f"papermill skips a parameters line with a second '=' (it then warns "
                                      f"'Passed unknown parameter' when the profile sets it): {line!r}")
        names.append(node.targets[0].id)
        values[names[-1]] = ast.literal_eval(node.value)
    assert len(names) == len(set(names)), "a parameter is assigned twice"
    assert names[:2] == ["profile", "results_root"]
    assert values.pop("profile") == "organism" and values.pop("results_root") == "results"
    defaults = as_dict(spec.params())
    assert list(values) == list(defaults), "the cell lists Params' fields in their order"
    assert values == defaults, f"{spec.path.name}'s parameters cell differs from {stage}.Params() defaults"


@pytest.mark.parametrize("stage", STAGE_IDS)
def test_params_are_frozen_documented_dataclasses(stage):
    cls = R.get(stage).params
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    for f in dataclasses.fields(cls):
        assert f.metadata.get("doc"), f"{stage}.Params.{f.name} has no documentation"
    mod = R.get(stage).module
    assert callable(mod.run) and mod.KIND in ("compute", "figure") and mod.OUTPUTS


def test_stage_order_inputs_come_earlier_and_figures_write_under_figures():
    stages = STAGE_IDS
    assert [s.number for s in R.STAGES] == sorted(s.number for s in R.STAGES), "registry order = notebook order"
    for pos, spec in enumerate(R.STAGES):
        assert re.match(r"^\d{2}_[\w-]+\.ipynb$", spec.path.name)
        for dep in spec.inputs:
            assert dep in stages[:pos], f"{spec.stage}: input {dep!r} is not an earlier stage"
        if spec.kind == "figure":
            assert all(o.startswith("figures/") for o in spec.outputs), \
                f"{spec.stage}: a figure stage writes only under figures/ (--figures-only relies on it)"
            assert spec.inputs, f"{spec.stage}: a figure stage draws from saved tables of an input stage"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_after_parameters_opens_the_stage(path):
    nb = read(path)
    stage = nb["metadata"]["rlsft"]["stage"]
    p = parameters_index(nb)
    code = [c for c in nb["cells"][p + 1:] if c["cell_type"] == "code"]
    assert code, "no code after the parameters cell"
    calls = [n for n in ast.walk(ast.parse("".join(code[0]["source"]))) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "open_stage"
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "registry"]
    assert len(calls) == 1, "the first code cell after the parameters calls registry.open_stage(...) once"
    args = calls[0].args
    assert len(args) == 2 and isinstance(args[0], ast.Constant) and args[0].value == stage, \
        f"registry.open_stage must be called with the notebook's own stage name {stage!r}"
    assert isinstance(args[1], ast.Call) and getattr(args[1].func, "id", None) == "globals"
    src = "".join("".join(c["source"]) for c in code)
    assert f"from rlsft.stages import {stage} as stage" in src and "stage.run(ctx, ctx.params)" in src, \
        "the notebook runs its stage module's run(ctx, ctx.params)"


@pytest.mark.parametrize("name", C.available_profiles())
def test_every_profile_loads_with_typed_stage_params(name):
    p = R.load_profile(name)  # validates: unknown stages, undeclared, mistyped or out-of-range parameters raise
    for stage in p.get("stages") or {}:
        R.effective_params(p, stage)


def test_notebook_defaults_are_the_organism_profile():
    """A notebook opened by hand runs the organism profile: organism.yaml sets no stage parameter
    to anything but the stage's default."""
    organism = R.load_profile("organism")
    for spec in R.STAGES:
        assert R.effective_params(organism, spec.stage) == spec.params(), \
            f"organism.yaml changes stages.{spec.stage}; change {spec.stage}.Params and the notebook instead"


def test_effective_params_override_defaults():
    ci = R.load_profile("ci")
    eff = R.effective_params(ci, "samples")
    assert eff.M == ci["stages"]["samples"]["M"]
    assert set(as_dict(eff)) == set(R.declared_parameters("samples"))
    assert "profile" not in as_dict(eff) and "results_root" not in as_dict(eff)


def test_open_stage_checks_the_notebook_globals(tmp_path):
    ns = {"profile": "ci", "results_root": str(tmp_path), **R.declared_parameters("trajectories")}
    ctx = R.open_stage("trajectories", ns)
    assert ctx.params == R.get("trajectories").params() and ctx.dir == tmp_path / "ci" / "trajectories"
    with pytest.raises(C.ConfigError, match=r"30_trajectories.ipynb, parameters.threshold: expected a number"):
        R.open_stage("trajectories", ns | {"threshold": "high"})
    missing = {k: v for k, v in ns.items() if k != "n_boot"}
    with pytest.raises(C.ConfigError, match=r"\['n_boot'\] are not defined in the notebook"):
        R.open_stage("trajectories", missing)
