"""Where a student's training step and evaluation batch spend their time: a profile by phase.

For each student (`tiny`: the 6-layer cut of the bundled SmolLM2-135M-Instruct; `full`: all 30
layers of it; or the folder of any causal checkpoint, e.g. a vocabulary-pruned student), a
training step of `MultiTaskTrainer` is taken apart on real batches of the `tiny` `dss` rows (the
committed teacher cache, nothing generated), collated by `utils.student.make_collator(config,
tokenizer)` in the order `order_rows` gives, and timed phase by phase with the wall clock; each phase's median over `--steps` consecutive batches is shown with
its share of the median step. The forward and the loss are the trainer's own `compute_loss`, run
unchanged (bf16: under `torch.autocast`, as the Trainer's accelerator wraps it); the phases are
cut by hooks, which add no work:

- data collation: the collator call on the batch's rows, plus the copy to the device;
- forward to hidden states: from the call to the LM head's forward pre-hook (embedding, layers, norm);
- LM head + loss: from there to the loss (the head on target positions only, cross-entropy, the
  multi-task mix);
- backward, split by autograd hooks on the logits (their gradient ready), on the LM head's input
  (LM head backward done: its input gradient and the V x d weight gradient), on the embedding's
  output (all layers done) and a post-accumulate-grad hook on the embedding weight (the embedding
  gradient done: a dense V x d scatter of the rows' gradients, summed with the tied LM head's);
- grad-norm clip (`max_grad_norm`, as the Trainer clips every step), optimizer step (the
  optimizer and LR schedule `Trainer.create_optimizer_and_scheduler` builds, i.e. AdamW with the
  Trainer's settings), `zero_grad`.

Padding share: the fraction of the collated `input_ids` positions that are padding, for the
profiled batches and for the whole epoch, padded and with `pack_rows`.

The evaluation batch: `utils.evaluation.generate_predictions` on `--eval-rows` test inputs (the
`[label]` prompt, greedy, stopping at the end of the first line), timed by forward hooks on the
model: the first forward is the prefill, the others decode one token each; the rest is prompt
encoding, padding, stopping criteria and detokenising. It profiles the start checkpoint (untrained
for this task), so the decode length is what that checkpoint writes, up to `max_new_tokens`.

`--op-table` also prints torch.profiler's per-operator table (top operators by self CPU time) of one
more training step.

Run (the reference profile; an idle machine, nothing else running):
`.venv/bin/python benchmarks/profile_step.py` (defaults: `--students tiny,full --steps 10 --warmup 3
--batch-size 16 --eval-rows 16`). Smoke run:
`.venv/bin/python benchmarks/profile_step.py --steps 1 --warmup 1 --n-train 40 --eval-rows 4`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STUDENTS = {"tiny": 6, "full": 0}  # layers of SmolLM2-135M-Instruct kept (0: all 30)
TRAIN_PHASES = (
    ("collate", "data collation (collator call + copy to device)"),
    ("forward", "forward to hidden states (embedding, layers, final norm)"),
    ("head", "LM head + loss (target positions only)"),
    ("bwd_loss", "backward: loss and cross-entropy"),
    ("bwd_head", "backward: LM head (input grad + V x d weight grad)"),
    ("bwd_layers", "backward: transformer layers"),
    ("bwd_embed", "backward: embedding gradient (dense V x d scatter + tied sum)"),
    ("bwd_rest", "backward: the rest (other gradients' accumulation)"),
    ("clip", "grad-norm clip"),
    ("optimizer", "optimizer step (AdamW) + LR schedule"),
    ("zero_grad", "zero_grad"),
)


def machine_header() -> str:
    """CPU model, the SIMD features that decide fp32/bf16 speed, threads, versions, date."""
    import torch
    import transformers

    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    features = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)
    gpu = f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"Machine: {model} ({os.cpu_count()} logical CPUs; {features}); torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, transformers {transformers.__version__}{gpu}; {time.strftime('%Y-%m-%d %H:%M')}"
    )


class Marks:
    """Wall-clock marks set by hooks; on CUDA each mark waits for the device first."""

    def __init__(self, cuda: bool):
        self.cuda, self.t = cuda, {}

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def mark(self, name: str, last: bool = False) -> None:
        if last or name not in self.t:
            self.t[name] = self.now()


def install_hooks(model, marks: Marks) -> list:
    """Hooks that mark the LM head's start, and in backward: logits gradient, LM head input gradient,
    embedding output gradient, embedding weight gradient accumulated. Returns the handles."""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()

    def head_pre(module, inputs):
        marks.mark("head_start")

    def head_post(module, inputs, output):
        if output.requires_grad:
            output.register_hook(lambda grad: marks.mark("logits_grad"))
        if inputs[0].requires_grad:
            inputs[0].register_hook(lambda grad: marks.mark("head_input_grad", last=True))

    def embed_post(module, inputs, output):
        if output.requires_grad:
            output.register_hook(lambda grad: marks.mark("embed_out_grad", last=True))

    return [
        head.register_forward_pre_hook(head_pre),
        head.register_forward_hook(head_post),
        embed.register_forward_hook(embed_post),
        embed.weight.register_post_accumulate_grad_hook(lambda param: marks.mark("embed_grad", last=True)),
    ]


def padding_share(batches: list[dict]) -> float:
    """Fraction of the collated ``input_ids`` positions that hold no row token."""
    from trainer_throughput import row_tokens

    positions = sum(int(b["batch"]["input_ids"].numel()) for b in batches)
    real = sum(sum(row_tokens(f, "causal")[0] for f in b["rows"]) for b in batches)
    return 1 - real / positions


def collate_all(features: list[dict], collator, batch_size: int) -> list[dict]:
    return [
        {"rows": features[i : i + batch_size], "batch": collator(features[i : i + batch_size])}
        for i in range(0, len(features), batch_size)
    ]


def profile_training(model, tokenizer, config, features: list[dict], args, marks: Marks) -> dict:
    """Per-phase wall times (lists of seconds, one per measured step) of ``args.steps`` training steps."""
    import torch
    from datasets import Dataset

    from utils.student import MultiTaskTrainer, make_collator, training_arguments

    family = "causal"
    targs = training_arguments(
        config, Path(args.work) / "out", len(features), save_strategy="no", disable_tqdm=True, max_steps=10**6
    )
    collator = make_collator(config, tokenizer)
    trainer = MultiTaskTrainer(
        model=model,
        args=targs,
        train_dataset=Dataset.from_list(features),
        data_collator=collator,
        alpha=config.alpha,
        family=family,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
    device = targs.device
    model.to(device).train()
    bf16 = bool(targs.bf16)
    times: dict[str, list[float]] = {key: [] for key, _ in TRAIN_PHASES}
    times["total"] = []
    handles = install_hooks(model, marks)
    n_batches = -(-len(features) // config.batch_size)
    for step in range(args.warmup + args.steps):
        index = step % n_batches
        rows = features[index * config.batch_size : (index + 1) * config.batch_size]
        marks.t = {}
        t0 = marks.now()
        batch = collator(rows)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        t1 = marks.now()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = trainer.compute_loss(model, batch)
        t2 = marks.now()
        loss.backward()
        t3 = marks.now()
        torch.nn.utils.clip_grad_norm_(model.parameters(), targs.max_grad_norm)
        t4 = marks.now()
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        t5 = marks.now()
        model.zero_grad()
        t6 = marks.now()
        if step < args.warmup:
            continue
        m = marks.t
        cuts = [t2, m.get("logits_grad"), m.get("head_input_grad"), m.get("embed_out_grad"), m.get("embed_grad"), t3]
        if None in cuts or cuts != sorted(cuts):
            raise SystemExit(f"backward hooks fired out of the expected order: {m}")
        phase = {
            "collate": t1 - t0,
            "forward": m["head_start"] - t1,
            "head": t2 - m["head_start"],
            "bwd_loss": cuts[1] - cuts[0],
            "bwd_head": cuts[2] - cuts[1],
            "bwd_layers": cuts[3] - cuts[2],
            "bwd_embed": cuts[4] - cuts[3],
            "bwd_rest": cuts[5] - cuts[4],
            "clip": t4 - t3,
            "optimizer": t5 - t4,
            "zero_grad": t6 - t5,
            "total": t6 - t0,
        }
        for key, value in phase.items():
            times[key].append(value)
    for handle in handles:
        handle.remove()
    if args.op_table:
        from torch.profiler import ProfilerActivity, profile, record_function

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collator(rows).items()}
        with profile(activities=activities) as prof:
            with record_function("forward+loss"), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = trainer.compute_loss(model, batch)
            with record_function("backward"):
                loss.backward()
            with record_function("optimizer"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), targs.max_grad_norm)
                trainer.optimizer.step()
                model.zero_grad()
        sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        times["op_table"] = prof.key_averages().table(sort_by=sort, row_limit=20)
    times["optimizer_name"] = type(trainer.optimizer).__name__ + f" ({targs.optim})"
    times["precision"] = "bf16 autocast" if bf16 else "fp32"
    return times


def profile_generation(model, tokenizer, config, inputs: list[str], max_new_tokens: int, repeats: int, marks):
    """Prefill / decode / other wall times of ``generate_predictions`` on ``inputs`` (one batch)."""
    from utils.evaluation import generate_predictions

    calls: list[tuple[float, float, int]] = []
    pending = {}

    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        pending["start"], pending["width"] = marks.now(), int(ids.shape[1]) if ids is not None else 0

    def post(module, args, kwargs, output):
        calls.append((pending["start"], marks.now(), pending["width"]))

    handles = [
        model.register_forward_pre_hook(pre, with_kwargs=True),
        model.register_forward_hook(post, with_kwargs=True),
    ]
    runs = []
    for _ in range(repeats):
        calls.clear()
        start = marks.now()
        texts = generate_predictions(
            model,
            tokenizer,
            inputs,
            "causal",
            max_new_tokens=max_new_tokens,
            batch_size=len(inputs),
            max_source_length=config.max_source_length,
        )
        total = marks.now() - start
        prefill = calls[0][1] - calls[0][0]
        decode = sum(end - begin for begin, end, _ in calls[1:])
        runs.append(
            {
                "prefill": prefill,
                "decode": decode,
                "other": total - prefill - decode,
                "total": total,
                "forwards": len(calls),
                "prompt_width": calls[0][2],
                "answer_tokens": statistics.median(len(tokenizer(t).input_ids) for t in texts),
            }
        )
    for handle in handles:
        handle.remove()
    return runs


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def print_student(name: str, model, config, stats: dict, batches: list[dict], gen: list[dict], args):
    """The Markdown tables of one student."""
    from trainer_throughput import row_tokens

    from utils.models import count_parameters

    params = count_parameters(model)
    what = Path(name).name if name not in STUDENTS else "SmolLM2-135M-Instruct"
    total = median_ms(stats["total"])
    rows = [row for b in batches for row in b["rows"]]
    real = statistics.median(sum(row_tokens(f, "causal")[0] for f in b["rows"]) for b in batches)
    targets = statistics.median(sum(row_tokens(f, "causal")[2] for f in b["rows"]) for b in batches)
    shape = statistics.median_low(tuple(b["batch"]["input_ids"].shape) for b in batches)
    print(
        f"\n### {name}: {what}, {model.config.num_hidden_layers} layers, {params / 1e6:.1f}M parameters, "
        f"{stats['precision']}, batch {config.batch_size} rows, {'packed' if config.pack_rows else 'padded'}\n"
    )
    print(
        f"Median over {args.steps} steps (consecutive batches after {args.warmup} warm-up): "
        f"{real:.0f} real tokens in a batch of input_ids shape {' x '.join(map(str, shape))}, {targets:.0f} target positions "
        f"(the LM head runs on {100 * targets / real:.0f}% of the real tokens); {len(rows)} rows profiled.\n"
    )
    print("| phase | ms | share of step |")
    print("|---|---:|---:|")
    for key, label in TRAIN_PHASES:
        ms = median_ms(stats[key])
        print(f"| {label} | {ms:.1f} | {100 * ms / total:.1f}% |")
    print(f"| **step (median of totals)** | **{total:.1f}** | 100% |")
    print(
        f"\nOptimizer: {stats['optimizer_name']}. Shares are each phase's median over the median step, "
        "so they need not add to exactly 100%."
    )
    print(
        f"Embedding gradient: {stats['embed_grad_mb']:.0f} MB (fp32 V x d = {stats['vocab']} x {stats['d_model']}, "
        f"dense), {100 * stats['embed_share']:.0f}% of the parameters, so about that share of the clip and "
        "optimizer work too."
    )
    print(
        f"Padding share of the collated input_ids, padded rows: {100 * stats['pad_profiled']:.1f}% in the profiled batches, "
        f"{100 * stats['pad_epoch']:.1f}% over the epoch; with pack_rows=True: "
        f"{100 * stats['pad_packed_profiled']:.1f}% and {100 * stats['pad_packed_epoch']:.1f}%."
    )
    print(f"Vocabulary: {stats['vocab']:,} tokens ({'pruned to the data, prune_vocab' if stats['vocab'] < 49152 else 'whole'}).")
    if "op_table" in stats:
        print(f"\ntorch.profiler, one more step, top operators by self time:\n\n```\n{stats['op_table']}\n```")

    g = {key: median_ms([r[key] for r in gen]) for key in ("prefill", "decode", "other", "total")}
    forwards = statistics.median(r["forwards"] for r in gen)
    print(
        f"\nEvaluation batch: generate_predictions on {args.eval_rows} test inputs, [label] prompt, greedy, first-line "
        f"stop, median of {len(gen)} runs; prompts padded to {gen[0]['prompt_width']} tokens; {forwards:.0f} tokens "
        f"generated per row of max_new_tokens={args.max_new_tokens} (the batch stops when every row's first line "
        f"is done); a row's answer holds a median {statistics.median(r['answer_tokens'] for r in gen):.0f} tokens.\n"
    )
    print("| phase | ms | share of batch |")
    print("|---|---:|---:|")
    decode_steps = max(forwards - 1, 1)
    phases = (
        ("prefill (1 forward over the prompts)", g["prefill"]),
        (f"decode ({forwards - 1:.0f} forwards, {g['decode'] / decode_steps:.1f} ms each)", g["decode"]),
        ("other (encode, pad, stopping criteria, detokenise)", g["other"]),
    )
    for label, ms in phases:
        print(f"| {label} | {ms:.1f} | {100 * ms / g['total']:.1f}% |")
    print(f"| **batch total** | **{g['total']:.1f}** | 100% |")


def main() -> None:
    from trainer_throughput import add_set_option

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--students", default="tiny,full", help="tiny (6 layers), full (30 layers), or a causal checkpoint's folder"
    )
    parser.add_argument("--steps", type=int, default=10, help="measured training steps (the median is shown)")
    parser.add_argument("--warmup", type=int, default=3, help="training steps run before the measured ones")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per step (the tiny profile's)")
    parser.add_argument("--n-train", type=int, default=300, help="training inputs (the tiny profile's)")
    parser.add_argument("--eval-rows", type=int, default=16, help="test inputs in the evaluation batch")
    parser.add_argument("--eval-repeats", type=int, default=3, help="runs of the evaluation batch (median)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generate_predictions' default")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast where use_bf16 allows")
    parser.add_argument("--op-table", action="store_true", help="also print torch.profiler's per-operator table")
    add_set_option(parser)
    args = parser.parse_args()

    import torch
    from datasets import load_from_disk
    from trainer_throughput import build_data, causal_init, parse_sets

    from utils.config import load_config, pick_device
    from utils.loaders import select_examples
    from utils.models import count_parameters, load_model, load_tokenizer
    from utils.student import build_rows, make_collator, order_rows, tokenize_rows

    sets = parse_sets(args.set)
    args.work = tempfile.mkdtemp(prefix="profile-step-")
    data, _ = build_data(Path(args.work), args.n_train)
    train = load_from_disk(data)["train"]
    base = load_config("tiny")
    test_inputs = [ex["input"] for ex in select_examples(base.task, "test", args.eval_rows, base.max_ops)]
    marks = Marks(torch.cuda.is_available())
    print(machine_header())
    print(f"Command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    for name in args.students.split(","):
        if name not in STUDENTS and not Path(name, "config.json").exists():
            raise SystemExit(f"Unknown student {name!r}; choose from {', '.join(STUDENTS)} or a causal checkpoint.")
        layers = STUDENTS.get(name)
        bf16 = True if args.bf16 else None
        config = load_config("tiny", student_layers=layers or None, batch_size=args.batch_size, bf16=bf16, **sets)
        # the checkpoint train_student would train: pruned to this data when the config says prune_vocab
        init = causal_init(layers or 0, data if config.prune_vocab else None, None if name in STUDENTS else name)
        tokenizer = load_tokenizer(init)
        torch.manual_seed(config.seed)
        model = load_model(init, "causal").to(pick_device(verbose=False))
        features = tokenize_rows(
            build_rows(train, "dss"), tokenizer, "causal", config.max_source_length, config.max_target_length
        )
        features = order_rows(features, config)
        gen = profile_generation(model, tokenizer, config, test_inputs, args.max_new_tokens, args.eval_repeats, marks)
        stats = profile_training(model, tokenizer, config, features, args, marks)
        embed = model.get_input_embeddings().weight
        stats |= {
            "vocab": embed.shape[0],
            "d_model": embed.shape[1],
            "embed_grad_mb": embed.numel() * 4 / 1e6,
            "embed_share": embed.numel() / count_parameters(model),
        }
        n_batches = -(-len(features) // config.batch_size)
        measured = [(s % n_batches) for s in range(args.warmup, args.warmup + args.steps)]
        configured = collate_all(features, make_collator(config, tokenizer), config.batch_size)
        profiled = [configured[i] for i in measured]
        padded = collate_all(features, make_collator(dataclasses.replace(config, pack_rows=False), tokenizer),
                             config.batch_size)
        stats["pad_profiled"] = padding_share([padded[i] for i in measured])
        stats["pad_epoch"] = padding_share(padded)
        packer = make_collator(dataclasses.replace(config, pack_rows=True), tokenizer)
        packed = collate_all(features, packer, config.batch_size)
        stats["pad_packed_profiled"] = padding_share([packed[i] for i in measured])
        stats["pad_packed_epoch"] = padding_share(packed)
        print_student(name, model, config, stats, profiled, gen, args)
        del model


if __name__ == "__main__":
    main()
