"""The report of a cross-validated study (``utils.studies.cv``): its check against the saved
predictions, its tables and its reading in words."""

from __future__ import annotations

import json
from pathlib import Path

from utils.report.core import _ci, _differs, _num, _pct, _read_rows, _signed_ci, _table, compare_runs, runs_text
from utils.stats import p_in_sentence as _p_eq
from utils.stats import p_text as _p


def verify_cv(run_dir: Path, name: str, section: dict, task: str) -> list[str]:
    """Recompute a pooled section from the folds' prediction files: every variant predicts each
    item exactly once, from a cell that never trained or validated on it (and, once every fold
    finished, every item of the data has its prediction); pooled accuracies and McNemar counts equal
    what the report says (gold against prediction, through the task's metric), and so do the
    fold-level difference, interval and p of every comparison."""
    from utils.metrics import score

    problems, correct, universes, by_fold = [], {}, set(), {}
    prefix = name + "_fold"
    for row in section["summary"]:
        variant, seen = row["variant"], {}
        for fold in section["folds_finished"]:
            cell_path = run_dir / f"{prefix}{fold}" / "cells" / variant / "f1-s0" / "cell.json"
            cell = json.loads(cell_path.read_text())
            rows = _read_rows(cell_path.parent / cell["results"]["test"]["label"]["predictions"])
            trained = set(cell["ids"]["train"]) | set(cell["ids"].get("validation", []))
            universes.add(frozenset(trained | set(cell["ids"]["test"])))
            marks = score(task, [r["prediction"] for r in rows], [r["gold"] for r in rows])
            by_fold.setdefault(variant, {})[fold] = {r["id"]: ok for r, ok in zip(rows, marks)}
            for r, ok in zip(rows, marks):
                if r["id"] in trained:
                    problems.append(f"{name} {variant} fold {fold}: {r['id']} was trained or validated on")
                if r["id"] in seen:
                    problems.append(f"{name} {variant}: {r['id']} predicted twice")
                seen[r["id"]] = ok
        correct[variant] = seen
        again = sum(seen.values()) / len(seen) if seen else None
        if not seen and row["n"] == 0:
            continue  # no fold finished by every variant yet: nothing to recompute
        if len(seen) != row["n"] or again is None or abs(again - row["accuracy"]) > 1e-9:
            problems.append(f"{name} {variant}: report says {row['accuracy']} (n={row['n']}), "
                            f"predictions give {again} (n={len(seen)})")
    if len(universes) > 1:
        problems.append(f"{name}: the cells' train, validation and test ids cover different items "
                        f"({sorted(len(u) for u in universes)}): folds of different data?")
    elif universes and sorted(section["folds_finished"]) == list(range(section["k"])):
        for variant, seen in correct.items():  # every fold finished: each item has its one prediction
            missing = len(next(iter(universes)) - set(seen))
            if missing:
                problems.append(f"{name} {variant}: {missing} items of the data have no prediction")
    for comp in section["comparisons"]:
        a, b = correct[comp["variant"]], correct[comp["baseline"]]
        a_only = sum(1 for i in a if a[i] and not b.get(i))
        b_only = sum(1 for i in b if b[i] and not a.get(i))
        if set(a) != set(b) or (a_only, b_only) != (comp["mcnemar"]["a_only"], comp["mcnemar"]["b_only"]):
            problems.append(f"{name} {comp['variant']} vs {comp['baseline']}: McNemar counts differ "
                            f"({a_only}, {b_only}) vs the report's")
        if "runs" in comp:  # the fold-level statistics, recomputed from the predictions
            try:
                again = compare_runs(by_fold[comp["variant"]], by_fold[comp["baseline"]], n_boot=comp["n_boot"])
            except ValueError as exc:  # reported above as a missing or extra prediction
                problems.append(f"{name} {comp['variant']} vs {comp['baseline']}: cannot be recomputed: {exc}")
                continue
            wrong = [f for f in ("difference", "ci95", "p_value") if _differs(comp[f], again[f])]
            if wrong:
                problems.append(f"{name} {comp['variant']} vs {comp['baseline']}: "
                                + ", ".join(f"{f} {comp[f]} in the report, {again[f]} from the predictions" for f in wrong))
    return problems



def markdown_cv(name: str, section: dict) -> str:
    """A pooled cross-validation section: accuracy per variant over every item, per-fold accuracy,
    epochs to the best checkpoint and CPU seconds; then each variant against the baseline with the
    fold as the unit (hierarchical bootstrap, per-fold differences, t over folds, random effects and
    heterogeneity, power under the fold-to-fold spread) and, beside it, the item-level McNemar test."""
    folds = section["folds_finished"]
    lines = [f"#### {name}: {section['design']} ({len(folds)} of {section['k']} folds finished)", ""]
    rows = [[r["variant"], r["n"], _pct(r["accuracy"]), _ci(r["ci95"]),
             " / ".join(_pct(r["folds"].get(str(f), r["folds"].get(f))) for f in folds),
             " / ".join(str(r["best_epochs"].get(str(f))) for f in folds), _num(r["train_seconds"], 0),
             f"{_num(r['cpu_seconds'], 0)} ({r['cpu_cells']} of {len(folds)} cells)" if r.get("cpu_cells") else "not recorded"]
            for r in section["summary"]]
    lines.append(_table(["variant", "items", "accuracy %", "95% CI", "per fold %", "best epoch per fold",
                         "train s (wall)", "CPU s, all threads"], rows))
    paper = section.get("paper_difference")
    if section["comparisons"]:
        lines += ["", "Against the baseline, the fold as the unit of replication (hierarchical bootstrap: folds, then "
                      "items within each; Holm over the variants):", "",
                  _table(["variant - baseline", "difference (points)", "per fold", "95% CI (hierarchical)", "p",
                          "p (Holm)", "95% CI (t over folds)", "random effects [95% CI]", "I² (Q p)",
                          "detectable at 80% power"]
                         + ([f"power against the paper's {100 * paper:+.1f}"] if paper is not None else []),
                         [[f"{c['variant']} - {c['baseline']}", f"{100 * c['difference']:+.1f}", runs_text(c),
                           _signed_ci(c["ci95"]), _p(c["p_value"]), _p(c["p_holm"]),
                           _signed_ci(c["t"]["ci95"]) if c["t"]["ci95"] else "",
                           _random_effects_text(c.get("random_effects")),
                           _heterogeneity_text(c.get("random_effects")),
                           f"±{_num(100 * c['mde_80'])}" if c.get("mde_80") else ""]
                          + ([f"{100 * c['power_paper']:.0f} %" if c.get("power_paper") is not None else ""]
                             if paper is not None else [])
                          for c in section["comparisons"]])]
        lines += ["", "The same comparisons treating the trained models as fixed (items only; too narrow when "
                      "folds disagree):", "",
                  _table(["variant - baseline", "McNemar b / c", "p (exact)", "95% CI (items only)"],
                         [[f"{c['variant']} - {c['baseline']}", f"{c['mcnemar']['a_only']} / {c['mcnemar']['b_only']}",
                           _p(c["p_mcnemar"]), _signed_ci(c["item_only"]["ci95"])] for c in section["comparisons"]])]
        if section.get("paper_effect"):
            lines += ["", f"Reference: {section['paper_effect']}."]
    return "\n".join(lines)


def _random_effects_text(effects: dict | None) -> str:
    if not effects or effects.get("estimate") is None:
        return ""
    return f"{100 * effects['estimate']:+.1f} [{_signed_ci(effects['ci'])}]"


def _heterogeneity_text(effects: dict | None) -> str:
    if not effects or effects.get("q") is None:
        return ""
    return f"{100 * effects['i2']:.0f} % ({_p(effects['q_p_value'])})"


def describe_cv(section: dict | None) -> str:
    """The finding of a cross-validated study in sentences, read from its report (so prose that
    quotes it cannot drift from the numbers): per comparison the difference with its hierarchical
    interval and Holm p over folds, the per-fold differences, the between-fold heterogeneity, the
    difference the design detects under the fold-to-fold spread and, where the paper has a
    reference, the power it had against an effect of the paper's size."""
    if not section or not section["comparisons"]:
        return "The study has not finished a fold with every variant yet."
    k = len(section["folds_finished"])
    lines = [f"{k} of {section['k']} folds finished ({section['comparisons'][0]['n']:,} items, each predicted once "
             "per variant); every interval below counts the fold as the unit of replication."]
    paper = section.get("paper_difference")
    for c in section["comparisons"]:
        verdict = ("significantly better" if c["p_holm"] < 0.05 and c["difference"] > 0 else
                   "significantly worse" if c["p_holm"] < 0.05 else "not significantly different")
        effects = c.get("random_effects") or {}
        spread = (f"; between folds I² = {100 * effects['i2']:.0f} % (Cochran's Q p {_p_eq(effects['q_p_value'])}), "
                  f"random-effects estimate {_random_effects_text(effects)}") if effects.get("q") is not None else ""
        power = ""
        if c.get("mde_80"):
            power = f"; under this fold-to-fold spread the design detects ±{100 * c['mde_80']:.1f} points at 80% power"
            if paper is not None and c.get("power_paper") is not None:
                power += f" and had {100 * c['power_paper']:.0f} % power against the paper's {100 * paper:+.1f}"
        lines.append(f"{c['variant']} - {c['baseline']}: {100 * c['difference']:+.1f} points (95% CI "
                     f"{_signed_ci(c['ci95'])}, hierarchical bootstrap over {k} folds and their items, Holm p "
                     f"{_p_eq(c['p_holm'])}): {verdict}; per fold {runs_text(c)}{spread}{power}.")
    return "\n".join(lines)
