"""Loading a task's examples: the bundled ``arith`` files, or a paper task from the authors' files or
the Hugging Face Hub (``utils.paper_data``). Above both ``tasks`` (the registry) and ``paper_data``,
so that neither imports the other back."""

from __future__ import annotations

from pathlib import Path

from utils.paper_data import load_hub_split, read_paper_split
from utils.tasks import REGENERATE_HINT, Task, read_jsonl, resolve_task


def _repo_root() -> Path:
    """The repository root: the folder that holds the `utils` package."""
    return Path(__file__).resolve().parent.parent


def load_task(name: Task | str, split: str, limit: int | None = None, data_dir: str | Path | None = None) -> list[dict]:
    """Load split `split` of task `name` (a `Task` or its name) as a list of dicts.

    `arith` ("train" or "test") is read from `data/arith/<split>.jsonl` in the repository, or from
    `data_dir` (the folder holding the `.jsonl` files) when given. A paper task (`svamp`, `cqa`,
    `esnli`, `anli1`; splits in `get_task(name).splits`) is read from `data_dir` when given, in the
    authors' released layout (`<data_dir>/<name>/<name>_<split>.json`, see
    `utils.paper_data.read_paper_split`), else downloaded from the Hugging Face Hub
    (`get_task(name).hub_id`); offline, that raises `HubUnavailableError` saying what to do.
    `limit` keeps the first rows only.
    """
    task = resolve_task(name)
    split = task.canonical_split(split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    if task.paper:
        rows = read_paper_split(data_dir, task, split) if data_dir is not None else load_hub_split(task, split)
        return rows if limit is None else rows[:limit]
    folder = Path(data_dir) if data_dir is not None else _repo_root() / "data" / task.name
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Regenerate the data from the repository root with: {REGENERATE_HINT}"
        )
    return read_jsonl(path, limit)


def count_ops(equation: str) -> int:
    """How many arithmetic operations an equation label has (a unary minus counts too)."""
    return sum(equation.count(op) for op in "+-*/")


def select_examples(name: Task | str, split: str, n: int | None = None, max_ops: int | None = None) -> list[dict]:
    """The first ``n`` examples of a split, keeping only labels with at most ``max_ops`` operations.

    The bundled teacher is weak; the ``tiny`` profile keeps one-operation problems so that
    its rationales are right often enough to learn from.
    """
    task = resolve_task(name)
    examples = load_task(task, split)
    if max_ops is not None:
        examples = [ex for ex in examples if count_ops(str(ex[task.label_field])) <= max_ops]
    return examples[:n] if n else examples
