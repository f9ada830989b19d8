"""utils/arith_data.py: the synthetic arith generator and the committed data it wrote."""

import json
from pathlib import Path

import pytest

from utils.arith_data import generate_arith, write_arith_data
from utils.safe_math import safe_eval

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "arith"


def _read(split: str) -> list[dict]:
    """The committed rows of one split."""
    with (DATA_DIR / f"{split}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _n_ops(equation: str) -> int:
    """How many operators an equation has."""
    return sum(token in "+-*/" for token in equation.split())


# --- generator ---------------------------------------------------------------------------------


def test_generator_is_deterministic():
    assert generate_arith(50, seed=7) == generate_arith(50, seed=7)
    assert generate_arith(50, seed=7) != generate_arith(50, seed=8)


def test_generator_items_are_well_formed():
    items = generate_arith(200, seed=1, split="test")
    assert [item["id"] for item in items[:2]] == ["arith-test-0000", "arith-test-0001"]
    for item in items:
        assert list(item) == ["id", "input", "equation", "answer"]
        assert isinstance(item["input"], str) and isinstance(item["equation"], str)
        assert type(item["answer"]) is int and item["answer"] > 0
        assert safe_eval(item["equation"]) == item["answer"]
    assert len({item["input"] for item in items}) == len(items)


def test_generator_respects_exclude():
    first = generate_arith(30, seed=3)
    again = generate_arith(30, seed=3, exclude={item["input"] for item in first})
    assert not {item["input"] for item in first} & {item["input"] for item in again}


def test_generator_rejects_negative_n():
    with pytest.raises(ValueError):
        generate_arith(-1, seed=0)


# --- committed data ----------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_committed_rows_are_consistent(split):
    rows = _read(split)
    assert len(rows) == {"train": 2000, "test": 300}[split]
    for index, row in enumerate(rows):
        assert list(row) == ["id", "input", "equation", "answer"]
        assert row["id"] == f"arith-{split}-{index:04d}"
        assert type(row["answer"]) is int and row["answer"] > 0
        assert safe_eval(row["equation"]) == row["answer"], row
        # SVAMP spacing: every token separated by one space.
        assert row["equation"] == " ".join(row["equation"].split())
        assert all(token in "()+-*/" or token.isdigit() for token in row["equation"].split())
    assert len({row["input"] for row in rows}) == len(rows)


def test_committed_splits_do_not_overlap():
    train_inputs = {row["input"] for row in _read("train")}
    assert not train_inputs & {row["input"] for row in _read("test")}


def test_committed_files_match_documented_regeneration(tmp_path):
    # The data card documents this exact call; a hand edit to the files would break this test.
    paths = write_arith_data(tmp_path, n_train=2000, n_test=300, seed=123)
    for split, path in paths.items():
        assert path.read_bytes() == (DATA_DIR / f"{split}.jsonl").read_bytes(), split


def test_committed_data_mixes_shapes_and_phrasings():
    rows = _read("train")
    ops = [_n_ops(row["equation"]) for row in rows]
    assert 0.5 < ops.count(1) / len(rows) < 0.7
    assert ops.count(2) > 0 and set(ops) == {1, 2}
    for op in "+-*/":
        assert any(f" {op} " in row["equation"] for row in rows)
    question_first = [row for row in rows if row["input"].startswith("How")]
    assert len(question_first) > len(rows) / 10
    assert any(not row["input"].endswith("?") for row in question_first)
    assert any(" if " in row["input"] and row["input"].startswith("How") for row in rows)
