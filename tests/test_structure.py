"""The package's shape: imports in utils/ point one way (no module imports one that imports it back,
function-level imports included), and the torch-free modules stay torch-free."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parent.parent / "utils"


def import_graph() -> dict[str, set[str]]:
    """Module -> the utils modules it imports anywhere in its source (top level or inside functions)."""
    modules = {p.stem: p for p in UTILS.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.level == 1:
                    deps.add(node.module.split(".")[0])
                elif node.module.startswith("utils."):
                    deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("utils."))
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, found by depth-first search (each reported once, from its smallest name)."""
    found = []

    def visit(start, node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.append(path + [start])
            elif nxt not in path and nxt > start:
                visit(start, nxt, path + [nxt])

    for start in sorted(graph):
        visit(start, start, [start])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_utils_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles in utils/: " + "; ".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("module", ["prompting", "report", "export", "serve", "stats", "metrics", "tasks"])
def test_torch_free_modules_do_not_import_torch_or_the_trainer(module):
    code = (f"import sys, utils.{module}; bad = [m for m in ('torch', 'utils.student') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=UTILS.parent).stdout.strip()
    assert out == "", f"utils.{module} imports {out}"
