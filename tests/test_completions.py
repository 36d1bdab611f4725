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
PER_SAMPLE = [{"problem_id": p["index"], "sample": j, "question": p["prompt"], "answer": p["label"], "response": o}
              for p in PER_PROBLEM for j, o in enumerate(p["outputs"])]
"""One row per sample, numbered (problem 1 has two identical samples: the index says they are two)."""


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


MINI = REPO / "tests" / "fixtures" / "benchmarks_mini"


def _mini(i: int) -> dict:
    return json.loads((MINI / "aime24.jsonl").read_text().splitlines()[i])


def test_gold_from_a_registered_benchmark_only_when_the_prompt_matches():
    rec = _mini(0)
    spaced = "  " + rec["problem"].replace(" ", "\n ") + " "  # whitespace differs: still that problem
    templated = f"<|im_start|>user\n{rec['problem']}<|im_end|>"  # a chat template around it
    for prompt in (rec["problem"], spaced, templated):
        t = CP.table_from_records([{"id": rec["id"], "prompt": prompt, "outputs": [GOOD]}], "x.json", benchmark="aime24")
        assert CP.problems_table({"f/Base": t}, benchmark_folder=str(MINI))["answer"].iloc[0] == rec["answer"]
    # an id that looks like the benchmark's, but another problem: not the registry's answer
    other = [{"id": rec["id"], "prompt": "What is 2 + 2?", "outputs": [GOOD]}]
    t = CP.table_from_records(other, "x.json", benchmark="aime24")
    with pytest.raises(CP.CompletionsError, match=r"x.json, row 1: problem 'aime24-01' of 'aime24' has no gold "
                                                  r"answer.*may belong to another problem; fix: add the gold answer"):
        CP.problems_table({"f/Base": t}, benchmark_folder=str(MINI))
    t = CP.table_from_records([{**other[0], "label": "4"}], "x.json", benchmark="aime24")  # the file's label wins
    assert CP.problems_table({"f/Base": t}, benchmark_folder=str(MINI))["answer"].tolist() == ["4"]
    t = CP.table_from_records([{"id": rec["id"], "outputs": [GOOD]}], "x.json", benchmark="aime24")
    with pytest.raises(CP.CompletionsError, match="file has no prompt"):
        CP.problems_table({"f/Base": t}, benchmark_folder=str(MINI))
    t = CP.table_from_records([{"id": "zz", "outputs": [GOOD]}], "x.json", benchmark="toy")
    with pytest.raises(CP.CompletionsError, match="x.json, row 1: .*no gold answer.*not a registered.*fix: add"):
        CP.problems_table({"f/Base": t})


# --------------------------------------------------------------------------------------------------
# Duplicates and encodings
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows,match", [
    # one row per sample without a sample index: a row repeated exactly
    ([{"problem_id": 0, "response": "a"}, {"problem_id": 0, "response": "b"}, {"problem_id": 0, "response": "a"}],
     r"d.jsonl, rows 1 and 3: the same row twice \(problem '0'.*no sample index\); fix: remove the repeated row, "
     r"or.*'sample' column"),
    # one row per sample with a sample index: the same (problem, sample) twice
    ([{"problem_id": 0, "sample": 0, "response": "a"}, {"problem_id": 0, "sample": 0, "response": "b"}],
     r"rows 1 and 2: sample 0 of problem '0' twice; fix: remove the repeated row"),
    ([{"problem_id": 0, "sample": 0, "response": "a"}, {"problem_id": 0, "response": "b"}],
     r"row 2: no sample index .* while other rows have one"),
    # one row per problem: the same problem id in two rows
    ([{"index": 0, "outputs": ["a"]}, {"index": 1, "outputs": ["b"]}, {"index": 0, "outputs": ["c"]}],
     r"rows 1 and 3: both hold problem '0' .*fix: put all outputs of a problem in one row's list"),
    ([{"prompt": "x?", "outputs": ["a"]}, {"prompt": "x?", "outputs": ["c"]}], r"rows 1 and 2: both hold problem '0'"),
    # our samples table: the same (benchmark, problem, sample) twice
    ([{"problem": "p", "sample": 0, "text": "a"}, {"problem": "q", "sample": 0, "text": "a"},
      {"problem": "p", "sample": 0, "text": "b"}], r"rows 1 and 3: sample 0 of problem 'p' twice; fix: one row"),
])
def test_duplicates_are_refused_in_every_shape(tmp_path, rows, match):
    with pytest.raises(CP.CompletionsError, match=match):
        CP.read_completions(_write(tmp_path / "d.jsonl", rows, "jsonl"), benchmark="b")


def test_identical_samples_with_an_index_are_two_samples(tmp_path):
    rows = [{"problem_id": 0, "sample": s, "response": "a"} for s in (1, 0)]
    df = CP.read_completions(_write(tmp_path / "s.jsonl", rows, "jsonl"), benchmark="b")
    assert df[["sample", "row"]].values.tolist() == [[1, 1], [0, 2]]
    rows = [{"index": 0, "outputs": ["a", "a"]}]  # a list's positions number its samples
    assert CP.read_completions(_write(tmp_path / "l.jsonl", rows, "jsonl"), benchmark="b")["sample"].tolist() == [0, 1]


@pytest.mark.parametrize("name,content", [
    ("latin.jsonl", '{"index": 0, "prompt": "caf\u00e9", "outputs": ["a"]}\n'),
    ("latin.json", '[{"index": 0, "prompt": "caf\u00e9", "outputs": ["a"]}]'),
])
def test_a_file_that_is_not_utf8_names_the_byte(tmp_path, name, content):
    path = tmp_path / name
    data = content.encode("latin-1")
    path.write_bytes(data)
    at = data.index("\u00e9".encode("latin-1"))
    with pytest.raises(CP.CompletionsError, match=rf"{name}: not UTF-8 at byte {at} .*fix: save "
                                                  r"the file as UTF-8"):
        CP.read_completions(path, benchmark="b")
    path.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))  # UTF-8 with a byte-order mark is read
    assert CP.read_completions(path, benchmark="b")["prompt"].tolist() == ["caf\u00e9"]


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('[{"index": 0, "outputs": ["a"]},\n {"index": 1, "outputs": ["b"]]\n')
    with pytest.raises(CP.CompletionsError, match=r"m.json, line 2: not valid JSON"):
        CP.read_completions(path, benchmark="b")


def test_damaged_parquet_names_the_file(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(CP.CompletionsError, match=r"x.parquet: not a readable parquet file"):
        CP.read_completions(path, benchmark="b")


# --------------------------------------------------------------------------------------------------
# Balance: the variants of a family on the same problems, with the same samples per problem
# --------------------------------------------------------------------------------------------------


def _samples(problems, m: int, variant: str, correct=lambda p, s: s == 0) -> pd.DataFrame:
    return pd.DataFrame([{"family": "f", "variant": variant, "benchmark": "b", "problem": str(p), "sample": s,
                          "text": f"{variant} {p} {s}", "correct": correct(p, s)} for p in problems for s in range(m)])


def test_unequal_samples_are_subsampled_to_the_first_n_or_refused():
    base, rl = _samples(range(5), 4, "Base"), _samples(range(5), 1, "RL")
    out, report = CP.balance_family("f", {"Base": base.iloc[::-1], "RL": rl})  # Base's rows in reverse order
    assert out["Base"].groupby("problem")["sample"].apply(list).tolist() == [[0]] * 5  # the first by index
    assert len(out["RL"]) == 5
    assert report.set_index("variant")[["samples", "samples_per_problem", "samples_kept",
                                        "samples_per_problem_kept"]].to_dict("index") == {
        "Base": {"samples": 20, "samples_per_problem": "4", "samples_kept": 5, "samples_per_problem_kept": "1"},
        "RL": {"samples": 5, "samples_per_problem": "1", "samples_kept": 5, "samples_per_problem_kept": "1"}}
    assert report.set_index("variant")["action"].to_dict() == {
        "Base": "subsampled to the first 1 sample(s) per problem by sample index (15 dropped)", "RL": "kept as is"}
    with pytest.raises(CP.CompletionsError, match=r"family 'f': .*different numbers of samples per problem "
                                                  r"\(\{'Base': '5 problems, 4 sample\(s\) per problem', 'RL'.*fix:"):
        CP.balance_family("f", {"Base": base, "RL": rl}, mode="refuse")


def test_different_problem_sets_are_intersected_or_refused():
    from rlsft import verify

    base, rl = _samples(range(0, 5), 2, "Base"), _samples(range(3, 8), 2, "RL")
    out, report = CP.balance_family("f", {"Base": base, "RL": rl})
    assert sorted(set(out["Base"]["problem"])) == sorted(set(out["RL"]["problem"])) == ["3", "4"]
    assert report[["variant", "problems", "problems_kept", "action"]].values.tolist() == [
        ["Base", 5, 2, "dropped 3 problem(s) not in every variant of f"],
        ["RL", 5, 2, "dropped 3 problem(s) not in every variant of f"]]
    passk = verify.pass_at_k_table(pd.concat(out.values()))
    assert set(passk["n_problems"]) == {2}  # the pass@k table compares the same problems
    with pytest.raises(CP.CompletionsError, match=r"different problems .*2 in common.*fix"):
        CP.balance_family("f", {"Base": base, "RL": rl}, mode="refuse")
    same, report = CP.balance_family("f", {"Base": base, "RL": base.assign(variant="RL")}, mode="refuse")
    assert set(report["action"]) == {"kept as is"} and len(same["RL"]) == len(base)


def test_the_samples_stage_balances_families_that_import(tmp_path):
    from rlsft.stages import samples as S

    profile = {"families": {"f": {"variants": {"Base": {"completions": "b.json"}, "RL": {"model": "x"}}},
                            "g": {"variants": {"Base": {"model": "y"}, "RL": {"model": "z"}}}}}
    per_model = {("f", "Base"): _samples(range(3), 4, "Base"), ("f", "RL"): _samples(range(4), 2, "RL"),
                 ("g", "Base"): _samples(range(3), 4, "Base"), ("g", "RL"): _samples(range(4), 2, "RL")}
    out, report = S.balance_imported(profile, per_model, "subsample")
    assert [len(out[k]) for k in per_model] == [6, 6, 12, 8]  # family g samples its variants: left as it is
    assert list(report.columns) == CP.CHECK_COLUMNS and set(report["family"]) == {"f"}
    assert S.Params().imported_balance == "subsample"


def test_import_variant_verifies(tmp_path):
    path = _write(tmp_path / "c.json", PER_PROBLEM, "json-wrapped")
    files = {"toy": path}
    probs = CP.problems_table({"f/Base": CP.read_variant(files)})
    df = CP.import_variant(family="f", variant="Base", files=files, problems=probs, progress=False)
    assert df["correct"].tolist() == [True, False, False, False, True, True]
    assert df["extracted"].tolist()[:2] == ["4", "5"] and pd.isna(df["extracted"].iloc[2])
    assert df["n_tokens"].isna().all() and set(df["finish_reason"]) == {"unknown"}
    assert df["verify_status"].tolist() == ["ok", "ok", "no_box", "ok", "ok", "ok"]
    first = probs[probs["problem"] == "0"]  # the data stage's limit: the other problems are left out
    assert CP.import_variant(family="f", variant="Base", files=files, problems=first, progress=False)[
        "problem"].tolist() == ["0"] * 3
    other = probs.assign(benchmark="other")
    with pytest.raises(CP.CompletionsError, match=r"not in the problem table.*\('toy', '0'\)"):
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


def _one_row_per_sample(rows: list[dict]) -> list[dict]:
    """Rows of the one-row-per-sample shape, numbered (RL repeats itself: identical samples need the index)."""
    return [{"idx": r["index"], "sample": j, "question": r["prompt"], "answer": r["label"], "response": o}
            for r in rows for j, o in enumerate(r["outputs"])]


def test_pipeline_runs_on_imported_completions(tmp_path):
    """data -> samples (import + verify) -> trajectories -> graphs -> topology -> ablations -> figures."""
    base = _math_rows(4, lambda i: [_steps(i, 2 * i if s % 3 == 0 else 2 * i + s, s) for s in range(6)])
    # RL has a fifth problem and a seventh sample per problem: compared on Base's 4 problems, 6 samples each
    rl = _math_rows(5, lambda i: [_steps(i, 2 * i if s % 2 == 0 else 2 * i + 1, s % 2) for s in range(7)])
    _write(tmp_path / "data" / "base.json", base, "json-wrapped")
    _write(tmp_path / "data" / "rl.jsonl", _one_row_per_sample(rl), "jsonl")
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
    checks = pd.read_csv(out / "samples" / "imported_checks.csv").set_index("variant")
    assert checks.loc["Base", ["problems", "problems_kept", "samples_kept", "action"]].tolist() == [4, 4, 24, "kept as is"]
    assert checks.loc["RL", ["problems", "samples", "samples_per_problem", "problems_kept", "samples_kept"]].tolist() == [
        5, 35, 7, 4, 24]
    assert checks.loc["RL", "action"] == ("dropped 1 problem(s) not in every variant of toy; subsampled to the first "
                                          "6 sample(s) per problem by sample index (4 dropped)")
    assert set(pd.read_csv(out / "samples" / "pass_at_k.csv")["n_problems"]) == {4}
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
    _write(tmp_path / "data" / "rl.jsonl", _one_row_per_sample(rl), "jsonl")
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
