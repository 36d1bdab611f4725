"""Reading the stage notebooks as files: their ``parameters`` cell and their code.

Nothing here runs a notebook. The stage registry (:mod:`rlsft.registry`) pairs each notebook with
its stage module; the runner executes it with papermill.

>>> nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]},
...                  "source": ["profile = 'organism'  # the profile\\n", "k = 40  # clusters\\n"]}]}
>>> parameters_cell(nb, "40_step_graphs.ipynb")
{'profile': 'organism', 'k': 40}
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from rlsft.errors import ConfigError

NAME_RE = re.compile(r"^(\d+)_([\w-]+)\.ipynb$")
RUN_KEYS = ("profile", "results_root")
"""Parameters every notebook has besides its stage's ``Params``: which profile, where results go."""


def read(path: Path) -> dict:
    """A notebook file as JSON, or a ConfigError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the notebook ({exc}); restore it with git checkout") from None


def parameters_cell(nb: dict, name: str) -> dict:
    """``{name: literal}`` of the one cell tagged ``parameters``."""
    cells = [c for c in nb["cells"] if "parameters" in (c.get("metadata", {}).get("tags") or [])]
    if len(cells) != 1:
        raise ConfigError(f"{name}: needs exactly one cell tagged 'parameters', found {len(cells)}")
    params = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                params[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ConfigError(f"{name}: parameter {node.targets[0].id!r} must be a literal") from exc
    return params


def code_source(nb: dict) -> str:
    """The notebook's code cells joined (for import scanning).

    >>> code_source({"cells": [{"cell_type": "markdown", "source": "x"}, {"cell_type": "code", "source": ["a = 1"]}]})
    'a = 1'
    """
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
