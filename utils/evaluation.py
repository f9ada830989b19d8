"""Evaluating students and the teacher on the same test items, with figures.

Generation here leaves no state behind: the tokenizer's padding side is never set (batches are
padded by hand, left for causal students, right for seq2seq), and seeded sampling restores the
caller's torch random state afterwards. Paired statistics live in ``utils.stats``, cost
measurements in ``utils.costs``, ``report.json`` in ``utils.report``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from utils.prompting import LABEL_PREFIX, RATIONALE_PREFIX, encode_source, trained_with_chat_template
from utils.stats import bootstrap_ci, p_in_sentence, p_text
from utils.tasks import Task, resolve_task


def encode_prompts(tokenizer, inputs: list[str], family: str, prefix: str = LABEL_PREFIX, chat: bool = False,
                   max_source_length: int | None = None) -> tuple[list[list[int]], int]:
    """Token ids of the prompt for ``prefix + input``, each cut in the middle to ``max_source_length``
    exactly as in training (``utils.prompting.encode_source``), and how many were cut."""
    encoded = [encode_source(tokenizer, prefix + text, family, chat, max_source_length) for text in inputs]
    return [ids for ids, _ in encoded], sum(cut for _, cut in encoded)


def pad_batch(rows: list[list[int]], pad_id: int, side: str) -> dict:
    """``input_ids`` and ``attention_mask`` tensors for ``rows``, padded on ``side`` ("left" or
    "right"). Done here rather than through ``tokenizer.padding_side`` so the tokenizer a caller
    passed in is left as it was."""
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}.")
    width = max(len(r) for r in rows)
    ids, mask = [], []
    for row in rows:
        fill = width - len(row)
        ids.append([pad_id] * fill + row if side == "left" else row + [pad_id] * fill)
        mask.append([0] * fill + [1] * len(row) if side == "left" else [1] * len(row) + [0] * fill)
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}


def generate_predictions(model, tokenizer, inputs: list[str], family: str, prefix: str = LABEL_PREFIX,
                         max_new_tokens: int = 32, batch_size: int = 16, first_line: bool = True,
                         num_samples: int = 1, temperature: float = 0.7, seed: int = 0,
                         max_source_length: int | None = None) -> list:
    """Outputs of a student for ``prefix + input``.

    Greedy by default; ``num_samples > 1`` samples that many outputs per input (a list each), seeded
    by ``seed`` without touching the caller's random state. ``first_line`` (labels) stops decoding
    once the first non-blank line is complete and keeps that line; rationales keep everything. Prompts longer than
    ``max_source_length`` tokens are cut in the middle, as in training.
    """
    import torch

    device = next(model.parameters()).device
    model.eval()
    chat = trained_with_chat_template(model)
    sampling = num_samples > 1
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    side = "left" if family == "causal" else "right"  # causal students continue the prompt: pad before it
    options = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                   num_return_sequences=num_samples) if sampling else dict(do_sample=False)
    outputs = []
    with _seeded(seed, device, sampling):
        for start in range(0, len(inputs), batch_size):
            rows, _ = encode_prompts(tokenizer, inputs[start : start + batch_size], family, prefix, chat,
                                     max_source_length)
            enc = {k: v.to(device) for k, v in pad_batch(rows, pad_id, side).items()}
            start_new = enc["input_ids"].shape[1] if family == "causal" else 0
            stop = dict(stopping_criteria=_first_line_done(tokenizer, start_new)) if first_line else {}
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                     eos_token_id=tokenizer.eos_token_id, **options, **stop)
            new = out[:, start_new:]  # seq2seq outputs hold only new tokens
            texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            if first_line:
                # The token that holds the newline may carry text after it; that text is not the label.
                texts = [t.split("\n")[0].strip() for t in texts]
            if sampling:
                outputs.extend(texts[i : i + num_samples] for i in range(0, len(texts), num_samples))
            else:
                outputs.extend(texts)
    return outputs


def _first_line_done(tokenizer, start: int):
    """Stopping criteria: a sequence is done once its new text (from token ``start`` on) holds a
    newline after its first non-blank character, i.e. once its first line is complete.

    Why not ``stop_strings=["\\n"]``: that also stops on a leading blank line, which the first-line
    cut skips (``text.strip().split("\\n")[0]``); on the bundled SmolLM2-135M-Instruct 10 of 16
    label answers began with a newline and would have come back empty. This gives exactly the
    answers of decoding ``max_new_tokens`` and cutting, while stopping as soon as they are known.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class FirstLineDone(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            return torch.tensor(["\n" in text.lstrip() for text in texts], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([FirstLineDone()])


@contextlib.contextmanager
def _seeded(seed: int, device, active: bool = True):
    """Run the block with torch's global generators seeded with ``seed``, then restore them.

    ``model.generate`` takes no ``generator`` argument, so sampling draws from the global torch
    generators. ``torch.random.fork_rng`` saves the CPU state and that of every accelerator device
    of the model's kind and puts them back on exit: the sampling is reproducible from ``seed`` and
    the caller's random stream continues as if nothing had been sampled. (A local generator inside
    a logits processor would mean re-implementing the sampling step; forking is the smaller change.)
    """
    import torch

    if not active:
        yield
        return
    kind = "mps" if getattr(device, "type", "cpu") == "mps" else "cuda"
    backend = getattr(torch, kind, None)
    count = backend.device_count() if backend is not None and hasattr(backend, "device_count") else 0
    with torch.random.fork_rng(devices=list(range(count)), device_type=kind):
        torch.manual_seed(seed)  # seeds the CPU and every device, all of which fork_rng restores
        yield


INFERENCE = ("label", "rationale", "self_consistency")


def evaluate_student(model, tokenizer, split, family: str, task: Task | str = "arith", batch_size: int = 16,
                     max_new_tokens: int = 32, inference: str = "label", rationale_tokens: int = 128,
                     num_samples: int = 5, temperature: float = 0.7, seed: int = 0,
                     max_source_length: int | None = None) -> dict:
    """Accuracy of a student on a split, with per-example predictions and a bootstrap 95% interval.

    ``inference``:

    - ``"label"`` (the paper): the ``[label]`` prompt, greedy; the output is the answer.
    - ``"rationale"`` (rationale, then answer, as in Fine-tune-CoT): the ``[rationale]`` prompt,
      greedy; the answer is parsed from ``... The answer is <label>.`` at its end. Only students
      trained with ``config.rationale_answer = True`` learned to write that ending.
    - ``"self_consistency"``: ``num_samples`` sampled rationales, the answer by majority vote.

    ``task`` is a ``Task`` or its name (an unknown name raises ``get_task``'s ValueError before any
    generation). The metric is the task's (``utils.metrics.task_correct``): the value of an equation
    through the safe evaluator for math tasks, the normalised label for classification tasks. An
    output that cannot be read counts as wrong.

    Prompts longer than ``max_source_length`` tokens are cut in the middle as in training (the
    sweep passes ``config.max_source_length``); ``cut_sources`` says how many were.
    """
    from utils.metrics import score
    from utils.rationales import majority_vote, parse_cot

    if inference not in INFERENCE:
        raise ValueError(f"Unknown inference {inference!r}. Valid choices: {', '.join(INFERENCE)}.")
    task = resolve_task(task)
    inputs = list(split["input"])
    golds = list(split["label"])
    outputs = None
    prefix = LABEL_PREFIX if inference == "label" else RATIONALE_PREFIX
    _, cut_sources = encode_prompts(tokenizer, inputs, family, prefix, trained_with_chat_template(model),
                                    max_source_length)
    if inference == "label":
        preds = generate_predictions(model, tokenizer, inputs, family, LABEL_PREFIX, max_new_tokens, batch_size,
                                     max_source_length=max_source_length)
    elif inference == "rationale":
        outputs = generate_predictions(model, tokenizer, inputs, family, RATIONALE_PREFIX, rationale_tokens,
                                       batch_size, first_line=False, max_source_length=max_source_length)
        preds = [parse_cot(text, task)[1] for text in outputs]
    else:
        outputs = generate_predictions(model, tokenizer, inputs, family, RATIONALE_PREFIX, rationale_tokens,
                                       max(1, batch_size // num_samples), first_line=False,
                                       num_samples=num_samples, temperature=temperature, seed=seed,
                                       max_source_length=max_source_length)
        preds = [majority_vote([parse_cot(text, task)[1] for text in samples], task)[0] for samples in outputs]
    correct = score(task.name, preds, golds)
    rows = []
    for index, (i, x, g, p, c) in enumerate(zip(split["id"], inputs, golds, preds, correct)):
        row = {"id": i, "input": x, "gold": g, "prediction": p, "correct": c}
        if outputs is not None:
            row["output"] = outputs[index]
        rows.append(row)
    return {
        "accuracy": sum(correct) / len(correct) if correct else 0.0,
        "ci95": bootstrap_ci(correct),
        "n": len(correct),
        "inference": inference,
        "cut_sources": cut_sources,
        "predictions": rows,
    }


def accuracy_from_predictions(rows: list[dict], task: Task | str) -> float:
    """Recompute an accuracy from saved predictions (gold and prediction only; ``correct`` is ignored)."""
    from utils.metrics import score

    if not rows:
        raise ValueError("No predictions to score.")
    name = resolve_task(task).name
    return sum(score(name, [r["prediction"] for r in rows], [r["gold"] for r in rows])) / len(rows)


def save_predictions(rows: list[dict], path: str | Path) -> Path:
    """Per-example predictions as JSON lines (written to a temporary file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def load_predictions(path: str | Path) -> list[dict]:
    """The rows ``save_predictions`` wrote, in file order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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
    plt = load_pyplot()
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


def load_pyplot():
    """``matplotlib.pyplot``, with the file-only Agg backend outside notebooks (headless runs)."""
    import matplotlib

    if not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fraction_sweep(rows: list[dict], teacher: dict | None, out_path: str | Path, title: str = "",
                        inference: str | None = "label"):
    """The paper's main figure: test accuracy against the share of training data, one line per
    variant (mean over seeds, the bar spanning min to max), the teacher as a horizontal line.

    ``rows`` are ``utils.sweep.summarize_cells`` rows; ``inference=None`` draws every inference
    method as its own line."""
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["variant"], r["inference"]) for r in rows if inference is None or r["inference"] == inference})
    for variant, how in keys:
        line = sorted((r for r in rows if r["variant"] == variant and r["inference"] == how), key=lambda r: r["fraction"])
        x = [100 * r["fraction"] for r in line]
        y = [100 * r["mean"] for r in line]
        err = [[100 * (r["mean"] - r["min"]) for r in line], [100 * (r["max"] - r["mean"]) for r in line]]
        name = variant if inference is not None else f"{variant}, {how} inference"
        seeds = max(r["seeds"] for r in line)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{name} (up to {seeds} seeds)" if seeds > 1 else name)
    if teacher is not None:
        ax.axhline(100 * teacher["accuracy"], color="tab:red", linestyle="--", label="teacher (few-shot CoT)")
    ax.set_xlabel("training data used (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(sorted({100 * r["fraction"] for r in rows}))
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    return fig


def plot_size_curves(section: dict, out_path: str | Path, title: str = ""):
    """A data-size study (``utils.studies.sizes.esnli_report``): test accuracy against the number of
    training examples (log-scale x, the sizes as ticks), one line per variant through its mean over
    seeds, and a 95 % band from the section's ``curves``: a percentile bootstrap over the test items
    of each item's share of seeds right, i.e. pooled over the seeds (not the spread between seeds,
    which the table's ``sd`` gives). A variant run at one size only (the rationale sources) is a
    point with that interval, nudged right of its size. The teacher is a horizontal dashed line with
    its interval shaded."""
    plt = load_pyplot()
    curves = section["curves"]
    if not curves:
        raise ValueError("The section has no finished cell to plot.")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    names = list(dict.fromkeys([section.get("baseline", "standard")]
                               + list((section.get("design") or {}).get("variants", []))
                               + sorted({r["variant"] for r in curves})))
    points = 0  # variants at one size, nudged apart so their intervals do not hide each other
    for index, name in enumerate(n for n in names if any(r["variant"] == n for r in curves)):
        line = sorted((r for r in curves if r["variant"] == name), key=lambda r: r["size"])
        points += len(line) == 1
        x = [r["size"] * (1.05 ** points if len(line) == 1 else 1) for r in line]
        y = [100 * r["mean"] for r in line]
        low, high = [100 * r["ci95"][0] for r in line], [100 * r["ci95"][1] for r in line]
        seeds = max(r["seeds"] for r in line)
        label = f"{name} ({seeds} seed{'s' * (seeds > 1)})"
        color = f"C{index}"
        if len(line) > 1:
            ax.plot(x, y, marker="o", color=color, label=label)
            ax.fill_between(x, low, high, color=color, alpha=0.15, lw=0)
        else:
            ax.errorbar(x, y, yerr=[[y[0] - low[0]], [high[0] - y[0]]], fmt="s", capsize=4, color=color, label=label)
    teacher = section.get("teacher")
    if teacher:
        ax.axhline(100 * teacher["accuracy"], color="k", ls="--", lw=1,
                   label=f"PaLM teacher, few-shot CoT (n={teacher['n']})")
        ax.axhspan(100 * teacher["ci95"][0], 100 * teacher["ci95"][1], color="k", alpha=0.08, lw=0)
    sizes = sorted({r["size"] for r in curves})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel("test accuracy (%), 95% CI pooled over seeds")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    return fig


def plot_paired_differences(section: dict, out_path: str | Path, paper_effect: float | None = None,
                            title: str = ""):
    """A cross-validated study's paired differences against its baseline (``utils.studies.cv.cv_summary``):
    each variant's difference in points with its 95% paired-bootstrap interval, zero, the design's
    minimum detectable effect at 80 % power (shaded, around zero) and, for scale, the paper's effect
    in points (default: the section's ``paper_difference``; none drawn for a task without one)."""
    plt = load_pyplot()
    if paper_effect is None and section.get("paper_difference") is not None:
        paper_effect = round(100 * section["paper_difference"], 2)
    comps = section["comparisons"]
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.7 * max(1, len(comps))))
    for y, comp in enumerate(comps):
        diff, (low, high) = 100 * comp["difference"], (100 * comp["ci95"][0], 100 * comp["ci95"][1])
        ax.errorbar(diff, y, xerr=[[diff - low], [high - diff]], fmt="o", capsize=4, color="C0")
        ax.axvspan(-100 * comp["mde_80"], 100 * comp["mde_80"], ymin=(y + 0.2) / len(comps), ymax=(y + 0.8) / len(comps),
                   color="0.85", zorder=0)
        ax.annotate(f"p {p_in_sentence(comp['p_value'])} (Holm {p_text(comp['p_holm'])})", (high, y), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.axvline(0, color="k", lw=1)
    if paper_effect is not None:
        ax.axvline(paper_effect, color="C3", ls="--", lw=1, label=f"paper's effect (+{paper_effect:g})")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(range(len(comps)), [f"{c['variant']} - {c['baseline']}" for c in comps])
    ax.set_ylim(-0.6, len(comps) - 0.4)
    ax.set_xlabel("difference in accuracy (percentage points); grey: detectable at 80 % power")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    return fig


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False
