"""The columns of the pipeline's two core tables, and the problems table's ``meta`` JSON.

- **problems** (``results/<profile>/data/problems.parquet``, written by the data stage): one row
  per problem, ``PROBLEM_COLUMNS`` always; the paper's benchmarks and imported completions add
  ``meta`` (JSON text: every field of the benchmark record besides its id, question and answer,
  e.g. HumanEval's tests), the organism adds ``NAVIGATION_COLUMNS`` (level, start, goal).
- **samples** (``results/<profile>/samples/all_samples.parquet``, written by the samples stage):
  one row per answer, ``SAMPLE_COLUMNS`` in this order.

The benchmark record a verifier receives (``{"id", "problem", "answer", **meta}``, as
:func:`rlsft.benchmarks.load_benchmark` returns it) and the problems table's row are two views of
one problem: :func:`problem_row` writes the row, :func:`verifier_problem` reads it back.

>>> rec = {"id": 7, "problem": "1+1?", "answer": 2, "source": "x"}
>>> row = problem_row("b", rec)
>>> row["meta"], verifier_problem(row)
('{"source": "x"}', {'id': '7', 'problem': '1+1?', 'answer': '2', 'source': 'x'})
"""
from __future__ import annotations

import json
from typing import Mapping

PROBLEM_COLUMNS = ("benchmark", "problem", "prompt", "answer")
"""Columns every problems table has: the benchmark, the problem's id (a string), the question and
the gold answer (a string)."""

BENCHMARK_PROBLEM_COLUMNS = PROBLEM_COLUMNS + ("meta",)
"""The problems table of the paper's benchmarks and of imported completions, in this order."""

NAVIGATION_COLUMNS = ("level", "start", "goal")
"""The organism's own problem columns (after ``PROBLEM_COLUMNS``; see ``rlsft.task.problems_frame``)."""

SAMPLE_COLUMNS = ["family", "variant", "benchmark", "problem", "sample", "text", "n_tokens", "finish_reason",
                  "extracted", "correct", "verify_status"]
"""The samples table's columns, in order (sampled and imported answers alike)."""

RECORD_KEYS = ("id", "problem", "answer")
"""The benchmark record's own fields; every other field goes to ``meta``."""


def write_meta(record: Mapping) -> str:
    """The ``meta`` JSON of a benchmark record: its fields besides ``RECORD_KEYS``, in record order.

    >>> write_meta({"id": "he-0", "problem": "def f", "answer": "", "entry_point": "f", "test": "..."})
    '{"entry_point": "f", "test": "..."}'
    >>> write_meta({"id": 1, "problem": "q", "answer": "a"})
    '{}'
    """
    return json.dumps({k: record[k] for k in record if k not in RECORD_KEYS})


def read_meta(row: Mapping) -> dict:
    """The ``meta`` of a problems-table row as a dict (``{}`` when the row has none or it is empty).

    >>> read_meta({"meta": '{"x": 1}'}), read_meta({"meta": None}), read_meta({})
    ({'x': 1}, {}, {})
    """
    return json.loads(row.get("meta") or "{}")


def problem_row(benchmark: str, record: Mapping) -> dict:
    """A problems-table row (``BENCHMARK_PROBLEM_COLUMNS``) of one benchmark record (what the data
    stage writes for ``task: benchmarks``): the id and answer as strings, the rest in ``meta``."""
    return {"benchmark": benchmark, "problem": str(record["id"]), "prompt": record["problem"],
            "answer": str(record.get("answer", "")), "meta": write_meta(record)}


def verifier_problem(row: Mapping) -> dict:
    """The benchmark record a verifier judges an answer against, from a problems-table row:
    ``{"id", "problem", "answer", **meta}`` (the inverse of :func:`problem_row`)."""
    return {"id": row["problem"], "problem": row["prompt"], "answer": row["answer"], **read_meta(row)}
