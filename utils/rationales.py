"""Parsing teacher chain-of-thought output into a rationale and a label, and voting over samples.

Teacher text is messy: it runs on into the next ``Q:`` of its prompt, forgets the answer
sentence, wraps numbers in markdown or writes ``×``. ``parse_cot`` keeps what can be kept and
says why when it cannot; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# Where a run-on answer stops: the next few-shot block the model invents.
_RUN_ON = re.compile(r"\n\s*(?:Q|Question|Premise|Hypothesis)\s*:|\n\s*\n\s*\n|<\|im_end\|>|<\|endoftext\|>")
_ANSWER = re.compile(r"(?:so\s+)?the\s+(?:final\s+)?answer\s+is\s*:?\s*(.+)", re.IGNORECASE | re.DOTALL)
_EQ_CHARS = re.compile(r"[0-9.+\-*/() ]+")
_RESULT_EQ = re.compile(r"([0-9.+\-*/() ]*[0-9)][0-9.+\-*/() ]*)=\s*(-?[0-9][0-9,]*\.?[0-9]*)")
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


@dataclass
class ParsedCoT:
    """What one teacher output yields: a rationale, a label (or None) and, if None, why."""

    rationale: str
    label: str | None
    error: str | None = None


def _normalise(text: str) -> str:
    text = text.replace("×", "*").replace("÷", "/").replace("−", "-").replace("–", "-")
    return re.sub(r"[*_`$\\]{2,}|\\\(|\\\)", " ", text)  # markdown bold, code ticks, LaTeX delimiters


def _clean_equation(candidate: str) -> str | None:
    """The leading arithmetic expression of ``candidate``, spaced like SVAMP, or None."""
    candidate = _normalise(candidate).replace(",", "")
    candidate = re.sub(r"(?<=\d)\s*x\s*(?=\d)", " * ", candidate)
    match = _EQ_CHARS.match(candidate.strip())
    if not match:
        return None
    expr = match.group(0).strip().rstrip(".").strip()
    if not re.search(r"\d", expr):
        return None
    if expr.count("(") != expr.count(")"):
        expr = expr.strip("() ") if "(" in expr or ")" in expr else expr
    return " ".join(re.findall(r"\d+\.?\d*|[+\-*/()]", expr)) or None


def cut_run_on(text: str) -> str:
    """The answer up to where the model starts inventing the next example."""
    match = _RUN_ON.search(text)
    return text[: match.start()] if match else text


def parse_arith(text: str) -> ParsedCoT:
    """Parse a math answer: ``<rationale> The answer is <equation or number>.``"""
    body = cut_run_on(text).strip()
    if not body:
        return ParsedCoT("", None, "empty output")
    match = _ANSWER.search(body)
    if match:
        rationale = body[: match.start()].strip()
        label = _clean_equation(match.group(1).splitlines()[0])
        if label is None:
            return ParsedCoT(rationale, None, f"no number after the answer marker: {match.group(1)[:40]!r}")
        return ParsedCoT(rationale, label)
    # No answer sentence: fall back on the last worked step "a op b = c", then the last number.
    norm = _normalise(body)
    steps = _RESULT_EQ.findall(norm)
    if steps:
        label = _clean_equation(steps[-1][1])
        if label:
            return ParsedCoT(body, label, None)
    numbers = _NUMBER.findall(norm)
    if numbers:
        return ParsedCoT(body, _clean_equation(numbers[-1]), None)
    return ParsedCoT(body, None, "no answer marker and no number")


PARSERS = {"arith": parse_arith, "svamp": parse_arith}


def parse_cot(text: str, task: str) -> tuple[str, str | None]:
    """``(rationale, label or None)`` from one teacher output for ``task``."""
    parsed = parse_cot_detailed(text, task)
    return parsed.rationale, parsed.label


def parse_cot_detailed(text: str, task: str) -> ParsedCoT:
    """Like ``parse_cot`` but keeps the reason when no label could be read."""
    if task not in PARSERS:
        raise ValueError(f"No parser for task {task!r}. Tasks with parsers: {', '.join(PARSERS)}.")
    if not isinstance(text, str):
        return ParsedCoT("", None, f"teacher output is {type(text).__name__}, not text")
    return PARSERS[task](text)


def label_key(label: str | None, task: str) -> str | None:
    """What two labels must share to count as the same vote (the value, for equations)."""
    if label is None:
        return None
    if task in ("arith", "svamp"):
        from utils.tasks import UnsafeExpression, safe_eval

        try:
            return f"{safe_eval(label):.6g}"
        except UnsafeExpression:
            return None
    return label.strip().lower()


def majority_vote(labels: list[str | None], task: str) -> tuple[str | None, int]:
    """Self-consistency: the most frequent label by value, and how many samples agree.

    Ties go to the label seen first, so greedy-first sampling orders break ties greedily.
    """
    keys = [label_key(label, task) for label in labels]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, 0
    best = max(counts.values())
    for label, key in zip(labels, keys):
        if key is not None and counts[key] == best:
            return label, best
    return None, 0
