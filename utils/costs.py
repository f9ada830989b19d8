"""What a model costs to run: parameters, size on disk, latency, throughput and peak memory.

One model is measured per process. Peak resident memory is a property of a whole process, and
memory a process once held is rarely handed back, so a model measured after another one in the
same process would carry the first one's memory. ``measure_in_subprocess`` therefore measures
each model in a fresh ``python -m utils costs`` process; notebook 04 compares models that way.

Torch is imported only where a measurement needs it, so the report reads ``describe_costs``
without loading it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KINDS = ("student", "teacher")


class PeakRSS:
    """Peak resident memory (MB) of a process and its children while the block runs."""

    def __init__(self, pid: int | None = None, every: float = 0.02):
        import psutil

        self.process = psutil.Process(pid)
        self.every, self.peak_mb = every, 0.0

    def _sample(self) -> float:
        import psutil

        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a child that exited between listing and reading
                pass
        return total / 2**20

    def __enter__(self):
        self._stop = threading.Event()
        self.peak_mb = self._sample()

        def loop():
            while not self._stop.wait(self.every):
                self.peak_mb = max(self.peak_mb, self._sample())

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._sample())
        return False


class _PeakMemory:
    """Peak memory (MB) while the block runs: on CUDA the peak torch allocated on the device, else
    the resident memory of this process (``PeakRSS``)."""

    def __init__(self, device):
        import torch

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.peak_mb = 0.0

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._rss = PeakRSS(every=0.005).__enter__()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._rss.__exit__(*exc)
            self.peak_mb = self._rss.peak_mb
        return False


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, interpolated linearly between ranks (0.0 when empty)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def folder_size_mb(path: str | Path | None, suffixes=(".safetensors", ".bin", ".gguf", ".onnx", ".pt")) -> float | None:
    """Size of the weight files of a model folder (or of one file) in MB."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in suffixes) / 2**20


def latency_stats(seconds: list[float], batch_seconds: float | None, batch_items: int) -> dict:
    """p50/p95 latency per example (ms) at batch 1 and throughputs (examples/s)."""
    return {
        "latency_ms_p50": 1000 * percentile(seconds, 0.5),
        "latency_ms_p95": 1000 * percentile(seconds, 0.95),
        "throughput_batch1": len(seconds) / sum(seconds) if seconds and sum(seconds) else 0.0,
        "throughput_batched": batch_items / batch_seconds if batch_seconds else None,
    }


# --- one model, in this process ------------------------------------------------------------------


def measure_student_costs(model, tokenizer, inputs: list[str], family: str, path: str | Path | None = None,
                          batch_size: int = 16, max_new_tokens: int = 32) -> dict:
    """Parameters, size on disk, latency (batch 1, p50/p95), throughput (batch 1 and batched) and
    peak memory of a student answering ``inputs`` with its label prompt (greedy).

    The peak memory is this process's: call it in a fresh process (``measure_in_subprocess``) when
    it is to be compared with another model's."""
    from utils.evaluation import generate_predictions
    from utils.models import count_parameters

    device = next(model.parameters()).device
    generate_predictions(model, tokenizer, inputs[:1], family, max_new_tokens=max_new_tokens, batch_size=1)  # warm-up
    with _PeakMemory(device) as memory:
        seconds = []
        for text in inputs:
            start = time.perf_counter()
            generate_predictions(model, tokenizer, [text], family, max_new_tokens=max_new_tokens, batch_size=1)
            seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        generate_predictions(model, tokenizer, inputs, family, max_new_tokens=max_new_tokens, batch_size=batch_size)
        batched = time.perf_counter() - start
    return {"parameters": count_parameters(model), "size_mb": folder_size_mb(path), "n": len(inputs),
            "batch_size": batch_size, "device": str(device), "engine": "transformers",
            "peak_memory_mb": memory.peak_mb, **latency_stats(seconds, batched, len(inputs))}


def measure_teacher_costs(teacher, prompts: list, max_new_tokens: int = 64, parameters: int | None = None,
                          path: str | Path | None = None) -> dict:
    """The same measurements for a teacher answering few-shot CoT ``prompts`` (greedy), through
    its own backend; "batched" sends all prompts in one ``generate`` call."""
    teacher.generate(prompts[:1], n=1, temperature=0.0, max_new_tokens=max_new_tokens)  # warm-up
    with _PeakMemory(None) as memory:
        seconds = []
        for prompt in prompts:
            start = time.perf_counter()
            teacher.generate([prompt], n=1, temperature=0.0, max_new_tokens=max_new_tokens)
            seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        teacher.generate(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens)
        batched = time.perf_counter() - start
    info = teacher.describe()
    return {"parameters": parameters, "size_mb": folder_size_mb(path), "n": len(prompts), "batch_size": len(prompts),
            "device": "cpu", "engine": info.get("backend", type(teacher).__name__), "peak_memory_mb": memory.peak_mb,
            **latency_stats(seconds, batched, len(prompts))}


# --- one model per process -----------------------------------------------------------------------


def measure_from_spec(spec: dict) -> dict:
    """Load the model a spec names and measure it in this process (what ``python -m utils costs`` runs).

    ``{"kind": "student", "path", "family", "inputs", "batch_size"?, "max_new_tokens"?, "device"?}``, or
    ``{"kind": "teacher", "prompts", "max_new_tokens"?, "parameters"?, "path"?}`` with either
    ``"backend"`` and ``"model"`` (``utils.teacher.load_teacher``) or ``"config"`` (a ``RunConfig``
    as a dict, for ``utils.teacher.teacher_from_config``).
    """
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"Unknown cost kind {kind!r}. Valid kinds: {', '.join(KINDS)}.")
    if kind == "student":
        from utils.config import pick_device
        from utils.models import load_model, load_tokenizer

        model = load_model(spec["path"], spec["family"]).to(spec.get("device") or pick_device(verbose=False))
        return measure_student_costs(model, load_tokenizer(spec["path"]), spec["inputs"], spec["family"],
                                     path=spec["path"], batch_size=spec.get("batch_size", 16),
                                     max_new_tokens=spec.get("max_new_tokens", 32))
    from utils.teacher import load_teacher, teacher_from_config

    if "config" in spec:
        from utils.config import load_config

        values = dict(spec["config"])
        teacher = teacher_from_config(load_config(values.pop("profile", None), **values))
    else:
        teacher = load_teacher(spec["backend"], spec["model"])
    return measure_teacher_costs(teacher, spec["prompts"], spec.get("max_new_tokens", 64), spec.get("parameters"),
                                 spec.get("path"))


def die_with_parent() -> None:
    """In a child process on Linux (a ``preexec_fn``): ask the kernel to send it SIGTERM when its
    parent dies, so a killed notebook kernel or test run leaves no measuring process behind, busy on
    the cores. Hand-written: the standard library has no wrapper for ``prctl(PR_SET_PDEATHSIG)``."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def measure_in_subprocess(kind: str, timeout: float | None = 1800, **spec) -> dict:
    """``measure_student_costs`` or ``measure_teacher_costs`` (``kind``) in a fresh Python process,
    so the peak memory is that one model's; returns the same dict.

    ``spec``: see ``measure_from_spec`` (paths may be ``Path`` objects). The child's output is
    passed through on failure, so an error names its cause."""
    from utils.config import REPO_ROOT

    if kind not in KINDS:
        raise ValueError(f"Unknown cost kind {kind!r}. Valid kinds: {', '.join(KINDS)}.")
    with tempfile.TemporaryDirectory(prefix="dss-costs-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "costs.json"
        spec_path.write_text(json.dumps({"kind": kind, **spec}, default=str))
        # The repository root is the import root of utils (it is never installed), hence cwd.
        proc = subprocess.run([sys.executable, "-m", "utils", "costs", str(spec_path), "--out", str(out_path)],
                              cwd=REPO_ROOT, env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True,
                              text=True, timeout=timeout, preexec_fn=die_with_parent if sys.platform == "linux" else None)
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"Measuring the {kind} in its own process failed (exit {proc.returncode}):\n"
                               + (proc.stdout + proc.stderr)[-3000:])
        return json.loads(out_path.read_text())


# --- comparing two models ------------------------------------------------------------------------


def compare_costs(student: dict, teacher: dict) -> dict:
    """"N times smaller, M times faster": ratios computed from two cost dicts (None when unknown)."""

    def ratio(a, b):
        return a / b if a and b else None

    return {
        "parameters_ratio": ratio(teacher.get("parameters"), student.get("parameters")),
        "size_ratio": ratio(teacher.get("size_mb"), student.get("size_mb")),
        "latency_p50_ratio": ratio(teacher.get("latency_ms_p50"), student.get("latency_ms_p50")),
        "throughput_batched_ratio": ratio(student.get("throughput_batched"), teacher.get("throughput_batched")),
    }


def describe_costs(ratios: dict) -> str:
    """The sentence for a cost comparison, from ``compare_costs``."""
    parts = []
    if ratios.get("parameters_ratio"):
        parts.append(f"{ratios['parameters_ratio']:.1f} times fewer parameters")
    if ratios.get("size_ratio"):
        parts.append(f"{ratios['size_ratio']:.1f} times smaller on disk")
    if ratios.get("latency_p50_ratio"):
        parts.append(f"{ratios['latency_p50_ratio']:.1f} times faster per example at batch 1 (p50)")
    if ratios.get("throughput_batched_ratio"):
        parts.append(f"{ratios['throughput_batched_ratio']:.1f} times the throughput when batched")
    return ("Against the teacher, the student has " + "; ".join(parts) + ".") if parts else "No cost comparison available."


def plot_costs(student: dict, teacher: dict, out_path: str | Path, names=("student", "teacher")):
    """Parameters, size on disk and p50 latency of student and teacher, side by side."""
    from utils.evaluation import load_pyplot

    plt = load_pyplot()
    fields = [("parameters", "parameters (M)", 1e-6), ("size_mb", "weights on disk (MB)", 1.0),
              ("latency_ms_p50", "latency per example, p50 (ms)", 1.0)]
    fig, axes = plt.subplots(1, len(fields), figsize=(9, 3))
    for ax, (key, label, scale) in zip(axes, fields):
        values = [(d.get(key) or 0) * scale for d in (student, teacher)]
        ax.bar(list(names), values, color=["tab:blue", "tab:red"])
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    return fig
