"""Tests for utils/tasks.py: the arith generator, its committed data, safe_eval and the metric."""

import json
from pathlib import Path

import pytest

from utils.tasks import (
    TASK_NAMES,
    TaskSpec,
    UnsafeExpression,
    answers_match,
    equation_accuracy,
    generate_arith,
    get_task,
    load_task,
    safe_eval,
    write_arith_data,
)

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


# --- safe_eval ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("( 24 - 9 )", 15),
        ("( ( 24 - 9 ) * 3 )", 45),
        ("( 84.0 / 2.0 )", 42),
        ("( 7 - ( 2 + 3 ) )", 2),
        ("-3 + 5", 2),
        ("-(2 * 3)", -6),
        ("+4", 4),
        ("((((1 + 2))))", 3),
        ("1 / 3", 1 / 3),
        ("0.5 * 4", 2),
        ("10 / 4", 2.5),
        ("42", 42),
    ],
)
def test_safe_eval_valid(expr, value):
    result = safe_eval(expr)
    assert isinstance(result, float)
    assert result == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('id')",
        "2**99999999",
        "9**9**9",
        "(1).__class__",
        "[1,2]",
        "lambda: 1",
        "a + 1",
        "1 if 1 else 2",
        '"a" * 5',
        "True + 1",
        "1e400",
        "1" + "+1" * 5000,
        "(" * 5000 + "1" + ")" * 5000,
        "(" * 25 + "1" + ")" * 25,
        "-" * 50 + "1",
        "1/0",
        "1 / (2 - 2)",
        "10000000000000",
        "999999999999 * 999999999999 * 999999999999",
        "2 % 3",
        "7 // 2",
        "1 < 2",
        "not 1",
        "~1",
        "1j",
        "",
        " ",
        " 1 + 2",
        "1 + 2\n",
        "1 +",
        "1 = 1",
        "x\x00",
        "The answer is 5",
        "( 24 - 9 ).",
    ],
)
def test_safe_eval_rejects(expr):
    with pytest.raises(UnsafeExpression):
        safe_eval(expr)


def test_safe_eval_rejects_non_strings():
    with pytest.raises(UnsafeExpression):
        safe_eval(5)  # type: ignore[arg-type]


def test_unsafe_expression_is_a_value_error_with_a_clear_message():
    assert issubclass(UnsafeExpression, ValueError)
    with pytest.raises(UnsafeExpression, match="division by zero"):
        safe_eval("1/0")
    with pytest.raises(UnsafeExpression, match="Pow"):
        safe_eval("2 ** 3")
    with pytest.raises(UnsafeExpression, match="Call"):
        safe_eval("__import__('os').system('id')")
    with pytest.raises(UnsafeExpression, match="characters long"):
        safe_eval("1+" * 200 + "1")


# --- answers_match and equation_accuracy -------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("( 24 - 9 )", 15, True),
        ("( 9 + 6 )", "( 24 - 9 )", True),
        (15, "( 24 - 9 )", True),
        (15.0, 15, True),
        ("15", 15, True),
        ("  ( 24 - 9 ) ", 15, True),
        ("( 84.0 / 2.0 )", "( 84 / 2 )", True),
        ("1 / 3", 0.3333, True),
        (15.00001, 15, True),
        (15.01, 15, False),
        ("( 24 + 9 )", 15, False),
        (None, 15, False),
        ("", 15, False),
        ("The answer is 15.", 15, False),
        ("15.", 15, True),
        ("fifteen", 15, False),
        ("__import__('os').system('id')", 15, False),
        ("9**9**9", 15, False),
        ("1/0", 15, False),
        ("(" * 5000, 15, False),
        (True, 1, False),
        (float("nan"), 15, False),
        (float("inf"), 15, False),
    ],
)
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected


def test_answers_match_tolerance_is_adjustable():
    assert answers_match(15.5, 15, tol=0.1)
    assert not answers_match(15.5, 15, tol=0.01)


def test_answers_match_rejects_a_gold_without_value():
    with pytest.raises(ValueError, match="gold"):
        answers_match("15", "not an equation")


def test_equation_accuracy():
    preds = ["( 2 + 3 )", "5", None, "garbage"]
    golds = ["( 1 + 4 )", 5, 5, 5]
    assert equation_accuracy(preds, golds) == 0.5
    with pytest.raises(ValueError):
        equation_accuracy(["1"], [1, 2])
    with pytest.raises(ValueError):
        equation_accuracy([], [])


# --- load_task and get_task --------------------------------------------------------------------


def test_load_task_reads_committed_data():
    rows = load_task("arith", "test", limit=5)
    assert [row["id"] for row in rows] == [f"arith-test-{i:04d}" for i in range(5)]
    assert len(load_task("arith", "train")) == 2000
    assert load_task("arith", "train", limit=0) == []


def test_load_task_from_data_dir(tmp_path):
    write_arith_data(tmp_path, n_train=4, n_test=3, seed=5)
    assert len(load_task("arith", "train", data_dir=tmp_path)) == 4
    assert len(load_task("arith", "test", data_dir=str(tmp_path))) == 3


def test_load_task_errors(tmp_path):
    with pytest.raises(ValueError, match="arith"):
        load_task("svamp-full", "train")
    with pytest.raises(ValueError, match="train, test"):
        load_task("arith", "validation")
    with pytest.raises(ValueError):
        load_task("arith", "train", limit=-1)
    with pytest.raises(FileNotFoundError, match="write_arith_data"):
        load_task("arith", "train", data_dir=tmp_path)
    (tmp_path / "train.jsonl").write_text('{"id": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.jsonl:2"):
        load_task("arith", "train", data_dir=tmp_path)


def test_get_task():
    assert TASK_NAMES == ("arith",)
    spec = get_task("arith")
    assert isinstance(spec, TaskSpec)
    assert (spec.label_field, spec.metric, spec.answer_prefix) == (
        "equation",
        "equation value",
        "The answer is",
    )
    with pytest.raises(ValueError, match="Valid choices: arith"):
        get_task("nope")
