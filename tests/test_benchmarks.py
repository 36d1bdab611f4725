"""Tests of rlsft.benchmarks: folder loader (shared copies and own fixtures), hub column mapping
(with a fake ``datasets.load_dataset``), and the offline error."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlsft import benchmarks as B
from rlsft.benchmarks import BenchmarkUnavailable, load_benchmark

FIXTURES = Path(__file__).parent / "fixtures"
LIB = Path(__file__).resolve().parents[1] / "lib"


def _shared_folder() -> Path | None:
    env = os.environ.get(B.ENV_FOLDER)
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
    return path if path.is_dir() else None


SHARED = _shared_folder()
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared benchmark folder not present "
                                  f"(../shared/benchmarks or ${B.ENV_FOLDER})")


@pytest.fixture
def mini_folder(tmp_path) -> Path:
    """Own small fixtures in the offline-folder layout (humaneval gzipped like the real file)."""
    folder = tmp_path / "bench"
    shutil.copytree(FIXTURES / "benchmarks_mini", folder)
    with gzip.open(folder / "humaneval.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write((FIXTURES / "humaneval_mini.jsonl").read_text())
    return folder


# ------------------------------------------------------------------------- shared offline copies

@needs_shared
@pytest.mark.parametrize("name, count", [("aime24", 30), ("aime25", 30), ("amc23", 40),
                                         ("humaneval", 164)])
def test_shared_folder_counts(name, count):
    problems = load_benchmark(name, source="folder", folder=SHARED)
    assert len(problems) == count
    assert len({p["id"] for p in problems}) == count
    for p in problems:
        assert isinstance(p["id"], str) and p["problem"].strip() and p["answer"].strip()
    if name == "humaneval":
        assert problems[0]["id"] == "HumanEval/0"
        for p in problems:
            assert set(B.HUMANEVAL_KEYS) <= set(p) and p["problem"] == p["prompt"]
            assert "def check(" in p["test"] and p["entry_point"].isidentifier()
    else:
        assert all(p["answer"].lstrip("-").isdigit() for p in problems)
        assert problems[0]["id"] == f"{name}-01"


@needs_shared
def test_shared_folder_via_env_and_default(monkeypatch):
    monkeypatch.setenv(B.ENV_FOLDER, str(SHARED))
    assert len(load_benchmark("aime24", source="folder")) == 30
    assert B.default_folder() == SHARED


@needs_shared
def test_shared_humaneval_canonical_solutions_pass():
    """A sample of real HumanEval problems: the canonical solution passes, a stub fails."""
    from rlsft.humaneval import verify_humaneval

    problems = load_benchmark("humaneval", source="folder", folder=SHARED)
    for p in problems[::33]:
        assert verify_humaneval(p["canonical_solution"], p)[1] is True, p["id"]
        assert verify_humaneval("    pass\n", p)[1] is False, p["id"]


# ---------------------------------------------------------------------------- own fixtures

def test_mini_folder(mini_folder):
    got = {n: load_benchmark(n, source="folder", folder=mini_folder) for n in B.BENCHMARKS}
    assert {n: len(v) for n, v in got.items()} == {"aime24": 2, "aime25": 3, "amc23": 2,
                                                    "humaneval": 3}
    assert got["amc23"][0] == {"id": "amc23-01", "problem": r"What is $\frac{1}{2}+\frac{1}{3}$?",
                               "answer": r"\frac{5}{6}"}
    he = got["humaneval"][2]
    assert he["id"] == "Mini/2" and he["entry_point"] == "is_balanced"
    assert he["answer"] == he["canonical_solution"]


def test_limit(mini_folder):
    assert [p["id"] for p in load_benchmark("aime25", "folder", mini_folder, limit=2)] == \
        ["aime25-01", "aime25-02"]
    with pytest.raises(ValueError, match="limit"):
        load_benchmark("aime25", "folder", mini_folder, limit=0)


def test_count_mismatch_is_logged(mini_folder, caplog):
    load_benchmark("aime24", "folder", mini_folder)
    assert "standard release has 30" in caplog.text


def test_folder_errors(tmp_path, mini_folder):
    with pytest.raises(KeyError, match="known"):
        load_benchmark("math500", "folder", mini_folder)
    with pytest.raises(ValueError, match="source"):
        load_benchmark("aime24", source="disk")
    with pytest.raises(FileNotFoundError, match="aime24.jsonl"):
        load_benchmark("aime24", "folder", tmp_path)
    (tmp_path / "aime24.jsonl").write_text('{"id": "a", "problem": "x", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match=r"aime24.jsonl:2"):
        load_benchmark("aime24", "folder", tmp_path)
    (tmp_path / "aime24.jsonl").write_text('{"id": "a", "problem": "x"}\n')
    with pytest.raises(ValueError, match="lacks keys"):
        load_benchmark("aime24", "folder", tmp_path)
    (tmp_path / "aime24.jsonl").write_text('{"id": "a", "problem": "x", "answer": "1"}\n' * 2)
    with pytest.raises(ValueError, match="duplicate"):
        load_benchmark("aime24", "folder", tmp_path)


def test_folder_source_needs_a_folder(monkeypatch):
    monkeypatch.delenv(B.ENV_FOLDER, raising=False)
    with pytest.raises(ValueError, match="folder"):
        load_benchmark("aime24", source="folder")


def test_normalise_answer():
    assert B.normalise_answer(27.0) == "27"
    assert B.normalise_answer("240^\\circ") == "240"
    assert B.normalise_answer("240^{\\circ}") == "240"
    assert B.normalise_answer(" 033 ") == "033"
    assert B.normalise_answer("7.00") == "7"
    assert B.normalise_answer(r"\frac{5}{6}") == r"\frac{5}{6}"
    for bad in (None, "", float("nan"), True):
        with pytest.raises(ValueError):
            B.normalise_answer(bad)


# ------------------------------------------------------------------------ hub (faked) mapping

FAKE_HUB = {
    ("HuggingFaceH4/aime_2024", None, "train"): [
        {"id": 60, "problem": "P1 text", "solution": "...", "answer": "204", "url": "u"},
        {"id": 61, "problem": "P2 text", "solution": "...", "answer": "113", "url": "u"}],
    ("opencompass/AIME2025", "AIME2025-I", "test"): [{"question": "I-1", "answer": "70"}],
    ("opencompass/AIME2025", "AIME2025-II", "test"): [{"question": "II-1", "answer": "240^\\circ"}],
    ("yentinglin/aime_2025", None, "train"): [{"id": 0, "problem": "Y-1", "answer": "70"}],
    ("math-ai/amc23", None, "test"): [{"id": 0, "question": "Q1", "answer": 27.0},
                                      {"id": 1, "question": "Q2", "answer": "3159"}],
    ("openai/openai_humaneval", None, "test"): [
        json.loads(line) for line in (FIXTURES / "humaneval_mini.jsonl").read_text().splitlines()],
}


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []

    def fake_load(hub_id, config, split):
        calls.append((hub_id, config, split))
        return FAKE_HUB[(hub_id, config, split)]

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(B, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(B, "_hf_load_dataset", fake_load)
    return calls


def test_hub_mapping(fake_hub):
    a24 = load_benchmark("aime24")
    assert a24 == [{"id": "aime24-01", "problem": "P1 text", "answer": "204"},
                   {"id": "aime24-02", "problem": "P2 text", "answer": "113"}]
    a25 = load_benchmark("aime25")
    assert [(p["id"], p["problem"], p["answer"]) for p in a25] == \
        [("aime25-01", "I-1", "70"), ("aime25-02", "II-1", "240")]        # both configs, in order
    assert load_benchmark("aime25", hub_id="yentinglin/aime_2025")[0]["problem"] == "Y-1"
    assert [p["answer"] for p in load_benchmark("amc23")] == ["27", "3159"]
    he = load_benchmark("humaneval", limit=2)
    assert [p["id"] for p in he] == ["Mini/0", "Mini/1"]
    assert he[0]["problem"] == he[0]["prompt"] and he[0]["entry_point"] == "running_max"
    assert ("opencompass/AIME2025", "AIME2025-II", "test") in fake_hub
    with pytest.raises(KeyError, match="not a known source"):
        load_benchmark("aime25", hub_id="someone/else")
    with pytest.raises(ValueError, match="folder is only used"):
        load_benchmark("aime24", folder="x")


def test_hub_and_folder_give_the_same_keys(fake_hub, mini_folder):
    for name in B.BENCHMARKS:
        hub, folder = load_benchmark(name)[0], load_benchmark(name, "folder", mini_folder)[0]
        assert set(hub) == set(folder)


def test_hub_missing_column_is_a_clear_error(fake_hub, monkeypatch):
    monkeypatch.setitem(FAKE_HUB, ("math-ai/amc23", None, "test"), [{"problem": "Q", "answer": "1"}])
    with pytest.raises(ValueError, match=r"lacks columns \['question'\]"):
        load_benchmark("amc23")


# ---------------------------------------------------------------------------- offline error

def test_offline_env_gives_one_clear_error(monkeypatch):
    def fake_load(hub_id, config, split):
        raise ConnectionError(f"Couldn't reach '{hub_id}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(B, "hub_reachable", lambda timeout=3.0: pytest.fail("no probe when offline"))
    monkeypatch.setattr(B, "_hf_load_dataset", fake_load)
    with pytest.raises(BenchmarkUnavailable) as err:
        load_benchmark("amc23")
    msg = str(err.value)
    for part in ("'amc23'", "math-ai/amc23", "benchmark_folder",
                 "hf download math-ai/amc23 --repo-type dataset", "offline"):
        assert part in msg


def test_unreachable_hub_fails_fast_without_loading(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(B, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(B, "_hf_load_dataset", lambda *a: pytest.fail("must not try to download"))
    with pytest.raises(BenchmarkUnavailable, match="unreachable.*hf download HuggingFaceH4/aime_2024"):
        load_benchmark("aime24")


def test_hub_probe_respects_endpoint(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # discard port: nothing listens
    assert B.hub_reachable(timeout=1.0) is False


def test_real_datasets_offline_error_is_fast(tmp_path):
    """The real ``datasets`` in offline mode with an empty cache: one clear error, in seconds."""
    code = ("from rlsft.benchmarks import load_benchmark, BenchmarkUnavailable\n"
            "try:\n    load_benchmark('aime25')\n"
            "except BenchmarkUnavailable as e:\n    print('ERR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(LIB)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert time.monotonic() - t0 < 60
    assert out.stdout.startswith("ERR benchmark 'aime25'"), out.stdout + out.stderr
    assert "opencompass/AIME2025" in out.stdout and "hf download" in out.stdout


def test_verifier_for():
    from rlsft.verify import verify_math

    assert B.verifier_for("aime24") is verify_math
    assert callable(B.verifier_for("humaneval"))
