"""Evaluating students and the teacher on the same test items, with figures and a report."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch

from utils.student import LABEL_PREFIX, RATIONALE_PREFIX, format_prompt, trained_with_chat_template


def generate_predictions(model, tokenizer, inputs: list[str], family: str, prefix: str = LABEL_PREFIX,
                         max_new_tokens: int = 32, batch_size: int = 16, first_line: bool = True,
                         num_samples: int = 1, temperature: float = 0.7, seed: int = 0) -> list:
    """Outputs of a student for ``prefix + input`` (left padding for causal models).

    Greedy by default; ``num_samples > 1`` samples that many outputs per input (a list each).
    ``first_line`` keeps the first line of each output (labels); rationales keep everything.
    """
    device = next(model.parameters()).device
    model.eval()
    chat = trained_with_chat_template(model)
    sampling = num_samples > 1
    if sampling:
        torch.manual_seed(seed)
    outputs = []
    for start in range(0, len(inputs), batch_size):
        chunk = [format_prompt(tokenizer, prefix + text, family, chat) for text in inputs[start : start + batch_size]]
        if family == "causal":
            tokenizer.padding_side = "left"
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        else:
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
        options = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                       num_return_sequences=num_samples) if sampling else dict(do_sample=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **options)
        new = out[:, enc["input_ids"].shape[1] :] if family == "causal" else out
        texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        if first_line:
            texts = [t.split("\n")[0].strip() for t in texts]
        if sampling:
            outputs.extend(texts[i : i + num_samples] for i in range(0, len(texts), num_samples))
        else:
            outputs.extend(texts)
    return outputs


def bootstrap_ci(correct: list[bool], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval for an accuracy."""
    if not correct:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(correct)
    stats = sorted(sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo = stats[int((1 - level) / 2 * n_boot)]
    hi = stats[min(n_boot - 1, int((1 + level) / 2 * n_boot))]
    return (lo, hi)


INFERENCE = ("label", "rationale", "self_consistency")


def evaluate_student(model, tokenizer, split, family: str, task: str = "arith", batch_size: int = 16,
                     max_new_tokens: int = 32, inference: str = "label", rationale_tokens: int = 128,
                     num_samples: int = 5, temperature: float = 0.7, seed: int = 0) -> dict:
    """Accuracy of a student on a split, with per-example predictions and a bootstrap 95% interval.

    ``inference``:

    - ``"label"`` (the paper): the ``[label]`` prompt, greedy; the output is the answer.
    - ``"rationale"`` (rationale, then answer, as in Fine-tune-CoT): the ``[rationale]`` prompt,
      greedy; the answer is parsed from ``... The answer is <label>.`` at its end. Only students
      trained with ``config.extra["rationale_answer"] = True`` learned to write that ending.
    - ``"self_consistency"``: ``num_samples`` sampled rationales, the answer by majority vote.

    The metric is the task's (``utils.tasks.task_correct``): the value of an equation through the
    safe evaluator for math tasks, the normalised label for classification tasks. An output that
    cannot be read counts as wrong.
    """
    from utils.rationales import majority_vote, parse_cot
    from utils.tasks import task_correct

    if inference not in INFERENCE:
        raise ValueError(f"Unknown inference {inference!r}. Valid choices: {', '.join(INFERENCE)}.")
    inputs = list(split["input"])
    golds = list(split["label"])
    outputs = None
    if inference == "label":
        preds = generate_predictions(model, tokenizer, inputs, family, LABEL_PREFIX, max_new_tokens, batch_size)
    elif inference == "rationale":
        outputs = generate_predictions(model, tokenizer, inputs, family, RATIONALE_PREFIX, rationale_tokens,
                                       batch_size, first_line=False)
        preds = [parse_cot(text, task)[1] for text in outputs]
    else:
        outputs = generate_predictions(model, tokenizer, inputs, family, RATIONALE_PREFIX, rationale_tokens,
                                       max(1, batch_size // num_samples), first_line=False,
                                       num_samples=num_samples, temperature=temperature, seed=seed)
        preds = [majority_vote([parse_cot(text, task)[1] for text in samples], task)[0] for samples in outputs]
    correct = [task_correct(task, p, g) for p, g in zip(preds, golds)]
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
        "predictions": rows,
    }


def accuracy_from_predictions(rows: list[dict], task: str) -> float:
    """Recompute an accuracy from saved predictions (gold and prediction only; ``correct`` is ignored)."""
    from utils.tasks import task_correct

    if not rows:
        raise ValueError("No predictions to score.")
    return sum(task_correct(task, r["prediction"], r["gold"]) for r in rows) / len(rows)


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
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --- paired statistics ---------------------------------------------------------------------------


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """Exact (binomial) McNemar test of two systems on the same items.

    ``a_only``: items only ``a`` gets right; ``b_only``: only ``b``. Two-sided p-value.
    """
    if len(a) != len(b):
        raise ValueError(f"Paired test needs the same items: {len(a)} vs {len(b)} results.")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = a_only + b_only
    k = min(a_only, b_only)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def paired_bootstrap(a: list[list[bool]], b: list[list[bool]], n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over test items of ``mean accuracy(a) - mean accuracy(b)``.

    ``a`` and ``b`` hold one list of per-item results per seed (all over the same items in the
    same order); items are resampled together, so seed and item variation both count.
    Returns the difference, its 95% interval and a two-sided p-value (how often the resampled
    difference falls on the other side of zero, doubled).
    """
    if not a or not b:
        raise ValueError("paired_bootstrap needs at least one seed on each side.")
    n = len(a[0])
    if any(len(x) != n for x in a + b):
        raise ValueError("paired_bootstrap: every result list must cover the same test items.")
    score_a = [sum(run[i] for run in a) / len(a) for i in range(n)]  # per item: share of seeds right
    score_b = [sum(run[i] for run in b) / len(b) for i in range(n)]
    diff = [x - y for x, y in zip(score_a, score_b)]
    observed = sum(diff) / n
    rng = random.Random(seed)
    stats = sorted(sum(diff[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    below = sum(1 for s in stats if s <= 0) / n_boot
    above = sum(1 for s in stats if s >= 0) / n_boot
    return {"difference": observed, "ci95": (stats[int(0.025 * n_boot)], stats[min(n_boot - 1, int(0.975 * n_boot))]),
            "p_value": min(1.0, 2 * min(below, above))}


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


# --- costs: size, latency, throughput, memory ----------------------------------------------------


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
            except psutil.Error:
                pass
        return total / 2**20

    def __enter__(self):
        import threading

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
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.peak_mb = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._rss = PeakRSS(every=0.005).__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._rss.__exit__(*exc)
            self.peak_mb = self._rss.peak_mb
        return False


def _percentile(values: list[float], q: float) -> float:
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
        "latency_ms_p50": 1000 * _percentile(seconds, 0.5),
        "latency_ms_p95": 1000 * _percentile(seconds, 0.95),
        "throughput_batch1": len(seconds) / sum(seconds) if seconds and sum(seconds) else 0.0,
        "throughput_batched": batch_items / batch_seconds if batch_seconds else None,
    }


def measure_student_costs(model, tokenizer, inputs: list[str], family: str, path: str | Path | None = None,
                          batch_size: int = 16, max_new_tokens: int = 32) -> dict:
    """Parameters, size on disk, latency (batch 1, p50/p95), throughput (batch 1 and batched) and
    peak memory of a student answering ``inputs`` with its label prompt (greedy)."""
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


def plot_accuracy(results: dict[str, dict], teacher: dict | None, out_path: str | Path, title: str = ""):
    """Bar chart of accuracy (with 95% intervals) per student, the teacher as a dashed line."""
    plt = _pyplot()
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


def _pyplot():
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
    plt = _pyplot()
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


def plot_costs(student: dict, teacher: dict, out_path: str | Path, names=("student", "teacher")):
    """Parameters, size on disk and p50 latency of student and teacher, side by side."""
    plt = _pyplot()
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


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def write_report(run_dir: str | Path, section: str, payload: dict) -> Path:
    """Merge ``payload`` into ``run_dir/report.json`` under ``section`` (other sections kept).

    The first write also records ``schema_version``, the package ``versions`` and the ``machine``
    (``utils.report`` documents the schema)."""
    from utils.config import machine_info, package_versions
    from utils.report import SCHEMA_VERSION

    path = Path(run_dir) / "report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report["schema_version"] = SCHEMA_VERSION
    report.setdefault("versions", package_versions())
    report.setdefault("machine", machine_info())
    if "config" not in report and (Path(run_dir) / "config.json").exists():
        report["config"] = json.loads((Path(run_dir) / "config.json").read_text())
    report[section] = payload
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    return path
