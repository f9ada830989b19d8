"""Evaluating students and the teacher on the same test items, with figures and a report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from utils.student import LABEL_PREFIX, RATIONALE_PREFIX, format_prompt, trained_with_chat_template


def generate_predictions(model, tokenizer, inputs: list[str], family: str, prefix: str = LABEL_PREFIX,
                         max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy outputs of a student for ``prefix + input`` (left padding for causal models)."""
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    for start in range(0, len(inputs), batch_size):
        chat = trained_with_chat_template(model)
        chunk = [format_prompt(tokenizer, prefix + text, family, chat) for text in inputs[start : start + batch_size]]
        if family == "causal":
            tokenizer.padding_side = "left"
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        else:
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = out[:, enc["input_ids"].shape[1] :] if family == "causal" else out
        outputs.extend(t.strip().split("\n")[0].strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return outputs


def bootstrap_ci(correct: list[bool], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval for an accuracy."""
    if not correct:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(correct)
    stats = sorted(sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo = stats[int((1 - level) / 2 * n_boot)]
    hi = stats[min(n_boot - 1, int((1 + level) / 2 * n_boot))]
    return (lo, hi)


def evaluate_student(model, tokenizer, split, family: str, task: str = "arith", batch_size: int = 16,
                     max_new_tokens: int = 32) -> dict:
    """Accuracy of a student's greedy labels on a split, with predictions and a 95% interval."""
    from utils.tasks import task_correct

    inputs = list(split["input"])
    golds = list(split["label"])
    preds = generate_predictions(model, tokenizer, inputs, family, LABEL_PREFIX, max_new_tokens, batch_size)
    correct = [task_correct(task, p, g) for p, g in zip(preds, golds)]
    return {
        "accuracy": sum(correct) / len(correct) if correct else 0.0,
        "ci95": bootstrap_ci(correct),
        "n": len(correct),
        "predictions": [{"id": i, "input": x, "gold": g, "prediction": p, "correct": c}
                        for i, x, g, p, c in zip(split["id"], inputs, golds, preds, correct)],
    }


def explain(model, tokenizer, inputs: list[str], family: str, max_new_tokens: int = 64) -> list[str]:
    """The student's rationale for each input (the second task it learned)."""
    return generate_predictions(model, tokenizer, inputs, family, RATIONALE_PREFIX, max_new_tokens)


def evaluate_teacher_records(records: list[dict]) -> dict:
    """Teacher accuracy on the records notebook 01 wrote for the test split."""
    correct = [bool(r.get("teacher_correct")) for r in records]
    return {
        "accuracy": sum(correct) / len(correct) if correct else 0.0,
        "ci95": bootstrap_ci(correct),
        "n": len(correct),
        "predictions": [{"id": r["id"], "input": r["input"], "gold": r["gold"], "prediction": r["teacher_label"],
                         "correct": c} for r, c in zip(records, correct)],
    }


def plot_accuracy(results: dict[str, dict], teacher: dict | None, out_path: str | Path, title: str = ""):
    """Bar chart of accuracy (with 95% intervals) per student, the teacher as a dashed line."""
    import matplotlib

    matplotlib.use("Agg") if not _in_notebook() else None
    import matplotlib.pyplot as plt

    names = list(results)
    acc = [100 * results[n]["accuracy"] for n in names]
    lo = [100 * (results[n]["accuracy"] - results[n]["ci95"][0]) for n in names]
    hi = [100 * (results[n]["ci95"][1] - results[n]["accuracy"]) for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, acc, yerr=[lo, hi], capsize=4, color="tab:blue", alpha=0.8, label="student")
    if teacher is not None:
        ax.axhline(100 * teacher["accuracy"], color="tab:red", linestyle="--", label="teacher (few-shot CoT)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("student training mode")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    return fig


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def write_report(run_dir: str | Path, section: str, payload: dict) -> Path:
    """Merge ``payload`` into ``run_dir/report.json`` under ``section`` (other sections kept)."""
    path = Path(run_dir) / "report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report[section] = payload
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    return path
