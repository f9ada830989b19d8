"""Student trainer throughput: our step (one forward pass, LM head on target positions only) against the
paper's step (two forward passes, one per task, each with full logits), side by side. Prints a table.

The reference is what the authors' `TaskPrefixTrainer.compute_loss` does: the label rows and the
rationale rows of a batch go through the model separately (each padded to its own length) and the
loss is `alpha * label_loss + (1 - alpha) * rationale_loss`, each the model's own mean cross-entropy
over full logits. Both run on the same `Trainer`, model, rows, row order, batch size and precision;
each variant runs in a fresh process so its peak memory is its own.

Students: causal = a 6-layer cut of the bundled SmolLM2-135M-Instruct (the `tiny` student);
seq2seq = a small T5 from `utils.models.make_t5_student` (the candidate of `student_candidates.py`).
Data: the `tiny` training inputs with the bundled teacher's rationales, read from the committed
teacher cache (nothing is generated), in `dss` mode.

Run: `.venv/bin/python benchmarks/trainer_throughput.py [--steps 10] [--warmup 2] [--batch-size 16]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IMPLEMENTATIONS = ("ours", "paper")


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


def run_variant(spec: dict) -> dict:
    """Train ``spec["steps"]`` measured steps (after ``spec["warmup"]``) and report rate and memory."""
    import torch
    from datasets import load_from_disk
    from transformers import TrainerCallback

    from utils.config import load_config, pick_device
    from utils.models import load_model, load_tokenizer
    from utils.student import (
        MultiTaskCollator,
        MultiTaskTrainer,
        build_rows,
        order_rows,
        tokenize_rows,
        training_arguments,
    )

    family = spec["family"]
    bf16 = True if spec["bf16"] else None  # else the trainer's default (bf16 where it is fast)
    config = load_config("tiny", student_family=family, batch_size=spec["batch_size"], bf16=bf16)
    tokenizer = load_tokenizer(spec["init"])
    model = load_model(spec["init"], family)
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
                window["start"], window["tokens"] = time.perf_counter(), trainer.target_tokens

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == spec["warmup"] + spec["steps"]:
                window["end"], window["tokens"] = time.perf_counter(), trainer.target_tokens - window["tokens"]

    from datasets import Dataset

    cls = MultiTaskTrainer if spec["impl"] == "ours" else two_pass_trainer_class()
    trainer = cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(features),
        data_collator=MultiTaskCollator(tokenizer.pad_token_id),
        alpha=config.alpha,
        family=family,
        callbacks=[Clock()],
    )
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    trainer.train()
    seconds = window["end"] - window["start"]
    return {
        "tokens_per_second": window["tokens"] / seconds,
        "seconds_per_step": seconds / spec["steps"],
        "target_tokens": window["tokens"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_train_mib": rss_before,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": pick_device(verbose=False),
        "precision": "bf16 autocast" if args.bf16 else "fp32",
        "threads": torch.get_num_threads(),
        "final_loss": trainer.state.log_history[-1].get("train_loss"),
    }


def build_inputs(work: Path, n_train: int) -> tuple[str, dict[str, str]]:
    """The tiny dataset (from the committed teacher cache) on disk, and the two students' start checkpoints."""
    from utils.config import load_config
    from utils.data import build_rationale_dataset
    from utils.loaders import load_task, select_examples
    from utils.models import make_t5_student
    from utils.student import prepare_student_init
    from utils.teacher import annotate, teacher_from_config

    base = load_config("tiny", n_train=n_train)
    train = select_examples(base.task, "train", base.n_train, base.max_ops)
    records = annotate(teacher_from_config(base), base, train, work / "cache.jsonl", "train")
    dataset = build_rationale_dataset(records, base.task, base.rationale_policy)
    dataset.save_to_disk(str(work / "data"))
    corpus = ["[label] [rationale]"] + [f"{ex['input']} {ex['equation']}" for ex in load_task(base.task, "train")]
    corpus += [r for r in dataset["train"]["rationale"] if r]
    inits = {
        "causal": prepare_student_init(load_config("tiny", student_layers=6)),
        "seq2seq": str(make_t5_student(corpus, work / "t5-init")),
    }
    return str(work / "data"), inits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="measured optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="steps run before the clock starts")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per step (the tiny profile's)")
    parser.add_argument("--n-train", type=int, default=300, help="training inputs (the tiny profile's)")
    parser.add_argument("--families", default="causal,seq2seq")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast where use_bf16 allows, causal too")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one variant, in a child process
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(json.loads(args.variant))))
        return

    work = Path(tempfile.mkdtemp(prefix="trainer-throughput-"))
    data, inits = build_inputs(work, args.n_train)
    from utils.models import count_parameters, load_model

    results = []
    for family in args.families.split(","):
        params = count_parameters(load_model(inits[family], family)) / 1e6
        for impl in IMPLEMENTATIONS:
            spec = {
                "family": family,
                "impl": impl,
                "init": inits[family],
                "data": data,
                "out": str(work / impl),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "warmup": args.warmup,
                "bf16": args.bf16,
            }
            done = subprocess.run(
                [sys.executable, __file__, "--variant", json.dumps(spec)], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(f"{family}/{impl} failed:\n{done.stderr[-3000:]}")
            line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
            results.append((family, impl, params, json.loads(line[len("RESULT ") :])))
            print(f"done: {family} / {impl}", flush=True)

    first = results[0][3]
    print(
        f"\nStudent trainer throughput, dss mode, {args.batch_size} rows per step, {args.steps} steps after "
        f"{args.warmup} warm-up, device {first['device']} ({first['threads']} threads),"
        f" {time.strftime('%Y-%m-%d')}"
    )
    cuda = first["peak_cuda_mib"] is not None
    print(
        "| student | params (M) | precision | step | target tokens/s | s/step | speed-up | peak RSS (MiB) |"
        + (" peak CUDA (MiB) |" if cuda else "")
    )
    print("|---|---:|---|---|---:|---:|---:|---:|" + ("---:|" if cuda else ""))
    reference = {family: r["tokens_per_second"] for family, impl, _, r in results if impl == "paper"}
    names = {
        ("causal", "ours"): "ours: 1 pass, LM head on target positions only",
        ("seq2seq", "ours"): "ours: 1 pass for both tasks' rows",
    }
    for family, impl, params, r in results:
        speedup = r["tokens_per_second"] / reference[family]
        print(
            f"| {family} | {params:.1f} | {r['precision']} | {names.get((family, impl), 'paper: 2 passes (one per task), full logits')} | {r['tokens_per_second']:.0f} | {r['seconds_per_step']:.2f} "
            f"| {speedup:.2f}x | {r['peak_rss_mib']:.0f} |" + (f" {r['peak_cuda_mib']:.0f} |" if cuda else "")
        )


if __name__ == "__main__":
    main()
