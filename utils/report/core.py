"""``report.json``: its schema, reading and writing it, and the Markdown of a notebook run and a sweep.

A run folder's ``report.json`` holds one section per stage; each notebook (and each sweep) adds
its own with ``write_report``, which also stamps ``schema_version``, the package ``versions`` and
the ``machine``. ``REPORT_SCHEMA`` (JSON Schema) documents every section; the
values are plain JSON: accuracies are fractions in [0, 1], times in seconds unless the key
says ``_ms``, sizes in MB (2**20 bytes), parameters as counts.

Torch-free: reading, checking and printing a report never loads a model (nor ``utils.evaluation``).
"""

from __future__ import annotations

import json
from pathlib import Path

from utils.stats import p_text as _p

SCHEMA_VERSION = 1

_ACC = {"type": "number", "minimum": 0, "maximum": 1}
_CI = {"type": "array", "items": _ACC, "minItems": 2, "maxItems": 2}
_P = {"type": "number", "minimum": 0, "maximum": 1}
_SCORE = {"type": "object", "required": ["accuracy", "ci95", "n"],
          "properties": {"accuracy": _ACC, "ci95": _CI, "n": {"type": "integer", "minimum": 0}}}
_COSTS = {
    "type": "object",
    "description": "What one model costs on this machine, measured in its own process (utils.costs).",
    "required": ["parameters", "latency_ms_p50", "latency_ms_p95", "throughput_batch1"],
    "properties": {
        "parameters": {"type": ["integer", "null"]},
        "size_mb": {"type": ["number", "null"], "description": "weight files on disk"},
        "latency_ms_p50": {"type": "number"}, "latency_ms_p95": {"type": "number"},
        "throughput_batch1": {"type": "number", "description": "examples per second, one at a time"},
        "throughput_batched": {"type": ["number", "null"], "description": "examples per second, batched"},
        "peak_memory_mb": {"type": ["number", "null"], "description": "peak process RSS (CPU) or CUDA allocation"},
        "engine": {"type": "string"}, "device": {"type": "string"}, "n": {"type": "integer"},
    },
}
_SWEEP = {
    "type": "object",
    "description": "A sweep (utils.sweep.sweep_report): every cell, the summary over seeds, paired comparisons.",
    "required": ["cells", "summary", "comparisons"],
    "properties": {
        "split": {"type": "string"},
        "baseline": {"type": "string"},
        "cells": {"type": "array", "items": {
            "type": "object",
            "required": ["variant", "mode", "fraction", "seed", "n_train", "results", "dir"],
            "properties": {
                "variant": {"type": "string"}, "mode": {"enum": ["standard", "distill", "dss", "ltr"]},
                "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "seed": {"type": "integer"}, "n_train": {"type": "integer"},
                "dir": {"type": "string", "description": "cells/<variant>/<cell>, relative to the sweep folder"},
                "results": {"type": "object", "description": "split -> inference -> score and predictions file",
                            "additionalProperties": {"type": "object", "additionalProperties": {
                                "allOf": [_SCORE, {"required": ["predictions"]}]}}},
            },
        }},
        "summary": {"type": "array", "items": {
            "type": "object", "required": ["variant", "inference", "fraction", "seeds", "mean", "std", "min", "max"],
            "properties": {"mean": _ACC, "std": {"type": "number", "minimum": 0}, "seeds": {"type": "integer"}}}},
        "comparisons": {"type": "array", "items": {
            "type": "object", "required": ["variant", "inference", "fraction", "difference", "ci95", "p_value", "mcnemar"],
            "properties": {
                "difference": {"type": "number"}, "p_value": _P,
                "p_holm": {**_P, "description": "p_value Holm-adjusted over every comparison of the sweep against "
                                                "its baseline (older reports lack it; the Markdown computes it)"},
                "mcnemar": {"type": "array", "items": {"type": "object", "properties": {
                    "p_value": _P, "p_holm": {**_P, "description": "Holm-adjusted over the sweep's McNemar tests"}}}},
            }}},
    },
}
REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "report.json of a distilling-step-by-step run folder",
    "type": "object",
    "required": ["schema_version"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "versions": {"type": "object", "description": "package -> version (utils.config.package_versions)"},
        "machine": {"type": "object", "description": "platform, processor, cores, bf16 support, GPU"},
        "config": {"type": "object", "description": "the RunConfig of the run (config.json)"},
        "teacher": {"type": "object", "description": "notebook 01: backend, model, sampling, yields on train and test"},
        "dataset": {"type": "object", "description": "notebook 02: split sizes, rationale policy and counts"},
        "student": {"type": "object", "description": "notebook 03: per mode, parameters, training time and tokens"},
        "evaluation": {
            "type": "object",
            "description": "notebook 04: the teacher and the students on the same test items",
            "required": ["task", "n_test", "teacher", "students"],
            "properties": {
                "teacher": _SCORE,
                "students": {"type": "object", "additionalProperties": _SCORE},
                "costs": {"type": "object", "properties": {"student": _COSTS, "teacher": _COSTS,
                                                          "ratios": {"type": "object"}}},
                "sweep": _SWEEP,
            },
        },
        "svamp_study": _SWEEP,
        "esnli_sizes": {"allOf": [_SWEEP, {
            "type": "object",
            "description": "A data-size study (utils.studies.sizes.esnli_report): the sweep plus accuracy per variant and "
                           "training size, the teacher on the same test items, and the paper's statement "
                           "(data_efficiency); premises: the file of premise hashes beside the cells.",
            "required": ["pool", "curves", "data_efficiency", "teacher", "grid"],
            "properties": {
                "pool": {"type": "integer", "minimum": 1},
                "teacher": _SCORE,
                "curves": {"type": "array", "items": {
                    "type": "object", "required": ["variant", "size", "seeds", "mean", "std", "ci95", "n"],
                    "properties": {"mean": _ACC, "ci95": _CI, "size": {"type": "integer", "minimum": 1}}}},
                "data_efficiency": {"type": "object", "required": ["baseline", "baseline_size", "rows", "smallest"],
                                    "properties": {"rows": {"type": "array", "items": {
                                        "type": "object",
                                        "required": ["variant", "size", "seeds", "difference", "ci95", "p_value",
                                                     "p_holm", "below"],
                                        "properties": {"p_value": _P, "p_holm": _P}}}}},
            }}]},
        "esnli_steps": {"allOf": [_SWEEP, {
            "type": "object",
            "description": "e-SNLI at matched optimizer steps (utils.studies.steps): accuracy per variant and size, "
                           "the plateau of every cell, and three questions answered over seeds (utils.report.steps).",
            "required": ["pool", "curves", "plateau", "questions", "teacher", "grid", "design"],
            "properties": {
                "pool": {"type": "integer", "minimum": 1},
                "teacher": _SCORE,
                "plateau": {"type": "object", "required": ["cells", "plateaued", "total"]},
                "questions": {"type": "object", "required": ["rows", "margin", "baseline_size"],
                              "properties": {"rows": {"type": "array", "items": {
                                  "type": "object",
                                  "required": ["question", "variant", "size", "baseline", "baseline_size", "k",
                                               "difference", "ci95", "p_value", "p_holm", "runs", "verdict"],
                                  "properties": {"p_value": _P, "p_holm": _P, "ci95": {"type": "array"}}}}}},
            }}]},
        "deploy": {"type": "object", "description": "notebook 05: export, latency, service"},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}



def write_report(run_dir: str | Path, section: str, payload: dict) -> Path:
    """Merge ``payload`` into ``run_dir/report.json`` under ``section`` (other sections kept).

    Every write also records ``schema_version``; the first one the package ``versions`` and the
    ``machine``, and the run's ``config.json`` when there is one."""
    from utils.config import atomic_write_json, machine_info, package_versions

    path = Path(run_dir) / "report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report["schema_version"] = SCHEMA_VERSION
    report.setdefault("versions", package_versions())
    report.setdefault("machine", machine_info())
    if "config" not in report and (Path(run_dir) / "config.json").exists():
        report["config"] = json.loads((Path(run_dir) / "config.json").read_text())
    report[section] = payload
    return atomic_write_json(path, report)


def validate_report(report: dict) -> None:
    """Raise ``ValueError`` listing every place where ``report`` breaks ``REPORT_SCHEMA``."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(REPORT_SCHEMA).iter_errors(report), key=lambda e: list(e.path))
    if errors:
        lines = [f"- {'/'.join(str(p) for p in e.path) or '(top)'}: {e.message}" for e in errors[:20]]
        raise ValueError("report.json does not match its schema:\n" + "\n".join(lines))


def load_report(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"No report.json in {run_dir}: run the notebooks (make demo) or a sweep first.")
    return json.loads(path.read_text())


def sweep_sections(report: dict) -> dict[str, dict]:
    """Every sweep in a report: ``evaluation.sweep`` and top-level sections shaped like one."""
    found = {}
    if isinstance(report.get("evaluation", {}).get("sweep"), dict):
        found["sweep"] = report["evaluation"]["sweep"]
    for key, value in report.items():
        if isinstance(value, dict) and {"cells", "summary", "comparisons"} <= set(value):
            found[key] = value
    return found


def cv_sections(report: dict) -> dict[str, dict]:
    """The pooled sections of cross-validated studies (``utils.studies.cv.cv_summary``)."""
    return {k: v for k, v in report.items() if isinstance(v, dict) and "folds_finished" in v and "summary" in v}


def _accuracy(rows: list[dict], task: str) -> float:
    """The accuracy of saved predictions, from gold and prediction only (``correct`` is ignored),
    through the task's metric (``utils.metrics.score``)."""
    from utils.metrics import score

    if not rows:
        raise ValueError("No predictions to score.")
    return sum(score(task, [r["prediction"] for r in rows], [r["gold"] for r in rows])) / len(rows)



def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]



# --- Markdown ------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _ci(ci) -> str:
    return f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}" if ci else ""


def _num(x, digits=1) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def _signed_ci(ci) -> str:
    """An interval of a difference, in points with signs: ``-8.8 to +1.2``."""
    return f"{100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}"


def markdown_evaluation(report: dict) -> str:
    evaluation = report.get("evaluation")
    if not evaluation:
        return ""
    teacher = evaluation["teacher"]
    tname = report.get("teacher", {}).get("model", "teacher")
    rows = [[f"teacher: {tname}, few-shot CoT", _num((evaluation.get("teacher_parameters") or 0) / 1e6),
             _pct(teacher["accuracy"]), _ci(teacher["ci95"]), teacher["n"]]]
    for mode, res in evaluation["students"].items():
        rows.append([f"student: {mode}", _num(res.get("parameters", 0) / 1e6), _pct(res["accuracy"]),
                     _ci(res["ci95"]), res["n"]])
    out = [f"### Test accuracy ({evaluation['task']}, n={evaluation['n_test']})", "",
           _table(["model", "parameters (M)", "accuracy (%)", "95% CI", "n"], rows)]
    costs = evaluation.get("costs")
    if costs and costs.get("student") and costs.get("teacher"):
        crow = []
        measured = [(name, c) for name, c in costs.items() if isinstance(c, dict) and "latency_ms_p50" in c]
        for name, c in measured:
            crow.append([f"{name} ({c.get('engine', '')}, {c.get('device', '')})", _num((c.get("parameters") or 0) / 1e6),
                         _num(c.get("size_mb")), _num(c.get("latency_ms_p50"), 0), _num(c.get("latency_ms_p95"), 0),
                         _num(c.get("throughput_batch1"), 2), _num(c.get("throughput_batched"), 2),
                         _num(c.get("peak_memory_mb"), 0)])
        out += ["", "### Cost on this machine", "",
                _table(["model", "parameters (M)", "weights (MB)", "latency p50 (ms)", "latency p95 (ms)",
                        "examples/s, batch 1", "examples/s, batched", "peak memory (MB)"], crow)]
        if costs.get("ratios"):
            from utils.costs import describe_costs

            out += ["", describe_costs(costs["ratios"])]
    return "\n".join(out)


def _with_holm(comparisons: list[dict]) -> list[dict]:
    """The comparisons with their stored Holm-adjusted p-values, or (a report written before
    ``p_holm`` existed) with them computed here, as ``utils.sweep.compare_to_baseline`` does."""
    from utils.stats import holm_comparisons

    if all("p_holm" in c and all("p_holm" in m for m in c["mcnemar"]) for c in comparisons):
        return comparisons
    return holm_comparisons(comparisons)


def markdown_sweep(name: str, sweep: dict) -> str:
    """The Markdown tables of a sweep section: accuracy per variant and data share, then the
    paired comparisons with raw and Holm-adjusted p-values."""
    summary = sweep["summary"]
    fractions = sorted({r["fraction"] for r in summary})
    keys = sorted({(r["variant"], r["inference"]) for r in summary})
    rows = []
    for variant, inference in keys:
        row = [variant, inference]
        for f in fractions:
            match = [r for r in summary if (r["variant"], r["inference"], r["fraction"]) == (variant, inference, f)]
            if not match:
                row.append("")
                continue
            r = match[0]
            spread = f" ± {100 * r['std']:.1f}" if r["seeds"] > 1 else ""
            row.append(f"{100 * r['mean']:.1f}{spread} ({r['seeds']})")
        rows.append(row)
    header = ["variant", "inference"] + [f"{100 * f:g}% data" for f in fractions]
    split = sweep.get("split", "test")
    teacher = sweep.get("teacher")
    if teacher:
        rows.append([f"teacher: {teacher.get('model', 'teacher')}", "few-shot CoT"]
                    + [f"{100 * teacher['accuracy']:.1f} [{_ci(teacher['ci95'])}]"] * len(fractions))
    out = [f"### {name}: {split} accuracy (%), mean ± sd over seeds (number of seeds)", "", _table(header, rows)]
    comps = sweep.get("comparisons") or []
    if comps:
        comps = _with_holm(comps)
        crow = [[c["variant"], c["inference"], f"{100 * c['fraction']:g}%", len(c["seeds"]),
                 f"{100 * c['difference']:+.1f}", _signed_ci(c["ci95"]), _p(c["p_value"]),
                 _p(c["p_holm"]),
                 ", ".join(f"{m['a_only']}/{m['b_only']} p={_p(m['p_value'])} (Holm {_p(m['p_holm'])})"
                           for m in c["mcnemar"])]
                for c in comps]
        out += ["", f"Paired against `{sweep.get('baseline', 'standard')}` (label inference) on the same {split} items; "
                f"Holm's correction over the {len(comps)} comparisons (and over all McNemar tests):",
                "", _table(["variant", "inference", "data", "seeds", "difference (points)", "95% CI (paired bootstrap)",
                            "p (bootstrap)", "p (Holm)",
                            "McNemar per seed: only variant right / only baseline right"], crow)]
    return "\n".join(out)




def _differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a != b
    return abs(a - b) > 1e-9


# --- comparisons over training runs ---------------------------------------------------------------


def compare_runs(a_runs: dict, b_runs: dict, n_boot: int = 2000, seed: int = 0, margin: float | None = None) -> dict:
    """``a`` against ``b`` with the training run (seed or fold) as the unit of replication.

    ``a_runs`` / ``b_runs``: run key -> ``{item id: correct}``, paired by key. The headline is the
    hierarchical bootstrap (runs, then items within each drawn run; ``utils.stats.hierarchical_bootstrap``):
    ``difference``, ``ci95``, ``p_value`` (never 0). Beside it: each run's difference with its exact
    McNemar test (``runs``), the t interval over runs (``t``), the item-only interval that treats the
    trained models as fixed (``item_only``, shown to say how much too narrow it is), and the
    difference the design detects at 80 % power under the observed run-to-run spread (``mde_80``,
    None with fewer than two runs). With ``margin``: the equivalence verdict (``equivalence``;
    ``inconclusive`` with one run, as ``tost_over_runs`` says it)."""
    from utils.stats import (
        correct_by_id,
        equivalence,
        hierarchical_bootstrap,
        mde_over_runs,
        paired_bootstrap,
        per_run_differences,
        t_over_runs,
    )

    runs = per_run_differences(a_runs, b_runs)
    t = t_over_runs(runs)
    hier = hierarchical_bootstrap(a_runs, b_runs, n_boot=n_boot, seed=seed)
    keys = [r["run"] for r in runs]
    if len({frozenset(correct_by_id(a_runs[k])) for k in keys}) == 1:  # seeds on one test set
        item = paired_bootstrap([a_runs[k] for k in keys], [b_runs[k] for k in keys], n_boot=n_boot, seed=seed)
    else:  # folds, each with its own items: pool them
        pooled = [{f"{k}/{i}": v for k in keys for i, v in correct_by_id(side[k]).items()} for side in (a_runs, b_runs)]
        item = paired_bootstrap(pooled[:1], pooled[1:], n_boot=n_boot, seed=seed)
    out = {"k": len(runs), "n": runs[0]["n"], "difference": hier["difference"], "ci95": list(hier["ci"]),
           "p_value": hier["p_value"], "n_boot": n_boot,
           "accuracy": sum(r["accuracy_a"] for r in runs) / len(runs),
           "baseline_accuracy": sum(r["accuracy_b"] for r in runs) / len(runs),
           "runs": [{"run": r["run"], "accuracy": r["accuracy_a"], "baseline_accuracy": r["accuracy_b"],
                     "difference": r["difference"], "n": r["n"], "a_only": r["mcnemar"]["a_only"],
                     "b_only": r["mcnemar"]["b_only"], "p_mcnemar": r["mcnemar"]["p_value"]} for r in runs],
           "t": {"ci95": None if t["ci"] is None else list(t["ci"]), "p_value": t["p_value"], "sd": t["sd"]},
           "item_only": {"ci95": list(item["ci95"]), "p_value": item["p_value"]},
           # runs that all differ by the same amount leave no spread to size a test by
           "mde_80": mde_over_runs(t["sd"], len(runs)) if len(runs) > 1 and (t["sd"] or 0) > 1e-9 else None}
    if margin is not None:
        eq = equivalence(a_runs, b_runs, margin, n_boot=n_boot, seed=seed)
        out["equivalence"] = {"margin": margin, "ci90": list(eq["bootstrap"]["ci90"]),
                              # one run: its bootstrap resamples items only, so it cannot speak for seeds
                              "verdict": eq["bootstrap"]["verdict"] if len(runs) > 1 else "inconclusive",
                              "p_tost": eq["runs"]["p_tost"],
                              "verdict_t": eq["runs"]["verdict"]}
    return out


def verdict_words(row: dict, alpha: float = 0.05) -> str:
    """A comparison's verdict in the words the course may use, from its Holm-adjusted hierarchical p:
    ``significantly above`` / ``significantly below`` / ``not significantly different``; a comparison
    of one training run per side is not a test of a recipe and says so."""
    if row.get("k", 2) < 2:
        return "one seed: not tested over seeds"
    p = row.get("p_holm", row["p_value"])
    if p >= alpha:
        return "not significantly different"
    return "significantly above" if row["difference"] > 0 else "significantly below"


def runs_text(row: dict) -> str:
    """The per-run differences of a comparison, in points: ``+6.4, +5.0, +14.2``."""
    return ", ".join(f"{100 * r['difference']:+.1f}" for r in row["runs"])


def equivalence_words(equivalence: dict) -> str:
    """An equivalence result in words that cannot contradict the Holm verdict beside it: within the
    margin (TOST at 5 %: the 90 % hierarchical interval inside it), or not shown to be."""
    margin = f"±{100 * equivalence['margin']:g}-point margin"
    if equivalence["verdict"] == "equivalent":
        return f"within the {margin} (90% CI {_signed_ci(equivalence['ci90'])})"
    return f"not shown to be within the {margin} (90% CI {_signed_ci(equivalence['ci90'])})"
