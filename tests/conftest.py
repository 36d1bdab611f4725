"""Shared fixtures. ``ci_pipeline``: the one end-to-end run of the ci profile (killed during train
or samples and resumed; see tests/ci_pipeline.py), made once per test session in a temporary
results folder and shared by tests/test_runner.py and tests/test_report.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper module tests/ci_pipeline.py

from ci_pipeline import killed_and_resumed_ci_run  # noqa: E402


def pytest_collection_modifyitems(items):
    """Every test that uses the session's whole-pipeline run is slow (CI runs it; ``-m 'not slow'``
    skips it locally)."""
    for item in items:
        if "ci_pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ci_pipeline(tmp_path_factory):
    """The ci profile run to the end (after a kill and a resume) in ``<tmp>/results/ci``; tests
    that change its results work on a copy, except the runner tests, which are written for that."""
    return killed_and_resumed_ci_run(tmp_path_factory.mktemp("ci_pipeline"))
