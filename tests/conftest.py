"""Shared pytest setup: make `utils` importable from the repository root."""

import sys
from pathlib import Path

# utils/ is deliberately not installed (see pyproject.toml), so tests import it from the root.
REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
