"""Progress bars for the long loops: widgets in JupyterLab, text bars when the runner executes a
notebook (it sets ``RLSFT_PROGRESS=text``, and :mod:`rlsft.console` shows those bars on the
console), plain text in a terminal.

>>> list(bar(range(3), desc="demo", disable=True))
[0, 1, 2]
"""
from __future__ import annotations

import os
import sys

from tqdm import auto as _auto
from tqdm import std as _std


def bar(iterable=None, **kwargs):
    """A tqdm bar of the right kind for where the code runs (see the module docstring)."""
    if os.environ.get("RLSFT_PROGRESS") == "text":
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("mininterval", 2.0)
        kwargs.setdefault("ascii", True)
        return _std.tqdm(iterable, **kwargs)
    return _auto.tqdm(iterable, **kwargs)
