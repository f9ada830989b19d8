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
