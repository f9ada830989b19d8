"""The student: multi-task training (label + rationale) on the Hugging Face ``Trainer``.

Each training example becomes up to two rows: ``[label] <input>`` -> label and, in ``dss`` mode,
``[rationale] <input>`` -> the teacher's rationale. Rows of both tasks share a batch and ONE
forward pass; the loss is ``alpha * L_label + (1 - alpha) * L_rationale``, each term the mean
over that task's target tokens. Because this is a plain ``Trainer``, ``accelerate launch`` and
``torchrun`` scale it out unchanged.

This module holds the trainer and the loss. What it builds on lives beside it: the rows each mode
learns (``utils.prompting.build_rows``), the checkpoint a student starts from and its LoRA adapters
(``utils.student_init``), and which checkpoint a run resumes from (``utils.checkpoints``).

Options are typed fields of ``RunConfig`` (``utils.config``; checked in ``validate_student_options``):

- ``label_source``: ``"gold"`` (default, the paper's main setting: gold labels plus teacher
  rationales) or ``"teacher"`` (teacher labels plus teacher rationales). Only ``dss`` reads it:
  ``standard`` always learns gold labels and ``distill`` always learns teacher labels.
- ``chat_template``: ``True`` wraps causal prompts in the model's chat template (when its
  tokenizer has one) instead of the plain ``"<prefix><input>\\n"``; see ``utils.prompting``.
- ``lora``: ``True`` or ``{"r": 8, "alpha": 16, "dropout": 0.0, "targets": [...]}`` trains LoRA
  adapters through ``peft`` and merges them before saving, so the saved student is a plain model
  (``utils.student_init.apply_lora``).
- ``bf16``: students train with bf16 autocast where ``utils.config.use_bf16`` says it is fast
  (1.6x faster for the 6-layer causal student on an avx512_bf16 CPU); ``False`` forces fp32.
- ``rationale_answer``: ``True`` ends every rationale target with ``The answer is <answer>.``, the
  answer that rationale itself reached (column ``rationale_label``), so the student can answer by
  writing its rationale first (``utils.evaluation`` inference ``"rationale"``, as in Fine-tune-CoT).
- ``save_steps``: save a checkpoint every N optimizer steps (a number below 1: that fraction of
  an epoch; default: once per epoch; at most two are kept; 0: none, so nothing to resume from).
  ``keep_checkpoints``: keep them after a successful run (default: removed, since the final model
  is saved next to them and a checkpoint of the 6-layer tiny student, optimizer state included,
  is about 0.6 GB).

Too-long sources and targets are cut in the middle (``utils.prompting``), the same way at
inference; ``TrainResult.cut_rows`` counts the rows cut per split.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from utils.checkpoints import drop_incomplete_checkpoints, last_checkpoint
from utils.prompting import (
    LABEL_PREFIX,
    MODES,
    RATIONALE_PREFIX,
    build_rows,
    check_columns,
    check_family,
    encode_source,
    encode_target,
)

# The notebooks, the exercise solutions and benchmarks/student_candidates.py import
# prepare_student_init (and build_rows) from here; they live in utils.student_init and utils.prompting.
from utils.student_init import (
    apply_lora,
    lora_settings,
    merge_lora,
    prepare_student_init,
    prune_student_vocab,
    unwrap_model,
)
from utils.tasks import Task, resolve_task

IGNORE = -100


@dataclass
class TrainResult:
    """What a training run leaves behind (seconds and tokens count this call only, also when resumed)."""

    output_dir: str
    mode: str
    family: str
    parameters: int
    train_seconds: float
    target_tokens: int
    tokens_per_second: float
    log_history: list = field(default_factory=list)
    resumed_from: str | None = None
    checkpoint_seconds: float = 0.0  # part of train_seconds spent writing checkpoints
    cut_rows: dict = field(default_factory=dict)  # per split: rows whose source or target was cut
    optimizer_steps: int = 0  # optimizer steps taken in all (a resumed run counts the earlier ones too)
    rows_seen: dict = field(default_factory=dict)  # training rows those steps consumed, per task (label, rationale)



def tokenize_rows(rows: list[dict], tokenizer, family: str, max_source: int | None, max_target: int | None,
                  chat: bool = False, counts: dict | None = None) -> list[dict]:
    """Token ids, with ``labels`` set to -100 wherever a token must not be learned (the prompt).

    Too-long sources and targets are cut in the middle (``utils.prompting.cut_middle``), so the
    prompt keeps its prefix and its end, and a rationale its final answer; ``counts``, when given,
    receives how many rows had their source, their target, or either cut.
    """
    check_family(family)
    out = []
    cut = {"source": 0, "target": 0, "rows": 0}
    for row in rows:
        src_ids, src_cut = encode_source(tokenizer, row["source"], family, chat, max_source)
        tgt, tgt_cut = encode_target(tokenizer, row["target"], max_target)
        cut["source"] += src_cut
        cut["target"] += tgt_cut
        cut["rows"] += src_cut or tgt_cut
        if family == "causal":
            out.append({"input_ids": src_ids + tgt, "labels": [IGNORE] * len(src_ids) + tgt, "task": row["task"]})
        else:
            out.append({"input_ids": src_ids, "labels": tgt, "task": row["task"]})
        out[-1]["example"] = row.get("example", len(out) - 1)
    if counts is not None:
        counts.update(cut)
    return out


class MultiTaskCollator:
    """Pads a batch (right side for training) and carries each row's task id.

    Hand-written because ``DataCollatorForSeq2Seq`` pads on the tokenizer's ``padding_side``, which
    is left for generation-ready causal tokenizers; here training batches are always padded on the
    right, whatever the tokenizer says, and the per-row task ids travel with the batch.

    ``pack=True`` (causal rows only) lays the batch's rows end to end instead (see ``pack_rows``):
    less compute on padding, and the same rows, targets and loss as the padded batch. Hand-written too: ``DataCollatorWithFlattening`` makes
    one line of the whole batch (attention then costs its square) and drops the task ids.
    """

    def __init__(self, pad_id: int, pack: bool = False, pack_width: int = 0):
        self.pad_id, self.pack, self.pack_width = pad_id, pack, pack_width

    def __call__(self, features: list[dict]) -> dict:
        if self.pack:
            return pack_rows(features, self.pad_id, self.pack_width)
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


def pack_rows(features: list[dict], pad_id: int, width: int = 0) -> dict:
    """Causal rows packed end to end: lines of ``max(width, longest row)`` tokens, rows placed
    longest first into the first line with room (first-fit decreasing), no row split.

    The default width, the batch's longest row, never makes more positions than padding does and
    keeps attention's cost (quadratic in the line) that of the padded batch; wider lines pack
    tighter but pay for it in attention, since the kernel computes the masked blocks too.

    Each row's ``position_ids`` restart at 0, and no ``attention_mask`` is returned: transformers
    then reads the restarts as sequence boundaries and lets a token attend only within its own row
    (``masking_utils.find_packed_sequence_indices``), so every row sees exactly what it sees when
    padded. The last token of a row predicts the next row's first token, a prompt token whose label
    is -100, so no loss crosses a boundary. ``token_task`` carries the task of every position (-1 on
    the padding that ends a line), because a line now holds rows of both tasks.
    """
    cap = max(width, max(len(f["input_ids"]) for f in features))
    lines: list[list[dict]] = []
    room: list[int] = []
    for f in sorted(features, key=lambda f: -len(f["input_ids"])):
        n = len(f["input_ids"])
        slot = next((i for i, free in enumerate(room) if free >= n), None)
        if slot is None:
            lines.append([])
            room.append(cap)
            slot = len(lines) - 1
        lines[slot].append(f)
        room[slot] -= n
    length = max(cap - free for free in room)
    ids = torch.full((len(lines), length), pad_id, dtype=torch.long)
    labels = torch.full((len(lines), length), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(lines), length), dtype=torch.long)
    token_task = torch.full((len(lines), length), -1, dtype=torch.long)
    for i, line in enumerate(lines):
        at = 0
        for f in line:
            n = len(f["input_ids"])
            ids[i, at : at + n] = torch.tensor(f["input_ids"])
            labels[i, at : at + n] = torch.tensor(f["labels"])
            positions[i, at : at + n] = torch.arange(n)
            token_task[i, at : at + n] = f["task"]
            at += n
        positions[i, at:] = torch.arange(length - at)  # the line's padding: a segment of its own, never learned
    return {"input_ids": ids, "position_ids": positions, "labels": labels, "token_task": token_task,
            "task": torch.tensor([f["task"] for f in features], dtype=torch.long)}


def make_collator(config, tokenizer) -> MultiTaskCollator:
    """The collator ``train_student`` uses for ``config``: packed rows for causal students when
    ``config.pack_rows`` is set (see ``pack_rows``), else padded rows."""
    return MultiTaskCollator(tokenizer.pad_token_id, pack=bool(config.pack_rows) and config.student_family == "causal")



def token_losses(model, batch: dict, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target-token cross-entropy and the task id of each of those tokens.

    For causal models the LM head runs only on positions whose next token is a target: the
    vocabulary projection is the largest matrix of a small LM, and prompt positions need none.
    A packed causal batch (``pack_rows``) carries ``position_ids`` and ``token_task`` instead of an
    attention mask. For seq2seq models the encoder runs once over all rows and the decoder once per
    task, each on its own rows cut to their longest target: a label target is a few tokens, a
    rationale a hundred, and one decoder pass over both would spend most of the label rows' compute
    on padding. ``model`` may be wrapped (DDP, PEFT): the causal forward pass always goes through the
    wrapper, so DDP synchronises gradients and LoRA adapters take part; under DDP the seq2seq pass
    is the single padded one, since calling the encoder alone would bypass DDP's hooks.
    """
    check_family(family)
    labels, task = batch["labels"], batch["task"]
    if family == "causal":
        targets = labels[:, 1:]
        keep = targets != IGNORE
        # A boolean `logits_to_keep` makes transformers apply the LM head to those positions only.
        positions = torch.cat([keep, keep.new_zeros((keep.shape[0], 1))], dim=1)
        if "token_task" in batch:  # packed: the restarts of position_ids separate the rows
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                           logits_to_keep=positions).logits
            token_task = batch["token_task"][:, 1:][keep]
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           logits_to_keep=positions).logits
            token_task = task[:, None].expand_as(targets)[keep]
        if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep returns every position
            logits = logits[:, :-1][keep]
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="none"), token_task
    core = unwrap_model(model)
    decoder_labels = labels.masked_fill(labels == IGNORE, core.config.pad_token_id)
    decoder_ids = core.prepare_decoder_input_ids_from_labels(labels=decoder_labels)
    keep = labels != IGNORE
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) or task.unique().numel() < 2:
        logits = _target_logits(model, core, keep, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                decoder_input_ids=decoder_ids, use_cache=False)
        token_task = task[:, None].expand_as(labels)[keep]
        return torch.nn.functional.cross_entropy(logits.float(), labels[keep], reduction="none"), token_task
    encoded = core.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    losses, tasks = [], []
    for task_id in task.unique(sorted=True).tolist():
        rows = task == task_id
        width = int(keep[rows].sum(1).max())
        sel = keep[rows][:, :width]
        logits = _target_logits(model, core, sel, encoder_outputs=(encoded.last_hidden_state[rows],),
                                attention_mask=batch["attention_mask"][rows], decoder_input_ids=decoder_ids[rows][:, :width],
                                use_cache=False)  # no decoding cache to build (passing labels turns it off the same way)
        losses.append(torch.nn.functional.cross_entropy(logits.float(), labels[rows][:, :width][sel], reduction="none"))
        tasks.append(torch.full((losses[-1].numel(),), task_id, dtype=torch.long, device=labels.device))
    return torch.cat(losses), torch.cat(tasks)


def _target_logits(model, core, keep: torch.Tensor, **inputs) -> torch.Tensor:
    """A seq2seq forward pass whose LM head runs on the target positions ``keep`` only, as
    ``logits_to_keep`` does for causal models (seq2seq models in transformers have no such argument).

    A forward pre-hook on the output embedding hands it just those positions' hidden states; the
    model code around it (T5's rescaling before the head, a bias added after) is unchanged. A model
    that reshapes the logits afterwards is noticed by their shape and indexed the usual way."""
    head = core.get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda module, args: (args[0][keep], *args[1:]))
    try:
        logits = model(**inputs).logits
    finally:
        hook.remove()
    return logits if logits.dim() == 2 else logits[keep]


def multitask_loss(ce: torch.Tensor, token_task: torch.Tensor, alpha: float) -> tuple[torch.Tensor, dict]:
    """The step-by-step loss of one batch: ``alpha * L_label + (1 - alpha) * L_rationale``.

    Args:
        ce: per-target-token cross-entropy, shape ``(n_tokens,)``.
        token_task: the task of each of those tokens (0 label, 1 rationale), same shape.
        alpha: the label task's weight; the label-only modes (``standard``, ``distill``) pass 1.0.

    Returns:
        The loss and the detached mean loss of each task present in the batch.

    Each term is the mean over that task's tokens; a task absent from the batch contributes 0, so
    a ``dss`` batch that happens to hold label rows only still weighs them by ``alpha``: the
    effective alpha does not drift with how the batches were composed.
    """
    parts = {}
    loss = ce.new_zeros(())
    for task_id, name, weight in ((0, "label", alpha), (1, "rationale", 1.0 - alpha)):
        sel = token_task == task_id
        if sel.any():
            parts[name] = ce[sel].mean()
            loss = loss + weight * parts[name]
    return loss, {k: v.detach().item() for k, v in parts.items()}


@contextlib.contextmanager
def flushed_denormals(on: bool = True):
    """Flush denormal floats to zero on the CPU for the block (``torch.set_flush_denormal``), then
    turn flushing off again (torch cannot say whether it was on before, and off is its default).

    Why: x86 cores take a slow microcode path for every denormal operand (below 1.2e-38 in fp32).
    A randomly initialised T5 head (weights of std 1, logits of std ~20) puts most of its softmax
    probabilities, hence most of its logit gradients, in that range: the head's backward matmuls
    then ran about 75x slower than on normal numbers, 60 % of a t5-small-shaped step
    (benchmarks/trainer_throughput.py). Flushed, such values become 0, which changes no update
    that matters: they lie 30 orders of magnitude below the float32 epsilon of any weight.
    """
    if not on:
        yield False
        return
    flushed = torch.set_flush_denormal(True)  # False where the CPU cannot (no SSE3)
    try:
        yield flushed
    finally:
        if flushed:
            torch.set_flush_denormal(False)


class MultiTaskTrainer(Trainer):
    """A ``Trainer`` whose loss is the step-by-step multi-task loss, logged per task with target tokens/s.

    Rows arrive pre-ordered (see ``order_rows``), so the sampler is sequential: the order is the
    same in every run and on resume, and under DDP each process takes every n-th batch of it.
    """

    def __init__(self, *args, alpha: float = 0.5, family: str = "causal", flush_denormal: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha, self.family, self.flush_denormal = alpha, family, flush_denormal
        self._sums: dict[str, list[float]] = {}
        self.target_tokens = 0
        self.checkpoint_seconds = 0.0
        self._tokens_since_log = 0
        self._clock = time.perf_counter()
        self.loss_is_scaled_for_ga = False  # the loss is a per-batch mean: Trainer divides it for accumulation

    def score_validation_accuracy(self, split, tokenizer, task: Task | str, max_source_length: int | None = None,
                                  batch_size: int = 16) -> None:
        """Make every evaluation also decode ``split``'s labels (the ``[label]`` prompt, greedy, first
        line) and report ``eval_accuracy``, so checkpoints can be chosen and training stopped by
        validation accuracy rather than loss (``config.select_by = "accuracy"``)."""
        self._accuracy = (split, tokenizer, task, max_source_length, batch_size)

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        scoring = getattr(self, "_accuracy", None)
        if scoring is not None:
            # Added here, before evaluate() logs the metrics and runs the callbacks (early stopping reads them).
            from utils.evaluation import evaluate_student

            split, tokenizer, task, max_source_length, batch_size = scoring
            prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
            scored = evaluate_student(self.model, tokenizer, split, self.family, task, batch_size=batch_size,
                                      max_source_length=max_source_length)
            output.metrics[f"{prefix}_accuracy"] = scored["accuracy"]
        return output

    def _get_train_sampler(self, train_dataset=None):
        return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def train(self, *args, **kwargs):
        self._clock, self._tokens_since_log = time.perf_counter(), 0
        with flushed_denormals(self.flush_denormal and self.args.device.type == "cpu"):
            return super().train(*args, **kwargs)

    def _save_checkpoint(self, *args, **kwargs):
        start = time.perf_counter()
        super()._save_checkpoint(*args, **kwargs)
        self.checkpoint_seconds += time.perf_counter() - start

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ce, token_task = token_losses(model, inputs, self.family)
        loss, parts = multitask_loss(ce, token_task, self.alpha)
        if model.training:  # evaluation batches count neither as training tokens nor in the task losses
            self.target_tokens += int(ce.numel())
            self._tokens_since_log += int(ce.numel())
            for name, value in parts.items():
                self._sums.setdefault(name, []).append(value)
        return (loss, {}) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        # Every process calls log() at the same points, so the sums can be reduced across them here.
        sums = [(sum(self._sums.get(n, [])), len(self._sums.get(n, []))) for n in ("label", "rationale")]
        tokens = self._tokens_since_log
        if self.args.world_size > 1:  # the per-task losses and tokens of all processes, not just this one
            stats = torch.tensor([v for pair in sums for v in pair] + [tokens], device=self.args.device)
            stats = self.accelerator.reduce(stats, reduction="sum").tolist()
            sums, tokens = [(stats[0], stats[1]), (stats[2], stats[3])], int(stats[4])
        for name, (total, count) in zip(("label", "rationale"), sums):
            if count:
                logs[f"loss_{name}"] = round(total / count, 4)
        self._sums = {}
        if "loss" in logs:  # a training-step log: target tokens per second since the previous one
            now = time.perf_counter()
            logs["target_tokens_per_second"] = round(tokens / max(now - self._clock, 1e-9), 1)
            self._clock, self._tokens_since_log = now, 0
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


def rows_seen(features: list[dict], steps: int, batch: int) -> dict[str, int]:
    """The training rows ``steps`` optimizer steps consume, per task: the Trainer walks the ordered
    rows in batches of ``batch`` (the last batch of a pass may be short) and starts over after the
    last, so a ``dss`` example is two rows and costs what two ``standard`` examples cost."""
    if batch < 1 or steps < 0:
        raise ValueError(f"batch must be >= 1 and steps >= 0, got {batch} and {steps}.")
    per_pass = math.ceil(len(features) / batch)
    counts = {"label": 0, "rationale": 0}
    if not per_pass:
        return counts
    tasks = [f["task"] for f in features]
    whole, rest = divmod(steps, per_pass)
    seen = tasks * whole + tasks[: rest * batch]
    counts["rationale"] = sum(1 for t in seen if t == 1)
    counts["label"] = len(seen) - counts["rationale"]
    return counts


def trainer_is_main() -> bool:
    """Whether this process prints for the run (rank 0 under torchrun / accelerate, or alone)."""
    return int(os.environ.get("RANK", "0")) == 0


def global_batch_size(config) -> int:
    """Rows per optimizer step over all processes: ``batch_size`` per process times the processes.

    ``torchrun`` and ``accelerate launch`` set ``WORLD_SIZE``; it is read here, before the
    ``TrainingArguments`` exist, because the row order and the schedule are built from it.
    """
    return config.batch_size * int(os.environ.get("WORLD_SIZE", "1"))


def order_rows(features: list[dict], config) -> list[dict]:
    """``_length_grouped`` for the global batch: the same order for 1 process with batch 2B as for
    2 processes with batch B each (each process takes every other batch of B rows)."""
    return _length_grouped(features, global_batch_size(config), config.seed)


def training_arguments(config, output_dir: str | Path, n_rows: int, has_eval: bool = False,
                       **overrides) -> TrainingArguments:
    """The ``TrainingArguments`` of a student run over ``n_rows`` rows (``overrides`` win).

    Checkpoints go to ``output_dir/checkpoints``: every ``config.save_steps`` steps, else
    once per epoch, at most two kept. With a validation set (``has_eval``) the same schedule
    evaluates, and the checkpoint with the lowest ``eval_loss`` is loaded at the end.
    """
    from utils.config import pick_device, use_bf16

    device = pick_device(verbose=False)
    batch = global_batch_size(config)
    # bf16 autocast wherever use_bf16 says it is fast (CUDA with bf16, a CPU with avx512_bf16), for
    # both families; config.bf16 = False forces fp32 (results before 2026-11-27 02:45 were
    # fp32 for causal students: their forward pass bypassed the autocast wrapper).
    wants_bf16 = True if config.bf16 is None else bool(config.bf16)
    save_steps = config.save_steps
    if config.max_steps:  # a schedule in optimizer steps: validate and checkpoint every eval_steps
        save_steps = config.eval_steps or config.max_steps
    if save_steps and 0 < save_steps < 1:  # a fraction of an epoch
        save_steps = max(1, math.ceil(save_steps * n_rows / batch))
    if save_steps == 0:  # no checkpoints at all (nothing to resume from)
        schedule = {"save_strategy": "no"} | ({"eval_strategy": "epoch"} if has_eval else {})
    else:
        schedule = {"save_strategy": "steps", "save_steps": int(save_steps)} if save_steps else {"save_strategy": "epoch"}
        if has_eval:
            by_accuracy = config.select_by == "accuracy"
            schedule |= {"eval_strategy": schedule["save_strategy"], "load_best_model_at_end": True,
                         "metric_for_best_model": "eval_accuracy" if by_accuracy else "eval_loss",
                         "greater_is_better": by_accuracy}
            if save_steps:
                schedule["eval_steps"] = int(save_steps)
    kwargs = dict(
        output_dir=str(Path(output_dir) / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,  # when set, the Trainer cycles the rows until this many steps
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=max(1, math.ceil(0.05 * config.max_steps) if config.max_steps else
                         math.ceil(0.05 * config.epochs * n_rows / batch)),  # same float order as the tiny results
        weight_decay=0.0,
        logging_steps=max(1, math.ceil(min(n_rows / batch, config.max_steps or n_rows) / 2)),
        save_total_limit=2,
        report_to="none",
        use_cpu=device == "cpu",
        bf16=wants_bf16 and use_bf16(device),
        fp16=wants_bf16 and device == "cuda" and not use_bf16(device) and config.student_family == "causal",
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        dataloader_num_workers=0,
        disable_tqdm=False,  # the progress bar shows steps, rate and time left
        seed=config.seed,
        torch_compile=config.torch_compile,  # off by default: on 2 cores it pays only over long runs
        **schedule,
    )
    return TrainingArguments(**{**kwargs, **overrides})


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def _out_of_memory_message(config, lora: dict | None, checkpoint_dir: Path) -> str:
    return (f"Out of memory while training the student (batch_size={config.batch_size}, "
            f"max_source_length={config.max_source_length}, max_target_length={config.max_target_length}, "
            f"student_layers={config.student_layers}, lora={'on' if lora else 'off'}). Lower batch_size first, "
            "then max_source_length / max_target_length or student_layers, or train LoRA adapters only "
            "(config.lora = True). Checkpoints saved so far are in "
            f"{checkpoint_dir}; train_student(..., resume=True) continues from the last one.")


def _eval_rows(split, mode: str, label_source: str, rationale_answer: bool = False,
               task: Task | str | None = None, select_by: str = "loss") -> list[dict]:
    """Validation rows: those of ``mode``; only the label rows when the split has no rationales, or
    when ``dss`` checkpoints are chosen by decoded accuracy (``select_by="accuracy"``), where a loss
    over the rationale rows would go unread (on ``dss-all4`` it cost about 80 s an evaluation)."""
    no_rationales = mode in ("dss", "ltr") and not any(split["rationale"])
    if no_rationales or (mode == "dss" and select_by == "accuracy"):
        return build_rows(split, "distill" if label_source == "teacher" else "standard")
    return build_rows(split, mode, label_source, rationale_answer, task)


def early_stopping(patience: int, min_steps: int = 0):
    """The Trainer's ``EarlyStoppingCallback`` with a floor: an evaluation before ``min_steps``
    optimizer steps neither stops the run nor counts against its patience, so a small training set
    gets the steps a study promised it (the best checkpoint is still chosen among all evaluations).
    Written here because transformers' callback has no such floor."""
    from transformers import EarlyStoppingCallback

    class FlooredEarlyStopping(EarlyStoppingCallback):
        def on_evaluate(self, args, state, control, metrics, **kwargs):
            if state.global_step < min_steps:
                return
            super().on_evaluate(args, state, control, metrics, **kwargs)

    return FlooredEarlyStopping(early_stopping_patience=patience)


def train_student(dataset, config, mode: str, output_dir: str | Path, init: str | None = None,
                  model=None, tokenizer=None, resume: bool | str = False) -> TrainResult:
    """Train one student in ``mode`` on ``dataset["train"]`` and save it to ``output_dir``.

    ``init`` is the checkpoint to start from (default: ``prepare_student_init(config)``).
    ``resume=True`` continues from the last complete checkpoint in ``output_dir/checkpoints``
    (a path picks one); the rows, their order and the schedule are rebuilt from the same config,
    and the Trainer skips the batches already seen, so the result equals an uninterrupted run.
    A ``validation`` split, when ``dataset`` has one, picks the best checkpoint by ``eval_loss``.
    The student options (``label_source``, ``chat_template``, ``lora``, ``save_steps``,
    ``keep_checkpoints``...) are described at the top of this module.
    """
    from datasets import Dataset

    from utils.config import atomic_write_json, seed_everything, validate_student_options
    from utils.models import count_parameters, load_model, load_tokenizer, origin_model_id

    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Valid modes: {', '.join(MODES)}.")
    family = config.student_family
    check_family(family)
    if not 0.0 <= config.alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {config.alpha}.")
    validate_student_options(config)
    task = resolve_task(config.task)  # looked up once, passed on as the Task
    label_source = config.label_source
    lora = lora_settings(config)
    check_columns(dataset)
    output_dir = Path(output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    seed_everything(config.seed)
    source = init or prepare_student_init(config)
    if config.prune_vocab and model is None:
        source = prune_student_vocab(source, dataset, config)
        tokenizer = None  # the pruned checkpoint's own
    tokenizer = tokenizer or load_tokenizer(source)  # an unknown model name raises OSError here, with a hint
    model = model or load_model(source, family)
    if lora:
        model = apply_lora(model, family, lora)
    chat = config.chat_template and family == "causal"
    if chat and not getattr(tokenizer, "chat_template", None):
        print(f"note: {source} has no chat template; training on the plain prompt format")
        chat = False
    rationale_answer = config.rationale_answer
    rows = build_rows(dataset["train"], mode, label_source, rationale_answer, task)
    cut_rows = {"train": {}}
    features = tokenize_rows(rows, tokenizer, family, config.max_source_length, config.max_target_length, chat,
                             counts=cut_rows["train"])
    features = order_rows(features, config)
    eval_features = None
    if "validation" in dataset:
        cut_rows["validation"] = {}
        eval_rows = _eval_rows(dataset["validation"], mode, label_source, rationale_answer, task, config.select_by)
        eval_features = tokenize_rows(eval_rows, tokenizer, family, config.max_source_length,
                                      config.max_target_length, chat, counts=cut_rows["validation"])
    for split, counts in cut_rows.items():
        if counts["rows"] and trainer_is_main():
            print(f"{split}: {counts['rows']} row(s) longer than max_source_length={config.max_source_length} / "
                  f"max_target_length={config.max_target_length} were cut in the middle "
                  f"({counts['source']} source(s), {counts['target']} target(s))")
    args = training_arguments(config, output_dir, len(features), has_eval=eval_features is not None)
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=Dataset.from_list(features),
                               eval_dataset=Dataset.from_list(eval_features) if eval_features else None,
                               data_collator=make_collator(config, tokenizer),
                               alpha=config.alpha if mode == "dss" else 1.0, family=family,
                               flush_denormal=config.flush_denormal)
    if eval_features is not None and config.select_by == "accuracy":
        trainer.score_validation_accuracy(dataset["validation"], tokenizer, task, config.max_source_length,
                                          config.eval_batch_size)
    if eval_features is not None and config.early_stopping_patience:
        trainer.add_callback(early_stopping(config.early_stopping_patience, config.early_stopping_min_steps))
    checkpoint = None
    if resume:
        if trainer.is_world_process_zero():
            drop_incomplete_checkpoints(checkpoint_dir)
        trainer.accelerator.wait_for_everyone()
        checkpoint = str(resume) if isinstance(resume, (str, Path)) else last_checkpoint(checkpoint_dir)
        if trainer.is_world_process_zero():
            print(f"resuming from {checkpoint}" if checkpoint else f"no checkpoint in {checkpoint_dir}: training from the start")
    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        raise MemoryError(_out_of_memory_message(config, lora, checkpoint_dir)) from exc
    seconds = time.perf_counter() - start
    final = merge_lora(trainer.model)
    if chat:
        final.config.dss_chat_template = True  # the checkpoint says how it must be prompted
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        final.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        if (Path(source) / "vocab_map.json").exists():  # a pruned vocabulary: which original ids it kept
            shutil.copyfile(Path(source) / "vocab_map.json", output_dir / "vocab_map.json")
        meta = {"mode": mode, "family": family, "alpha": config.alpha, "label_prefix": LABEL_PREFIX,
                "rationale_prefix": RATIONALE_PREFIX, "task": config.task, "source_model": str(source),
                "base_model": origin_model_id(config.student_model), "student_layers": config.student_layers,
                "label_source": label_source if mode == "dss" else ("teacher" if mode == "distill" else "gold"),
                "chat_template": chat, "lora": lora, "rationale_answer": rationale_answer,
                "max_source_length": config.max_source_length, "max_target_length": config.max_target_length,
                "cut_rows": cut_rows}
        atomic_write_json(output_dir / "student_meta.json", meta)
    steps = int(trainer.state.global_step)
    result = TrainResult(str(output_dir), mode, family, count_parameters(final), seconds,
                         trainer.target_tokens, trainer.target_tokens / max(seconds, 1e-9),
                         trainer.state.log_history, checkpoint, trainer.checkpoint_seconds, cut_rows, steps,
                         rows_seen(features, steps, global_batch_size(config)))
    if trainer.is_world_process_zero():
        atomic_write_json(output_dir / "train_log.json", result.__dict__)
        if not config.keep_checkpoints:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return result
