"""Load test: the exported student behind the HTTP service against the teacher served in-process.

Starts `python -m utils serve EXPORT` on 127.0.0.1 (a free port), sends a bounded number of
requests (one problem each) with a fixed concurrency, stops the service, and then measures the
same requests answered in-process, one model call at a time: the student (`Predictor`) and the
run's teacher (few-shot chain-of-thought prompts, greedy, its config's backend and token budget).
Each in-process row runs in a fresh process, so its peak memory is its own. Prints one Markdown
table: throughput, p50/p95/p99 latency per request, errors and peak resident memory.

Run: `.venv/bin/python benchmarks/serve_load.py [--export DIR] [--requests 48] [--concurrency 8]
[--teacher-requests 12] [--threads N]`. EXPORT defaults to the newest runs/*/export/* folder (notebook 05).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def newest_export(runs_root: Path) -> Path:
    found = [p for p in runs_root.glob("*/export/*") if (p / "student_meta.json").exists()]
    if not found:
        raise SystemExit(f"No exported student under {runs_root}/*/export/: run the notebooks first "
                         "(`make demo`, or notebook 05 after 01-04), or pass --export DIR.")
    return max(found, key=lambda p: (p / "student_meta.json").stat().st_mtime)


def test_inputs(export: Path, n: int) -> list[str]:
    """Test problems of the export's run (its saved dataset), else of its task."""
    from utils.data import load_dataset_from_run
    from utils.loaders import select_examples

    try:
        inputs = list(load_dataset_from_run(export.parent.parent)["test"]["input"])
    except FileNotFoundError:
        task = json.loads((export / "student_meta.json").read_text())["task"]
        inputs = [ex["input"] for ex in select_examples(task, "test", n)]
    return [inputs[i % len(inputs)] for i in range(n)]


def serve_and_load(export: Path, payloads: list[dict], concurrency: int, threads: int | None) -> dict:
    """The HTTP row: start the service in its own process, load it, stop it."""
    import httpx

    from utils.serve import free_port, load_test

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "utils", "serve", str(export), "--port", str(port)]
    command += ["--threads", str(threads)] if threads else []
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise SystemExit(f"The service exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("The service did not answer /healthz within 180 s.")
            time.sleep(0.5)
        httpx.post(f"{url}/predict", json=payloads[0], timeout=120)  # warm-up
        result = load_test(url, payloads, concurrency=concurrency, server_pid=process.pid)
        result["batches"] = httpx.get(f"{url}/healthz", timeout=5).json()
        return result
    finally:
        process.terminate()
        process.wait(timeout=30)


def _in_process(kind: str, export: str, items: list, concurrency: int, threads: int | None, queue) -> None:
    """Child process: load one model, answer ``items`` in-process, put the summary on ``queue``."""
    sys.path.insert(0, str(ROOT))
    import torch

    from utils.serve import load_test_in_process

    if threads:
        torch.set_num_threads(threads)

    if kind == "student":
        from utils.export import Predictor

        predictor = Predictor.from_pretrained(export)
        predictor.predict(items[:1])  # warm-up

        def call(text):
            return len(predictor.predict([text]))
    else:
        from utils.config import load_run_config
        from utils.teacher import load_teacher, teacher_from_config

        config = load_run_config(Path(export).parent.parent, os.environ.get("DSS_PROFILE") or "tiny")
        if config.teacher_backend == "llamacpp" and threads:
            import llama_cpp

            teacher = load_teacher("llamacpp", config.teacher_model, n_threads=threads)
            llama_cpp.llama_set_n_threads(teacher.llm.ctx, threads, threads)  # prompt processing too
        else:
            teacher = teacher_from_config(config)
        teacher.generate(items[:1], n=1, temperature=0.0, max_new_tokens=config.max_new_tokens)  # warm-up

        def call(prompt):
            return len(teacher.generate([prompt], n=1, temperature=0.0, max_new_tokens=config.max_new_tokens))

    queue.put(load_test_in_process(call, items, concurrency=concurrency))


def in_process(kind: str, export: Path, items: list, concurrency: int, threads: int | None) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_in_process, args=(kind, str(export), items, concurrency, threads, queue))
    child.start()
    result = queue.get(timeout=600)
    child.join(timeout=60)
    return result


def main() -> None:
    import torch

    from utils.config import load_run_config
    from utils.prompts import build_prompt
    from utils.serve import load_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, default=None, help="export folder (default: newest runs/*/export/*)")
    parser.add_argument("--runs-root", type=Path, default=ROOT / "runs")
    parser.add_argument("--requests", type=int, default=48, help="requests to the student (one problem each)")
    parser.add_argument("--teacher-requests", type=int, default=12, help="requests to the teacher (slower)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per model (torch, llama.cpp); default: each engine's choice")
    args = parser.parse_args()

    export = (args.export or newest_export(args.runs_root)).resolve()
    inputs = test_inputs(export, max(args.requests, args.teacher_requests))
    config = load_run_config(export.parent.parent, os.environ.get("DSS_PROFILE") or "tiny")
    payloads = [{"inputs": text} for text in inputs[: args.requests]]
    prompts = [build_prompt(text, config.task, n_shots=config.n_shots) for text in inputs[: args.teacher_requests]]

    rows = {}
    http = serve_and_load(export, payloads, args.concurrency, args.threads)
    rows[f"student over HTTP (FastAPI, shared batches of <= 16), {export.name}"] = http
    rows["student in-process (Predictor, one call at a time)"] = in_process("student", export, inputs[: args.requests],
                                                                             args.concurrency, args.threads)
    rows[f"teacher in-process ({config.teacher_backend} {config.teacher_model}, {config.n_shots}-shot CoT, "
         f"<= {config.max_new_tokens} tokens)"] = in_process("teacher", export, prompts, args.concurrency,
                                                          args.threads)

    print(f"\nLoad test, concurrency {args.concurrency}, one problem per request, greedy; {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads per model: "
          f"{args.threads or 'default'}. Peak memory: resident set of the serving process (the service, or the "
          "in-process child).")
    print(load_table(rows))
    print(f"\nService batches: {http['batches']['batches']} model calls for {http['requests'] + 1} requests "
          f"(largest {http['batches']['largest_batch']} inputs).")


if __name__ == "__main__":
    main()
