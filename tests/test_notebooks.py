"""The stage notebooks as committed: clean (no outputs), one ``parameters`` cell whose defaults are
the organism profile, stage metadata, and the ``notebooks.stage(...)`` call right after the
parameters. Fast: the notebooks are read as JSON, nothing is executed."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from rlsft import config as C
from rlsft import notebooks as N

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def parameters_index(nb: dict) -> int:
    idx = [i for i, c in enumerate(nb["cells"]) if "parameters" in (c.get("metadata", {}).get("tags") or [])]
    assert len(idx) == 1, f"expected exactly one cell tagged 'parameters', found {len(idx)}"
    return idx[0]


def test_there_are_stage_notebooks():
    assert len(NOTEBOOKS) >= 12
    assert [i.path for i in N.discover()] == NOTEBOOKS, "every .ipynb in notebooks/ is a numbered stage"


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_metadata_and_parameters_cell(path):
    nb = read(path)
    assert re.match(r"^\d{2}_[\w-]+\.ipynb$", path.name)
    meta = nb["metadata"].get("rlsft")
    assert isinstance(meta, dict), "metadata.rlsft is missing"
    assert isinstance(meta.get("stage"), str) and meta["stage"]
    assert meta.get("kind") in ("compute", "figure")
    for key in ("inputs", "code", "outputs"):
        assert isinstance(meta.get(key, []), list), f"metadata.rlsft.{key} must be a list"
    cell = nb["cells"][parameters_index(nb)]
    assert cell["cell_type"] == "code"
    body = ast.parse("".join(cell["source"])).body
    names = []
    for node in body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and isinstance(node.targets[0], ast.Name), "the parameters cell holds only `name = literal` lines"
        ast.literal_eval(node.value)  # raises if not a literal
        names.append(node.targets[0].id)
    assert len(names) == len(set(names)), "a parameter is assigned twice"
    assert names[:2] == ["profile", "results_root"]
    params = N.info(meta["stage"]).parameters
    assert params["profile"] == "organism" and params["results_root"] == "results"


def test_stage_names_unique_and_inputs_come_earlier():
    infos = N.discover()
    stages = [i.stage for i in infos]
    assert len(stages) == len(set(stages))
    assert [i.number for i in infos] == sorted(i.number for i in infos)
    code_modules = {p.stem for p in (REPO / "lib" / "rlsft").glob("*.py")}
    for pos, info in enumerate(infos):
        for dep in info.inputs:
            assert dep in stages[:pos], f"{info.path.name}: input {dep!r} is not an earlier stage"
        for mod in info.code:
            assert mod in code_modules, f"{info.path.name}: code module {mod!r} does not exist"
        assert info.outputs, f"{info.path.name}: no outputs"
        if info.kind == "figure":
            assert all(o.startswith("figures/") for o in info.outputs), \
                f"{info.path.name}: a figure stage writes only under figures/ (--figures-only relies on it)"
            assert info.inputs, f"{info.path.name}: a figure stage draws from saved tables of an input stage"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_after_parameters_calls_stage(path):
    nb = read(path)
    stage = nb["metadata"]["rlsft"]["stage"]
    p = parameters_index(nb)
    code = [c for c in nb["cells"][p + 1:] if c["cell_type"] == "code"]
    assert code, "no code after the parameters cell"
    calls = [n for n in ast.walk(ast.parse("".join(code[0]["source"]))) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "stage"
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "notebooks"]
    assert len(calls) == 1, "the first code cell after the parameters calls notebooks.stage(...) once"
    args = calls[0].args
    assert len(args) == 2 and isinstance(args[0], ast.Constant) and args[0].value == stage, \
        f"notebooks.stage must be called with the notebook's own stage name {stage!r}"
    assert isinstance(args[1], ast.Call) and getattr(args[1].func, "id", None) == "globals"


@pytest.mark.parametrize("name", C.available_profiles())
def test_every_profile_loads_and_its_stage_params_are_declared(name):
    p = C.load_profile(name)  # validates: unknown stages / undeclared parameters raise
    for stage, params in (p.get("stages") or {}).items():
        assert set(params or {}) <= set(N.declared_parameters(stage))


def test_notebook_defaults_are_the_organism_profile():
    """A notebook opened by hand runs the organism profile: organism.yaml sets no stage parameter
    to anything but the notebook's default."""
    organism = C.load_profile("organism")
    for info in N.discover():
        declared = N.declared_parameters(info.stage)
        for key, value in C.stage_params(organism, info.stage).items():
            assert value == declared[key], (f"organism.yaml sets stages.{info.stage}.{key} = {value!r}, "
                                            f"but {info.path.name} defaults to {declared[key]!r}")
        assert N.effective_params(organism, info.stage) == declared


def test_effective_params_override_defaults():
    ci = C.load_profile("ci")
    eff = N.effective_params(ci, "samples")
    assert eff["M"] == ci["stages"]["samples"]["M"]
    assert set(eff) == set(N.declared_parameters("samples"))
    assert "profile" not in eff and "results_root" not in eff
