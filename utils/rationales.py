"""Parsing teacher chain-of-thought output into a rationale and a label, and voting over samples.

Teacher text is messy: it runs on into the next ``Q:`` of its prompt, forgets the answer
sentence, wraps numbers in markdown or writes ``×``. ``parse_cot`` keeps what can be kept and
says why when it cannot; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from utils.tasks import Task, resolve_task

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


# A run-on into the next NLI example may start on the same line ("... Answer: neutral Premise: ...").
_NLI_RUN_ON = re.compile(r"(?<![A-Za-z])Premise\s*:")
_CHOICE_MARKER = re.compile(r"(?:so\s+)?the\s+(?:final\s+)?answer\s+is\s*:?\s*", re.IGNORECASE)
_ESNLI_MARKER = re.compile(r"\bAnswer\s*:\s*", re.IGNORECASE)
_LETTER = re.compile(r"^\(([a-eA-E])\)\s*(.*)$|^([a-eA-E])\)\s*(.*)$")


def _cut_nli_run_on(text: str) -> str:
    """`cut_run_on`, then also stop at a `Premise:` the model starts on the same line."""
    body = cut_run_on(text)
    match = _NLI_RUN_ON.search(body, 1)
    return body[: match.start()] if match else body


def _label_after(marker_end: int, body: str) -> str:
    """The short label that follows an answer marker: its first line, up to the first sentence end."""
    rest = body[marker_end:].strip().split("\n", 1)[0].strip()
    rest = re.split(r"(?<=[A-Za-z)])\.(?:\s|$)", rest, maxsplit=1)[0]
    return rest.strip(" .\"'`*")


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def parse_choice(text: str) -> ParsedCoT:
    """Parse a classification answer: ``<rationale> So the answer is <label>.`` (CQA, ANLI).

    A leading choice letter is kept apart from the text: ``So the answer is (b) bank.`` gives
    ``bank``; a bare ``(b)`` gives ``(b)`` (``utils.paper_data.cqa_choice_text`` maps it to the choice
    text). The output is cut where the model runs on into the next ``Q:`` or ``Premise:``.
    """
    body = _cut_nli_run_on(text).strip()
    if not body:
        return ParsedCoT("", None, "empty output")
    match = _last(_CHOICE_MARKER, body)
    if not match:
        return ParsedCoT(body, None, "no 'So the answer is' marker")
    rationale = body[: match.start()].strip()
    label = _label_after(match.end(), body)
    letter = _LETTER.match(label)
    if letter:
        code = (letter.group(1) or letter.group(3)).lower()
        label = (letter.group(2) or letter.group(4) or "").strip(" .\"'`*") or f"({code})"
    if not label:
        return ParsedCoT(rationale, None, "nothing after the answer marker")
    return ParsedCoT(rationale, label)


def parse_esnli(text: str) -> ParsedCoT:
    """Parse an e-SNLI answer: ``<rationale> Answer: <label>``, often run on into the next ``Premise:``.

    Falls back on the ``So the answer is <label>`` form; without either marker the label is None.
    """
    body = _cut_nli_run_on(text).strip()
    if not body:
        return ParsedCoT("", None, "empty output")
    match = _last(_ESNLI_MARKER, body)
    if not match:
        fallback = parse_choice(body)
        if fallback.label is not None:
            return fallback
        return ParsedCoT(body, None, "no 'Answer:' marker")
    rationale = body[: match.start()].strip()
    label = _label_after(match.end(), body)
    if not label:
        return ParsedCoT(rationale, None, "nothing after 'Answer:'")
    return ParsedCoT(rationale, label)


# The parser of each answer style; a task names its style in `Task.parser`.
PARSERS = {"equation": parse_arith, "so-the-answer-is": parse_choice, "answer-colon": parse_esnli}


def parse_cot(text: str, task: Task | str) -> tuple[str, str | None]:
    """``(rationale, label or None)`` from one teacher output for ``task`` (a ``Task`` or its name)."""
    parsed = parse_cot_detailed(text, task)
    return parsed.rationale, parsed.label


def parse_cot_detailed(text: str, task: Task | str) -> ParsedCoT:
    """Like ``parse_cot`` but keeps the reason when no label could be read."""
    parser = PARSERS[resolve_task(task).parser]  # an unknown task is a ValueError listing the valid ones
    if not isinstance(text, str):
        return ParsedCoT("", None, f"teacher output is {type(text).__name__}, not text")
    return parser(text)


def label_key(label: str | None, task: Task | str) -> str | None:
    """What two labels must share to count as the same vote (``Task.label_key``), or None for no valid vote.

    The exact value for equations (``1 / 3`` and ``0.3333333`` differ, ``( 84.0 / 2.0 )`` and ``42``
    agree); the normalised label for CQA and NLI, where an NLI label outside entailment / neutral /
    contradiction gives None.
    """
    return resolve_task(task).label_key(label)


def majority_vote(labels: list[str | None], task: Task | str) -> tuple[str | None, int]:
    """Self-consistency: the most frequent label by value, and how many samples agree.

    Ties go to the label seen first, so greedy-first sampling orders break ties greedily.
    """
    spec = resolve_task(task)
    keys = [spec.label_key(label) for label in labels]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, 0
    best = max(counts.values())
    for label, key in zip(labels, keys):
        if key is not None and counts[key] == best:
            return label, best
    return None, 0
