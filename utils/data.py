"""Teacher records become a Hugging Face ``DatasetDict`` the student trains on.

Columns: ``id, input, label, teacher_label, rationale, teacher_correct``. ``label`` is the gold
label, ``teacher_label`` the teacher's voted answer, ``rationale`` the teacher rationale kept by
the policy (empty when none is kept, so that row trains the label task only).
"""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = ("id", "input", "label", "teacher_label", "rationale", "teacher_correct")
POLICIES = {
    "all": "every parsed rationale that agrees with the teacher's vote, right or wrong",
    "correct": "only rationales whose answer equals the gold label (rejection sampling)",
    "gold": "like 'correct', and the teacher label replaced by the gold one",
}


def build_rationale_dataset(records: list[dict], task: str, policy: str = "correct",
                            test_examples: list[dict] | None = None, label_field: str = "equation"):
    """A ``DatasetDict`` with a ``train`` split from teacher records and, if given, a ``test`` split.

    ``policy`` picks which rationales are kept (see ``POLICIES``); kept counts are in
    ``dataset["train"].info.description`` and returned by ``policy_counts``.
    """
    from datasets import Dataset, DatasetDict

    if policy not in POLICIES:
        raise ValueError(f"Unknown rationale policy {policy!r}. Valid policies: {', '.join(POLICIES)}.")
    needed = ("id", "input", "gold", "teacher_label", "rationale")
    rows = []
    for index, record in enumerate(records):
        missing = [k for k in needed if k not in record]
        if missing:
            raise ValueError(f"Teacher record {index} lacks the field(s) {missing}; records come from "
                             "utils.teacher.generate_rationales.")
        correct = bool(record.get("teacher_correct", False))
        if policy == "all":
            rationale = record["rationale"] if record["teacher_label"] is not None else ""
        else:
            rationale = record.get("correct_rationale") or ""
        teacher_label = record["gold"] if policy == "gold" else record["teacher_label"]
        rows.append({"id": str(record["id"]), "input": record["input"], "label": str(record["gold"]),
                     "teacher_label": teacher_label or "", "rationale": rationale.strip(),
                     "teacher_correct": correct})
    splits = {"train": Dataset.from_list(rows)}
    if test_examples:
        splits["test"] = Dataset.from_list([
            {"id": str(ex["id"]), "input": ex["input"], "label": str(ex[label_field]), "teacher_label": "",
             "rationale": "", "teacher_correct": False} for ex in test_examples])
    return DatasetDict(splits)


def policy_counts(records: list[dict]) -> dict[str, int]:
    """How many training rows get a rationale under each policy."""
    return {
        "examples": len(records),
        "all": sum(1 for r in records if r["teacher_label"] is not None and r["rationale"]),
        "correct": sum(1 for r in records if r.get("correct_rationale")),
        "gold": sum(1 for r in records if r.get("correct_rationale")),
    }


def check_columns(dataset, needed=COLUMNS) -> None:
    """Raise a clear error naming any column the student needs that the dataset lacks."""
    for split, part in dataset.items():
        missing = [c for c in needed if c not in part.column_names]
        if missing:
            raise ValueError(f"Split {split!r} lacks the column(s) {missing}; it has {part.column_names}. "
                             "Build it with utils.data.build_rationale_dataset.")


def save_dataset(dataset, run_dir: str | Path, info: dict | None = None) -> Path:
    """Save under ``run_dir/dataset`` with a small JSON card beside it."""
    out = Path(run_dir) / "dataset"
    dataset.save_to_disk(str(out))
    card = {"splits": {k: len(v) for k, v in dataset.items()}, **(info or {})}
    (out / "card.json").write_text(json.dumps(card, indent=2))
    return out


def load_dataset_from_run(run_dir: str | Path):
    """Load what ``save_dataset`` wrote."""
    from datasets import load_from_disk

    path = Path(run_dir) / "dataset"
    if not path.exists():
        raise FileNotFoundError(f"No dataset at {path}: run notebook 02 (or `python -m utils dataset`) first.")
    return load_from_disk(str(path))
