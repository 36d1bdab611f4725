"""The results store (rlsft.store) and atomic writes (rlsft.io): manifest contents, the skip logic
of ``fresh``, the one-runner lock, and writes that leave the old file or the new one, never half."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from rlsft import io as IO
from rlsft import registry as REG
from rlsft import runner as R
from rlsft import store as S
from rlsft.params import as_dict

REPO = Path(__file__).resolve().parents[1]


def temp_leftovers(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.name.startswith(".") and ".tmp" in p.name]


# ---------------------------------------------------------------------------------- atomic writes

def test_atomic_path_keeps_old_file_when_body_raises(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError):
        with IO.atomic_path(target, ".json") as tmp:
            assert tmp.parent == target.parent and tmp.name.startswith(".x.json.")
            assert tmp.name.endswith(".tmp.json")
            tmp.write_text("half a ne")
            1 / 0
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_path_without_old_file_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "y.parquet"
    with pytest.raises(RuntimeError):
        with IO.atomic_path(target, ".parquet") as tmp:
            tmp.write_bytes(b"PAR1 partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "z.txt"
    target.write_text("old")
    with IO.atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the body ends
    assert target.read_text() == "new"
    assert temp_leftovers(tmp_path) == []


def test_write_helpers_are_atomic_and_leave_no_temp_files(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    IO.write_parquet(tmp_path / "t.parquet", df)
    IO.write_csv(tmp_path / "t.csv", df)
    IO.write_json(tmp_path / "t.json", {"b": 1, "a": [1]})
    IO.write_text(tmp_path / "t.txt", "é")
    assert pd.read_parquet(tmp_path / "t.parquet").equals(df)
    assert pd.read_csv(tmp_path / "t.csv").equals(df)
    assert (tmp_path / "t.json").read_text() == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "é"
    assert temp_leftovers(tmp_path) == []
    # a failing parquet write keeps the previous table
    bad = pd.DataFrame({"a": [object(), object()]})
    with pytest.raises(pa.ArrowInvalid, match="object"):  # pyarrow cannot convert a bare object
        IO.write_parquet(tmp_path / "t.parquet", bad)
    assert pd.read_parquet(tmp_path / "t.parquet").equals(df)
    assert temp_leftovers(tmp_path) == []


def test_kill_mid_write_leaves_old_file_and_the_runner_clears_the_temp(tmp_path):
    """SIGKILL inside atomic_path: the old file survives; the stale temp file is removed by the
    next runner (under its lock), except inside hidden cache folders."""
    root = tmp_path / "ci"
    target = root / "data" / "world.json"
    IO.write_json(target, {"v": "old"})
    code = textwrap.dedent(f"""
        import os, signal
        from rlsft.io import atomic_path
        with atomic_path({str(target)!r}, ".json") as tmp:
            tmp.write_text('{{"v": "ne')
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert IO.read_json(target) == {"v": "old"}
    stale = temp_leftovers(root)
    assert len(stale) == 1 and R._STALE_TEMP.match(stale[0].name)

    cache_temp = root / "trajectories" / ".cache" / ".m.npy.abcd1234.tmp.npy"
    cache_temp.parent.mkdir(parents=True)
    cache_temp.write_bytes(b"x")
    keep = [root / ".lock", root / "data" / ".hidden", root / "data" / "a.tmp.json"]
    for p in keep:
        p.write_text("x")
    R._remove_stale_temps(root)
    assert temp_leftovers(root) == [cache_temp]
    assert all(p.exists() for p in keep)
    assert IO.read_json(target) == {"v": "old"}


# -------------------------------------------------------------------------------------- manifest

META = {"notebook": "notebooks/00_data.ipynb", "parameters": {"n_places": 12}, "seed": 3,
        "git_commit": "abc123+dirty", "wall_time_s": 1.25, "peak_rss_mb": 10.0,
        "package_versions": {"python": "3.11", "numpy": "2.4.6"}, "kind": "compute"}


def make_stage(root: Path) -> tuple[S.Store, dict]:
    store = S.Store(root)
    IO.write_text(root / "data" / "a.txt", "alpha")
    IO.write_text(root / "data" / "sub" / "b.txt", "beta")
    IO.write_text(root / "data" / ".hidden", "not an artifact")
    IO.write_text(root / "data" / ".cache" / "c.bin", "not an artifact")
    outputs = store.outputs(["data"])
    return store, outputs


def test_outputs_hash_files_and_skip_hidden_and_cache(tmp_path):
    store, outputs = make_stage(tmp_path)
    assert outputs == {"data/a.txt": IO.sha256_file(tmp_path / "data" / "a.txt"),
                       "data/sub/b.txt": IO.sha256_file(tmp_path / "data" / "sub" / "b.txt")}
    IO.write_text(tmp_path / "figures" / "fig1_x.png", "png")
    IO.write_text(tmp_path / "figures" / "fig2_x.png", "png")
    assert list(store.outputs(["figures/fig1_*"])) == ["figures/fig1_x.png"]
    assert store.outputs(["nothing_here"]) == {}


def test_manifest_records_provenance_per_artifact(tmp_path):
    store, outputs = make_stage(tmp_path)
    parts = {"notebook": "n1", "params": "p1", "code": "c1"}
    rec = store.record("data", "key1", parts, outputs, META)
    man = json.loads((tmp_path / "manifest.json").read_text())
    st = man["stages"]["data"]
    assert st == rec
    assert st["key"] == "key1" and st["key_parts"] == parts and st["outputs"] == outputs
    assert st["seed"] == 3 and st["git_commit"] == "abc123+dirty" and st["wall_time_s"] == 1.25
    assert st["parameters"] == {"n_places": 12} and st["notebook"] == "notebooks/00_data.ipynb"
    assert st["package_versions"] == META["package_versions"] and st["finished_at"]
    assert man["package_versions"] == META["package_versions"]
    assert set(man["artifacts"]) == set(outputs)
    for rel, art in man["artifacts"].items():
        assert art == {"path": rel, "sha256": IO.sha256_file(tmp_path / rel), "stage": "data",
                       "notebook": "notebooks/00_data.ipynb", "parameters": {"n_places": 12},
                       "seed": 3, "git_commit": "abc123+dirty", "wall_time_s": 1.25}
    assert temp_leftovers(tmp_path) == []


def test_record_replaces_a_stage_s_artifacts_and_keeps_others(tmp_path):
    store, outputs = make_stage(tmp_path)
    store.record("data", "k", {}, outputs, META)
    IO.write_text(tmp_path / "train" / "m.bin", "m")
    store.record("train", "kt", {}, store.outputs(["train"]), META | {"notebook": "notebooks/10_train.ipynb"})
    (tmp_path / "data" / "sub" / "b.txt").unlink()
    store.record("data", "k2", {}, store.outputs(["data"]), META)
    arts = store.load()["artifacts"]
    assert set(arts) == {"data/a.txt", "train/m.bin"}
    assert arts["train/m.bin"]["stage"] == "train"


def test_digest_depends_on_content_only(tmp_path):
    store, outputs = make_stage(tmp_path)
    d1 = store.record("data", "k1", {}, outputs, META)["digest"]
    d2 = store.record("data", "k2", {"x": 1}, outputs, META | {"seed": 9})["digest"]
    assert d1 == d2 == store.digest("data")
    IO.write_text(tmp_path / "data" / "a.txt", "changed")
    d3 = store.record("data", "k2", {}, store.outputs(["data"]), META)["digest"]
    assert d3 != d1
    assert store.digest("never") is None


# ------------------------------------------------------------------------------------------ fresh

def test_fresh_reasons(tmp_path):
    store, outputs = make_stage(tmp_path)
    assert store.fresh("data", "k1") == (False, "never run")
    parts = {"notebook": "n1", "params": "p1", "code": "c1", "input:x": "d1"}
    store.record("data", "k1", parts, outputs, META)
    assert store.fresh("data", "k1", parts) == (True, "up to date")
    assert store.fresh("data", "k2", parts | {"params": "p2"}) == (False, "changed: params")
    assert store.fresh("data", "k2", parts | {"code": "c2", "notebook": "n2"}) == (False, "changed: code, notebook")
    assert store.fresh("data", "k2", parts | {"input:x": "d2"}) == (False, "changed: input:x")
    assert store.fresh("data", "k2", None)[1].startswith("changed: ")
    assert store.fresh("data", "k2", parts) == (False, "changed: cache key")

    (tmp_path / "data" / "a.txt").write_text("edited by hand")
    assert store.fresh("data", "k1", parts) == (False, "output changed on disk: data/a.txt")
    (tmp_path / "data" / "a.txt").unlink()
    assert store.fresh("data", "k1", parts) == (False, "output missing: data/a.txt")
    assert store.fresh("other", "k1", parts) == (False, "never run")


def test_stage_key_depends_on_inputs_params_notebook(tmp_path):
    profile = REG.load_profile("ci")
    store = S.Store(tmp_path)
    info = REG.get("samples")
    params = as_dict(REG.effective_params(profile, "samples"))
    key, parts = R.stage_key(info, params, profile, store)
    assert key is None  # its inputs (data, train) are not computed yet
    for dep in info.inputs:
        IO.write_text(tmp_path / dep / "f", dep)
        store.record(dep, "k", {}, store.outputs([dep]), META)
    key, parts = R.stage_key(info, params, profile, store)
    assert key and set(parts) == {"notebook", "code", "params", "profile", "input:data", "input:train"}
    assert R.stage_key(info, params, profile, store)[0] == key  # stable
    assert R.stage_key(info, params | {"M": 3}, profile, store)[0] != key
    assert R.stage_key(info, params, profile | {"seed": 5}, store)[0] != key
    IO.write_text(tmp_path / "train" / "f", "retrained")
    store.record("train", "k", {}, store.outputs(["train"]), META)
    key2, parts2 = R.stage_key(info, params, profile, store)
    assert key2 != key and parts2["input:train"] != parts["input:train"]


def test_notebook_source_hash_ignores_outputs(tmp_path):
    nb = json.loads((REPO / "notebooks" / "00_data.ipynb").read_text())
    p = tmp_path / "00_data.ipynb"
    p.write_text(json.dumps(nb))
    h = S.notebook_source_hash(p)
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            c["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
            c["execution_count"] = 7
    p.write_text(json.dumps(nb))
    assert S.notebook_source_hash(p) == h
    nb["cells"][-1]["source"] = ["print('changed')\n"]
    p.write_text(json.dumps(nb))
    assert S.notebook_source_hash(p) != h
    assert S.code_hash(["rlsft.io"]) != S.code_hash(["rlsft.task"])
    assert S.code_hash(["rlsft.io"]) == S.code_hash(["rlsft.io", "rlsft.io"])
    with pytest.raises(ValueError, match="no rlsft module"):
        S.code_hash(["io"])


def test_package_versions_and_git_commit():
    v = S.package_versions()
    assert v["python"] and v["numpy"] and v["papermill"]
    commit = S.git_commit()
    assert commit == "unknown" or len(commit.split("+")[0]) == 40


# ------------------------------------------------------------------------------------------- lock

def test_lock_refuses_a_second_holder(tmp_path):
    a, b = S.Store(tmp_path / "ci"), S.Store(tmp_path / "ci")
    with a.lock():
        assert (tmp_path / "ci" / ".lock").read_text() == str(os.getpid())
        with pytest.raises(RuntimeError, match="another run is using"):
            with b.lock():
                pass
        with pytest.raises(S.StoreLocked):
            with b.lock():
                pass
    with b.lock():  # released
        pass


def test_lock_refuses_a_second_runner_process(tmp_path):
    """A second ``python -m rlsft.runner`` on a busy results folder stops at once with a clear
    message, and touches nothing (not even the first run's temp files)."""
    root = tmp_path / "ci"
    inflight = root / "notebooks" / ".00_data.ipynb.abcd1234.tmp.ipynb"
    IO.write_text(inflight, "{}")
    with S.Store(root).lock():
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        proc = subprocess.run([sys.executable, "-m", "rlsft.runner", "--profile", "ci", "--only", "data",
                               "--results", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "another run is using" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert inflight.exists()
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert not (root / "manifest.json").exists()
