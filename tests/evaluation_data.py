"""A small rationale dataset of the bundled arithmetic task, shared by the evaluation and sweep tests."""

from __future__ import annotations


def arith_dataset(n_train: int, n_test: int):
    """``DatasetDict`` with ``train`` (gold equations as teacher labels, a one-line rationale) and ``test``."""
    from datasets import Dataset, DatasetDict

    from utils.loaders import load_task

    def rows(split: str, n: int) -> Dataset:
        out = []
        for ex in load_task("arith", split, n):
            out.append({"id": ex["id"], "input": ex["input"], "label": ex["equation"], "teacher_label": ex["equation"],
                        "rationale": f"We compute {ex['equation']} = {ex['answer']}." if split == "train" else "",
                        "teacher_correct": True})
        return Dataset.from_list(out)

    return DatasetDict({"train": rows("train", n_train), "test": rows("test", n_test)})
