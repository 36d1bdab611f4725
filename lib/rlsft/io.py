"""Atomic writes: every file the pipeline produces is written to a temporary file in the same
folder and renamed into place, so a run killed at any moment leaves either the old file or the
new one, never half a file.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "x.json"
>>> _ = write_json(p, {"k": 1}); read_json(p)
{'k': 1}
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _umask() -> int:
    """The process umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file keeps ``suffix`` (e.g. ``.parquet``) so libraries that look at the
    extension behave. On error the temporary file is removed and ``path`` is untouched. The file
    gets the mode an ordinary ``open`` would give (0666 less the umask, e.g. 0644), not the 0600
    of ``mkstemp``.

    >>> import tempfile, stat
    >>> p = Path(tempfile.mkdtemp()) / "m.txt"
    >>> _ = write_text(p, "x"); oct(stat.S_IMODE(p.stat().st_mode)) == oct(0o666 & ~_umask())
    True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def finished_files(folder: str | os.PathLike, pattern: str = "*", recursive: bool = False) -> list[Path]:
    """Sorted files under ``folder`` matching ``pattern``, without hidden ones.

    A run killed while writing leaves the temporary file of :func:`atomic_path` behind
    (``.name.XXXX.tmp.parquet``); its name starts with a dot and ends like the real file, so a
    plain ``glob("*.parquet")`` would take it for a finished file. Hidden folders (``.shards``,
    ``.cache``) are skipped too.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = write_text(d / "a.csv", "x"); _ = (d / ".a.csv.k2.tmp.csv").write_text("")
    >>> [p.name for p in finished_files(d, "*.csv")]
    ['a.csv']
    """
    folder = Path(folder)
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    return sorted(p for p in found if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON (keys sorted, so equal objects give equal files)."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | os.PathLike, df) -> Path:
    """Atomically write a pandas DataFrame as CSV without the index."""
    with atomic_path(path, ".csv") as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def write_parquet(path: str | os.PathLike, df) -> Path:
    """Atomically write a pandas DataFrame as parquet without the index."""
    with atomic_path(path, ".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def save_npy(path: str | os.PathLike, array) -> Path:
    """Atomically save a numpy array (``.npy``)."""
    with atomic_path(path, ".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(*parts: str) -> str:
    """Hex sha256 of the given strings joined by NUL (a stable cache key).

    >>> sha256_text("a", "b") == sha256_text("a", "b") != sha256_text("ab")
    True
    """
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
