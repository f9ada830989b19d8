"""The report of the matched-steps study (``utils.studies.steps``): its three questions answered over
seeds, whether each cell reached its plateau, its check against the saved predictions, its words.

Every comparison treats the training run (seed) as the unit of replication (``compare_runs``): the
headline interval and p come from the hierarchical bootstrap, the per-seed differences stand beside
them, and Holm's adjustment runs over every row of the three questions (one family).
"""

from __future__ import annotations

from pathlib import Path

from utils.report.core import (
    _ci,
    _num,
    _pct,
    _signed_ci,
    _table,
    compare_runs,
    equivalence_words,
    runs_text,
    verdict_words,
)
from utils.stats import p_in_sentence as _p_eq
from utils.stats import p_text as _p

STEPS_COMMAND = ("python -m utils study --design steps --paper-data <folder> --run-dir runs/esnli_steps "
                 "--publish data/results/esnli_steps")
REGIME = ("a 135M student (SmolLM2-135M-Instruct, all layers), 250-1,000 e-SNLI training items, PaLM 540B "
          "rationales (dss-all4: PaLM's and three human ones), 320 optimizer steps of 16 rows per cell")
QUESTIONS = {
    "a": "at equal size and equal steps, does the rationale task help (dss - standard)?",
    "b": "do four rationales per example help beyond one (dss-all4 - dss, equal steps)?",
    "c": "the paper's claim: is a rationale variant on fewer items within the margin of standard on all of them, "
         "or below it?",
}


def plateaued(curve: list, max_steps: int, tolerance: float = 0.01) -> dict:
    """Whether a cell reached its plateau: its best validation accuracy (first of equals) comes before
    the last quarter of its steps, or the last quarter adds less than ``tolerance`` over the best
    before it. ``curve``: ``[[step, accuracy], ...]``."""
    if not curve:
        return {"best_step": None, "last_quarter_gain": None, "plateaued": False}
    cut = 0.75 * max_steps
    best_step, best = max(curve, key=lambda p: (p[1], -p[0]))
    before = [acc for step, acc in curve if step <= cut]
    after = [acc for step, acc in curve if step > cut]
    gain = (max(after) - max(before)) if before and after else 0.0
    return {"best_step": best_step, "last_quarter_gain": gain, "plateaued": best_step <= cut or gain < tolerance}


def plateau_summary(cells: list[dict], pool: int, tolerance: float = 0.01) -> dict:
    """``plateaued`` for every cell (variant, size, seed), and how many of them reached it."""
    from utils.report.sizes import cell_size

    rows = [{"variant": c["variant"], "size": cell_size(c, pool), "seed": c["seed"],
             "max_steps": c.get("max_steps"), "optimizer_steps": c.get("optimizer_steps"),
             "n_validation": len((c.get("ids") or {}).get("validation") or []) or None,
             **plateaued(c.get("validation_curve") or [], c.get("max_steps") or 0, tolerance)} for c in cells]
    done = sum(1 for r in rows if r["plateaued"])
    return {"rule": f"best validation accuracy before the last quarter of the steps, or the last quarter adds less "
                    f"than {100 * tolerance:g} point", "cells": rows, "plateaued": done, "total": len(rows),
            "share": done / len(rows) if rows else None}


def still_learning(plateau: dict) -> str:
    """The cells that missed the plateau rule, grouped by variant and size, with each seed's gain in
    the last quarter of its steps in points and in validation items (the scale of its noise), e.g.
    ``dss-all4 @ 250 (seed 0 +2.9 = 6 of 204 items)``; empty when none."""
    groups: dict[tuple, list[str]] = {}
    for r in plateau["cells"]:
        if not r["plateaued"]:
            gain, n = r["last_quarter_gain"], r.get("n_validation")
            text = f"seed {r['seed']}" + ("" if gain is None else f" {100 * gain:+.1f}")
            if gain is not None and n:
                text += f" = {round(gain * n)} of {n} items"
            groups.setdefault((r["variant"], r["size"]), []).append(text)
    return "; ".join(f"{v} @ {n:,} ({', '.join(seeds)})" for (v, n), seeds in sorted(groups.items()))


def short_of_plateau(row: dict, plateau: dict) -> str:
    """For one question row, the cells it compares that missed the plateau rule at some of its seeds,
    e.g. ``dss-all4 @ 250 short of its plateau at 3 of 3 seeds``; empty when every cell reached it.
    Such a row compares at equal compute, not with each cell at its plateau."""
    missed = {(c["variant"], c["size"], c["seed"]) for c in plateau["cells"] if not c["plateaued"]}
    seeds = row.get("seeds") or []
    parts = []
    for variant, size in ((row["variant"], row["size"]), (row["baseline"], row["baseline_size"])):
        k = sum((variant, size, seed) in missed for seed in seeds)
        if k:
            parts.append(f"{variant} @ {size:,} short of its plateau at {k} of {len(seeds)} seed{'s' * (len(seeds) != 1)}")
    return "; ".join(parts)


def compute_text(cells: list[dict]) -> str:
    """What the finished cells cost and where they ran: training hours (wall clock, evaluations
    included) and the cells per machine, from each ``cell.json`` (the run folder's header names only
    the machine that first wrote it)."""
    by_machine: dict[str, int] = {}
    for c in cells:
        m = c.get("machine") or {}
        cores = f"{m['cores']} cores, " if m.get("cores") else ""
        where = (f"{m.get('processor') or m.get('platform') or 'unknown'}, {cores}"
                 f"bf16 {'on' if m.get('bf16') else 'off'}, GPU {m.get('gpu') or 'none'}")
        by_machine[where] = by_machine.get(where, 0) + 1
    hours = sum(c.get("seconds") or 0 for c in cells) / 3600
    machines = "; ".join(f"{where} ({n} cell{'s' if n > 1 else ''})" for where, n in by_machine.items())
    return f"{len(cells)} cells, {hours:.1f} h of training and scoring, on {machines or 'no machine recorded'}"


def unmatched_steps(cells: list[dict], pool: int) -> list[str]:
    """Cells of one size and seed that took different numbers of optimizer steps (none, when compute
    is matched), and cells that record no step count at all."""
    from utils.report.sizes import cell_size

    problems, taken = [], {}
    for cell in cells:
        steps = cell.get("optimizer_steps")
        if not isinstance(steps, int):
            problems.append(f"{cell['dir']}: no optimizer_steps recorded")
            continue
        taken.setdefault((cell_size(cell, pool), cell["seed"]), {})[cell["variant"]] = steps
    for (size, seed), by_variant in sorted(taken.items()):
        if len(set(by_variant.values())) > 1:
            problems.append(f"size {size}, seed {seed}: optimizer steps differ between variants {by_variant}")
    return problems


def _runs(results: dict[tuple, dict[str, bool]], variant: str, size: int) -> dict[int, dict[str, bool]]:
    return {seed: marks for (v, n, seed), marks in results.items() if v == variant and n == size}


def steps_questions(results: dict[tuple, dict[str, bool]], baseline_size: int = 1000, margin: float = 0.02,
                    baseline: str = "standard", alpha: float = 0.05, n_boot: int = 2000) -> dict:
    """The study's three questions over the seeds both sides finished (``results``: ``(variant, size,
    seed) -> {id: correct}``, as ``utils.report.sizes.size_results`` gives them):

    - ``a``: every other variant against ``baseline`` at each size both have (equal size, equal steps);
    - ``b``: ``dss-all4`` against ``dss`` at each size both have;
    - ``c``: every variant but ``baseline`` at a size below ``baseline_size`` against ``baseline`` at
      ``baseline_size``, with the equivalence test at ``margin`` (TOST on the hierarchical bootstrap).

    Each row is ``compare_runs`` plus ``question``, ``variant``, ``size``, ``baseline``,
    ``baseline_size``, ``p_holm`` (Holm over every row of the three questions) and ``verdict``
    (``verdict_words``); rows with fewer than one paired seed are left out."""
    from utils.stats import holm

    sizes = sorted({n for _, n, _ in results})
    variants = list(dict.fromkeys(v for v, _, _ in sorted(results)))
    plan = []
    for size in sizes:
        plan += [("a", v, size, baseline, size) for v in variants if v != baseline]
        plan += [("b", "dss-all4", size, "dss", size)]
        if size < baseline_size:
            plan += [("c", v, size, baseline, baseline_size) for v in variants if v != baseline]
    rows = []
    for question, variant, size, against, against_size in plan:
        ours, theirs = _runs(results, variant, size), _runs(results, against, against_size)
        seeds = sorted(set(ours) & set(theirs))
        if not seeds:
            continue
        try:
            row = compare_runs({s: ours[s] for s in seeds}, {s: theirs[s] for s in seeds}, n_boot=n_boot,
                               margin=margin if question == "c" else None)
        except ValueError as exc:  # say which cells, not only which ids
            raise ValueError(f"{variant} at {size} against {against} at {against_size}, seeds {seeds}: {exc}") from exc
        rows.append({"question": question, "variant": variant, "size": size, "baseline": against,
                     "baseline_size": against_size, "seeds": seeds, **row})
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = adjusted
        row["verdict"] = verdict_words(row, alpha)
    return {"questions": QUESTIONS, "margin": margin, "alpha": alpha, "n_boot": n_boot, "baseline": baseline,
            "baseline_size": baseline_size,
            "test": "hierarchical bootstrap over seeds, then test items within each seed; Holm over every row",
            "rows": rows}


def verify_steps(folder: Path, name: str, section: dict, task: str) -> list[str]:
    """Recompute the questions and the plateau count from the saved predictions and cells; also
    check that compute was matched (every variant of one size and seed took the same steps)."""
    import json

    from utils.report.sizes import _compare_rows, size_results

    cells = []
    for cell in section["cells"]:
        saved = json.loads((folder / cell["dir"] / "cell.json").read_text())
        cells.append({**saved, "dir": cell["dir"]})
    pool = section["pool"]
    problems = [f"{name}: {p}" for p in unmatched_steps(cells, pool)]
    results = size_results(cells, folder, task, pool)
    saved_q = section["questions"]
    again = steps_questions(results, saved_q["baseline_size"], saved_q["margin"], saved_q["baseline"],
                            saved_q["alpha"], saved_q["n_boot"])
    def keyed(rows):
        return [{**r, "variant": f"{r['question']}:{r['variant']}:{r['baseline']}@{r['baseline_size']}"}
                              for r in rows]
    problems += _compare_rows(f"{name} questions", keyed(saved_q["rows"]), keyed(again["rows"]),
                              ("difference", "ci95", "p_value", "p_holm", "verdict"))
    plateau = plateau_summary(cells, pool)
    if plateau["plateaued"] != section["plateau"]["plateaued"]:
        problems.append(f"{name}: {section['plateau']['plateaued']} cells plateaued in the report, "
                        f"{plateau['plateaued']} from the cells")
    return problems


def _row_text(r: dict) -> str:
    """One comparison in words: estimate, hierarchical interval, seeds, Holm p, per-seed differences."""
    k = r["k"]
    return (f"{100 * r['difference']:+.1f} points (95% CI {_signed_ci(r['ci95'])}, hierarchical bootstrap over "
            f"{k} seed{'s' * (k > 1)} and {r['n']:,} test items, Holm p {_p_eq(r['p_holm'])}; per seed "
            f"{runs_text(r)})")


def markdown_steps(name: str, section: dict) -> str:
    """The matched-steps section as Markdown: accuracy by size, the plateau count, the questions."""
    curves = section["curves"]
    sizes = sorted({r["size"] for r in curves})
    by_key = {(r["variant"], r["size"]): r for r in curves}
    order = list(dict.fromkeys(["standard", "dss", "dss-all4"] + [r["variant"] for r in curves]))
    table = [[v] + ["" if (v, n) not in by_key else
                    f"{_pct(by_key[(v, n)]['mean'])} ± {_num(100 * by_key[(v, n)]['std'])} ({by_key[(v, n)]['seeds']})"
                    for n in sizes] for v in order if any((v, n) in by_key for n in sizes)]
    design = section["design"]
    lines = [f"#### {name}: test accuracy (%) at matched steps, mean ± sd over seeds (seeds)", "",
             f"Every cell: {design['steps']} optimizer steps of {design['batch_size']} rows, validation every "
             f"{design['eval_every']} steps, scored from its best validation checkpoint. Grid: "
             f"{section['grid']['finished']} of {section['grid']['expected']} cells. Regime: {REGIME}.", "",
             _table(["variant"] + [f"{n:,} examples" for n in sizes], table)]
    teacher = section.get("teacher")
    if teacher:
        lines += ["", f"Teacher, {teacher.get('model', 'teacher')}, on the same {teacher['n']} test items: "
                      f"{_pct(teacher['accuracy'])} % [{_ci(teacher['ci95'])}]."]
    plateau = section["plateau"]
    learning = still_learning(plateau)
    lines += ["", f"Plateau ({plateau['rule']}): {plateau['plateaued']} of {plateau['total']} cells."
                  + (f" Still learning in the last quarter (its gain over the best before it): {learning}." if learning else ""),
              "", f"Compute: {compute_text(section['cells'])}."]
    q = section["questions"]
    if q["rows"]:
        lines += ["", f"Questions ({q['test']}; equivalence margin ±{100 * q['margin']:g} points):", "",
                  _table(["question", "variant", "against", "seeds", "difference (points)", "per seed",
                          "95% CI (hierarchical)", "p", "p (Holm)", "95% CI (t over seeds)",
                          "95% CI (items only)", "detectable at 80% power", "verdict", "equivalence"],
                         [[r["question"], f"{r['variant']} @ {r['size']:,}", f"{r['baseline']} @ {r['baseline_size']:,}",
                           r["k"], f"{100 * r['difference']:+.1f}", runs_text(r), _signed_ci(r["ci95"]),
                           _p(r["p_value"]), _p(r["p_holm"]),
                           _signed_ci(r["t"]["ci95"]) if r["t"]["ci95"] else "",
                           _signed_ci(r["item_only"]["ci95"]),
                           f"±{_num(100 * r['mde_80'])}" if r["mde_80"] else "", r["verdict"],
                           _equivalence_cell(r)] for r in q["rows"]])]
        short = [f"({r['question']}) {r['variant']} @ {r['size']:,} - {r['baseline']} @ {r['baseline_size']:,}: "
                 f"{text}" for r in q["rows"] if (text := short_of_plateau(r, plateau))]
        if short:
            lines += ["", "Rows that compare a cell short of its plateau (equal compute, but not each cell at its "
                          "plateau): " + "; ".join(short) + "."]
    return "\n".join(lines)


def _equivalence_cell(row: dict) -> str:
    """The equivalence column in words that cannot contradict the Holm verdict beside it: within the
    margin or not shown to be (a bootstrap "below" is unadjusted, so it is not printed as a verdict)."""
    eq = row.get("equivalence")
    if not eq or row["k"] < 2:
        return ""
    return f"{'within' if eq['verdict'] == 'equivalent' else 'not shown within'} ±{100 * eq['margin']:g}"


def describe_steps(section: dict | None, command: str = STEPS_COMMAND) -> str:
    """The study's answers in sentences, read from its report section: (a), (b) and (c), each with
    its estimate, hierarchical interval, seeds and Holm p, scoped to the regime; how many cells
    reached their plateau; how much of the grid finished."""
    if not section:
        return f"The matched-steps e-SNLI study has not run yet (no esnli_steps section). Run it with:\n{command}"
    grid, q = section["grid"], section["questions"]
    learning = still_learning(section["plateau"])
    lines = [f"{'Complete' if grid['finished'] >= grid['expected'] else 'Partial'} grid: {grid['finished']} of "
             f"{grid['expected']} cells; every number below uses the finished cells only. Regime: {REGIME}.",
             f"Plateau: {section['plateau']['plateaued']} of {section['plateau']['total']} cells reached it "
             f"({section['plateau']['rule']})"
             + (f"; still learning in the last quarter (its gain over the best before it): {learning}." if learning else ".")]
    for key in ("a", "b", "c"):
        rows = [r for r in q["rows"] if r["question"] == key]
        if not rows:
            lines.append(f"({key}) {q['questions'][key]} Not answerable yet: no paired cells.")
            continue
        parts = []
        for r in rows:
            text = f"{r['variant']} on {r['size']:,} against {r['baseline']} on {r['baseline_size']:,}: {_row_text(r)}"
            text += f", {r['verdict']}"
            if "equivalence" in r and r["k"] > 1:
                text += f"; {equivalence_words(r['equivalence'])}"
            short = short_of_plateau(r, section["plateau"])
            if short:
                text += f" ({short}: compared at equal compute, not at its plateau)"
            parts.append(text)
        lines.append(f"({key}) {q['questions'][key]} " + "; ".join(parts) + ".")
    return "\n".join(lines)
