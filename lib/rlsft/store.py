"""The results store: ``results/<profile>/`` with one folder per stage and ``manifest.json``.

The manifest records, per stage, its cache key and what produced it (notebook, parameters, seed,
git commit, package versions, wall time), and per artifact its path, sha256 and producing stage.
A stage is skipped when its cache key (notebook source, parameters, code of the rlsft modules it
uses, and the digests of the stages it reads) is unchanged and all its recorded artifacts are
still on disk with the recorded sha256. Every write is atomic (see ``rlsft.io``).
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import subprocess
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from rlsft import deps
from rlsft.config import REPO_ROOT
from rlsft.io import read_json, sha256_file, sha256_text, write_json

TRACKED_PACKAGES = ("torch", "transformers", "trl", "tokenizers", "accelerate", "datasets", "vllm",
                    "sentence-transformers", "scikit-learn", "numpy", "scipy", "pandas", "networkx",
                    "rustworkx", "sacrebleu", "fastchrf", "math-verify", "papermill", "matplotlib")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lib", "notebooks", "profiles"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def notebook_source_hash(path: Path) -> str:
    """Hash of a notebook's cell sources and metadata.rlsft (outputs and ids do not count)."""
    nb = json.loads(Path(path).read_text())
    parts = [json.dumps(nb.get("metadata", {}).get("rlsft", {}), sort_keys=True)]
    parts += [c["cell_type"] + "".join(c["source"]) for c in nb["cells"]]
    return sha256_text(*parts)


def code_hash(modules) -> str:
    """Hash of the source of the named ``rlsft`` modules (dotted names such as ``rlsft.graphs``, as
    :func:`rlsft.deps.closure` gives them; every module of the package when ``modules`` is empty).

    >>> code_hash(["rlsft.io"]) == code_hash(["rlsft.io", "rlsft.io"]) != code_hash(["rlsft.store"])
    True
    """
    if not modules:
        pkg = deps.PACKAGE_DIR
        files = sorted((".".join(("rlsft",) + p.relative_to(pkg).with_suffix("").parts), p)
                       for p in pkg.rglob("*.py"))
    else:
        files = [(m, deps.module_file(m)) for m in sorted(set(modules))]
        unknown = [m for m, f in files if f is None]
        if unknown:
            raise ValueError(f"code_hash: no rlsft module {unknown} (give dotted names such as 'rlsft.io')")
    return sha256_text(*[name + f.read_text() for name, f in files])


class StoreLocked(RuntimeError):
    """Another runner holds the results folder's lock."""


class Store:
    """The manifest of one profile's results folder.

    >>> import tempfile; s = Store(Path(tempfile.mkdtemp()))
    >>> s.fresh("task", "k1")
    (False, 'never run')
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / "manifest.json"

    def load(self) -> dict:
        if self.path.exists():
            return read_json(self.path)
        return {"stages": {}, "artifacts": {}}

    def outputs(self, patterns) -> dict:
        """``{relative path: sha256}`` of the files matching the stage's output folders/globs.

        Hidden files and folders (``.shards``, ``.cache``, temporary files) are internal caches and
        never artifacts."""
        files = set()
        for pat in patterns:
            target = self.root / pat
            if target.is_dir():
                files.update(p for p in target.rglob("*") if p.is_file())
            else:
                files.update(p for p in self.root.glob(pat) if p.is_file())
        return {str(p.relative_to(self.root)): sha256_file(p) for p in sorted(files)
                if not any(part.startswith(".") for part in p.relative_to(self.root).parts)}

    def digest(self, stage: str) -> str | None:
        rec = self.load()["stages"].get(stage)
        return rec["digest"] if rec else None

    def fresh(self, stage: str, key: str, parts: dict | None = None) -> tuple[bool, str]:
        """Whether ``stage`` can be skipped, and why (or why not)."""
        rec = self.load()["stages"].get(stage)
        if rec is None:
            return False, "never run"
        if rec.get("key") != key:
            old = rec.get("key_parts", {})
            changed = sorted(k for k in set(old) | set(parts or {}) if old.get(k) != (parts or {}).get(k))
            return False, f"changed: {', '.join(changed) or 'cache key'}"
        for rel, sha in rec.get("outputs", {}).items():
            p = self.root / rel
            if not p.exists():
                return False, f"output missing: {rel}"
            if sha256_file(p) != sha:
                return False, f"output changed on disk: {rel}"
        return True, "up to date"

    def record(self, stage: str, key: str, key_parts: dict, outputs: dict, meta: dict) -> dict:
        """Record a finished stage and its artifacts (atomically rewrites the manifest)."""
        man = self.load()
        digest = sha256_text(*[f"{k}={v}" for k, v in sorted(outputs.items())])  # content only
        rec = {"key": key, "key_parts": key_parts, "outputs": outputs, "digest": digest,
               "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **meta}
        man["stages"][stage] = rec
        man["artifacts"] = {p: a for p, a in man.get("artifacts", {}).items() if a.get("stage") != stage}
        for rel, sha in outputs.items():
            man["artifacts"][rel] = {"path": rel, "sha256": sha, "stage": stage,
                                     "notebook": meta.get("notebook"), "parameters": meta.get("parameters"),
                                     "seed": meta.get("seed"), "git_commit": meta.get("git_commit"),
                                     "wall_time_s": meta.get("wall_time_s")}
        man["package_versions"] = meta.get("package_versions", package_versions())
        if getattr(self, "_profile_path", None):
            man["profile_path"] = self._profile_path
        write_json(self.path, man)
        return rec

    def set_profile_path(self, path: str) -> None:
        """Record which profile file owns this results folder (see ``runner.check_results_owner``):
        written into the manifest with the first stage recorded, so a run that stops before any
        stage (an input not computed yet, say) leaves no manifest behind."""
        self._profile_path = str(path)
        man = self.load()
        if self.path.exists() and man.get("profile_path") != self._profile_path:
            man["profile_path"] = self._profile_path
            write_json(self.path, man)

    @contextmanager
    def lock(self):
        """One runner per results folder at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreLocked(f"another run is using {self.root}; wait for it to finish") from None
            fh.write(str(os.getpid()))
            fh.flush()
            yield
