"""Importing completions a user already has (rlsft.completions; issue 12).

The shapes a file may take (our samples table, one row per sample, one row per problem with a list
of outputs, JSON lines / JSON / parquet), the errors that name the row and the fix, profiles whose
variants name ``completions:``, and an end-to-end run of the pipeline on imported completions.
The public real completions beside the repository (../shared/real) are read when present.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rlsft import completions as CP
from rlsft import config as C

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real" / "qwen-math-1.5b"

GOOD = "We add them.\nSo the answer is \\boxed{4}."
BAD = "We multiply them.\nSo the answer is \\boxed{5}."
NOBOX = "I am not sure."


def _write(path: Path, rows, shape: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if shape == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif shape == "json-list":
        path.write_text(json.dumps(rows))
    elif shape == "json-wrapped":
        path.write_text(json.dumps({"avg@8": 0.5, "model": "m", "metadata": rows}))
    elif shape == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    return path


PER_PROBLEM = [{"index": 0, "prompt": "2+2?", "label": "4.0", "outputs": [GOOD, BAD, NOBOX]},
               {"index": 1, "prompt": "3+1?", "label": "4", "outputs": [BAD, GOOD, GOOD]}]
PER_SAMPLE = [{"problem_id": p["index"], "question": p["prompt"], "answer": p["label"], "response": o}
              for p in PER_PROBLEM for o in p["outputs"]]


@pytest.mark.parametrize("rows,shape,suffix", [
    (PER_PROBLEM, "json-wrapped", ".json"),
    (PER_PROBLEM, "json-list", ".json"),
    (PER_PROBLEM, "jsonl", ".jsonl"),
    (PER_PROBLEM, "parquet", ".parquet"),
    (PER_SAMPLE, "jsonl", ".jsonl"),
    (PER_SAMPLE, "parquet", ".parquet"),
])
def test_shapes_give_the_same_table(tmp_path, rows, shape, suffix):
    df = CP.read_completions(_write(tmp_path / f"c{suffix}", rows, shape), benchmark="toy")
    assert df[["benchmark", "problem", "sample"]].values.tolist() == [
        ["toy", "0", 0], ["toy", "0", 1], ["toy", "0", 2], ["toy", "1", 0], ["toy", "1", 1], ["toy", "1", 2]]
    assert df["text"].tolist() == [GOOD, BAD, NOBOX, BAD, GOOD, GOOD]
    assert set(df["answer"]) == {"4"}  # "4.0" is normalised


def test_lm_eval_nested_resps_and_prompt_grouping(tmp_path):
    rows = [{"doc_id": 7, "target": "4", "resps": [[GOOD], [BAD]]}]
    df = CP.read_completions(_write(tmp_path / "lm.jsonl", rows, "jsonl"), benchmark="b")
    assert df["text"].tolist() == [GOOD, BAD] and df["problem"].tolist() == ["7", "7"]
    # one row per sample without ids: the prompt groups the samples, numbered by first appearance
    rows = [{"prompt": "x?", "completion": "a"}, {"prompt": "y?", "completion": "b"}, {"prompt": "x?", "completion": "c"}]
    df = CP.read_completions(_write(tmp_path / "p.jsonl", rows, "jsonl"), benchmark="b")
    assert df[["problem", "sample", "text"]].values.tolist() == [["0", 0, "a"], ["1", 0, "b"], ["0", 1, "c"]]


def test_our_samples_table_selects_the_variant(tmp_path):
    t = pd.DataFrame({"family": "f", "variant": ["Base", "Base", "RL"], "benchmark": "aime24",
                      "problem": ["aime24-01"] * 3, "sample": [0, 1, 0], "text": [GOOD, BAD, GOOD], "correct": True})
    path = tmp_path / "all_samples.parquet"
    t.to_parquet(path)
    df = CP.read_completions(path, family="f", variant="RL")
    assert df["text"].tolist() == [GOOD] and df["benchmark"].tolist() == ["aime24"]
    with pytest.raises(CP.CompletionsError, match="not 'SFT'"):
        CP.read_completions(path, family="f", variant="SFT")


@pytest.mark.parametrize("content,match", [
    ('{"index": 0, "outputs": ["a"]}\n{"index": 1, "answers": 3}\n', r"row 2: no completion text.*Fix: rename"),
    ('{"index": 0, "outputs": ["a"]}\nnot json\n', r"line 2: not valid JSON"),
    ('{"index": 0, "outputs": ["a", null]}\n', r"row 1, 'outputs', output 1: expected a string"),
    ('{"index": 0, "outputs": "abc"}\n', r"row 1.*must be a list of strings"),
    ('{"response": "a"}\n', r"row 1: one row per sample needs a problem id"),
    ('{"index": 0, "prompt": "a", "output": "x"}\n{"index": 0, "prompt": "b", "output": "y"}\n',
     r"problem '0' of 'b' has 2 different prompts \(rows \[1, 2\]\).*unique id"),
    ('', r"no rows"),
])
def test_bad_files_name_the_row_and_the_fix(tmp_path, content, match):
    path = tmp_path / "b.jsonl"
    path.write_text(content)
    with pytest.raises(CP.CompletionsError, match=match):
        CP.read_completions(path, benchmark="b")


def test_json_without_one_list_of_rows(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"a": [{"x": 1}], "b": [{"y": 2}]}))
    with pytest.raises(CP.CompletionsError, match="exactly one list of rows"):
        CP.read_completions(path)


def test_problems_must_agree_across_variants():
    a = CP.table_from_records(PER_PROBLEM, "a.json", benchmark="toy")
    b = CP.table_from_records([{**PER_PROBLEM[0], "prompt": "something else"}], "b.json", benchmark="toy")
    with pytest.raises(CP.CompletionsError, match="prompt differs between.*not aligned"):
        CP.problems_table({"f/Base": a, "f/RL": b})
    probs = CP.problems_table({"f/Base": a, "f/RL": a})
    assert probs[["problem", "answer"]].values.tolist() == [["0", "4"], ["1", "4"]]


def test_gold_from_a_registered_benchmark(tmp_path):
    folder = REPO / "tests" / "fixtures" / "benchmarks_mini"
    ids = [json.loads(line)["id"] for line in (folder / "aime24.jsonl").read_text().splitlines()[:1]]
    t = CP.table_from_records([{"id": ids[0], "outputs": [GOOD]}], "x.json", benchmark="aime24")
    probs = CP.problems_table({"f/Base": t}, benchmark_folder=str(folder))
    assert probs["answer"].iloc[0] == json.loads((folder / "aime24.jsonl").read_text().splitlines()[0])["answer"]
    t = CP.table_from_records([{"id": "zz", "outputs": [GOOD]}], "x.json", benchmark="toy")
    with pytest.raises(CP.CompletionsError, match="no gold answer.*add an 'answer' field"):
        CP.problems_table({"f/Base": t})


def test_import_variant_verifies(tmp_path):
    path = _write(tmp_path / "c.json", PER_PROBLEM, "json-wrapped")
    files = {"toy": path}
    probs = CP.problems_table({"f/Base": CP.read_variant(files)})
    df = CP.import_variant(family="f", variant="Base", files=files, problems=probs, progress=False)
    assert df["correct"].tolist() == [True, False, False, False, True, True]
    assert df["extracted"].tolist()[:2] == ["4", "5"] and pd.isna(df["extracted"].iloc[2])
    assert df["n_tokens"].isna().all() and set(df["finish_reason"]) == {"unknown"}
    assert df["verify_status"].tolist() == ["ok", "ok", "no_box", "ok", "ok", "ok"]
    other = probs[probs["problem"] == "0"]
    with pytest.raises(CP.CompletionsError, match=r"not in the problem table.*\('toy', '1'\)"):
        CP.import_variant(family="f", variant="Base", files=files, problems=other, progress=False)


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------


def _profile(tmp_path: Path, variants: dict, name: str = "imp") -> Path:
    doc = {"extends": "ci", "families": {"organism": None, "toy": {"label": "toy", "variants": variants}},
           "stages": {"data": {"task": "completions"}, "samples": {"task": "benchmarks", "M": 3}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_profile_variant_sources(tmp_path):
    _write(tmp_path / "base.json", PER_PROBLEM, "json-wrapped")
    p = C.load_profile(str(_profile(tmp_path, {"Base": {"completions": {"toy": "base.json"}},
                                               "RL": {"completions": "base.json"}})))
    assert [v for _, v, _ in C.variant_specs(p)] == ["Base", "RL"]
    assert C.completion_files(p, "toy", "Base") == {"toy": tmp_path / "base.json"}  # relative to the profile
    bad = _profile(tmp_path, {"Base": {"completions": "base.json", "model": "x/y"}, "RL": {"recipe": "pretrain"}}, "b1")
    with pytest.raises(C.ConfigError, match="exactly one of 'recipe'.*'completions'"):
        C.load_profile(str(bad))
    with pytest.raises(C.ConfigError, match="at least two"):
        C.load_profile(str(_profile(tmp_path, {"Base": {"completions": "base.json"}}, "b2")))
    with pytest.raises(C.ConfigError, match="not a .jsonl/.json/.parquet file"):
        C.load_profile(str(_profile(tmp_path, {"Base": {"completions": "a.txt"}, "RL": {"completions": "b.txt"}}, "b3")))
    with pytest.raises(C.ConfigError, match="'from' naming a variant of this family"):
        C.load_profile(str(_profile(tmp_path, {"Base": {"completions": "base.json"},
                                               "RL": {"recipe": "grpo", "from": "SFT"}}, "b4")))


def test_missing_file_stops_the_run_before_any_work(tmp_path):
    path = _profile(tmp_path, {"Base": {"completions": "nope.json"}, "RL": {"completions": "nope2.json"}})
    proc = subprocess.run([sys.executable, "-m", "rlsft.runner", "--profile", str(path), "--results",
                           str(tmp_path / "results")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "completions files do not exist" in proc.stderr and "nope.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results" / "imp" / "data").exists()


def _math_rows(n_problems: int, outputs_for) -> list[dict]:
    rows = []
    for i in range(n_problems):
        rows.append({"index": i, "prompt": f"What is {i} + {i}?", "label": str(2 * i),
                     "outputs": outputs_for(i)})
    return rows


def _steps(i: int, answer: int, style: int) -> str:
    intro = ["Let us add the two numbers.", "We need the sum of the numbers.", "First, read the question.",
             "Adding is the operation here."][style % 4]
    mid = ["Each number is written twice.", "Doubling a number is the same as adding it to itself.",
           "We can count on from the first number.", "Write the sum as a product by two."][(style // 4) % 4]
    return f"{intro} {mid}\nThe numbers are {i} and {i}.\nTherefore the answer is \\boxed{{{answer}}}."


def test_pipeline_runs_on_imported_completions(tmp_path):
    """data -> samples (import + verify) -> trajectories -> graphs -> topology -> ablations -> figures."""
    base = _math_rows(4, lambda i: [_steps(i, 2 * i if s % 3 == 0 else 2 * i + s, s) for s in range(6)])
    rl = _math_rows(4, lambda i: [_steps(i, 2 * i if s % 2 == 0 else 2 * i + 1, s % 2) for s in range(6)])
    _write(tmp_path / "data" / "base.json", base, "json-wrapped")
    _write(tmp_path / "data" / "rl.jsonl", [{"idx": r["index"], "question": r["prompt"], "answer": r["label"],
                                              "response": o} for r in rl for o in r["outputs"]], "jsonl")
    path = _profile(tmp_path, {"Base": {"completions": {"toy": "data/base.json"}},
                               "RL": {"completions": {"toy": "data/rl.jsonl"}}})
    results = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "rlsft.runner", "--profile", str(path), "--results", str(results)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = results / "imp"
    samples = pd.read_parquet(out / "samples" / "all_samples.parquet")
    assert sorted(set(samples["variant"])) == ["Base", "RL"] and len(samples) == 2 * 4 * 6
    acc = samples.groupby("variant")["correct"].mean()
    assert acc["Base"] == pytest.approx(2 / 6) and acc["RL"] == pytest.approx(3 / 6)
    models = {r["variant"]: r for r in json.loads((out / "samples" / "models.json").read_text())}
    assert models["RL"]["path"]["toy"].endswith("rl.jsonl")
    ratios = pd.read_csv(out / "graphs" / "decay_ratios.csv")
    assert set(ratios.dropna(subset=["ratio"])["comparison"]) == {"RL/Base"}  # SFT is absent: no SFT ratios
    manifest = json.loads((out / "manifest.json").read_text())
    for stage in ("trajectories", "graphs", "topology", "ablations", "fig_decay"):
        assert stage in manifest["stages"], stage
    # a rerun skips everything; editing a completions file reruns from the data stage
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and " running " not in proc.stderr, proc.stderr[-3000:]
    rl[0]["outputs"][1] = _steps(0, 0, 0)  # now correct
    _write(tmp_path / "data" / "rl.jsonl", [{"idx": r["index"], "question": r["prompt"], "answer": r["label"],
                                              "response": o} for r in rl for o in r["outputs"]], "jsonl")
    proc = subprocess.run(cmd + ["--only", "samples"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = pd.read_parquet(out / "samples" / "all_samples.parquet")
    assert samples.groupby("variant")["correct"].mean()["RL"] == pytest.approx(13 / 24)


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real (public real completions) is not beside the repository")
def test_real_completions_verify_as_their_source_reports():
    """Our verification of the public Qwen2.5-Math-1.5B completions agrees with the avg@8 each file
    reports (its authors' own grading) within 0.01 per file."""
    for sub in ("base", "step1000"):
        for f in sorted((REAL / sub).glob("*.json")):
            reported = json.loads(f.read_text())["avg@8"]
            t = CP.read_completions(f, benchmark=f.stem)
            probs = CP.problems_table({"x": t})
            df = CP.import_variant(family="q", variant="Base", files={f.stem: f}, problems=probs, progress=False)
            assert len(df) == 8 * df["problem"].nunique()
            assert df["correct"].mean() == pytest.approx(reported, abs=0.01), f.name
