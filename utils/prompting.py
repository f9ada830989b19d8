"""The student's prompt format, shared by training, evaluation, the predictor and the service.

Torch-free on purpose: the report, the service and the data stage read the prompt format without
importing the ``Trainer``. A student reads ``[label] <input>`` (answer) or ``[rationale] <input>``
(rationale); causal students read that plus a newline (or a chat turn) and continue with the target.
``build_rows`` says which of those rows, and which targets, each training mode learns.

Too-long sources and targets are cut in the middle, never at an end: the task prefix and the
input's start stay, and so do its end (the question, the trailing newline or chat header) and a
rationale's final ``The answer is X.``. Training and inference call the same ``encode_source``, so
a student reads at inference exactly the prompt it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from utils.tasks import Task

LABEL_PREFIX = "[label] "
RATIONALE_PREFIX = "[rationale] "
FAMILIES = ("causal", "seq2seq")
# Label-then-rationale targets (mode "ltr") put the rationale on the lines after the label; label
# decoding stops at the first newline, so such a student answers as fast as a standard one.
LTR_SEPARATOR = "\n"
# The columns a rationale dataset needs (utils.data.build_rationale_dataset writes them).
COLUMNS = ("id", "input", "label", "rationale", "teacher_label")
# The training modes (``build_rows``) and where a ``dss`` student's labels come from.
MODES = ("standard", "distill", "dss", "ltr")
LABEL_SOURCES = ("gold", "teacher")


def check_family(family: str) -> None:
    """Raise a clear error for a student family the course does not know."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown student family {family!r}. Valid families: {', '.join(FAMILIES)}.")


def check_columns(dataset, needed: Sequence[str] = COLUMNS) -> None:
    """Raise a clear error naming any column the student needs that the dataset lacks."""
    for split, part in dataset.items():
        missing = [c for c in needed if c not in part.column_names]
        if missing:
            raise ValueError(
                f"Split {split!r} lacks the column(s) {missing}; it has {part.column_names}. "
                "Build it with utils.data.build_rationale_dataset."
            )


def rationale_with_answer(rationale: str, answer: str, task: Task | str | None = None) -> str:
    """A rationale followed by its answer, in the words the task's parser reads (the teachers' own
    endings: ``The answer is`` for math, ``So the answer is`` for the classification tasks)."""
    from utils.tasks import resolve_task

    marker = resolve_task(task).answer_ending if task else "The answer is"
    return f"{rationale.rstrip()} {marker} {answer}."


def build_rows(split, mode: str, label_source: str = "gold", rationale_answer: bool = False,
               task: Task | str | None = None) -> list[dict]:
    """The (source, target, task) rows one mode trains on; task 0 is the label, 1 the rationale.

    ``standard``: gold labels. ``distill``: teacher labels. ``dss``: labels (gold by default, the
    paper's main setting; ``label_source="teacher"`` for teacher labels) plus one rationale row
    for every example that has a rationale. ``ltr`` (label-then-rationale, Wadhwa et al. 2024):
    one row per example, ``[label] <input>`` -> ``<gold label>\n<rationale>``; decoding the first
    line gives the answer, so inference costs what ``standard``'s does. ``rationale_answer=True`` ends each rationale target
    with the answer that rationale reached (``rationale_label``; a rationale kept because it reached
    the gold answer ends with that answer, even when the teacher's vote was another).
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Valid modes: {', '.join(MODES)}.")
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"Unknown label_source {label_source!r}. Valid choices: {', '.join(LABEL_SOURCES)}.")
    use_teacher = mode == "distill" or (mode == "dss" and label_source == "teacher")
    rows = []
    for index, ex in enumerate(split):
        label = ex["teacher_label"] if use_teacher else ex["label"]
        if label and mode == "ltr" and ex["rationale"]:
            label = label + LTR_SEPARATOR + ex["rationale"]
        if label:
            rows.append({"source": LABEL_PREFIX + ex["input"], "target": label, "task": 0, "example": index})
        if mode == "dss":
            # An example may carry more rationales (column extra_rationales, e.g. human explanations
            # beside the teacher's): each becomes a rationale row of its own.
            for rationale in [ex["rationale"], *(ex.get("extra_rationales") or [])]:
                if not rationale:
                    continue
                target = rationale_with_answer(rationale, _own_answer(ex), task) if rationale_answer else rationale
                rows.append({"source": RATIONALE_PREFIX + ex["input"], "target": target, "task": 1, "example": index})
    if mode == "ltr" and not any(LTR_SEPARATOR in r["target"] for r in rows):
        raise ValueError("Mode 'ltr' needs rationales, but no training row has one. Check the teacher records "
                         "(notebook 01) or use rationale_policy='all', or train mode 'standard'.")
    if mode == "dss" and not any(r["task"] == 1 for r in rows):
        raise ValueError("Mode 'dss' needs rationales, but no training row has one. Check the teacher "
                         "records (notebook 01) or use rationale_policy='all', or train mode 'standard'.")
    if not rows:
        raise ValueError(f"Mode {mode!r} found no training rows with a label.")
    return rows


def _own_answer(example: dict) -> str:
    """The answer an example's rationale reached (datasets built before that column: the vote)."""
    own = example.get("rationale_label")
    return own if own else (example["teacher_label"] or example["label"])


def format_prompt(tokenizer, source: str, family: str, chat: bool = False) -> str:
    """The text a student reads for ``source`` (a prefix plus an input), in training and at inference.

    Seq2seq students read ``source`` itself. Causal students read ``source + "\\n"`` and continue
    with the target; with ``chat=True`` and a tokenizer that has a chat template, they read
    ``source`` as a user turn followed by the opening of the assistant turn instead.
    """
    check_family(family)
    if family != "causal":
        return source
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": source}], tokenize=False,
                                             add_generation_prompt=True)
    return source + "\n"


def cut_middle(ids: list[int], max_length: int | None) -> tuple[list[int], bool]:
    """``ids`` with its middle removed so that ``max_length`` tokens remain (the first half and the
    last half kept), and whether anything was cut. ``None`` or a long enough limit keeps all."""
    if max_length is None or len(ids) <= max_length:
        return list(ids), False
    if max_length < 2:
        raise ValueError(f"A length limit of {max_length} token(s) cannot keep both ends of a text; use 2 or more.")
    head = (max_length + 1) // 2
    return list(ids[:head]) + list(ids[len(ids) - (max_length - head) :]), True


def encode_source(tokenizer, source: str, family: str, chat: bool = False,
                  max_length: int | None = None) -> tuple[list[int], bool]:
    """Token ids of the prompt for ``source`` (see ``format_prompt``), cut in the middle to
    ``max_length``, and whether it was cut. Causal prompts carry no special tokens of their own
    (the chat template writes its own); seq2seq sources end with the tokenizer's ``</s>``."""
    text = format_prompt(tokenizer, source, family, chat)
    ids = tokenizer(text, add_special_tokens=family != "causal")["input_ids"]
    return cut_middle(ids, max_length)


def encode_target(tokenizer, target: str, max_length: int | None = None) -> tuple[list[int], bool]:
    """Token ids of a target followed by EOS, cut in the middle to ``max_length`` (EOS included), so a
    long rationale keeps both its start and its final answer; and whether it was cut."""
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    body, cut = cut_middle(ids, None if max_length is None else max_length - 1)
    return body + [tokenizer.eos_token_id], cut


def trained_with_chat_template(model) -> bool:
    """Whether a saved student was trained on chat-template prompts (``format_prompt(chat=True)``)."""
    return bool(getattr(getattr(model, "config", None), "dss_chat_template", False))
