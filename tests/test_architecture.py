"""The package's shape, as a new maintainer reads it: no import circle, package imports at module
top (function-local imports only for heavy third-party packages), layers that only import downwards,
and stage cache keys computed from the real imports (editing a module a stage uses reruns it)."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from rlsft import deps
from rlsft import registry as R
from rlsft import runner
from rlsft.store import Store

PKG = Path(deps.__file__).resolve().parent
MODULES = {".".join(("rlsft",) + p.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__"): p
           for p in sorted(PKG.rglob("*.py"))}

# low to high; a module may import only modules of its own or a lower layer
LAYERS = [
    {"rlsft", "rlsft.errors", "rlsft.io", "rlsft.params", "rlsft.context", "rlsft.deps", "rlsft.notebooks",
     "rlsft.stages"},
    "methods",  # everything not named elsewhere
    {"rlsft.config"},
    {"rlsft.completions", "rlsft.models", "rlsft.store", "rlsft.tasks"},
    "stage modules",
    {"rlsft.registry"},
    {"rlsft.plan", "rlsft.report"},
    {"rlsft.runner"},
]


def layer(mod: str) -> int:
    for i, members in enumerate(LAYERS):
        if isinstance(members, set) and mod in members:
            return i
    if mod.startswith("rlsft.stages."):
        return LAYERS.index("stage modules")
    return LAYERS.index("methods")


def top_level_imports(mod: str, path: Path) -> set[str]:
    """rlsft modules imported by statements at module level (not inside a function or class)."""
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    body += [n for t in tree.body if isinstance(t, (ast.If, ast.Try)) for n in ast.walk(t)
             if isinstance(n, (ast.Import, ast.ImportFrom))]
    src = "\n".join(ast.unparse(n) for n in body)
    found = deps.imported_modules(src, mod) if src else set()
    return {m for m in found if m != mod and not (mod.startswith(m + ".") and deps.module_file(m).name == "__init__.py"
                                                  and m != "rlsft")} | ({"rlsft"} & found)


GRAPH = {m: top_level_imports(m, p) - {m} for m, p in MODULES.items()}


def test_the_import_graph_has_no_circle():
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(GRAPH.get(m, ())):
            if state.get(d) == 1:
                pytest.fail("import circle: " + " -> ".join(path + [m, d]))
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_only_run_down_the_layers(mod):
    for d in sorted(GRAPH[mod]):
        if d == "rlsft" or mod.startswith(d + "."):
            continue
        assert layer(d) <= layer(mod), (f"{mod} (layer {layer(mod)}) imports {d} (layer {layer(d)}), "
                                        f"a higher layer; move the shared code down")


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_package_imports_are_at_module_top_and_absolute(mod):
    tree = ast.parse(MODULES[mod].read_text())
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for n in ast.walk(fn):
            if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").split(".")[0] == "rlsft"):
                pytest.fail(f"{mod}:{n.lineno}: function-local import of a package module "
                            f"({ast.unparse(n)}); import it at the top")
            if isinstance(n, ast.Import) and any(a.name.split(".")[0] == "rlsft" for a in n.names):
                pytest.fail(f"{mod}:{n.lineno}: function-local import {ast.unparse(n)}; import it at the top")
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.level >= 2:
            pytest.fail(f"{mod}:{n.lineno}: relative import up a level ({ast.unparse(n)}); use `from rlsft...`")


def test_stage_modules_never_import_the_registry_or_runner():
    for spec in R.STAGES:
        closure = deps.closure([spec.module.__name__])
        assert not {"rlsft.registry", "rlsft.runner", "rlsft.plan", "rlsft.report"} & set(closure), spec.stage


def test_cache_key_code_part_follows_the_real_imports():
    graphs = R.get("graphs").code
    assert "rlsft.stages.graphs" in graphs and "rlsft.graphs" in graphs
    assert "rlsft.trajectories" not in graphs and "rlsft.runner" not in graphs
    assert "rlsft.trajectories" in R.get("trajectories").code


@pytest.fixture()
def package_copy(tmp_path, monkeypatch):
    """A copy of lib/rlsft that the cache-key code reads instead of the real one."""
    copy = tmp_path / "rlsft"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(deps, "PACKAGE_DIR", copy)
    return copy


def test_editing_a_module_a_stage_uses_reruns_it_and_only_its_users(tmp_path, package_copy):
    profile = R.load_profile("ci")
    store = Store(tmp_path / "results" / "ci")
    for dep in ("samples", "graphs"):
        (store.root / dep).mkdir(parents=True)
        (store.root / dep / "t.csv").write_text(dep)
        store.record(dep, "k", {}, store.outputs([dep]), {})
    keys = {}
    for st in ("trajectories", "topology"):
        spec = R.get(st)
        key, parts = runner.stage_key(spec, {}, profile, store)
        store.record(st, key, parts, {}, {})
        keys[st] = key
    with open(package_copy / "trajectories.py", "a") as fh:
        fh.write("\n# an edit\n")
    for st, rerun in (("trajectories", True), ("topology", False)):
        key, parts = runner.stage_key(R.get(st), {}, profile, store)
        fresh, why = store.fresh(st, key, parts)
        assert fresh is not rerun, (st, why)
        if rerun:
            assert why == "changed: code"
