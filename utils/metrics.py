"""Whether an answer is right, for every task: exact equation values and normalised labels.

Equation tasks (`arith`, `svamp`) compare values, so `( 9 + 6 )`, `15` and `15.0` all match a
gold of `( 24 - 9 )`; two values match only when they agree to floating-point rounding
(`math.isclose` with relative and absolute tolerance 1e-9), so a gold of 22,090,603 rejects 22,090,000.
Classification tasks compare labels after `clean_label` (case, quotes, a final period, a choice
letter, a teacher's NLI synonym).

The same metric is also a Hugging Face `evaluate` module (`metric_task_accuracy.py` next to this
file, one config per task): `load_metric(task)` loads it from that local file, so it works offline,
and `score(task, predictions, references)` goes through it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from utils.safe_math import UnsafeExpression, safe_eval

# Enough for float rounding in a chain of + - * / on SVAMP-sized numbers, and nothing more: a
# looser relative tolerance (1e-4 before) accepted 22,090,000 for 22,090,603.
REL_TOL = 1e-9
ABS_TOL = 1e-9  # for golds at or near 0, where a relative tolerance accepts nothing
METRIC_SCRIPT = Path(__file__).resolve().parent / "metric_task_accuracy.py"


def _to_value(value: str | float | int | None) -> float | None:
    """Numeric value of a number or an equation string; None if there is none."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return safe_eval(value.strip())
        except UnsafeExpression:
            return None
    return None


def answers_match(pred: str | float | None, gold: str | float) -> bool:
    """True if `pred` and `gold` have the same value, each given as a number or an equation.

    A prediction that is None, unparsable or unsafe is simply wrong (False, never an error);
    surrounding whitespace is ignored. `( 84.0 / 2.0 )` matches 42, but 0.3333 does not match
    1 / 3 (see `REL_TOL`). A gold without a value raises ValueError, because that is a bug in the
    data, not a wrong answer.
    """
    gold_value = _to_value(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} has no numeric value")
    pred_value = _to_value(pred)
    if pred_value is None:
        return False
    return math.isclose(pred_value, gold_value, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def equation_accuracy(preds: list, golds: list) -> float:
    """Share of predictions whose value matches the gold value (see `answers_match`)."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} gold answers")
    if not golds:
        raise ValueError("equation_accuracy needs at least one example")
    return sum(answers_match(p, g) for p, g in zip(preds, golds, strict=True)) / len(golds)


def clean_label(label: object, choice_letters: str = "", synonyms: Mapping[str, str] | None = None) -> str | None:
    """A classification label reduced to what must match: lower case, no quotes, no final period.

    With `choice_letters` (CommonsenseQA's "abcde"), a leading choice letter goes (`(b) bank` ->
    `bank`); `synonyms` maps what teachers write to a class (`yes` -> `entailment`). None for None
    or an empty label.
    """
    if label is None:
        return None
    text = " ".join(str(label).split()).lower().strip(" .\"'`*")
    if choice_letters:
        text = re.sub(rf"^\(?[{choice_letters}]\)\s+(?=\S)", "", text)
    if synonyms:
        text = synonyms.get(text, text)
    return text or None


# --- the metric as a Hugging Face `evaluate` module ---------------------------------------------


def load_metric(task: str):
    """The course's metric for `task` as a Hugging Face `evaluate` module (`evaluate.EvaluationModule`).

    Loaded from the local script `utils/metric_task_accuracy.py` with `config_name=task`, so no hub
    access is needed (`evaluate.load("accuracy")` needs the hub). `compute(predictions=...,
    references=...)` returns `{"accuracy": float, "correct": [bool, ...]}`; predictions and references
    are strings (`score` passes an unreadable answer, None, as "").
    """
    import evaluate

    # An unknown task fails in the script's _info, with the list of valid ones.
    return evaluate.load(str(METRIC_SCRIPT), config_name=task, keep_in_memory=True)


def _as_text(value: object) -> str:
    """A prediction or gold label as the `evaluate` module's string features take it.

    `evaluate` refuses None in a string column, so an answer that could not be read is passed as
    the empty string, which is wrong for every task (no gold label is empty).
    """
    return "" if value is None else str(value)


def score(task: str, predictions: Sequence, references: Sequence) -> list[bool]:
    """Per-item correctness of `predictions` against `references`, computed by the `evaluate` module.

    Agrees with `task_correct` item by item: numbers are passed as their text (`15.0` -> `"15.0"`),
    which has the same value, and None as "", which is just as wrong.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        load_metric(task)  # still an error for an unknown task
        return []
    result = load_metric(task).compute(
        predictions=[_as_text(p) for p in predictions], references=[_as_text(r) for r in references]
    )
    return [bool(c) for c in result["correct"]]
