"""Which ``rlsft`` modules a piece of code uses: the import graph, read from the source.

A stage's cache key hashes the source of every ``rlsft`` module its stage module and its notebook
import, directly or through other ``rlsft`` modules (see :func:`closure`), so that editing any
module a stage uses reruns that stage, and editing one it does not use does not.

>>> sorted(imported_modules("from rlsft import io, VARIANTS\\nimport numpy", "rlsft.stages.x"))
['rlsft', 'rlsft.io']
>>> sorted(imported_modules("from . import graphs", "rlsft.stages.x"))
['rlsft', 'rlsft.stages', 'rlsft.stages.graphs']
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "rlsft"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(name: str) -> Path | None:
    """The source file of a dotted ``rlsft`` module name, or None when there is none.

    >>> module_file("rlsft.io").name, module_file("rlsft.stages").name, module_file("rlsft.nope")
    ('io.py', '__init__.py', None)
    """
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if cand is not None and cand.is_file():
            return cand
    return None


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _is_package(name: str) -> bool:
    f = module_file(name)
    return f is not None and f.name == "__init__.py"


def imported_modules(source: str, module: str) -> set[str]:
    """The ``rlsft`` modules (and their parent packages) that ``source`` imports anywhere,
    ``module`` being the dotted name of the code (for relative imports)."""
    here = module if _is_package(module) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] == PACKAGE and module_file(n) is not None:
                found |= _with_parents(n)
    return found


@lru_cache(maxsize=None)
def _module_imports(name: str, path: str, mtime_ns: int, size: int) -> frozenset[str]:
    return frozenset(imported_modules(Path(path).read_text(), name))


REGISTRY = "rlsft.registry"
"""Imports every stage module; a notebook imports it only for ``open_stage``, so the closure takes
the registry's own code but not the other stages behind it."""


def closure(roots: set[str] | list[str], source: str | None = None, source_module: str = "rlsft.__main__"
            ) -> tuple[str, ...]:
    """Every ``rlsft`` module reachable from ``roots`` (and from ``source``, e.g. a notebook's code),
    sorted. Through :data:`REGISTRY` it follows everything but the stage modules.

    >>> "rlsft.io" in closure(["rlsft.store"])
    True
    >>> "rlsft.stages.topology" in closure(["rlsft.registry"])
    False
    """
    todo = set(roots)
    if source is not None:
        todo |= imported_modules(source, source_module)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        f = module_file(name)
        if f is not None:
            st = f.stat()
            found = set(_module_imports(name, str(f), st.st_mtime_ns, st.st_size))
            if name == REGISTRY:
                found = {m for m in found if not m.startswith("rlsft.stages.")}
            todo |= found - seen
    return tuple(sorted(seen))
