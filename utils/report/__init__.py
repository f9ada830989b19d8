"""``report.json``: its schema, a check against it, and the Markdown tables ``python -m utils report`` prints.

One module per design: ``core`` (schema, reading and writing, a notebook run, a sweep), ``cv``
(cross-validation), ``sizes`` (data size, epoch-capped), ``steps`` (data size at matched steps,
statistics over seeds). This package composes them: ``render_markdown`` and ``verify_predictions``.
"""

from __future__ import annotations

import json
from pathlib import Path

from utils.report.core import (
    REPORT_SCHEMA,
    SCHEMA_VERSION,
    _accuracy,
    _pct,
    _read_rows,
    _table,
    cv_sections,
    load_report,
    markdown_evaluation,
    markdown_sweep,
    sweep_sections,
    validate_report,
    write_report,
)
from utils.report.cv import describe_cv, markdown_cv, verify_cv
from utils.report.sizes import (
    PREMISE_FILE,
    SIZES_COMMAND,
    cell_dir,
    cell_size,
    data_efficiency,
    describe_sizes,
    markdown_sizes,
    size_curves,
    size_results,
    verify_disjoint,
    verify_sizes,
)
from utils.report.steps import STEPS_COMMAND, describe_steps, markdown_steps, steps_questions, verify_steps

__all__ = ["PREMISE_FILE", "REPORT_SCHEMA", "SCHEMA_VERSION", "SIZES_COMMAND", "STEPS_COMMAND", "describe_steps",
           "markdown_steps", "steps_questions", "verify_steps", "cell_dir", "cell_size", "cv_sections",
           "data_efficiency", "describe_cv", "describe_sizes", "load_report", "markdown_cv", "markdown_evaluation",
           "markdown_sizes", "markdown_sweep", "render_markdown", "size_curves", "size_results", "sweep_sections",
           "validate_report", "verify_cv", "verify_disjoint", "verify_predictions", "verify_sizes", "write_report"]


def verify_predictions(run_dir: str | Path, task: str | None = None) -> list[str]:
    """Recompute every sweep accuracy from its saved predictions (gold against prediction, through
    the task's metric); returns the mismatches (an empty list when all agree)."""
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    task = task or report.get("config", {}).get("task") or json.loads((run_dir / "config.json").read_text())["task"]
    problems = []
    for name, sweep in sweep_sections(report).items():
        folder = run_dir / name
        scored = [(cell["dir"], score) for cell in sweep["cells"] for by_inference in cell["results"].values()
                  for score in by_inference.values()]
        if isinstance(sweep.get("teacher"), dict) and sweep["teacher"].get("predictions"):
            scored.append((".", sweep["teacher"]))
        for where, score in scored:
            path = folder / where / score["predictions"]
            if not path.exists():
                problems.append(f"{path}: missing")
                continue
            rows = _read_rows(path)
            again = _accuracy(rows, task)
            if len(rows) != score["n"] or abs(again - score["accuracy"]) > 1e-9:
                problems.append(f"{path}: report says {score['accuracy']:.4f} (n={score['n']}), "
                                f"predictions give {again:.4f} (n={len(rows)})")
        if (folder / PREMISE_FILE).exists():  # a split disjoint by a grouping key (e-SNLI: the premise)
            problems += verify_disjoint(folder, name, sweep)
        if "data_efficiency" in sweep:
            problems += verify_sizes(folder, name, sweep, task)
        if "questions" in sweep:
            problems += verify_steps(folder, name, sweep, task)
    for name, section in cv_sections(report).items():
        problems += verify_cv(run_dir, name, section, task)
    return problems




def render_markdown(run_dir: str | Path) -> str:
    """The Markdown ``python -m utils report RUN`` prints: tables of every section present."""
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    config = report.get("config") or (json.loads((run_dir / "config.json").read_text())
                                      if (run_dir / "config.json").exists() else {})
    machine = report.get("machine", {})
    parts = [f"## Results of `{run_dir.name}`", ""]
    if config:
        teacher_clause = (f", teacher `{config.get('teacher_model')}` via `{config.get('teacher_backend')}`"
                          if "teacher" in report else "")  # a study on released outputs ran no teacher
        parts.append(f"Profile `{config.get('profile')}`, task `{config.get('task')}`, student "
                     f"`{config.get('student_model')}` ({config.get('student_layers') or 'all'} layers){teacher_clause}.")
    if machine:
        parts.append(f"Machine: {machine.get('processor') or machine.get('platform')}, {machine.get('cores')} cores, "
                     f"bf16 {'on' if machine.get('bf16') else 'off'}, GPU: {machine.get('gpu') or 'none'}.")
    teacher = report.get("teacher", {})
    if "train" in teacher:
        tr = teacher["train"]
        parts.append(f"Teacher yield on train: {tr.get('examples')} inputs, vote accuracy {_pct(tr.get('accuracy_vote'))}%, "
                     f"correct rationales for {_pct(tr.get('correct_rationale_yield'))}% of inputs.")
    text = markdown_evaluation(report)
    if text:
        parts += ["", text]
    for name, sweep in sweep_sections(report).items():
        shown = (markdown_steps if "questions" in sweep else markdown_sizes if "data_efficiency" in sweep
                 else markdown_sweep)
        parts += ["", shown(name, sweep)]
    for name, section in cv_sections(report).items():
        parts += ["", markdown_cv(name, section)]
    if report.get("timings"):
        parts += ["", _table(["stage", "seconds"], [[k, v] for k, v in report["timings"].items()])]
    return "\n".join(parts) + "\n"
