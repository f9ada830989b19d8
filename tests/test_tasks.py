"""utils/tasks.py: the registry of Task objects, what each task owns, and load_task."""

import pytest

from utils.arith_data import write_arith_data
from utils.loaders import count_ops, load_task, select_examples
from utils.prompting import rationale_with_answer
from utils.rationales import PARSERS, ParsedCoT, parse_cot, parse_cot_detailed
from utils.tasks import (
    ALL_TASK_NAMES,
    CLASSIFICATION,
    EQUATION,
    TASK_NAMES,
    Task,
    get_task,
    resolve_task,
)

# --- load_task ---------------------------------------------------------------------------------


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


def test_select_examples_keeps_short_equations():
    rows = select_examples("arith", "train", n=20, max_ops=1)
    assert len(rows) == 20 and all(count_ops(row["equation"]) == 1 for row in rows)
    assert count_ops("( ( 2 + 3 ) * 4 )") == 2


# --- the Task object -------------------------------------------------------------------------------


def test_get_task():
    assert TASK_NAMES == ("arith",)
    task = get_task("arith")
    assert isinstance(task, Task)
    assert (task.label_field, task.kind, task.answer_prefix, task.answer_ending) == (
        "equation",
        EQUATION,
        "The answer is",
        "The answer is",
    )
    with pytest.raises(ValueError, match="Valid choices: arith"):
        get_task("nope")


def test_resolve_task_passes_a_task_through_and_names_an_unknown_one():
    cqa = get_task("cqa")
    assert resolve_task(cqa) is cqa and resolve_task("cqa") is cqa
    with pytest.raises(ValueError) as by_name:
        get_task("nope")
    with pytest.raises(ValueError) as resolved:
        resolve_task("nope")
    assert str(resolved.value) == str(by_name.value)


def test_loading_with_a_task_object_reads_what_its_name_reads():
    arith = get_task("arith")
    assert load_task(arith, "test", limit=5) == load_task("arith", "test", limit=5)
    assert select_examples(arith, "train", n=20, max_ops=1) == select_examples("arith", "train", n=20, max_ops=1)


def test_task_is_frozen():
    with pytest.raises(AttributeError):
        get_task("cqa").kind = EQUATION  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "kind", "ending", "parser", "answer", "gold"),
    [
        ("arith", EQUATION, "The answer is", "equation", "( 2 + 3 )", 5),
        ("svamp", EQUATION, "The answer is", "equation", "( 2 + 3 )", "( 1.0 + 4.0 )"),
        ("cqa", CLASSIFICATION, "So the answer is", "so-the-answer-is", "bank", "Bank"),
        ("esnli", CLASSIFICATION, "So the answer is", "answer-colon", "neutral", "neutral"),
        ("anli1", CLASSIFICATION, "So the answer is", "so-the-answer-is", "neutral", "neutral"),
    ],
)
def test_each_task_owns_what_differs(name, kind, ending, parser, answer, gold):
    task = get_task(name)
    assert (task.kind, task.answer_ending, task.parser) == (kind, ending, parser)
    assert task.parser in PARSERS
    # A rationale target ends with the task's words (utils.prompting asks the Task) and parses back.
    target = rationale_with_answer("Some reasoning.", answer, name)
    assert target == f"Some reasoning. {ending} {answer}."
    assert parse_cot(target, name) == ("Some reasoning.", answer)  # by the parser the task names
    assert task.correct(answer, gold)


def test_stages_ask_the_task_object():
    esnli = get_task("esnli")
    assert esnli.answer_ending == "So the answer is" and esnli.answer_prefix == "Answer:"
    parsed = parse_cot_detailed("A girl is a child. Answer: entailment\n\nPremise: A man sleeps.", "esnli")
    assert parsed == ParsedCoT("A girl is a child.", "entailment", None)
    assert parse_cot("Dogs are animals. So the answer is yes.", "esnli") == ("Dogs are animals.", "yes")
    assert esnli.normalize("Yes.") == "entailment" and esnli.label_key("banana") is None
    assert esnli.correct("it is not possible to tell", "neutral")
    cqa = get_task("cqa")
    assert cqa.normalize("(b) Bank.") == "bank" and cqa.label_key("(B) bank") == "bank"
    assert parse_cot("84 / 2 = 42. The answer is (84 / 2).", "svamp") == ("84 / 2 = 42.", "( 84 / 2 )")
    assert parse_cot_detailed(None, "svamp").error == "teacher output is NoneType, not text"


def test_equation_votes_are_exact_values():
    svamp = get_task("svamp")
    assert svamp.label_key("( 84 / 2 )") == svamp.label_key(42.0) == svamp.label_key("42") == "42"
    assert svamp.label_key("1 / 3") != svamp.label_key("0.3333333")
    assert svamp.label_key("( 0.1 + 0.2 )") == svamp.label_key("0.3")
    assert svamp.label_key("banana") is None and svamp.label_key(None) is None and svamp.label_key(True) is None


def test_task_names_come_from_the_registry():
    assert ALL_TASK_NAMES == tuple(get_task(name).name for name in ALL_TASK_NAMES)
    assert [get_task(name).paper for name in ALL_TASK_NAMES] == [False, True, True, True, True]
