"""utils/metrics.py: exact equation answers, normalised labels, and the metric as an `evaluate` module."""

import subprocess
import sys
from pathlib import Path

import pytest

from utils.metrics import answers_match, equation_accuracy, load_metric, score
from utils.tasks import normalize_label, task_accuracy, task_correct

REPO = Path(__file__).resolve().parent.parent

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
        ("( 0.1 + 0.2 )", "0.3", True),  # float rounding is not a wrong answer
        ("1 / 3", 1 / 3, True),
        ("1 / 3", 0.3333, False),
        (15.00001, 15, False),
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
        ("0", 0, True),
        ("1e-12", 0, True),  # the absolute tolerance: a gold of 0 accepts float noise
        ("0.001", 0, False),
    ],
)
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected


def test_answers_match_is_exact_for_large_golds():
    # The old relative tolerance of 1e-4 accepted anything within about 2,209 of this gold.
    assert answers_match("22090603", 22090603)
    assert not answers_match("22090000", 22090603)
    assert not answers_match("( 22090603 + 1 )", "22090603")


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


# --- every task ----------------------------------------------------------------------------------

CASES = [
    ("svamp", "( 84 / 2 )", "( 84.0 / 2.0 )", True),
    ("svamp", "42", "( 84.0 / 2.0 )", True),
    ("svamp", "( 84 * 2 )", "( 84.0 / 2.0 )", False),
    ("svamp", "22090000", "22090603", False),
    ("svamp", None, "( 84.0 / 2.0 )", False),
    ("cqa", "Refrigerator.", "refrigerator", True),
    ("cqa", "(b) refrigerator", "refrigerator", True),
    ("cqa", "oven", "refrigerator", False),
    ("cqa", None, "refrigerator", False),
    ("esnli", " Entailment ", "entailment", True),
    ("esnli", "neutral", "entailment", False),
    ("anli1", "it is not possible to tell", "neutral", True),
    ("anli1", "no", "contradiction", True),
    ("arith", "( 2 + 3 )", 5, True),
    ("arith", 5.0, "( 2 + 3 )", True),
    ("arith", "1 / 3", "0.3333", False),
]


@pytest.mark.parametrize(("task", "pred", "gold", "expected"), CASES)
def test_task_correct(task, pred, gold, expected):
    assert task_correct(task, pred, gold) is expected


def test_task_accuracy_and_normalize_label():
    assert task_accuracy("cqa", ["bank", "(a) Oven", None], ["bank", "oven", "car"]) == pytest.approx(2 / 3)
    assert normalize_label("cqa", '"Bank".') == "bank" and normalize_label("cqa", None) is None
    assert normalize_label("anli1", "Yes") == "entailment" and normalize_label("cqa", "yes") == "yes"
    with pytest.raises(ValueError):
        task_accuracy("cqa", ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        task_correct("cqa", "bank", "  ")
    with pytest.raises(ValueError, match="Valid choices"):
        task_correct("gsm8k", "1", "1")


# --- the `evaluate` module -----------------------------------------------------------------------


@pytest.mark.parametrize("task", ["arith", "svamp", "cqa", "esnli", "anli1"])
def test_score_agrees_with_task_correct(task):
    cases = [(p, g) for t, p, g, _ in CASES if t == task]
    preds, golds = [p for p, _ in cases], [g for _, g in cases]
    assert score(task, preds, golds) == [task_correct(task, p, g) for p, g in cases]


def test_metric_module_computes_accuracy_and_per_item_correctness():
    metric = load_metric("svamp")
    result = metric.compute(predictions=["42", "", "22090000"], references=["( 84.0 / 2.0 )", "( 3 + 4 )", "22090603"])
    assert result == {"accuracy": pytest.approx(1 / 3), "correct": [True, False, False]}
    assert score("cqa", [None, "(a) Bank"], ["bank", "bank"]) == [False, True]  # None first: evaluate refuses it
    assert score("cqa", [], []) == []
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score("cqa", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="Valid choices"):
        load_metric("gsm8k")


def test_metric_module_loads_offline_from_the_local_script(tmp_path):
    # A fresh process with the hub switched off and empty caches: only the local script can serve it.
    code = (
        "import evaluate\n"
        "from utils.metrics import METRIC_SCRIPT, score\n"
        "m = evaluate.load(str(METRIC_SCRIPT), config_name='esnli')\n"
        "print(m.compute(predictions=['Yes', 'maybe'], references=['entailment', 'contradiction'])['correct'])\n"
        "print(score('anli1', ['no'], ['contradiction']))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["[True, False]", "[True]"]
