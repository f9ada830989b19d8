"""Few-shot chain-of-thought prompts in the paper's style.

Each exemplar reads ``Q: <input>`` / ``A: <rationale> The answer is <label>.``; the exemplars of
a task are data (``data/prompts/<task>.json``), so a user can swap them without touching code.
The same exemplars give two prompt forms: plain completion text, and chat messages for
instruction-tuned models served through a chat API.
"""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "data" / "prompts"


def load_exemplars(task: str, prompts_dir: str | Path | None = None) -> dict:
    """The instruction, answer prefix and exemplars of a task."""
    path = Path(prompts_dir or PROMPTS_DIR) / f"{task}.json"
    if not path.exists():
        available = sorted(p.stem for p in Path(prompts_dir or PROMPTS_DIR).glob("*.json"))
        raise FileNotFoundError(f"No few-shot exemplars for task {task!r} at {path}. Available: {available}.")
    spec = json.loads(path.read_text())
    for key in ("instruction", "answer_prefix", "exemplars"):
        if key not in spec:
            raise ValueError(f"{path} lacks the key {key!r}.")
    return spec


def format_answer(rationale: str, label: str, answer_prefix: str = "The answer is") -> str:
    """One worked answer: the rationale, then the answer sentence."""
    return f"{rationale.strip()} {answer_prefix} {label}."


def build_prompt(example: dict | str, task: str, n_shots: int = 4, chat: bool = False,
                 spec: dict | None = None):
    """The few-shot CoT prompt for one example.

    Returns a string ending in ``A:`` (completion form) or, with ``chat=True``, a list of
    ``{"role", "content"}`` messages whose last one is the user's question.
    """
    spec = spec or load_exemplars(task)
    question = example if isinstance(example, str) else example["input"]
    shots = spec["exemplars"][:n_shots]
    if chat:
        messages = [{"role": "system", "content": spec["instruction"]}]
        for shot in shots:
            messages.append({"role": "user", "content": shot["input"]})
            messages.append({"role": "assistant",
                             "content": format_answer(shot["rationale"], shot["label"], spec["answer_prefix"])})
        messages.append({"role": "user", "content": question})
        return messages
    blocks = [f"Q: {shot['input']}\nA: {format_answer(shot['rationale'], shot['label'], spec['answer_prefix'])}"
              for shot in shots]
    blocks.append(f"Q: {question}\nA:")
    return "\n\n".join(blocks)
