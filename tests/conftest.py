"""Shared pytest setup: make `utils` importable from the repository root; the exported student."""

import sys
from pathlib import Path

import pytest

# utils/ is deliberately not installed (see pyproject.toml), so tests import it from the root.
REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The small exported student of tests/exported_student.py (built once per session)."""
    from tests.exported_student import exported_run

    return exported_run(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run):
    """A ``Predictor`` on that export."""
    from utils.export import Predictor

    return Predictor.from_pretrained(run["out"])


# `make test-record` sets DSS_TEST_RECORD: a whole-suite run that passes writes its time, counts and
# machine there (docs/executed/test_suite.json), the record the README's `make test` time is tied to.
_SUITE_STARTED: list[float] = []


def pytest_sessionstart(session):
    import time

    _SUITE_STARTED.append(time.monotonic())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    import os

    target = os.environ.get("DSS_TEST_RECORD")
    if not target or not _SUITE_STARTED:
        return
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS or exitstatus != 0:
        terminalreporter.write_line(f"DSS_TEST_RECORD: not written ({target}): only a whole-suite run that "
                                    "passes is a record (no paths, no -k, no failures)")
        return
    if config.getoption("keyword") or config.getoption("markexpr"):
        terminalreporter.write_line(f"DSS_TEST_RECORD: not written ({target}): -k or -m selected a part of the suite")
        return
    import json
    import time
    from datetime import datetime, timezone

    from utils.config import atomic_write_json, machine_info

    counts = {key: sum(1 for r in terminalreporter.stats.get(key, []) if getattr(r, "count_towards_summary", True))
              for key in ("passed", "skipped", "xfailed", "failed", "error")}
    record = {"seconds": round(time.monotonic() - _SUITE_STARTED[0], 1), **counts, "machine": machine_info(),
              "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": "make test-record"}
    atomic_write_json(Path(target), record)
    terminalreporter.write_line(f"DSS_TEST_RECORD: {json.dumps({k: record[k] for k in ('seconds', *counts)})} -> {target}")
