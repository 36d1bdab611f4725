"""Import completions a user already has, instead of sampling them (issue 12).

A variant of a profile may name ``completions:`` instead of ``model:`` or ``recipe:``; its answers
are then read from files, verified with the family's verifier and analysed exactly like sampled
ones. ``completions`` is one path, or a mapping ``{benchmark: path}`` (one file per benchmark);
relative paths are relative to the profile file.

Files: ``.jsonl``, ``.json`` or ``.parquet``, in any of these shapes (:func:`read_completions`):

1. **our samples table** (``results/<p>/samples/all_samples.parquet`` or one of its parts):
   columns ``problem``, ``sample``, ``text`` (``family`` / ``variant`` / ``benchmark`` select rows);
2. **one row per sample**: a problem id (``problem_id``, ``question_id``, ``idx``, ``index``, ``id``,
   ``task_id``, ``doc_id``, ``unique_id``) or the problem text, and the text (``response``,
   ``completion``, ``output``, ``generation``, ``model_output``, ``text``, ``prediction``);
3. **one row per problem with a list of outputs** (``outputs``, ``responses``, ``completions``,
   ``generations``, ``samples``, ``resps``, ``predictions``, ``texts``), as eval harnesses write.

A JSON file may hold the rows as a top-level list or under one key whose value is the list of rows
(e.g. ``{"metadata": [...], "avg@8": ...}``). Optional per row: the prompt (``prompt``,
``question``, ``problem``, ``input``, ``query``), the gold answer (``answer``, ``label``, ``gold``,
``target``, ``ground_truth``, ``gt``), ``finish_reason`` / ``stop_reason`` and, one row per sample,
the sample index (``sample``, ``sample_idx``, ``sample_index``, ``sample_id``).

Checked before any analysis (each failure a :class:`CompletionsError` naming the file, the row and
the fix):

- the file is UTF-8 (else the byte offset is named) and valid JSON (else the line);
- no duplicates: a (problem, sample index) twice, a problem's id in two rows of the one-row-per-
  problem shape, or, one row per sample without a sample index, a row repeated exactly (two
  identical samples need a sample index to say they are two);
- the gold answer is the file's; a problem without one takes the registered benchmark's answer
  only when its id is that benchmark's and its prompt is that problem's (:func:`prompt_matches`);
- the variants of a family are compared on the problems they share, each with the same number of
  samples (:func:`balance_family`: the first n by sample index, reported, or refused).

>>> rows = [{"index": 0, "prompt": "1+1?", "label": "2.0", "outputs": ["\\\\boxed{2}", "3"]}]
>>> df = table_from_records(rows, "mem.json")
>>> df[["problem", "sample", "text", "answer"]].values.tolist()
[['0', 0, '\\\\boxed{2}', '2'], ['0', 1, '3', '2']]
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from rlsft import config as C
from rlsft.benchmarks import BENCHMARKS, default_folder, load_benchmark, normalise_answer
from rlsft.errors import ConfigError
from rlsft.io import sha256_file, sha256_text
from rlsft.progress import bar as progress_bar
from rlsft.schema import BENCHMARK_PROBLEM_COLUMNS, SAMPLE_COLUMNS, verifier_problem
from rlsft.verify import get_verifier, verify_record

log = logging.getLogger(__name__)

ID_KEYS = ("problem_id", "question_id", "idx", "index", "id", "task_id", "doc_id", "unique_id")
TEXT_KEYS = ("response", "completion", "output", "generation", "model_output", "text", "prediction")
LIST_KEYS = ("outputs", "responses", "completions", "generations", "samples", "resps", "predictions", "texts")
PROMPT_KEYS = ("prompt", "question", "problem", "input", "query")
GOLD_KEYS = ("answer", "label", "gold", "target", "ground_truth", "gt")
FINISH_KEYS = ("finish_reason", "stop_reason")
SAMPLE_KEYS = ("sample", "sample_idx", "sample_index", "sample_id")
SUFFIXES = C.COMPLETION_SUFFIXES
COLUMNS = ["benchmark", "problem", "prompt", "answer", "sample", "text", "finish_reason", "source", "row"]
DEFAULT_VERIFIER = "math"
"""The verifier of imported answers to a benchmark that is not registered (e.g. ``amc``, the
83-problem AMC set of the Qwen2.5-Math evaluation); registered ones use their own."""


class CompletionsError(ConfigError):
    """A completions file or entry that cannot be imported; the message names the row and the fix."""


# --------------------------------------------------------------------------------------------------
# Where the files are
# --------------------------------------------------------------------------------------------------


def completion_files(spec: Any, base_dir: str | Path, where: str = "completions") -> dict[str, Path]:
    """``{benchmark or "": path}`` for a variant's ``completions`` entry (see
    :func:`rlsft.config.resolve_completion_files`); a bad entry raises :class:`CompletionsError`.

    >>> completion_files("runs/out.json", "/p")
    {'': PosixPath('/p/runs/out.json')}
    """
    try:
        return C.resolve_completion_files(spec, base_dir, where)
    except ConfigError as exc:
        raise CompletionsError(str(exc)) from None


def check_files(files: Mapping[str, Path], where: str) -> None:
    """Raise when a file is missing, naming it and the fix."""
    for bench, path in files.items():
        if not path.is_file():
            raise CompletionsError(f"{where}: completions file {path} does not exist"
                                   + (f" (benchmark {bench!r})" if bench else "")
                                   + "; fix the path in the profile (relative paths start at the profile's folder)")


def fingerprint(files: Mapping[str, Path]) -> str:
    """sha256 over the files' contents (enters the stage cache keys, so an edited file reruns).

    Each file is hashed once per (path, size, mtime): the runner asks for every stage, and a
    Base file shared by several families is named several times.
    """
    return sha256_text(*[f"{b}={_file_sha(str(Path(p).resolve()), *_stamp(p))}" for b, p in sorted(files.items())])


def _stamp(path) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=4096)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _decode(path: Path) -> str:
    """The text of ``path``; a file that is not UTF-8 is an error naming the byte offset (a UTF-8
    byte-order mark is dropped)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CompletionsError(f"{path}: not UTF-8 at byte {e.start} ({raw[e.start:e.start + 4]!r}); fix: save "
                               f"the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > "
                               f"utf8-{path.name}`") from None


def _jsonl_rows(text: str, path: Path) -> list:
    """The rows of JSON lines; a malformed line names its line number."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise CompletionsError(f"{path}, line {i}: not valid JSON ({e.msg}); fix: one JSON object per line") from None
    return rows


def _json_rows(text: str, path: Path) -> list:
    """The rows of a JSON document: a list, or an object holding exactly one list of rows."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompletionsError(f"{path}, line {e.lineno}: not valid JSON ({e.msg} at line {e.lineno}, column "
                               f"{e.colno}); fix: a JSON list of rows, or an object with one list of rows") from None
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        lists = [k for k, v in doc.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) == 1:
            return doc[lists[0]]
        raise CompletionsError(f"{path}: a JSON object must hold exactly one list of rows, found "
                               f"{lists or 'none'} among keys {sorted(doc)[:12]}; fix: write the rows as a "
                               "top-level list or as JSON lines")
    raise CompletionsError(f"{path}: expected a list of rows, got {type(doc).__name__}")


def _records(path: Path) -> list[dict]:
    """The rows of a file as dicts (JSON lines, JSON list or a JSON object holding one list, parquet)."""
    if path.suffix == ".parquet":
        try:
            return pd.read_parquet(path).to_dict("records")
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise CompletionsError(f"{path}: not a readable parquet file ({type(e).__name__}: {e}); fix: "
                                   "write it again, or export the completions as JSON lines") from None
    text = _decode(path)
    return _jsonl_rows(text, path) if path.suffix == ".jsonl" else _json_rows(text, path)


def _first(row: Mapping, keys: Iterable[str]):
    for k in keys:
        if k in row and row[k] is not None:
            return k
    return None


def _flat_texts(value, where: str) -> list[str]:
    """A list of outputs (lm-eval's ``resps`` nests one list per request) as a flat list of str."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise CompletionsError(f"{where}: the outputs must be a list of strings, got {type(value).__name__}")
    out = []
    for j, v in enumerate(value):
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, (list, tuple)):
            out += _flat_texts(v, f"{where}[{j}]")
        elif isinstance(v, str):
            out.append(v)
        else:
            raise CompletionsError(f"{where}, output {j}: expected a string, got {v!r:.60}; fix: write each "
                                   "completion as a string (an empty string for a failed generation)")
    return out


def _answer(row: Mapping, where: str) -> str | None:
    k = _first(row, GOLD_KEYS)
    if k is None:
        return None
    try:
        return normalise_answer(row[k])
    except ValueError as e:
        raise CompletionsError(f"{where}: gold answer {k!r}: {e}; fix: give the gold answer as a string or number") from None


def _sample_index(value, where: str) -> int:
    """A sample index as an int (``3``, ``3.0`` or ``"3"``); anything else is an error.

    >>> _sample_index("3", "f, row 1"), _sample_index(2.0, "f, row 1")
    (3, 2)
    >>> _sample_index("a", "f, row 1")
    Traceback (most recent call last):
    ...
    rlsft.completions.CompletionsError: f, row 1: the sample index must be a whole number >= 0, got 'a'
    """
    try:
        f = float(value)
        ok = not isinstance(value, bool) and f.is_integer() and f >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CompletionsError(f"{where}: the sample index must be a whole number >= 0, got {value!r:.40}")
    return int(f)


def _our_table(rows: list[dict]) -> bool:
    return bool(rows) and isinstance(rows[0], Mapping) and all(k in rows[0] for k in ("problem", "sample", "text"))


def _rows_of_our_table(rows: list[dict], source: str, benchmark: str, family, variant) -> list[dict]:
    """The records of our samples table (the rows of this family and variant)."""
    rows = _select([{**r, "_row": i + 1} for i, r in enumerate(rows)], source, family, variant)
    out = []
    for r in rows:
        where = f"{source}, row {r['_row']}"
        if not isinstance(r.get("text"), str):
            raise CompletionsError(f"{where}: 'text' must be a string, got {r.get('text')!r:.60}")
        out.append({"benchmark": str(r.get("benchmark") or benchmark), "problem": str(r["problem"]),
                    "prompt": r.get("prompt"), "answer": _answer(r, where), "sample": _sample_index(r["sample"], where),
                    "text": r["text"], "finish_reason": r.get("finish_reason"), "row": r["_row"]})
    return out


def _texts(r: Mapping, where: str) -> tuple[list[str], bool]:
    """``(texts, one row per problem?)`` of a harness row."""
    lk, tk = _first(r, LIST_KEYS), _first(r, TEXT_KEYS)
    if lk is not None and not (tk is not None and isinstance(r[lk], str)):
        return _flat_texts(r[lk], f"{where}, {lk!r}"), True
    if tk is not None:
        if not isinstance(r[tk], str):
            raise CompletionsError(f"{where}: {tk!r} must be a string, got {r[tk]!r:.60}")
        return [r[tk]], False
    raise CompletionsError(
        f"{where}: no completion text; looked for one of {list(TEXT_KEYS)} (one row per sample) "
        f"or {list(LIST_KEYS)} (one row per problem); keys present: {sorted(r)[:12]}. "
        "Fix: rename the field holding the completions")


def _harness_row(r, i: int, source: str, benchmark: str) -> list[dict]:
    """The records of one row of an eval harness's file (one row per sample or per problem)."""
    where = f"{source}, row {i}"
    if not isinstance(r, Mapping):
        raise CompletionsError(f"{where}: expected an object, got {type(r).__name__}")
    texts, per_problem = _texts(r, where)
    ik, pk, sk = _first(r, ID_KEYS), _first(r, PROMPT_KEYS), _first(r, SAMPLE_KEYS)
    prompt = r[pk] if pk and isinstance(r[pk], str) else None
    if ik is not None:
        pid = str(r[ik])
    elif prompt is not None:
        pid = None  # numbered below by first appearance of the prompt
    elif per_problem:
        pid = str(i - 1)  # one row per problem: the row order is the problem order
    else:
        raise CompletionsError(f"{where}: one row per sample needs a problem id (one of {list(ID_KEYS)}) "
                               f"or the prompt (one of {list(PROMPT_KEYS)}) to group samples; add one")
    fk = _first(r, FINISH_KEYS)
    base = {"benchmark": str(r.get("benchmark") or benchmark), "problem": pid, "prompt": prompt,
            "answer": _answer(r, where), "finish_reason": str(r[fk]) if fk else None, "row": i,
            "_per_problem": per_problem}
    if per_problem:
        return [{**base, "sample": j, "text": t} for j, t in enumerate(texts)]
    si = _sample_index(r[sk], where) if sk else None
    sig = json.dumps({k: str(v) for k, v in r.items()}, sort_keys=True)
    return [{**base, "sample": si, "text": texts[0], "_sig": sig}]


def _rows_of_harness(rows: list, source: str, benchmark: str) -> list[dict]:
    """The records of an eval harness's file, problems numbered and duplicates refused."""
    out = [o for i, r in enumerate(rows, 1) for o in _harness_row(r, i, source, benchmark)]
    by_prompt: dict = {}
    for o in out:  # problems without an id: numbered by first appearance of their prompt
        if o["problem"] is None:
            o["problem"] = by_prompt.setdefault((o["benchmark"], o["prompt"]), str(len(by_prompt)))
    _refuse_repeated_problems(out, source)
    _number_samples([o for o in out if not o["_per_problem"]], source)
    return out


def _refuse_repeated_problems(out: list[dict], source: str) -> None:
    """One row per problem: a problem's id in two rows is an error naming both rows."""
    rows_of: dict = {}
    for o in out:
        rows_of.setdefault((o["benchmark"], o["problem"]), {})[o["row"]] = o["_per_problem"]
    for (b, p), rows in rows_of.items():
        if len(rows) > 1 and any(rows.values()):
            a, c = sorted(rows)[:2]
            raise CompletionsError(f"{source}, rows {a} and {c}: both hold problem {p!r} of {b!r} (one row per "
                                   "problem with a list of outputs); fix: put all outputs of a problem in one "
                                   "row's list, or give each problem its own id")


def _number_samples(out: list[dict], source: str) -> None:
    """Sample numbers of one-row-per-sample records: the file's sample index where it has one
    (a repeated (problem, sample) is an error), else the file order; without an index, a row
    repeated exactly is an error."""
    indexed = [o["sample"] is not None for o in out]
    if any(indexed) and not all(indexed):
        o = out[indexed.index(False)]
        raise CompletionsError(f"{source}, row {o['row']}: no sample index ({list(SAMPLE_KEYS)}) while other "
                               "rows have one; fix: number every row's sample, or none")
    seen: dict = {}
    for o in out:
        key = (o["benchmark"], o["problem"], o["sample"] if o["sample"] is not None else o["_sig"])
        if key in seen:
            what = (f"sample {o['sample']} of problem {o['problem']!r} twice" if o["sample"] is not None else
                    f"the same row twice (problem {o['problem']!r}, identical text, no sample index)")
            fix = ("remove the repeated row" if o["sample"] is not None else "remove the repeated row, or, if "
                   "these are two samples that happen to be identical, number the samples in a 'sample' column")
            raise CompletionsError(f"{source}, rows {seen[key]} and {o['row']}: {what}; fix: {fix}")
        seen[key] = o["row"]
    counters: dict = {}
    for o in out:
        if o["sample"] is None:
            k = (o["benchmark"], o["problem"])
            o["sample"] = counters[k] = counters.get(k, -1) + 1


def table_from_records(rows: list[dict], source: str, benchmark: str = "", family: str | None = None,
                       variant: str | None = None):
    """One row per completion: benchmark, problem, prompt, answer, sample, text, finish_reason,
    source (the file) and row (its 1-based row).

    ``problem`` is a string id; ``sample`` is the file's sample index where it has one (``sample``,
    ``sample_idx``, ...), else numbers the completions of a problem from 0 in file order.
    ``prompt`` / ``answer`` are None where the file has none. Duplicates are errors: a repeated
    (problem, sample), a problem's id in two rows of the one-row-per-problem shape, or, without
    a sample index, a row repeated exactly.
    """
    if not rows:
        raise CompletionsError(f"{source}: no rows; fix: point the profile at a file with completions")
    if _our_table(rows):
        out = _rows_of_our_table(rows, source, benchmark, family, variant)
    else:
        out = _rows_of_harness(rows, source, benchmark)
    df = pd.DataFrame(out)
    if not benchmark and (df["benchmark"] == "").any():
        df.loc[df["benchmark"] == "", "benchmark"] = Path(source).stem
    df["source"] = source
    _check_consistent(df, source)
    return df[COLUMNS].reset_index(drop=True)


def _select(rows: list[dict], source: str, family: str | None, variant: str | None) -> list[dict]:
    """Rows of our samples table that belong to this variant (when the table holds several); a
    repeated (benchmark, problem, sample) is an error naming both rows."""
    for col, want in (("variant", variant), ("family", family)):
        vals = sorted({str(r.get(col)) for r in rows if r.get(col) is not None})
        if len(vals) > 1:
            if want not in vals:
                raise CompletionsError(f"{source}: holds {col}s {vals} but not {want!r}; fix: give a file "
                                       f"with one {col}, or name the {col} {want!r} in it")
            rows = [r for r in rows if str(r.get(col)) == want]
    seen: dict = {}
    for r in rows:
        key = (r.get("benchmark"), str(r["problem"]), str(r["sample"]))
        if key in seen:
            raise CompletionsError(f"{source}, rows {seen[key]} and {r['_row']}: sample {r['sample']} of problem "
                                   f"{key[1]!r} twice; fix: one row per (benchmark, problem, sample), remove the "
                                   "repeated row")
        seen[key] = r["_row"]
    return rows


def _check_consistent(df, source: str) -> None:
    for col in ("prompt", "answer"):
        n = df.dropna(subset=[col]).groupby(["benchmark", "problem"])[col].nunique()
        bad = n[n > 1]
        if len(bad):
            b, p = bad.index[0]
            rows = df[(df["benchmark"] == b) & (df["problem"] == p)]
            raise CompletionsError(f"{source}: problem {p!r} of {b!r} has {bad.iloc[0]} different {col}s "
                                   f"(rows {sorted(set(rows['row']))[:5]}); fix: give each problem a unique id")


def read_completions(path: str | Path, benchmark: str = "", family: str | None = None,
                     variant: str | None = None):
    """Read one completions file into the table of :func:`table_from_records`."""
    path = Path(path)
    return table_from_records(_records(path), str(path), benchmark=benchmark, family=family, variant=variant)


def read_variant(files: Mapping[str, Path], family: str | None = None, variant: str | None = None):
    """All completions of one variant: the files of :func:`completion_files`, concatenated."""
    parts = [read_completions(p, benchmark=b, family=family, variant=variant) for b, p in files.items()]
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Problems and verification
# --------------------------------------------------------------------------------------------------


def problems_table(tables: Mapping[str, Any], benchmark_folder=None):
    """The problems of the imported completions, one row per (benchmark, problem).

    ``tables``: ``{label: table}`` (a label per variant, for messages). Prompts and gold answers
    must agree across variants where given. A gold answer missing from every file is taken from
    the registered benchmark of that name only when the problem id is one of its ids (e.g.
    ``aime24-01``) and the file's prompt is that problem's (:func:`prompt_matches`); otherwise it
    is an error naming the file, the row and the fix. Columns: benchmark, problem, prompt, answer,
    meta (``rlsft.schema.BENCHMARK_PROBLEM_COLUMNS``, as the data stage writes for the paper's
    benchmarks; ``meta`` is empty).
    """
    if not tables:
        raise CompletionsError("no variant imports completions; nothing to build problems from")
    allt = pd.concat([t.assign(_src=label) for label, t in tables.items()], ignore_index=True)
    probs = pd.DataFrame([_problem_record(bench, pid, g) for (bench, pid), g in
                          allt.groupby(["benchmark", "problem"], sort=False)])
    missing = probs["answer"].isna()
    if missing.any():
        probs.loc[missing, "answer"] = _gold_from_benchmarks(probs[missing], benchmark_folder)
    probs["prompt"] = probs["prompt"].fillna("")
    probs["meta"] = "{}"
    return probs[list(BENCHMARK_PROBLEM_COLUMNS)]


def _problem_record(bench: str, pid: str, g) -> dict:
    """One problem's row from its completions in every variant (prompt and answer must agree);
    ``where`` names the file and row where it first appears."""
    first = g.iloc[0]
    where = f"{first['source']}, row {first['row']}" if "source" in g and "row" in g else str(first["_src"])
    rec = {"benchmark": bench, "problem": pid, "where": where}
    for col in ("prompt", "answer"):
        vals = g.dropna(subset=[col]).groupby(col)["_src"].first()
        if len(vals) > 1:
            raise CompletionsError(f"problem {pid!r} of {bench!r}: the {col} differs between "
                                   f"{sorted(set(vals.tolist()))}; the files are not aligned. Fix: give "
                                   "problem ids that mean the same problem in every file")
        rec[col] = vals.index[0] if len(vals) else None
    return rec


def prompt_matches(file_prompt: str | None, registered: str) -> bool:
    """Whether a file's prompt is a registered problem's text: equal once whitespace is normalised,
    or holding it (a prompt wrapped in a chat template).

    >>> prompt_matches("What is  1+1?\\n", "What is 1+1?"), prompt_matches("<|user|> What is 1+1? <|end|>", "What is 1+1?")
    (True, True)
    >>> prompt_matches("What is 2+2?", "What is 1+1?"), prompt_matches(None, "What is 1+1?")
    (False, False)
    """
    if not isinstance(file_prompt, str) or not str(registered).strip():
        return False
    f, r = " ".join(file_prompt.split()), " ".join(str(registered).split())
    return f == r or r in f


def _gold_from_benchmarks(probs, folder) -> list[str]:
    """Gold answers of problems without one in any file, from the registered benchmark (see
    :func:`problems_table`)."""
    cache: dict = {}
    return [_registered_gold(rec, cache, folder) for rec in probs.to_dict("records")]


def _registered_gold(rec: Mapping, cache: dict, folder) -> str:
    bench, pid = rec["benchmark"], rec["problem"]
    head = f"{rec['where']}: problem {pid!r} of {bench!r} has no gold answer in the completions files"
    fix = "fix: add the gold answer to each row ('answer' or 'label')"
    if bench not in BENCHMARKS:
        raise CompletionsError(f"{head} and {bench!r} is not a registered benchmark; {fix}")
    reg = _registry(bench, folder, cache, head, fix)
    if pid not in reg:
        raise CompletionsError(f"{head} and {pid!r} is not an id of {bench!r} (ids like {next(iter(reg))!r}); {fix}")
    if not prompt_matches(rec["prompt"], reg[pid]["problem"]):
        said = "no prompt" if rec["prompt"] is None else f"the prompt {rec['prompt']!r:.80}"
        raise CompletionsError(f"{head}; its id is that of the registered problem {reg[pid]['problem']!r:.80}, but "
                               f"the file has {said}, so the registry's answer may belong to another problem; {fix}, "
                               "or the prompt when it is the registered problem")
    return str(reg[pid].get("answer", ""))


def _registry(bench: str, folder, cache: dict, head: str, fix: str) -> dict:
    """``{id: record}`` of a registered benchmark (the profile's ``benchmark_folder``, else the
    shared offline copies, else the hub), loaded once."""
    if bench not in cache:
        folder = folder or default_folder()
        try:
            recs = load_benchmark(bench, source="folder" if folder else "hub", folder=folder)
        except (OSError, ValueError, RuntimeError) as e:
            raise CompletionsError(f"{head}, and benchmark {bench!r} could not be loaded to look it up "
                                   f"({e}); {fix}") from None
        cache[bench] = {str(r["id"]): r for r in recs}
    return cache[bench]


def problems_from_profile(profile: dict, limit: int | None = None, progress: bool = True):
    """The data stage for ``task: completions``: the problems of every imported variant's files.

    ``limit`` keeps the first N problems of each benchmark (in file order).
    """
    tables = {}
    specs = [(f, v) for f, v, spec in C.variant_specs(profile) if "completions" in spec]
    if not specs:
        raise CompletionsError(f"profile {profile.get('name')!r}: stages.data.task is 'completions' but no variant "
                               "names 'completions:'; fix: add completions files to the variants, or use task "
                               "'benchmarks' / 'navigation'")
    for fam, v in progress_bar(specs, desc="read completions", unit="variant", disable=not progress):
        files = C.completion_files(profile, fam, v)
        check_files(files, f"{fam}/{v}")
        tables[f"{fam}/{v}"] = read_variant(files, family=fam, variant=v)
        log.info("read %s/%s: %d completions of %d problems", fam, v, len(tables[f"{fam}/{v}"]),
                 tables[f"{fam}/{v}"].groupby(["benchmark", "problem"]).ngroups)
    probs = problems_table(tables, profile.get("benchmark_folder"))
    if limit:
        probs = probs.groupby("benchmark", sort=False).head(int(limit)).reset_index(drop=True)
    return probs


def verifier_name(benchmark: str, default: str = DEFAULT_VERIFIER) -> str:
    """The registered verifier of a benchmark, or ``default`` for benchmarks not registered here
    (e.g. ``amc``, the 83-problem AMC set of the Qwen2.5-Math evaluation).

    >>> verifier_name("humaneval"), verifier_name("amc")
    ('humaneval', 'math')
    """
    return BENCHMARKS[benchmark].verifier if benchmark in BENCHMARKS else default


def _known_problems(t, problems, label: str):
    """The completions of ``t`` whose problem is in ``problems`` (the others are logged); an error
    when there are none."""
    known = pd.MultiIndex.from_arrays([problems["benchmark"], problems["problem"].astype(str)])
    keep = pd.MultiIndex.from_frame(t[["benchmark", "problem"]]).isin(known)
    if not keep.any():
        raise CompletionsError(f"{label}: completions of problems not in the problem table, e.g. "
                               f"{list(dict.fromkeys(zip(t['benchmark'], t['problem'])))[:3]}; fix: rerun the data "
                               "stage (it builds the problems from these files) or correct the ids")
    if not keep.all():
        log.info("%s: %d completion(s) of %d problem(s) not in the problem table left out (stages.data.limit)", label,
                 int((~keep).sum()), t[~keep].groupby(["benchmark", "problem"]).ngroups)
    return t[keep].reset_index(drop=True)


def import_variant(*, family: str, variant: str, files: Mapping[str, Path], problems,
                   verifier: str = DEFAULT_VERIFIER, progress: bool = True):
    """The samples table of one imported variant: its completions verified against ``problems``.

    Columns as sampled ones (``rlsft.schema.SAMPLE_COLUMNS``); ``n_tokens`` is NaN (the files hold
    text, not tokens) and ``finish_reason`` is the file's, else ``"unknown"``. Completions of
    problems not in ``problems`` are left out (the data stage's ``limit``); none in it is an error.
    ``verifier`` judges the answers to benchmarks that are not
    registered (registered ones use their own, :func:`verifier_name`).
    """
    t = _known_problems(read_variant(files, family=family, variant=variant), problems, f"{family}/{variant}")
    prob = {(r["benchmark"], str(r["problem"])): r for r in problems.to_dict("records")}
    recs = []
    it = progress_bar(t.itertuples(index=False), total=len(t), desc=f"verify {family}/{variant}", disable=not progress)
    for r in it:
        row = prob[(r.benchmark, r.problem)]
        fn = get_verifier(verifier_name(r.benchmark, verifier))
        v = verify_record(fn, r.text, verifier_problem(row))
        recs.append({"family": family, "variant": variant, "benchmark": r.benchmark, "problem": r.problem,
                     "sample": int(r.sample), "text": r.text, "n_tokens": float("nan"),
                     "finish_reason": r.finish_reason or "unknown", **v})
    df = pd.DataFrame(recs)
    cols = [c for c in SAMPLE_COLUMNS if c in df.columns] + [c for c in df.columns if c not in SAMPLE_COLUMNS]
    df = df[cols]
    log.info("imported %s/%s: %d completions of %d problems from %d file(s), accuracy %.3f", family, variant,
             len(df), df.groupby(["benchmark", "problem"]).ngroups, len(files), df["correct"].mean())
    return df


# --------------------------------------------------------------------------------------------------
# Balance: the variants of a family on the same problems with the same samples per problem
# --------------------------------------------------------------------------------------------------

BALANCE_MODES = ("subsample", "refuse")
"""What :func:`balance_family` does when the variants of a family differ in problems or in samples
per problem: keep the common problems and the first n samples by sample index, or stop."""

CHECK_COLUMNS = ["family", "variant", "benchmark", "problems", "samples", "samples_per_problem", "problems_kept",
                 "samples_kept", "samples_per_problem_kept", "action"]
"""The columns of the balance report (``samples/imported_checks.csv``)."""


def _span(counts) -> str:
    """``"8"`` or ``"1-4"``: the range of per-problem sample counts.

    >>> _span(pd.Series([4, 1, 4])), _span(pd.Series([8, 8])), _span(pd.Series([], dtype=int))
    ('1-4', '8', '0')
    """
    if not len(counts):
        return "0"
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _counts(df) -> pd.Series:
    """Samples per (benchmark, problem)."""
    return df.groupby(["benchmark", "problem"], sort=False).size()


def _refuse_unbalanced(family: str, counts: Mapping[str, pd.Series], common, n_min) -> None:
    """The error of ``imported_balance: refuse``: the counts that differ between the variants."""
    per = {v: f"{len(c)} problems, {_span(c)} sample(s) per problem" for v, c in counts.items()}
    if any(len(c) != len(common) for c in counts.values()):
        raise CompletionsError(f"family {family!r}: the variants hold different problems ({per}; {len(common)} in "
                               "common); fix: give every variant completions of the same problems, or set "
                               "stages.samples.imported_balance: subsample (keeps the common problems)")
    if any((c.loc[common] != n_min).any() for c in counts.values()):
        raise CompletionsError(f"family {family!r}: the variants hold different numbers of samples per problem "
                               f"({per}); fix: give every variant the same number per problem, or set "
                               "stages.samples.imported_balance: subsample (keeps the first n by sample index)")


def _keep(df, common, n_min):
    """The rows of ``df`` on the ``common`` problems, the first ``n_min[problem]`` by sample index."""
    key = pd.MultiIndex.from_frame(df[["benchmark", "problem"]])
    on = key.isin(common)
    rank = df["sample"].groupby([df["benchmark"], df["problem"]]).rank(method="first")
    limit = pd.Series(n_min.reindex(key).to_numpy(), index=df.index)
    return df[on & (rank <= limit)].reset_index(drop=True)


def _check_rows(family: str, variant: str, before, after) -> list[dict]:
    """The balance report's rows of one variant, one per benchmark."""
    rows = []
    for bench, c in before.groupby(level=0, sort=False):
        k = after[after.index.get_level_values(0) == bench] if len(after) else after
        dropped, cut = len(c) - len(k), int(c.loc[k.index].sum()) - int(k.sum())
        action = "; ".join(filter(None, [
            f"dropped {dropped} problem(s) not in every variant of {family}" if dropped else "",
            f"subsampled to the first {_span(k)} sample(s) per problem by sample index ({cut} dropped)" if cut else ""]))
        rows.append({"family": family, "variant": variant, "benchmark": bench, "problems": len(c),
                     "samples": int(c.sum()), "samples_per_problem": _span(c), "problems_kept": len(k),
                     "samples_kept": int(k.sum()), "samples_per_problem_kept": _span(k), "action": action or "kept as is"})
    return rows


def balance_family(family: str, tables: Mapping[str, Any], mode: str = "subsample"):
    """``(tables, report)``: the variants of one family on the problems they share, each problem with
    the same number of samples in every variant (the fewest any variant has; the first by sample
    index). ``tables``: ``{variant: samples table}`` (benchmark, problem, sample, ...); ``mode``
    ``"refuse"`` raises :class:`CompletionsError` with the counts instead. ``report``: one row per
    variant and benchmark (``CHECK_COLUMNS``): problems and samples before and after, and what was done.

    >>> t = lambda probs, m: pd.DataFrame([{"benchmark": "b", "problem": p, "sample": s} for p in probs for s in range(m)])
    >>> out, rep = balance_family("f", {"Base": t("0123", 4), "RL": t("2345", 1)})
    >>> [len(out["Base"]), len(out["RL"])], sorted(set(out["Base"]["problem"])), int(out["Base"]["sample"].max())
    ([2, 2], ['2', '3'], 0)
    >>> rep[["variant", "problems", "samples_per_problem", "problems_kept", "samples_kept"]].values.tolist()
    [['Base', 4, '4', 2, 2], ['RL', 4, '1', 2, 2]]
    >>> balance_family("f", {"Base": t("01", 2), "RL": t("01", 1)}, mode="refuse")
    Traceback (most recent call last):
    ...
    rlsft.completions.CompletionsError: family 'f': the variants hold different numbers of samples per problem ({'Base': '2 problems, 2 sample(s) per problem', 'RL': '2 problems, 1 sample(s) per problem'}); fix: give every variant the same number per problem, or set stages.samples.imported_balance: subsample (keeps the first n by sample index)
    """
    if mode not in BALANCE_MODES:
        raise CompletionsError(f"imported_balance must be one of {BALANCE_MODES}, got {mode!r}")
    counts = {v: _counts(df) for v, df in tables.items()}
    common = None
    for c in counts.values():
        common = c.index if common is None else common.intersection(c.index, sort=False)
    n_min = pd.concat([c.reindex(common) for c in counts.values()], axis=1).min(axis=1).astype(int)
    if mode == "refuse":
        _refuse_unbalanced(family, counts, common, n_min)
    out = {v: _keep(df, common, n_min) for v, df in tables.items()}
    report = pd.DataFrame([r for v in tables for r in _check_rows(family, v, counts[v], _counts(out[v]))],
                          columns=CHECK_COLUMNS)
    changed = report[report["action"] != "kept as is"]
    for r in changed.itertuples():
        log.warning("%s/%s/%s: %s (problems %d -> %d, samples %d -> %d)", family, r.variant, r.benchmark, r.action,
                    r.problems, r.problems_kept, r.samples, r.samples_kept)
    return out, report


__all__ = ("CompletionsError", "completion_files", "check_files", "fingerprint", "read_completions",
           "read_variant", "table_from_records", "problems_table", "problems_from_profile", "prompt_matches",
           "verifier_name", "import_variant", "balance_family", "BALANCE_MODES", "CHECK_COLUMNS")
