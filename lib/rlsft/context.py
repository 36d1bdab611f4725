"""What a running stage needs: its profile, typed parameters and folders.

A :class:`Context` is made by :func:`rlsft.registry.open_stage` (in a notebook) and handed to the
stage module's ``run(ctx, params)``.

>>> ctx = Context(name="graphs", profile={"seed": 3, "device": "cpu"}, params=None, root=Path("/r/ci"))
>>> ctx.dir, ctx.input("samples"), ctx.seed
(PosixPath('/r/ci/graphs'), PosixPath('/r/ci/samples'), 3)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Context:
    """A stage's profile, parameters (its ``Params`` instance) and results folder."""

    name: str
    profile: dict
    params: Any
    root: Path  # results/<profile>

    @property
    def dir(self) -> Path:
        """The stage's own folder, ``results/<profile>/<stage>``."""
        return self.root / self.name

    @property
    def seed(self) -> int:
        return int(self.profile.get("seed", 0))

    @property
    def device(self) -> str:
        return str(self.profile.get("device", "cpu"))

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def input(self, stage: str) -> Path:
        """The folder of an earlier stage whose outputs this one reads."""
        return self.root / stage
