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
        """The profile's ``device`` with ``auto`` resolved (see :func:`resolve_device`)."""
        return resolve_device(str(self.profile.get("device", "cpu")))

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def input(self, stage: str) -> Path:
        """The folder of an earlier stage whose outputs this one reads."""
        return self.root / stage


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda`` for a profile's ``device``: ``auto`` is ``cuda`` where torch sees a GPU.

    >>> resolve_device("cpu")
    'cpu'
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ValueError: device must be cpu, cuda or auto, got 'tpu'
    """
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
    if device == "cpu":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise RuntimeError("the profile asks for device: cuda, but torch sees no CUDA GPU here "
                           "(torch.cuda.is_available() is False); set `device: cpu` or `device: auto`")
    return "cpu"
