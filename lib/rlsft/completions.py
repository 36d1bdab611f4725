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
``target``, ``ground_truth``, ``gt``) and ``finish_reason`` / ``stop_reason``. Gold answers missing
from the file are taken from the registered benchmark of the same name by problem id.

Bad files are errors that name the file, the row and the fix (:class:`CompletionsError`).

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
from rlsft.benchmarks import BENCHMARKS, load_benchmark, normalise_answer
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
SUFFIXES = C.COMPLETION_SUFFIXES
COLUMNS = ["benchmark", "problem", "prompt", "answer", "sample", "text", "finish_reason"]
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


def _records(path: Path) -> list[dict]:
    """The rows of a file as dicts (JSON lines, JSON list or a JSON object holding one list, parquet)."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_dict("records")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise CompletionsError(f"{path}, line {i}: not valid JSON ({e.msg}); fix: one JSON object per line") from None
        return rows
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompletionsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); "
                               "fix: a JSON list of rows, or an object with one list of rows") from None
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


def _our_table(rows: list[dict]) -> bool:
    return bool(rows) and all(k in rows[0] for k in ("problem", "sample", "text"))


def table_from_records(rows: list[dict], source: str, benchmark: str = "", family: str | None = None,
                       variant: str | None = None):
    """One row per completion: benchmark, problem, prompt, answer, sample, text, finish_reason.

    ``problem`` is a string id; ``sample`` numbers the completions of a problem from 0 in file
    order. ``prompt`` / ``answer`` are None where the file has none.
    """
    if not rows:
        raise CompletionsError(f"{source}: no rows; fix: point the profile at a file with completions")
    out = []
    if _our_table(rows):
        rows = _select(rows, source, family, variant)
        for i, r in enumerate(rows):
            where = f"{source}, row {i + 1}"
            if not isinstance(r.get("text"), str):
                raise CompletionsError(f"{where}: 'text' must be a string, got {r.get('text')!r:.60}")
            out.append({"benchmark": str(r.get("benchmark") or benchmark), "problem": str(r["problem"]),
                        "prompt": r.get("prompt"), "answer": _answer(r, where), "sample": int(r["sample"]),
                        "text": r["text"], "finish_reason": r.get("finish_reason")})
    else:
        counters: dict = {}
        for i, r in enumerate(rows):
            where = f"{source}, row {i + 1}"
            if not isinstance(r, Mapping):
                raise CompletionsError(f"{where}: expected an object, got {type(r).__name__}")
            lk, tk = _first(r, LIST_KEYS), _first(r, TEXT_KEYS)
            if lk is not None and not (tk is not None and isinstance(r[lk], str)):
                texts = _flat_texts(r[lk], f"{where}, {lk!r}")
            elif tk is not None:
                if not isinstance(r[tk], str):
                    raise CompletionsError(f"{where}: {tk!r} must be a string, got {r[tk]!r:.60}")
                texts = [r[tk]]
            else:
                raise CompletionsError(
                    f"{where}: no completion text; looked for one of {list(TEXT_KEYS)} (one row per sample) "
                    f"or {list(LIST_KEYS)} (one row per problem); keys present: {sorted(r)[:12]}. "
                    "Fix: rename the field holding the completions")
            ik, pk = _first(r, ID_KEYS), _first(r, PROMPT_KEYS)
            prompt = r[pk] if pk and isinstance(r[pk], str) else None
            if ik is not None:
                pid = str(r[ik])
            elif prompt is not None:
                pid = None  # numbered below by first appearance of the prompt
            elif lk is not None:
                pid = str(i)  # one row per problem: the row order is the problem order
            else:
                raise CompletionsError(f"{where}: one row per sample needs a problem id (one of {list(ID_KEYS)}) "
                                       f"or the prompt (one of {list(PROMPT_KEYS)}) to group samples; add one")
            bench = str(r.get("benchmark") or benchmark)
            fk = _first(r, FINISH_KEYS)
            for t in texts:
                out.append({"benchmark": bench, "problem": pid, "prompt": prompt, "answer": _answer(r, where),
                            "sample": None, "text": t, "finish_reason": str(r[fk]) if fk else None,
                            "_row": i + 1})
        # problems without an id: numbered by first appearance of their prompt
        by_prompt: dict = {}
        for o in out:
            if o["problem"] is None:
                o["problem"] = by_prompt.setdefault((o["benchmark"], o["prompt"]), str(len(by_prompt)))
        for o in out:
            key = (o["benchmark"], o["problem"])
            o["sample"] = counters.get(key, 0)
            counters[key] = o["sample"] + 1
    df = pd.DataFrame(out)
    if not benchmark and (df["benchmark"] == "").any():
        df.loc[df["benchmark"] == "", "benchmark"] = Path(source).stem
    _check_consistent(df, source)
    return df[COLUMNS].reset_index(drop=True)


def _select(rows: list[dict], source: str, family: str | None, variant: str | None) -> list[dict]:
    """Rows of our samples table that belong to this variant (when the table holds several)."""
    for col, want in (("variant", variant), ("family", family)):
        vals = sorted({str(r.get(col)) for r in rows if r.get(col) is not None})
        if len(vals) > 1:
            if want not in vals:
                raise CompletionsError(f"{source}: holds {col}s {vals} but not {want!r}; fix: give a file "
                                       f"with one {col}, or name the {col} {want!r} in it")
            rows = [r for r in rows if str(r.get(col)) == want]
    dup = len({(r.get("benchmark"), str(r["problem"]), int(r["sample"])) for r in rows}) != len(rows)
    if dup:
        raise CompletionsError(f"{source}: (benchmark, problem, sample) repeats; fix: one row per sample")
    return rows


def _check_consistent(df, source: str) -> None:
    for col in ("prompt", "answer"):
        n = df.dropna(subset=[col]).groupby(["benchmark", "problem"])[col].nunique()
        bad = n[n > 1]
        if len(bad):
            b, p = bad.index[0]
            rows = df[(df["benchmark"] == b) & (df["problem"] == p)]
            hint = f" (rows {sorted(set(rows['_row']))[:5]})" if "_row" in rows else ""
            raise CompletionsError(f"{source}: problem {p!r} of {b!r} has {bad.iloc[0]} different {col}s{hint}; "
                                   "fix: give each problem a unique id")


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
    must agree across variants where given; a gold answer missing from every file is taken from
    the registered benchmark of that name (by problem id, e.g. ``aime24-01``). Columns: benchmark,
    problem, prompt, answer, meta (``rlsft.schema.BENCHMARK_PROBLEM_COLUMNS``, as the data stage
    writes for the paper's benchmarks; ``meta`` is empty).
    """
    if not tables:
        raise CompletionsError("no variant imports completions; nothing to build problems from")
    allt = pd.concat([t.assign(_src=label) for label, t in tables.items()], ignore_index=True)
    rows = []
    for (bench, pid), g in allt.groupby(["benchmark", "problem"], sort=False):
        rec = {"benchmark": bench, "problem": pid}
        for col in ("prompt", "answer"):
            vals = g.dropna(subset=[col]).groupby(col)["_src"].first()
            if len(vals) > 1:
                raise CompletionsError(f"problem {pid!r} of {bench!r}: the {col} differs between "
                                       f"{sorted(set(vals.tolist()))}; the files are not aligned. Fix: give "
                                       "problem ids that mean the same problem in every file")
            rec[col] = vals.index[0] if len(vals) else None
        rows.append(rec)
    probs = pd.DataFrame(rows)
    missing = probs["answer"].isna()
    if missing.any():
        probs.loc[missing, "answer"] = _gold_from_benchmarks(probs[missing], benchmark_folder)
    probs["prompt"] = probs["prompt"].fillna("")
    probs["meta"] = "{}"
    return probs[list(BENCHMARK_PROBLEM_COLUMNS)]


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


def _gold_from_benchmarks(probs, folder) -> list[str]:
    out = []
    cache: dict = {}
    for bench, pid in zip(probs["benchmark"], probs["problem"]):
        if bench not in BENCHMARKS:
            raise CompletionsError(f"problem {pid!r} of {bench!r}: no gold answer in the completions file and "
                                   f"{bench!r} is not a registered benchmark; fix: add an 'answer' field per row")
        if bench not in cache:
            cache[bench] = {str(r["id"]): r for r in load_benchmark(bench, source="folder" if folder else "hub",
                                                                      folder=folder)}
        if pid not in cache[bench]:
            raise CompletionsError(f"problem {pid!r}: not an id of benchmark {bench!r} (ids like "
                                   f"{next(iter(cache[bench]))!r}); fix: add an 'answer' field per row")
        out.append(str(cache[bench][pid].get("answer", "")))
    return out


def verifier_name(benchmark: str, default: str = DEFAULT_VERIFIER) -> str:
    """The registered verifier of a benchmark, or ``default`` for benchmarks not registered here
    (e.g. ``amc``, the 83-problem AMC set of the Qwen2.5-Math evaluation).

    >>> verifier_name("humaneval"), verifier_name("amc")
    ('humaneval', 'math')
    """
    return BENCHMARKS[benchmark].verifier if benchmark in BENCHMARKS else default


def import_variant(*, family: str, variant: str, files: Mapping[str, Path], problems,
                   verifier: str = DEFAULT_VERIFIER, progress: bool = True):
    """The samples table of one imported variant: its completions verified against ``problems``.

    Columns as sampled ones (``rlsft.schema.SAMPLE_COLUMNS``); ``n_tokens`` is NaN (the files hold
    text, not tokens) and ``finish_reason`` is the file's, else ``"unknown"``. Every completion's
    problem must be in ``problems``. ``verifier`` judges the answers to benchmarks that are not
    registered (registered ones use their own, :func:`verifier_name`).
    """
    t = read_variant(files, family=family, variant=variant)
    known = set(zip(problems["benchmark"], problems["problem"].astype(str)))
    unknown = [k for k in dict.fromkeys(zip(t["benchmark"], t["problem"])) if k not in known]
    if unknown:
        raise CompletionsError(f"{family}/{variant}: completions of problems not in the problem table, e.g. "
                               f"{unknown[:3]}; fix: rerun the data stage (it builds the problems from "
                               "these files) or correct the ids")
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


__all__ = ("CompletionsError", "completion_files", "check_files", "fingerprint", "read_completions",
           "read_variant", "table_from_records", "problems_table", "problems_from_profile", "verifier_name", "import_variant")
