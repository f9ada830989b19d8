"""Student trainer throughput: our step against the paper's, side by side, with each trainer's model
FLOPs utilisation (MFU) against the machine's matmul peak measured in the same run.

Ours is `MultiTaskTrainer` (`utils.student.token_losses`): causal, one forward pass over both tasks'
rows with the LM head on target positions only; seq2seq, the encoder once over all rows and the
decoder once per task, each cut to its own targets. The paper's is two forward passes, one per task,
each with full logits.

The reference is what the authors' `TaskPrefixTrainer.compute_loss` does: the label rows and the
rationale rows of a batch go through the model separately (each padded to its own length) and the
loss is `alpha * label_loss + (1 - alpha) * rationale_loss`, each the model's own mean cross-entropy
over full logits. Both run on the same `Trainer`, model, rows, row order, batch size and precision.
Causal rows, one lever added per row: the paper's loop (padded, whole vocabulary); ours padded;
ours with rows packed (`pack_rows`, `utils.student.pack_rows`); ours packed on the checkpoint
pruned to the data's tokens (`prune_vocab`), which is what `train_student` trains on the `tiny`
profile. Seq2seq rows: the paper's loop, ours, and ours on the checkpoint pruned the same way
(`prune_vocab`; T5's Unigram and the tiny T5's WordLevel tokenizers, `utils/vocab.py`). Ours collates through `utils.student.make_collator(config, tokenizer)`; the paper's loop
gets the plain padding `MultiTaskCollator`, since it splits each batch by task. `--variants`
picks rows (e.g. `paper,ours+pack+prune`); one more row runs only when named there,
`ours+pack+prune+compile`: the same with `torch.compile` (`torch_compile`, passed to the Trainer;
inductor, which needs a C++ compiler), its compilation inside the warm-up steps (use `--warmup 5` or more: a
new row length recompiles once for dynamic shapes).

Denormal floats are flushed to zero while both trainers train (`flush_denormal`, on by default;
`--set flush_denormal=false` keeps them for every row; the seq2seq rows `paper-keep-denormals` and
`ours-keep-denormals`, run only when named in `--variants`, keep them beside the flushed rows of the
same run): the randomly initialised t5-small-shaped head otherwise
makes most logit gradients denormal, and its backward matmuls ran about 75x slower on them.

Speed levers, `--levers`: one training configuration, our trainer on the same student and rows,
with every speed lever off (padded rows, the whole vocabulary, denormals kept, fp32) and on (rows
packed, the vocabulary pruned, denormals flushed, bf16 autocast where `use_bf16` says it is fast:
the recipe of `utils.studies.steps`), side by side, and the ratio on / off. A quick check by
default: 6 measured steps after 2 warm-up, 2 runs a row. `--data DIR` measures it on a saved
rationale dataset (a `save_to_disk` folder) instead of the tiny one; `--causal-layers 0` on the
whole 135M student.

Runs: `--runs` runs of each trainer, interleaved (every row once, then again, ...) so a drift of the
machine hits both alike, each in a fresh process (its peak memory is its own); each run times
`--steps` optimizer steps after `--warmup`. The table gives the median over runs and the min-max
spread of target tokens/s; the speed-up is the ratio of the two medians.

Matmul peak: in a fresh process with the trainers' thread count, the best of several
`torch.matmul` of two `--matmul-size` square matrices (2048 on a CPU, 8192 on a GPU),
GFLOP/s = 2 n^3 / t; measured before and after the trainers, the larger of the two is the peak.
Each row is held against the peak of its own precision: fp32, and the autocast dtype the trainer
picks by default (bf16 on a CPU with avx512_bf16 or a CUDA GPU of compute capability 8+, with or
without `--bf16`; fp16 on an older GPU), measured before the runs and again after them in every
dtype a row ran in.

Useful FLOPs of a step, counted from the rows of the batch (their token lengths, never the padded
tensors) and defined the same for both trainers, so the ratio of their MFUs is the ratio of their
speeds (the work the paper's loop spends on full logits and padding counts as no useful work):

    causal:  6 * N * T + 6 * V * d * P
    seq2seq: 6 * (N_enc * T_enc + N_dec * T_dec) + 6 * V * d * P

N: non-embedding parameters (N_enc, N_dec: those of the encoder and of the decoder); T: the rows'
input tokens (T_enc encoder tokens, T_dec decoder tokens = target length); V * d: the LM head
(the tied embedding matrix, or the separate head of an untied model: counted once either way, and
the input embedding, a lookup, not at all); P: the target positions, the only ones whose logits the
loss needs.
Attention's own FLOPs (about 12 * layers * d * sequence length per token) are left out; at these
lengths (<= 224 tokens) they add a few percent. MFU = useful FLOPs / step time / peak.

Students: causal = a `--causal-layers` cut of the bundled SmolLM2-135M-Instruct (6, the default, is
the `tiny` student; 0 is the whole 30-layer model) or `--init-causal PATH`; seq2seq, picked by
`--seq2seq-shape`: `tiny` (the default) is the 5.6M T5 of `utils.models.make_t5_student` (the
candidate of `student_candidates.py`: d_model 256, 3 + 3 layers, tied head, a word-level vocabulary
of the task's words, about 400 on the tiny data); `t5-small` is a T5 of the shape of
google/t5-v1_1-small and flan-t5-small, the students the course's users train (77M parameters:
d_model 512, 8 + 8 layers, 6 heads, gated-GELU feed-forward, an untied LM head over 32,128 rows),
randomly initialised with a fixed seed, since the real checkpoint cannot be downloaded here. It
reads the tiny T5's word-level tokenizer; the rows beyond that tokenizer's few hundred are never a
target, but the LM head still computes all 32,128 logits per position, which is the cost a real
student pays (its sequences, though, are the word-level tokenizer's: shorter than SentencePiece
makes them). Data: the `tiny` training inputs with the bundled teacher's rationales, read from the
committed teacher cache (nothing is generated), in `dss` mode.

Run (the reference measurement; an idle machine, nothing else running):
`.venv/bin/python benchmarks/trainer_throughput.py` (defaults: `--steps 30 --warmup 3 --runs 3
--batch-size 16 --families causal,seq2seq`); the full 135M causal student:
`.venv/bin/python benchmarks/trainer_throughput.py --families causal --causal-layers 0`; the seq2seq
trainers on a student of flan-t5-small's shape:
`.venv/bin/python benchmarks/trainer_throughput.py --families seq2seq --seq2seq-shape t5-small`.
Smoke run: `.venv/bin/python benchmarks/trainer_throughput.py --steps 2 --warmup 1 --runs 1 --n-train 40`.
Levers off against on, the study's student: `.venv/bin/python benchmarks/trainer_throughput.py --levers
--families causal --causal-layers 0`.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The rows of the table, per family: (name, trainer, config overrides, pruned start checkpoint). The
# paper's loop always trains the whole vocabulary, padded; each "ours" row adds one lever.
VARIANTS = {
    "causal": [
        ("paper", "paper", {"pack_rows": False}, False),
        ("ours", "ours", {"pack_rows": False}, False),
        ("ours+pack", "ours", {"pack_rows": True}, False),
        ("ours+pack+prune", "ours", {"pack_rows": True}, True),
        # torch.compile (`RunConfig.torch_compile`, inductor), run only when named in --variants:
        # its compile time (a minute or more on 2 cores) falls in the warm-up steps.
        ("ours+pack+prune+compile", "ours", {"pack_rows": True, "torch_compile": True}, True),
    ],
    "seq2seq": [
        ("paper", "paper", {}, False),
        # denormals kept (`flush_denormal` off), run only when named in --variants: the before of that lever
        ("paper-keep-denormals", "paper", {"flush_denormal": False}, False),
        ("ours-keep-denormals", "ours", {"flush_denormal": False}, False),
        ("ours", "ours", {}, False),
        ("ours+prune", "ours", {}, True),
    ],
}
ON_REQUEST = {"ours+pack+prune+compile", "paper-keep-denormals", "ours-keep-denormals"}  # only if --variants names them
# `--levers`: one training configuration (our trainer) with every speed lever off, then on, side by side.
# Off: padded rows, the whole vocabulary, denormals kept, fp32. On: rows packed (causal), the vocabulary
# pruned, denormals flushed, bf16 autocast where `use_bf16` says it is fast (bf16=None, the trainer's
# default: a CPU with avx512_bf16, a CUDA GPU of compute capability 8 or more). The recipe of
# `utils.studies.steps` is the "on" row.
LEVERS_OFF = {"pack_rows": False, "prune_vocab": False, "flush_denormal": False, "bf16": False}
LEVERS_ON = {"pack_rows": True, "prune_vocab": True, "flush_denormal": True, "bf16": None}
LEVER_VARIANTS = {
    family: [("levers-off", "ours", LEVERS_OFF, False), ("levers-on", "ours", LEVERS_ON, True)]
    for family in ("causal", "seq2seq")
}
LEVER_DEFAULTS = {"steps": 6, "warmup": 2, "runs": 2}  # --levers is a quick check: a few steps per row
RUN_DEFAULTS = {"steps": 30, "warmup": 3, "runs": 3}  # the reference measurement
PRECISION_DTYPES = {"bf16 autocast": "bf16", "fp16 autocast": "fp16", "fp32": "fp32"}  # a row's matmul peak
STATS = "_benchmark_counts"  # the key the counting collator adds to a batch; popped before the model sees it
GOALS = {"causal": 1.5, "seq2seq": 1.2}  # the required speed-up of ours over the paper's loop
# The shape of google/t5-v1_1-small (and flan-t5-small, the same architecture): the seq2seq student of
# `--seq2seq-shape t5-small`.
T5_SMALL_SHAPE = {
    "vocab_size": 32128,  # SentencePiece's 32,100 pieces + 28 padding rows, as the released checkpoints
    "d_model": 512,  # hidden size
    "d_kv": 64,  # per-head size (6 x 64 = 384, not d_model, in v1.1)
    "d_ff": 1024,  # feed-forward width (of each of the two gated input projections)
    "num_layers": 8,  # encoder blocks
    "num_decoder_layers": 8,  # decoder blocks
    "num_heads": 6,  # attention heads
    "feed_forward_proj": "gated-gelu",  # v1.1's GEGLU feed-forward (the original T5's was ReLU)
    "tie_word_embeddings": False,  # v1.1's LM head is its own matrix (and the decoder output is not rescaled)
}
SEQ2SEQ_SHAPES = ("tiny", "t5-small")  # --seq2seq-shape: `utils.models.make_t5_student`'s T5, or T5_SMALL_SHAPE
NAMES = {
    ("causal", "paper"): "paper: 2 passes (one per task), full logits, padded",
    ("causal", "ours"): "ours: 1 pass, LM head on target positions only, padded",
    ("causal", "ours+pack"): "ours, rows packed (`pack_rows`)",
    ("causal", "ours+pack+prune"): "ours, rows packed, vocabulary pruned (`prune_vocab`): the `tiny` recipe",
    ("causal", "ours+pack+prune+compile"): "ours, packed, pruned, `torch.compile` (inductor)",
    ("seq2seq", "paper"): "paper: 2 passes (one per task), full logits",
    ("seq2seq", "ours"): "ours: encoder once, decoder once per task",
    ("seq2seq", "ours+prune"): "ours, vocabulary pruned (`prune_vocab`)",
    ("seq2seq", "paper-keep-denormals"): "paper's loop, denormals kept (`flush_denormal=False`)",
    ("seq2seq", "ours-keep-denormals"): "ours, denormals kept (`flush_denormal=False`)",
    ("causal", "levers-off"): "ours, every speed lever off: padded, whole vocabulary, denormals kept, fp32",
    ("causal", "levers-on"): "ours, every lever on: packed, pruned, denormals flushed, bf16 where fast",
    ("seq2seq", "levers-off"): "ours, every speed lever off: whole vocabulary, denormals kept, fp32",
    ("seq2seq", "levers-on"): "ours, every lever on: pruned, denormals flushed, bf16 where fast",
}


def two_pass_trainer_class():
    """The reference trainer: the paper's two forward passes per step, full logits, the model's own loss."""
    from utils.student import IGNORE, MultiTaskTrainer

    class TwoPassTrainer(MultiTaskTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            losses = {}
            for task_id, name in ((0, "label"), (1, "rationale")):
                sel = inputs["task"] == task_id
                if not sel.any():
                    continue
                mask = inputs["attention_mask"][sel]
                width = int(mask.sum(1).max())
                labels = inputs["labels"][sel]
                if self.family == "causal":
                    labels = labels[:, :width].contiguous()
                    self.target_tokens += int((labels[:, 1:] != IGNORE).sum())
                else:
                    labels = labels[:, : int((labels != IGNORE).sum(1).max())].contiguous()
                    self.target_tokens += int((labels != IGNORE).sum())
                out = model(
                    input_ids=inputs["input_ids"][sel][:, :width], attention_mask=mask[:, :width], labels=labels
                )
                losses[name] = out.loss
            if "rationale" not in losses:
                loss = losses["label"]
            elif "label" not in losses:
                loss = (1 - self.alpha) * losses["rationale"]
            else:
                loss = self.alpha * losses["label"] + (1 - self.alpha) * losses["rationale"]
            return (loss, {}) if return_outputs else loss

    return TwoPassTrainer


def row_tokens(feature: dict, family: str) -> tuple[int, int, int]:
    """(encoder or causal input tokens, decoder tokens, target positions) of one tokenized row."""
    from utils.student import IGNORE

    if family == "causal":  # position i predicts token i + 1: the targets are the labels after the first
        return len(feature["input_ids"]), 0, sum(t != IGNORE for t in feature["labels"][1:])
    return len(feature["input_ids"]), len(feature["labels"]), sum(t != IGNORE for t in feature["labels"])


class CountingCollator:
    """A collator that adds the real token counts of its rows to the batch (under ``STATS``).

    Counted from the rows, not from the collated tensors, so a packed batch (no padding, maybe no
    attention mask) and a padded one count the same tokens. The counts ride with the batch the
    trainer sees, so they are added at the step that trains on it (the data loader reads ahead).
    """

    def __init__(self, inner, family: str):
        self.inner, self.family = inner, family

    def __call__(self, features: list[dict]) -> dict:
        import torch

        batch = self.inner(features)
        counts = [sum(col) for col in zip(*(row_tokens(f, self.family) for f in features))]
        batch[STATS] = torch.tensor(counts + [int(batch["input_ids"].numel())], dtype=torch.long)
        return batch


def measuring(cls):
    """``cls`` with a ``training_step`` that pops the batch's ``STATS`` and adds them to ``counts``."""

    class Measuring(cls):
        counts = None  # [encoder/causal tokens, decoder tokens, target positions, input_ids positions]

        def training_step(self, model, inputs, *args, **kwargs):
            counts = inputs.pop(STATS).tolist()
            self.counts = counts if self.counts is None else [a + b for a, b in zip(self.counts, counts)]
            return super().training_step(model, inputs, *args, **kwargs)

    return Measuring


def flop_parameters(model, family: str) -> dict:
    """The parameter counts of the FLOPs formula: non-embedding ``n`` (``n_enc``, ``n_dec`` for
    seq2seq) and ``head`` = V * d, the LM head's size. A tied head is the input embedding and counts
    once; an untied one (T5 v1.1) counts once as the head, and its input embedding not at all."""
    embeddings = {model.get_input_embeddings().weight.data_ptr(), model.get_output_embeddings().weight.data_ptr()}

    def distinct(module) -> int:
        seen = {p.data_ptr(): p.numel() for p in module.parameters() if p.data_ptr() not in embeddings}
        return sum(seen.values())

    out = {"n": distinct(model), "head": model.get_output_embeddings().weight.numel(), "n_enc": 0, "n_dec": 0}
    if family == "seq2seq":
        out["n_enc"], out["n_dec"] = distinct(model.get_encoder()), distinct(model.get_decoder())
    return out


def useful_flops(params: dict, family: str, enc_tokens: int, dec_tokens: int, targets: int) -> float:
    """The useful model FLOPs of training on rows with these token counts (the module docstring's formula)."""
    if family == "causal":
        body = params["n"] * enc_tokens
    else:
        body = params["n_enc"] * enc_tokens + params["n_dec"] * dec_tokens
    return 6.0 * (body + params["head"] * targets)


def seq2seq_epoch_work(data: str, init: str, batch_size: int, seed: int = 123) -> dict[str, float]:
    """Matmul FLOPs of one epoch of the seq2seq ``dss`` rows as each trainer computes them, counted
    from the padded shapes (no model runs): the paper's loop (each task's rows padded to that task's
    longest source and target, full logits on every decoder position) in the authors' order
    (examples shuffled, an example's two rows together) and in ours (``order_rows``: also grouped by
    length); ours (the encoder over all rows padded to the batch's longest source, the decoder per task,
    the LM head on targets only); and the useful work (no padding). The ratio paper / ours bounds what
    any step that computes the same rows can gain."""
    import random

    from datasets import load_from_disk

    from utils.config import load_config
    from utils.models import load_model, load_tokenizer
    from utils.prompting import build_rows
    from utils.student import order_rows, tokenize_rows

    config = load_config("tiny", student_family="seq2seq", batch_size=batch_size, seed=seed)
    params = flop_parameters(load_model(init, "seq2seq"), "seq2seq")
    rows = tokenize_rows(build_rows(load_from_disk(data)["train"], "dss"), load_tokenizer(init), "seq2seq",
                         config.max_source_length, config.max_target_length)
    units: dict[int, list[dict]] = {}
    for row in rows:
        units.setdefault(row["example"], []).append(row)
    shuffled = list(units.values())
    random.Random(seed).shuffle(shuffled)
    authors = [row for unit in shuffled for row in unit]

    def work(order: list[dict], impl: str) -> float:
        enc = dec = head = 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            if impl == "ours":
                enc += len(batch) * max(len(r["input_ids"]) for r in batch)
                head += sum(len(r["labels"]) for r in batch)
            for task in (0, 1):
                part = [r for r in batch if r["task"] == task]
                if part:
                    longest = max(len(r["labels"]) for r in part)
                    dec += len(part) * longest
                    if impl == "paper":
                        enc += len(part) * max(len(r["input_ids"]) for r in part)
                        head += len(part) * longest
        return 6.0 * (params["n_enc"] * enc + params["n_dec"] * dec + params["head"] * head)

    targets = sum(len(r["labels"]) for r in rows)
    ours = order_rows(rows, config)
    return {"paper, the authors' order": work(authors, "paper"), "paper, our order": work(ours, "paper"),
            "ours": work(ours, "ours"),
            "useful": useful_flops(params, "seq2seq", sum(len(r["input_ids"]) for r in rows), targets, targets)}


def matmul_peak(size: int, dtype: str, repeats: int = 10) -> float:
    """GFLOP/s of the fastest of ``repeats`` ``torch.matmul`` of two ``size`` x ``size`` matrices
    (on the GPU when there is one, as the trainers)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(size, size, device=device).to(kind)
    b = torch.randn(size, size, device=device).to(kind)
    best = float("inf")
    for _ in range(repeats + 2):  # the first two warm up (allocation, kernel choice)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def variant_config(spec: dict):
    """The RunConfig of one row: the tiny profile for ``spec["family"]`` at ``spec["batch_size"]``,
    bf16 as ``--bf16`` asks (else the trainer's default, bf16 where it is fast), then the row's and
    ``--set``'s overrides, which may set ``bf16`` too (the ``levers-off`` row: False)."""
    from utils.config import load_config

    settings = {"bf16": True if spec["bf16"] else None} | spec["set"]
    return load_config("tiny", student_family=spec["family"], batch_size=spec["batch_size"], **settings)


def run_variant(spec: dict) -> dict:
    """Train ``spec["steps"]`` measured steps (after ``spec["warmup"]``) and report rate and memory."""
    import torch
    from datasets import Dataset, load_from_disk
    from transformers import TrainerCallback

    from utils.config import pick_device
    from utils.models import count_parameters, load_model, load_tokenizer
    from utils.student import (
        MultiTaskCollator,
        MultiTaskTrainer,
        build_rows,
        make_collator,
        order_rows,
        tokenize_rows,
        training_arguments,
    )

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    family = spec["family"]
    config = variant_config(spec)
    tokenizer = load_tokenizer(spec["init"])
    model = load_model(spec["init"], family)
    params = flop_parameters(model, family)
    train = load_from_disk(spec["data"])["train"]
    features = tokenize_rows(
        build_rows(train, "dss"), tokenizer, family, config.max_source_length, config.max_target_length
    )
    features = order_rows(features, config)
    args = training_arguments(
        config,
        spec["out"],
        len(features),
        max_steps=spec["warmup"] + spec["steps"],
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
    )
    window = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == spec["warmup"]:
                window["start"], window["counts"] = time.perf_counter(), list(trainer.counts or [0, 0, 0, 0])

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == spec["warmup"] + spec["steps"]:
                window["end"] = time.perf_counter()
                window["counts"] = [b - a for a, b in zip(window["counts"], trainer.counts)]

    ours = spec["impl"] == "ours"
    collator = make_collator(config, tokenizer) if ours else MultiTaskCollator(tokenizer.pad_token_id)
    cls = measuring(MultiTaskTrainer if ours else two_pass_trainer_class())
    trainer = cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(features),
        data_collator=CountingCollator(collator, family),
        alpha=config.alpha,
        family=family,
        flush_denormal=config.flush_denormal,  # both trainers alike (on by default; --set flush_denormal=false)
        callbacks=[Clock()],
    )
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    trainer.train()
    seconds = window["end"] - window["start"]
    enc, dec, targets, positions = window["counts"]
    return {
        "tokens_per_second": targets / seconds,
        "real_tokens_per_second": (enc + dec) / seconds,
        "flops_per_second": useful_flops(params, family, enc, dec, targets) / seconds,
        "seconds_per_step": seconds / spec["steps"],
        "target_tokens": targets,
        "real_tokens": enc + dec,
        "input_positions": positions,
        "trainer_target_tokens": trainer.target_tokens,
        "parameters": count_parameters(model),
        "vocab_size": model.get_output_embeddings().weight.shape[0],  # the LM head's rows
        "tokenizer_vocab": len(tokenizer),
        "flop_parameters": params,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_train_mib": rss_before,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": pick_device(verbose=False),
        "precision": "bf16 autocast" if args.bf16 else "fp16 autocast" if args.fp16 else "fp32",
        "packed": ours and family == "causal" and config.pack_rows,
        "prune_vocab": config.prune_vocab,
        "flush_denormal": config.flush_denormal,
        "threads": torch.get_num_threads(),
        "final_loss": trainer.state.log_history[-1].get("train_loss"),
    }


def build_data(work: Path, n_train: int, data: str | None = None) -> tuple[str, list[str]]:
    """The tiny `dss` dataset (from the committed teacher cache) saved under ``work``, or the rationale
    dataset folder ``data`` (``save_to_disk``, e.g. a run's ``dataset``), and the task's text (the
    corpus a T5 student's word-level tokenizer is trained on)."""
    from utils.config import load_config
    from utils.data import build_rationale_dataset
    from utils.loaders import load_task, select_examples
    from utils.teacher import annotate, teacher_from_config

    if data:
        from datasets import load_from_disk

        train = load_from_disk(data)["train"]
        corpus = ["[label] [rationale]"] + [f"{x} {y}" for x, y in zip(train["input"], train["label"])]
        return data, corpus + [r for r in train["rationale"] if r]
    base = load_config("tiny", n_train=n_train)
    train = select_examples(base.task, "train", base.n_train, base.max_ops)
    records = annotate(teacher_from_config(base), base, train, work / "cache.jsonl", "train")
    dataset = build_rationale_dataset(records, base.task, base.rationale_policy)
    dataset.save_to_disk(str(work / "data"))
    corpus = ["[label] [rationale]"] + [f"{ex['input']} {ex['equation']}" for ex in load_task(base.task, "train")]
    corpus += [r for r in dataset["train"]["rationale"] if r]
    return str(work / "data"), corpus


def causal_init(layers: int, data: str | None = None, source: str | None = None) -> str:
    """The causal student's start checkpoint: a ``layers`` cut of the bundled SmolLM2-135M-Instruct
    (0: the whole model), or ``source``, built as ``train_student`` builds it; given the dataset
    folder ``data``, with its vocabulary pruned to that dataset (``prune_vocab``)."""
    from datasets import load_from_disk

    from utils.config import load_config
    from utils.student_init import prepare_student_init, prune_student_vocab

    config = load_config("tiny", student_layers=layers or None, prune_vocab=data is not None)
    if source:
        return prune_student_vocab(source, load_from_disk(data), config) if data else source
    return prepare_student_init(config, load_from_disk(data) if data else None)


def make_t5_small_shaped_student(tokenizer_dir: str | Path, out_dir: str | Path, seed: int = 123) -> Path:
    """A randomly initialised T5 of google/t5-v1_1-small's shape (``T5_SMALL_SHAPE``) with the
    tokenizer of ``tokenizer_dir``, saved to ``out_dir`` (kept if it is already there).

    The tokenizer's vocabulary may be smaller than the model's 32,128 rows: the extra rows are
    never a target, but every LM head call still computes their logits, as a real student does.
    """
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from utils.config import seed_everything
    from utils.models import save_checkpoint

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if len(tokenizer) > T5_SMALL_SHAPE["vocab_size"]:
        raise ValueError(
            f"The tokenizer of {tokenizer_dir} has {len(tokenizer)} tokens, more than the "
            f"{T5_SMALL_SHAPE['vocab_size']} rows of the t5-small shape; use --seq2seq-shape tiny."
        )
    config = T5Config(
        **T5_SMALL_SHAPE,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    seed_everything(seed)
    model = T5ForConditionalGeneration(config)
    # transformers 5 ties T5's head to the input embedding whatever the config says (it reads
    # tie_word_embeddings=False as "do not rescale the decoder output" only) and loads a checkpoint
    # untied only when it holds two different matrices, as the released v1.1 ones do; so the head gets
    # its own matrix here, initialised as transformers 4 initialised an untied T5 head.
    embedding = model.get_input_embeddings().weight
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(embedding) * config.initializer_factor)
    return save_checkpoint(model, tokenizer, out_dir)


def seq2seq_init(corpus: list[str], work: Path, shape: str = "tiny") -> str:
    """The seq2seq student's start checkpoint of ``--seq2seq-shape`` ``shape``, built under ``work``:
    the tiny T5 of ``make_t5_student`` (word-level tokenizer trained on ``corpus``), or one of
    t5-small's shape reading that same tokenizer."""
    from utils.models import make_t5_student

    if shape not in SEQ2SEQ_SHAPES:
        raise ValueError(f"Unknown seq2seq shape {shape!r}. Valid shapes: {', '.join(SEQ2SEQ_SHAPES)}.")
    tiny = make_t5_student(corpus, work / "t5-init")
    if shape == "tiny":
        return str(tiny)
    return str(make_t5_small_shaped_student(tiny, work / "t5-small-shape-init"))


def build_inputs(
    work: Path,
    n_train: int,
    causal_layers: int = 6,
    init_causal: str | None = None,
    families: tuple[str, ...] = ("causal", "seq2seq"),
    seq2seq_shape: str = "tiny",
    data: str | None = None,
) -> tuple[str, dict[str, str]]:
    """The dataset on disk (the tiny one, or ``data``), and the start checkpoint of each student family asked for."""
    data, corpus = build_data(work, n_train, data)
    inits = {}
    if "causal" in families:
        inits["causal"] = init_causal or causal_init(causal_layers)
        inits["causal+prune"] = causal_init(causal_layers, data, init_causal)
    if "seq2seq" in families:
        inits["seq2seq"] = seq2seq_init(corpus, work, seq2seq_shape)
        inits["seq2seq+prune"] = seq2seq_pruned_init(data, inits["seq2seq"], work / "seq2seq-pruned")
    return data, inits


def seq2seq_pruned_init(data: str, source: str, out: Path) -> str:
    """The seq2seq start checkpoint ``source`` with its vocabulary pruned to the dataset folder
    ``data`` as ``train_student`` prunes it (``prune_vocab``), written to ``out`` under the
    benchmark's own folder rather than the cache (this source is new each run): the LM head and the
    embedding keep the rows of the tokens the rows use, here a few hundred of the t5-small shape's 32,128."""
    from datasets import load_from_disk

    from utils.config import load_config
    from utils.student_init import prune_student_vocab

    config = load_config("tiny", student_family="seq2seq", prune_vocab=True)
    return prune_student_vocab(source, load_from_disk(data), config, out_dir=out)


def run_child(args: list[str]) -> dict:
    """Run this script with ``args`` in a fresh process and return the JSON it printed after ``RESULT``."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)[:200]} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def measure_peaks(size: int, dtypes: list[str], threads: int | None) -> dict[str, float]:
    """Matmul peaks (GFLOP/s per dtype), each in a fresh process with the trainers' thread count."""
    return run_child(["--peak", json.dumps({"size": size, "dtypes": dtypes, "threads": threads})])


def student_label(family: str, seq2seq_shape: str) -> str:
    """The table's name of a family's student: seq2seq names its ``--seq2seq-shape``."""
    return f"seq2seq ({seq2seq_shape})" if family == "seq2seq" else family


def seq2seq_description(shape: str, result: dict) -> str:
    """The line above the table saying which seq2seq student was measured, from a run's ``result``."""
    what = {
        "tiny": "`utils.models.make_t5_student`'s T5, tied head",
        "t5-small": "google/t5-v1_1-small's shape (d_model 512, 8 + 8 layers, gated-GELU), untied head, random init",
    }
    flop = result["flop_parameters"]
    return (
        f"seq2seq student ({shape}): {what[shape]}; {result['parameters'] / 1e6:.1f}M parameters, "
        f"{flop['n'] / 1e6:.1f}M of them non-embedding (encoder {flop['n_enc'] / 1e6:.1f}M, decoder "
        f"{flop['n_dec'] / 1e6:.1f}M); LM head {result['vocab_size']:,} rows x "
        f"{flop['head'] // result['vocab_size']}, the tokenizer's word-level vocabulary {result['tokenizer_vocab']:,}."
    )


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE``, repeatable: RunConfig overrides (read by ``parse_sets``)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other RunConfig override, e.g. --set pack_rows=false (repeatable)")


def parse_sets(pairs: list[str]) -> dict:
    """``KEY=VALUE`` config overrides; VALUE is read as JSON when it parses (true, 3, "x"), else as text."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set needs KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def peak_dtype(result: dict) -> str:
    """The matmul peak a run is held against: that of its autocast dtype (bf16, fp16), else fp32."""
    return PRECISION_DTYPES.get(result["precision"], "fp32")


def expected_dtypes() -> list[str]:
    """The peaks to measure before the runs: fp32, and the autocast dtype the trainer picks on this
    machine by default (bf16 wherever ``use_bf16`` says it is fast, e.g. a CPU with avx512_bf16; fp16 on
    an older CUDA GPU), since rows run in it even without ``--bf16``."""
    from utils.config import pick_device, use_bf16

    device = pick_device(verbose=False)
    if use_bf16(device):
        return ["fp32", "bf16"]
    return ["fp32", "fp16"] if device == "cuda" else ["fp32"]


def table_lines(runs: dict[tuple[str, str], list[dict]], peaks: dict[str, float], label: dict[str, str],
                baseline: str = "paper") -> list[str]:
    """The Markdown table: a row per ``(family, variant)`` of ``runs`` (each a list of run results),
    medians over runs; MFU against ``peaks[peak_dtype(run)]`` (GFLOP/s), ``n/a`` where that peak was
    not measured; the speed-up against the family's ``baseline`` row."""
    cuda = next(iter(runs.values()))[0]["peak_cuda_mib"] is not None
    lines = [
        "| student | params (M) | precision | step | target tokens/s | spread (min-max) | real tokens/s | s/step "
        "| MFU (%) | speed-up | peak RSS (MiB) |" + (" peak CUDA (MiB) |" if cuda else ""),
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if cuda else ""),
    ]
    medians = {key: statistics.median(r["tokens_per_second"] for r in rs) for key, rs in runs.items()}
    for (family, name), rs in runs.items():
        r = rs[0]
        peak = peaks.get(peak_dtype(r))
        flops = statistics.median(x["flops_per_second"] for x in rs)
        mfu = f"{100 * flops / (peak * 1e9):.1f}" if peak else f"n/a (no {peak_dtype(r)} peak)"
        base = medians.get((family, baseline))
        lines.append(
            f"| {label[family]} | {r['parameters'] / 1e6:.1f} | {r['precision']} | {NAMES[(family, name)]} "
            f"| {medians[(family, name)]:.0f} | {spread([x['tokens_per_second'] for x in rs])} "
            f"| {statistics.median(x['real_tokens_per_second'] for x in rs):.0f} "
            f"| {statistics.median(x['seconds_per_step'] for x in rs):.2f} | {mfu} "
            f"| {f'{medians[(family, name)] / base:.2f}x' if base else 'n/a'} "
            f"| {max(x['peak_rss_mib'] for x in rs):.0f} |"
            + (f" {max(x['peak_cuda_mib'] for x in rs):.0f} |" if cuda else "")
        )
    return lines


def speedup_line(runs: dict[tuple[str, str], list[dict]], family: str, baseline: str, name: str,
                 label: str, goal: float | None = None) -> str:
    """One sentence: row ``name`` against row ``baseline`` of ``family``, the ratio of their median
    target tokens/s and run by run (runs interleaved, so run i of each shares the machine's state)."""
    ours, base = runs[(family, name)], runs[(family, baseline)]
    ratios = [o["tokens_per_second"] / p["tokens_per_second"] for o, p in zip(ours, base)]
    speedup = statistics.median(o["tokens_per_second"] for o in ours) / statistics.median(
        p["tokens_per_second"] for p in base)
    verdict = "" if goal is None else f"; goal >= {goal}x: {'met' if speedup >= goal else 'NOT met'}"
    against = "the paper's loop" if baseline == "paper" else baseline
    return (f"{label}: {name} against {against} {speedup:.2f}x "
            f"(run by run {', '.join(f'{x:.2f}x' for x in ratios)}){verdict}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, help="measured optimizer steps per run (default 30; --levers: 6)")
    parser.add_argument("--warmup", type=int, help="steps run before the clock starts (default 3; --levers: 2)")
    parser.add_argument("--runs", type=int, help="runs per row (interleaved); the median is reported (default 3; "
                        "--levers: 2)")
    parser.add_argument("--levers", action="store_true",
                        help="compare one configuration, our trainer, with every speed lever off and on (packed rows, "
                        "pruned vocabulary, flushed denormals, bf16 where fast), instead of the trainers' rows")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per step (the tiny profile's)")
    parser.add_argument("--n-train", type=int, default=300, help="training inputs (the tiny profile's)")
    parser.add_argument("--data", help="a saved rationale dataset (save_to_disk folder, e.g. a run's dataset/) "
                        "instead of the tiny one (--n-train is then ignored)")
    parser.add_argument("--families", default="causal,seq2seq")
    parser.add_argument("--variants", help="only these rows, e.g. paper,ours+pack+prune (default: all)")
    parser.add_argument("--causal-layers", type=int, default=6, help="layers of the causal student (0: all 30)")
    parser.add_argument("--init-causal", help="a causal start checkpoint instead (overrides --causal-layers)")
    parser.add_argument(
        "--seq2seq-shape",
        choices=SEQ2SEQ_SHAPES,
        default="tiny",
        help="the seq2seq student: tiny (5.6M, word-level vocabulary) or t5-small (flan-t5-small's shape, 77M, "
        "32,128-row vocabulary, random init)",
    )
    parser.add_argument("--max-source", type=int, help="max_source_length (default: the tiny profile's, 128)")
    parser.add_argument("--max-target", type=int, help="max_target_length (default: the tiny profile's, 96)")
    add_set_option(parser)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast where use_bf16 allows, causal too")
    parser.add_argument("--threads", type=int, help="torch threads in every process (default: torch's)")
    parser.add_argument(
        "--matmul-size", type=int, default=0, help="side of the square matmul of the peak (0: 2048 on CPU, 8192 on GPU)"
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one run, in a child process
    parser.add_argument("--peak", help=argparse.SUPPRESS)  # internal: the matmul peak, in a child process
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(json.loads(args.variant))))
        return
    if args.peak:
        import torch

        spec = json.loads(args.peak)
        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        size = spec["size"] or (8192 if torch.cuda.is_available() else 2048)  # a GPU needs a bigger one to peak
        print("RESULT " + json.dumps({"size": size} | {d: matmul_peak(size, d) for d in spec["dtypes"]}))
        return

    for key, value in (LEVER_DEFAULTS if args.levers else RUN_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    families = tuple(args.families.split(","))
    rows = LEVER_VARIANTS if args.levers else VARIANTS
    baseline = "levers-off" if args.levers else "paper"
    sets = parse_sets(args.set)
    sets |= {"max_source_length": args.max_source} if args.max_source else {}
    sets |= {"max_target_length": args.max_target} if args.max_target else {}
    work = Path(tempfile.mkdtemp(prefix="trainer-throughput-"))
    data, inits = build_inputs(work, args.n_train, args.causal_layers, args.init_causal, families, args.seq2seq_shape,
                               args.data)
    dtypes = expected_dtypes()
    peaks_before = measure_peaks(args.matmul_size, dtypes, args.threads)
    print(f"matmul peak before (GFLOP/s): {json.dumps(peaks_before)}", flush=True)

    runs: dict[tuple[str, str], list[dict]] = {}
    for family in families:
        for index in range(args.runs):
            for name, impl, overrides, pruned in rows[family]:
                if (name not in args.variants.split(",")) if args.variants else name in ON_REQUEST:
                    continue
                spec = {
                    "family": family,
                    "impl": impl,
                    "init": inits[family + ("+prune" if pruned else "")],
                    "data": data,
                    "out": str(work / f"{family}-{name}-{index}"),
                    "batch_size": args.batch_size,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "bf16": args.bf16,
                    "threads": args.threads,
                    "set": {**sets, **overrides},
                }
                result = run_child(["--variant", json.dumps(spec)])
                runs.setdefault((family, name), []).append(result)
                print(
                    f"done: {family} / {name} run {index + 1}: {result['tokens_per_second']:.0f} target tok/s",
                    flush=True,
                )
    # Measured again after the runs, in every dtype a row ran in (a row may use one not foreseen).
    dtypes = sorted(set(dtypes) | {peak_dtype(r) for rs in runs.values() for r in rs})
    peaks_after = measure_peaks(args.matmul_size, dtypes, args.threads)
    peaks = {d: max(peaks_before.get(d, 0.0), peaks_after[d]) for d in dtypes}

    first = next(iter(runs.values()))[0]
    flushing = {r["flush_denormal"] for rs in runs.values() for r in rs}
    denormals = {frozenset({True}): "flushed", frozenset({False}): "kept"}.get(
        frozenset(flushing), "flushed (kept in the rows that say so)")
    before = {d: f"{peaks_before[d]:.0f}" if d in peaks_before else "not measured" for d in dtypes}
    matmul = ", ".join(f"{d} {peaks[d]:.0f} GFLOP/s (before {before[d]}, after {peaks_after[d]:.0f})" for d in dtypes)
    what = "speed levers off against on" if args.levers else "dss mode"
    print(
        f"\nStudent trainer throughput, {what}, {args.batch_size} rows per step, median of {args.runs} runs of "
        f"{args.steps} steps after {args.warmup} warm-up, device {first['device']} ({first['threads']} threads),"
        f" {time.strftime('%Y-%m-%d')}; denormals {denormals};"
        f" matmul peak, {peaks_after['size']}^2 matrices: {matmul}"
        + (f"; config overrides {json.dumps(sets)}" if sets else "")
        + (f"; data {args.data}" if args.data else "")
    )
    label = {family: student_label(family, args.seq2seq_shape) for family in families}
    seq2seq_runs = [rs[0] for (family, _), rs in runs.items() if family == "seq2seq"]
    if seq2seq_runs:
        print(seq2seq_description(args.seq2seq_shape, seq2seq_runs[0]))
    print("\n".join(table_lines(runs, peaks, label, baseline)))
    for family in families:
        compared = [k for k in runs if k[0] == family and k[1] != baseline and not k[1].startswith("paper")]
        if (family, baseline) not in runs or not compared:
            continue
        # the last row: every lever of the family on
        print("\n" + speedup_line(runs, family, baseline, compared[-1][1], label[family],
                                  None if args.levers else GOALS[family]))
    if "seq2seq" in families and not args.levers:
        bound = seq2seq_epoch_work(data, inits["seq2seq"], args.batch_size)
        paper_random, paper_ours, ours, useful = bound.values()
        print(
            f"\nseq2seq ({args.seq2seq_shape}): matmul work of one epoch of these rows, from the padded shapes each "
            "trainer computes (attention aside): " + ", ".join(f"{k} {v / 1e12:.3f} TFLOP" for k, v in bound.items())
            + f". A step computing the same rows can beat the paper's loop by at most {paper_ours / ours:.2f}x in our "
            f"order, {paper_random / ours:.2f}x against the authors' order, {paper_random / useful:.2f}x with no "
            "padding at all."
        )
    print(
        "\ntarget tokens/s: tokens the loss learns per second; real tokens/s: all tokens of the rows (causal: "
        "prompt + target; seq2seq: encoder + decoder), padding excluded; MFU: useful model FLOPs per second "
        "(6 x non-embedding params x real tokens + 6 x V x d x target positions) over the matmul peak of the "
        "row's precision."
    )
    shutil.rmtree(work, ignore_errors=True)  # the data, start checkpoints and trainer outputs of this run


if __name__ == "__main__":
    main()
