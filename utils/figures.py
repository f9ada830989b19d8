"""Figures that explain the course rather than a run's results: the pipeline, and the loss against alpha.

Drawn from data (the ``PIPELINE`` table below), so the README's figure and notebook 01's cannot
disagree with each other: ``python -c "from utils.figures import plot_pipeline;
plot_pipeline('data/figures/pipeline.png')"`` rewrites the committed PNG.
"""

from __future__ import annotations

from pathlib import Path

# (stage, notebook, what it does, what it hands to the next stage)
PIPELINE = (
    ("Teacher", "01_teacher_cot", "few-shot CoT prompts;\nvote and keep\ncorrect rationales", "rationales\n+ labels"),
    ("Rationales", "02_rationale_dataset", "which rationales\nto keep;\na DatasetDict", "label and\nrationale rows"),
    ("Student", "03_multitask_student", "multi-task loss\nα·L_label + (1−α)·L_rationale", "checkpoints"),
    ("Evaluation", "04_eval_vs_teacher", "vs teacher and baselines;\npaired tests, costs;\na recommendation",
     "recommended\nstudent"),
    ("Deploy", "05_deploy", "export + model card,\nHTTP service,\nGGUF / ONNX", None),
)


def plot_pipeline(path: str | Path | None = None, stages=PIPELINE):
    """Boxes and arrows of the five stages (``stages``: rows like ``PIPELINE``); saved as a PNG
    at ``path`` when given. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    width, gap, height = 2.3, 1.1, 1.7
    fig, ax = plt.subplots(figsize=(len(stages) * (width + gap) * 0.95, 2.9))
    colors = ("#dbe9f6", "#e2f0d9", "#fde9d9", "#ede4f3", "#fff2cc")
    for i, (name, notebook, does, hands) in enumerate(stages):
        x = i * (width + gap)
        ax.add_patch(FancyBboxPatch((x, 0), width, height, boxstyle="round,pad=0.05,rounding_size=0.12",
                                    facecolor=colors[i % len(colors)], edgecolor="#404040", linewidth=1.2))
        ax.text(x + width / 2, height - 0.25, name, ha="center", va="center", fontsize=12, fontweight="bold")
        ax.text(x + width / 2, height - 0.55, notebook, ha="center", va="center", fontsize=8, family="monospace",
                color="#404040")
        ax.text(x + width / 2, 0.55, does, ha="center", va="center", fontsize=8.5, linespacing=1.3)
        if hands is not None and i < len(stages) - 1:
            start, end = x + width + 0.08, x + width + gap - 0.08
            ax.annotate("", xy=(end, height / 2), xytext=(start, height / 2),
                        arrowprops={"arrowstyle": "-|>", "color": "#404040", "linewidth": 1.5})
            ax.text((start + end) / 2, height / 2 + 0.12, hands, ha="center", va="bottom", fontsize=7,
                    color="#404040", linespacing=1.1)
    ax.set_xlim(-0.2, len(stages) * (width + gap) - gap + 0.2)
    ax.set_ylim(-0.25, height + 0.2)
    ax.set_axis_off()
    ax.set_title("Distilling step by step: teacher → rationales → student → evaluation → deploy", fontsize=11)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130)
    return fig


def plot_loss_against_alpha(alphas: list[float], totals: list[float], label_loss: float, rationale_loss: float,
                            path: str | Path | None = None, title: str = ""):
    """The step-by-step loss of one batch against alpha, with the two task losses it mixes.

    ``totals[i]`` is ``multitask_loss`` at ``alphas[i]``; the dashed lines are ``L_label`` (where
    the total ends at alpha = 1) and ``L_rationale`` (where it starts at alpha = 0). Saved as a PNG
    at ``path`` when given; returns the figure.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(alphas, totals, marker="o", color="black", label="loss = α·L_label + (1−α)·L_rationale")
    ax.axhline(label_loss, linestyle="--", color="tab:blue", label=f"L_label = {label_loss:.2f}")
    ax.axhline(rationale_loss, linestyle="--", color="tab:orange", label=f"L_rationale = {rationale_loss:.2f}")
    ax.set_xlabel("α (weight of the label task)")
    ax.set_ylabel("cross-entropy (nats per target token)")
    ax.set_title(title or "One batch, the same per-token losses, five values of α")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def token_table(batch: dict, tokenizer, row: int, family: str, max_padding: int = 2):
    """One row of a collated training batch, token by token: what the student reads, what it is
    trained to predict, and the mask (``learned``: label id is not -100, so the token is a target).

    Causal students read prompt and target as one sequence (labels aligned with the inputs; the
    loss shifts them by one); seq2seq students read the prompt in the encoder and predict the
    target in the decoder, so their table lists the encoder tokens, then the target tokens. Only
    ``max_padding`` of the row's padding tokens are listed (the loss ignores them all alike).
    """
    import pandas as pd

    width = min(len(batch["input_ids"][row]), int(batch["attention_mask"][row].sum()) + max_padding)
    ids = batch["input_ids"][row].tolist()[:width]
    attention = batch["attention_mask"][row].tolist()[:width]
    labels = batch["labels"][row].tolist()
    if family == "causal":  # labels sit under the inputs' positions
        labels = labels[:width]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    if family == "causal":
        return pd.DataFrame({"token": tokens, "input id": ids, "attention": attention, "label id": labels,
                             "learned": [label != -100 for label in labels]})
    kept = [label for label in labels if label != -100]
    encoder = pd.DataFrame({"side": "encoder", "token": tokens, "input id": ids, "attention": attention,
                            "label id": None, "learned": False})
    decoder = pd.DataFrame({"side": "decoder target", "token": tokenizer.convert_ids_to_tokens(kept),
                            "input id": None, "attention": None, "label id": kept, "learned": True})
    return pd.concat([encoder, decoder], ignore_index=True)


def plot_training_losses(results: dict, path: str | Path | None = None, title: str = "Student training loss"):
    """Per-task training loss against epoch, one line per mode and task (``results``: mode ->
    ``TrainResult``, whose ``log_history`` holds ``loss_label`` and ``loss_rationale``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, result in results.items():
        logs = [h for h in result.log_history if "loss_label" in h]
        ax.plot([h["epoch"] for h in logs], [h["loss_label"] for h in logs], marker="o", label=f"{mode}: label loss")
        rationale = [h for h in logs if "loss_rationale" in h]
        if rationale:
            ax.plot([h["epoch"] for h in rationale], [h["loss_rationale"] for h in rationale], linestyle="--",
                    marker="x", label=f"{mode}: rationale loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats per target token)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def _finish(fig, path: str | Path | None):
    """Lay the figure out and, when ``path`` is given, save it there as a PNG."""
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig
