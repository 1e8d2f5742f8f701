"""The real-part markers of conftest.py: what a test's code uses marks it, and a test that
starts a process unmarked fails instead of slipping into `scripts/test.sh --quick`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import _Reader
from support import ROOT, edge_agent


def _spawns_through_a_helper() -> None:
    edge_agent("--help")


def _loads_a_model_through_edge() -> None:
    from edge.stt import recognizer

    recognizer.SpeechModel(Path("/nonexistent"))


def _pure() -> int:
    from edge.durations import parse_duration

    return int(parse_duration("1s").total_seconds())


def test_code_is_marked_by_what_it_reaches():
    roots = [_spawns_through_a_helper, _loads_a_model_through_edge, _pure]
    solved = _Reader().solve(list(roots))
    assert [solved[id(root)] for root in roots] == [{"subprocess"}, {"model"}, set()]


UNSEEN = """
import importlib


def test_starts_a_process_the_reading_cannot_see():
    run = getattr(importlib.import_module("sub" + "process"), "run")
    run(["true"], check=True)


def test_pure():
    assert 1 + 1 == 2
"""


def test_a_process_started_by_an_unmarked_test_fails_it(tmp_path):
    """The run-time half: a test the reading misses (a dispatch by name) fails, named, in
    every run; --quick leaves out only what is marked."""
    (tmp_path / "test_unseen.py").write_text(UNSEEN, encoding="utf-8")
    for quick in ([], ["--quick"]):
        ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", *quick, str(tmp_path / "test_unseen.py")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT / "tests"), "PATH": "/usr/bin:/bin"},
            timeout=300,
        )
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert "1 failed, 1 passed" in ran.stdout, ran.stdout
        assert "test_starts_a_process_the_reading_cannot_see has no real-part marker but started a process" in ran.stdout
