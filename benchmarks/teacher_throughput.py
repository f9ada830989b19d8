"""Teacher throughput with the bundled model: one-at-a-time vs batched, llama.cpp, and a cached re-run.

Prints one table from one run, every row on the same prompts (few-shot CoT prompts of `arith`)
and the same greedy settings, so the rows compare side by side.
Run: `.venv/bin/python benchmarks/teacher_throughput.py [--prompts 16] [--batch 8] [--tokens 48]`.
Targets on 2 cores (issue 01): batched >= 3x one-at-a-time; cached re-run >= 100x generating.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed(teacher, prompts, tokens, tokenizer):
    start = time.perf_counter()
    outputs = teacher.generate(prompts, n=1, temperature=0.0, max_new_tokens=tokens, seed=0)
    seconds = time.perf_counter() - start
    generated = sum(len(tokenizer(o[0], add_special_tokens=False)["input_ids"]) for o in outputs)
    return seconds, generated


def main() -> None:
    import os

    import torch

    from utils.config import use_bf16
    from utils.loaders import select_examples
    from utils.models import load_tokenizer
    from utils.prompts import build_prompt
    from utils.teacher import LlamaCppTeacher, TransformersTeacher, generate_rationales

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()

    examples = select_examples("arith", "test", args.prompts, max_ops=1)
    prompts = [build_prompt(ex, "arith", n_shots=4) for ex in examples]
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    rows = []

    one = TransformersTeacher("smollm2-135m-instruct", batch_size=1)
    rows.append(("transformers, one at a time", *_timed(one, prompts, args.tokens, tokenizer)))
    one.batch_size = args.batch
    rows.append((f"transformers, batch {args.batch}", *_timed(one, prompts, args.tokens, tokenizer)))
    del one
    llama = LlamaCppTeacher("smollm2-135m-instruct")
    rows.append(("llama.cpp (Q4_1 GGUF), one at a time", *_timed(llama, prompts, args.tokens, tokenizer)))

    cache = Path(tempfile.mkdtemp()) / "cache.jsonl"
    start = time.perf_counter()
    generate_rationales(llama, "arith", examples, cache, n=1, max_new_tokens=args.tokens, n_shots=4)
    first = time.perf_counter() - start
    start = time.perf_counter()
    generate_rationales(llama, "arith", examples, cache, n=1, max_new_tokens=args.tokens, n_shots=4)
    cached = time.perf_counter() - start

    base = rows[0][1]
    print(f"\nBundled teacher SmolLM2-135M-Instruct, {args.prompts} prompts, <= {args.tokens} new tokens, greedy; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"bf16 autocast: {use_bf16('cpu')}")
    print("| setting | wall (s) | new tokens | tokens/s | examples/s | speed-up vs one at a time |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, generated in rows:
        print(f"| {name} | {seconds:.1f} | {generated} | {generated / seconds:.1f} | {args.prompts / seconds:.2f} "
              f"| {base / seconds:.1f}x |")
    print(f"| generate_rationales, llama.cpp, first run | {first:.2f} | | | {args.prompts / first:.2f} | |")
    print(f"| generate_rationales, same call again (cache) | {cached:.3f} | | | {args.prompts / cached:.0f} "
          f"| {first / cached:.0f}x faster than generating |")


if __name__ == "__main__":
    main()
