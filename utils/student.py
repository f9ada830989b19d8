"""The student: multi-task training (label + rationale) on the Hugging Face ``Trainer``.

Each training example becomes up to two rows: ``[label] <input>`` -> label and, in ``dss`` mode,
``[rationale] <input>`` -> the teacher's rationale. Rows of both tasks share a batch and ONE
forward pass; the loss is ``alpha * L_label + (1 - alpha) * L_rationale``, each term the mean
over that task's target tokens. Because this is a plain ``Trainer``, ``accelerate launch`` and
``torchrun`` scale it out unchanged.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

LABEL_PREFIX = "[label] "
RATIONALE_PREFIX = "[rationale] "
MODES = ("standard", "distill", "dss")
IGNORE = -100


@dataclass
class TrainResult:
    """What a training run leaves behind."""

    output_dir: str
    mode: str
    family: str
    parameters: int
    train_seconds: float
    target_tokens: int
    tokens_per_second: float
    log_history: list = field(default_factory=list)


def build_rows(split, mode: str, label_source: str = "gold") -> list[dict]:
    """The (source, target, task) rows one mode trains on; task 0 is the label, 1 the rationale.

    ``standard``: gold labels. ``distill``: teacher labels. ``dss``: labels (gold by default, the
    paper's main setting; ``label_source="teacher"`` for teacher labels) plus one rationale row
    for every example that has a rationale.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Valid modes: {', '.join(MODES)}.")
    use_teacher = mode == "distill" or (mode == "dss" and label_source == "teacher")
    rows = []
    for index, ex in enumerate(split):
        label = ex["teacher_label"] if use_teacher else ex["label"]
        if label:
            rows.append({"source": LABEL_PREFIX + ex["input"], "target": label, "task": 0, "example": index})
        if mode == "dss" and ex["rationale"]:
            rows.append({"source": RATIONALE_PREFIX + ex["input"], "target": ex["rationale"], "task": 1,
                         "example": index})
    if mode == "dss" and not any(r["task"] == 1 for r in rows):
        raise ValueError("Mode 'dss' needs rationales, but no training row has one. Check the teacher "
                         "records (notebook 01) or use rationale_policy='all', or train mode 'standard'.")
    if not rows:
        raise ValueError(f"Mode {mode!r} found no training rows with a label.")
    return rows


def tokenize_rows(rows: list[dict], tokenizer, family: str, max_source: int, max_target: int) -> list[dict]:
    """Token ids, with ``labels`` set to -100 wherever a token must not be learned (the prompt)."""
    out = []
    eos = tokenizer.eos_token_id
    for row in rows:
        src = tokenizer(row["source"] + ("\n" if family == "causal" else ""), add_special_tokens=family != "causal")
        tgt = tokenizer(row["target"], add_special_tokens=False)["input_ids"][: max_target - 1] + [eos]
        src_ids = src["input_ids"][:max_source]
        if family == "causal":
            ids = src_ids + tgt
            out.append({"input_ids": ids, "labels": [IGNORE] * len(src_ids) + tgt, "task": row["task"]})
        else:
            out.append({"input_ids": src_ids, "labels": tgt, "task": row["task"]})
        out[-1]["example"] = row.get("example", len(out) - 1)
    return out


class MultiTaskCollator:
    """Pads a batch (right side for training) and carries each row's task id."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        lab_width = max(len(f["labels"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), lab_width), IGNORE, dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
            labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "task": torch.tensor([f["task"] for f in features], dtype=torch.long)}


def token_losses(model, batch: dict, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target-token cross-entropy and the task id of each of those tokens.

    For causal models the LM head runs only on positions whose next token is a target: the
    vocabulary projection is the largest matrix of a small LM, and prompt positions need none.
    """
    labels, task = batch["labels"], batch["task"]
    if family == "causal":
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = model.get_output_embeddings()(hidden[:, :-1][keep])
        token_task = task[:, None].expand_as(targets)[keep]
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="none"), token_task
    decoder_labels = labels.masked_fill(labels == IGNORE, model.config.pad_token_id)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=decoder_labels))
    keep = labels != IGNORE
    token_task = task[:, None].expand_as(labels)[keep]
    return torch.nn.functional.cross_entropy(out.logits[keep].float(), labels[keep], reduction="none"), token_task


def multitask_loss(ce: torch.Tensor, token_task: torch.Tensor, alpha: float) -> tuple[torch.Tensor, dict]:
    """``alpha * L_label + (1 - alpha) * L_rationale``; a task absent from the batch adds nothing."""
    parts = {}
    loss = ce.new_zeros(())
    for task_id, name, weight in ((0, "label", alpha), (1, "rationale", 1.0 - alpha)):
        sel = token_task == task_id
        if sel.any():
            parts[name] = ce[sel].mean()
            loss = loss + weight * parts[name]
    if "rationale" not in parts and "label" in parts:
        loss = parts["label"]  # a label-only batch (standard, distill) learns at full weight
    return loss, {k: v.detach().item() for k, v in parts.items()}


class MultiTaskTrainer(Trainer):
    """A ``Trainer`` whose loss is the step-by-step multi-task loss, logged per task."""

    def __init__(self, *args, alpha: float = 0.5, family: str = "causal", **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha, self.family = alpha, family
        self._sums: dict[str, list[float]] = {}
        self.target_tokens = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ce, token_task = token_losses(model, inputs, self.family)
        loss, parts = multitask_loss(ce, token_task, self.alpha)
        self.target_tokens += int(ce.numel())
        for name, value in parts.items():
            self._sums.setdefault(name, []).append(value)
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        for name, values in self._sums.items():
            logs[f"loss_{name}"] = round(sum(values) / len(values), 4)
        self._sums = {}
        super().log(logs, *args, **kwargs)


def _length_grouped(rows: list[dict], batch_size: int, seed: int) -> list[dict]:
    """The order rows are trained in: an example's label and rationale rows stay next to each other
    (so both tasks of an example share a batch and a forward pass), examples are shuffled, then
    sorted by length within windows of a few batches so each batch pads little."""
    import random

    units: dict[int, list[dict]] = {}
    for row in rows:
        units.setdefault(row["example"], []).append(row)
    order = list(units.values())
    random.Random(seed).shuffle(order)
    window = max(1, batch_size * 8 // 2)
    grouped = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda unit: max(len(r["input_ids"]) for r in unit))
        grouped.extend(row for unit in chunk for row in unit)
    return grouped


def prepare_student_init(config) -> str:
    """The checkpoint a student starts from: a layer subset of ``student_model`` when
    ``student_layers`` is set (causal students), else ``student_model`` itself."""
    from utils.models import cache_dir, make_layer_subset_student

    if config.student_family == "causal" and config.student_layers:
        safe = str(config.student_model).strip("/").replace("/", "--")
        out = cache_dir() / "students" / f"{safe}-{config.student_layers}layers"
        return str(make_layer_subset_student(config.student_model, config.student_layers, out))
    return str(config.student_model)


def train_student(dataset, config, mode: str, output_dir: str | Path, init: str | None = None,
                  model=None, tokenizer=None) -> TrainResult:
    """Train one student in ``mode`` on ``dataset["train"]`` and save it to ``output_dir``.

    ``init`` is the checkpoint to start from (default: ``prepare_student_init(config)``).
    """
    from datasets import Dataset

    from utils.config import pick_device, seed_everything, use_bf16
    from utils.data import check_columns
    from utils.models import count_parameters, load_model, load_tokenizer, origin_model_id

    if not 0.0 <= config.alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {config.alpha}.")
    check_columns(dataset)
    family = config.student_family
    output_dir = Path(output_dir)
    seed_everything(config.seed)
    source = init or prepare_student_init(config)
    tokenizer = tokenizer or load_tokenizer(source)
    model = model or load_model(source, family)
    rows = build_rows(dataset["train"], mode, config.extra.get("label_source", "gold"))
    features = tokenize_rows(rows, tokenizer, family, config.max_source_length, config.max_target_length)
    features = _length_grouped(features, config.batch_size, config.seed)
    device = pick_device(verbose=False)
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=max(1, math.ceil(0.05 * config.epochs * len(features) / config.batch_size)),
        weight_decay=0.0,
        logging_steps=max(1, math.ceil(len(features) / config.batch_size / 2)),
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        bf16=use_bf16(device),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=config.seed,
    )
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=Dataset.from_list(features),
                               data_collator=MultiTaskCollator(tokenizer.pad_token_id),
                               alpha=config.alpha if mode == "dss" else 1.0, family=family)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    meta = {"mode": mode, "family": family, "alpha": config.alpha, "label_prefix": LABEL_PREFIX,
            "rationale_prefix": RATIONALE_PREFIX, "task": config.task, "source_model": str(source),
            "base_model": origin_model_id(config.student_model), "student_layers": config.student_layers}
    (output_dir / "student_meta.json").write_text(json.dumps(meta, indent=2))
    result = TrainResult(str(output_dir), mode, family, count_parameters(trainer.model), seconds,
                         trainer.target_tokens, trainer.target_tokens / max(seconds, 1e-9),
                         trainer.state.log_history)
    (output_dir / "train_log.json").write_text(json.dumps(result.__dict__, indent=2))
    return result
