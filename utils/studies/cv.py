"""Cross-validation over every item of a small task (SVAMP: 5 folds over its 1,000 problems):
every variant predicts every item once, from a model that never saw it; and the candidates the
study's student was chosen from."""

from __future__ import annotations

from pathlib import Path

from utils.studies.common import paper_reference, study_config
from utils.sweep import Variant

CV_FOLDS = 5
CV_SEED = 0  # the folds and each fold's validation split are drawn with this seed
# The student every variant shares (chosen from benchmarks/student_candidates.py's table; see docs/studies.md):
# the whole SmolLM2-135M-Instruct, trained until validation accuracy stops improving (at most
# `epochs`), the best validation checkpoint scored. Rationale targets are cut in the middle.
CV_SETTINGS = {
    "tiny": dict(student_layers=None, epochs=5.0, learning_rate=1e-4, batch_size=16, alpha=0.5,
                 max_source_length=160, max_target_length=160, eval_batch_size=32, select_by="accuracy",
                 early_stopping_patience=1, save_steps=None, rationale_answer=False),
    "colab": dict(select_by="accuracy", early_stopping_patience=2),
    "paper": dict(select_by="accuracy", early_stopping_patience=2),
}
CV_VARIANTS = [
    Variant("standard", "standard", dataset="all"),
    Variant("dss", "dss", {"alpha": 0.5}, "all"),  # the paper's recipe, label-only inference
    Variant("ltr", "ltr", {}, "all"),  # label, newline, rationale; the first line is the answer
]


def cv_config(task: str = "svamp", profile: str = "tiny", **overrides):
    """The run config of a cross-validated study: ``study_config`` with ``CV_SETTINGS``."""
    return study_config(task, profile, **{**CV_SETTINGS[profile], **overrides})


def cv_folds(ids: list[str], k: int = CV_FOLDS, seed: int = CV_SEED) -> list[list[str]]:
    """``k`` disjoint test folds covering every id once (sorted ids, shuffled with ``seed``, dealt in
    turn), so the folds do not depend on the order the files list the items in."""
    import random

    if len(set(ids)) != len(ids):
        raise ValueError("cv_folds needs unique ids.")
    if not 2 <= k <= len(ids):
        raise ValueError(f"k must lie in [2, {len(ids)}], got {k}.")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return [order[i::k] for i in range(k)]


def cv_datasets(paper_root: str | Path, task: str = "svamp", k: int = CV_FOLDS, seed: int = CV_SEED,
                policy: str = "all", validation_fraction: float = 0.1) -> list:
    """One ``DatasetDict`` per fold over every item the authors released rationales for (SVAMP:
    their 800 train + 200 test problems): ``test`` = the fold, ``train`` and ``validation`` carved
    from the other items (validation never from the fold)."""
    from datasets import DatasetDict

    from utils.data import build_rationale_dataset
    from utils.paper_data import load_paper_rationales
    from utils.sweep import split_validation

    records = load_paper_rationales(paper_root, task, "train") + load_paper_rationales(paper_root, task, "test")
    everything = build_rationale_dataset(records, task, policy)["train"]
    folds = cv_folds(list(everything["id"]), k, seed)
    ids = list(everything["id"])
    out = []
    for index, fold in enumerate(folds):
        held = set(fold)
        test = everything.select([i for i, item in enumerate(ids) if item in held])
        pool = everything.select([i for i, item in enumerate(ids) if item not in held])
        out.append(split_validation(DatasetDict({"train": pool, "test": test}), validation_fraction, seed + index))
    return out


def cv_study(paper_root: str | Path, run_dir: str | Path, task: str = "svamp", profile: str = "tiny",
             folds=None, variants=None, log=print) -> dict:
    """Train and score every variant on every fold (finished cells are skipped, so calling it again
    resumes), then write the pooled report: ``report.json`` sections ``<task>_cv_fold<i>`` (each
    fold's sweep) and ``<task>_cv`` (every item predicted once per variant, paired tests over all)."""
    from utils.config import save_config
    from utils.report import write_report
    from utils.sweep import run_sweep, sweep_report

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = cv_config(task, profile)
    save_config(config, run_dir)
    variants = list(variants or CV_VARIANTS)
    datasets = cv_datasets(paper_root, task)
    chosen = range(len(datasets)) if folds is None else folds
    for index in chosen:
        name = f"{task}_cv_fold{index}"
        log(f"fold {index}: train {len(datasets[index]['train'])}, validation {len(datasets[index]['validation'])}, "
            f"test {len(datasets[index]['test'])}")
        cells = run_sweep(config, (1.0,), seeds=(CV_SEED,), dataset={"all": datasets[index]}, run_dir=run_dir,
                          variants=variants, name=name, splits=("test",), log=log)
        write_report(run_dir, name, sweep_report(cells))
    # Pooled over the full design (a call that trains one variant still reports all that finished)
    names = list(dict.fromkeys([v.name for v in CV_VARIANTS] + [v.name for v in variants]))
    pooled = cv_summary(run_dir, task, names, len(datasets))
    write_report(run_dir, f"{task}_cv", pooled)
    if pooled["comparisons"]:
        from utils.evaluation import plot_paired_differences

        (run_dir / "figures").mkdir(exist_ok=True)
        plot_paired_differences(pooled, run_dir / "figures" / f"{task}_cv_differences.png",
                                title=f"{task}: {len(pooled['folds_finished'])} of {pooled['k']} folds, "
                                      f"{pooled['comparisons'][0]['n']} items")
    return pooled


def cv_summary(run_dir: str | Path, task: str, variants: list[str], k: int, baseline: str = "standard") -> dict:
    """Pool the folds' test predictions per variant: accuracy over every item with a 95% CI, the
    per-fold accuracies; and against ``baseline``, with the fold as the unit of replication (each
    fold trains its own models and tests its own items): the hierarchical bootstrap over folds,
    then items (the headline ``difference``, ``ci95``, ``p_value``, ``p_holm`` with Holm over the
    variants), the per-fold differences, the t interval over folds, the random-effects estimate
    with the between-fold heterogeneity (``utils.stats.random_effects``), the difference the design
    detects at 80 % power under the observed fold-to-fold spread (``mde_80``) and, where the paper
    has a reference, the power against the paper's effect under that spread (``power_paper``).
    Beside them the item-level view that treats the trained models as fixed: the exact McNemar test
    pooled over all items (``mcnemar``, ``p_mcnemar``) and the item-only bootstrap (``item_only``).
    Only folds every variant has finished are pooled."""
    from utils.evaluation import load_predictions
    from utils.report.core import compare_runs
    from utils.stats import bootstrap_ci, holm, mcnemar, paired_difference_variance, power_over_runs, random_effects
    from utils.sweep import load_cells

    run_dir = Path(run_dir)
    by_fold = {}
    for index in range(k):
        cells = {c["variant"]: c for c in load_cells(run_dir / f"{task}_cv_fold{index}")} \
            if (run_dir / f"{task}_cv_fold{index}").is_dir() else {}
        if all(v in cells for v in variants):
            by_fold[index] = cells
    pooled, per_fold, fold_marks = {}, {v: {} for v in variants}, {v: {} for v in variants}
    for index, cells in by_fold.items():
        for name in variants:
            cell = cells[name]
            rows = load_predictions(Path(cell["dir"]) / cell["results"]["test"]["label"]["predictions"])
            trained = set(cell["ids"]["train"]) | set(cell["ids"].get("validation", []))
            leaked = [r["id"] for r in rows if r["id"] in trained]
            if leaked:
                raise ValueError(f"fold {index} {name}: test items {leaked[:5]} were also trained or validated on.")
            for row in rows:
                if row["id"] in pooled.setdefault(name, {}):
                    raise ValueError(f"{name}: item {row['id']} is predicted by two folds.")
                pooled[name][row["id"]] = row
            fold_marks[name][index] = {r["id"]: r["correct"] for r in rows}
            per_fold[name][index] = cell["results"]["test"]["label"]["accuracy"]
    summary, comparisons = [], []
    for name in variants:
        rows = pooled.get(name, {})
        correct = [bool(r["correct"]) for r in rows.values()]
        cells = [by_fold[i][name] for i in by_fold]
        summary.append({"variant": name, "n": len(correct), "accuracy": sum(correct) / len(correct) if correct else None,
                        "ci95": bootstrap_ci(correct, n_boot=2000) if correct else None,
                        "folds": per_fold[name],
                        "best_epochs": {str(i): by_fold[i][name].get("best_epoch") for i in by_fold},
                        "train_seconds": sum(c.get("train_seconds") or 0 for c in cells),
                        "cell_seconds": sum(c.get("seconds") or 0 for c in cells),
                        # process CPU time, recorded by cells trained from 2026-11-30 on (sweep.py)
                        "cpu_seconds": sum(c.get("cpu_seconds") or 0 for c in cells),
                        "cpu_cells": sum(1 for c in cells if c.get("cpu_seconds") is not None)})
    paper = paper_reference(task)
    base = {i: r["correct"] for i, r in pooled.get(baseline, {}).items()}
    for name in variants:
        if name == baseline or not base:
            continue
        other = {i: r["correct"] for i, r in pooled[name].items()}
        row = compare_runs(fold_marks[name], fold_marks[baseline], n_boot=2000)
        test = mcnemar(other, base)
        effects = random_effects([r["difference"] for r in row["runs"]],
                                 [max(paired_difference_variance(r["a_only"], r["b_only"], r["n"]), 1e-12)
                                  for r in row["runs"]]) if row["k"] > 1 else None
        sd = row["t"]["sd"]
        comparisons.append({"variant": name, "baseline": baseline, **row, "n": len(base),
                            "mcnemar": test, "p_mcnemar": test["p_value"],
                            "discordant": test["a_only"] + test["b_only"], "random_effects": effects,
                            "power_paper": power_over_runs(paper["paper_difference"], sd, row["k"])
                            if paper["paper_difference"] is not None and row["k"] > 1 and (sd or 0) > 1e-9 else None})
    for row, adjusted in zip(comparisons, holm([c["p_value"] for c in comparisons])):
        row["p_holm"] = adjusted
    return {"design": f"{k}-fold cross-validation over every item; each variant predicts each item once, "
                      "from a model that never saw it", "task": task, "folds_finished": sorted(by_fold),
            "k": k, "unit": "fold (each trains its own models and tests its own items)",
            "summary": summary, "comparisons": comparisons, **paper}


# --- choosing the study's student: candidates on one fold -----------------------------------------

CANDIDATES = [  # standard fine-tuning on the fold, each until validation accuracy stops improving
    Variant("cut15", "standard", {"student_layers": 15}, "all"),
    Variant("lora-full", "standard", {"lora": {"r": 16, "alpha": 32}, "learning_rate": 5e-4}, "all"),
]


def cv_candidates(paper_root: str | Path, run_dir: str | Path, task: str = "svamp", profile: str = "tiny",
                  fold: int = 0, log=print) -> list[dict]:
    """Candidate students (``CANDIDATES``) trained ``standard`` on one fold, scored on its test part:
    the accuracy-against-CPU-time table the study's student is picked from. The whole model's row is
    the study's own ``standard`` cell of that fold (``cv_study``), so it is not trained twice."""
    from utils.report import write_report
    from utils.sweep import run_sweep, sweep_report

    config = cv_config(task, profile)
    data = cv_datasets(paper_root, task)[fold]
    cells = run_sweep(config, (1.0,), seeds=(CV_SEED,), dataset={"all": data}, run_dir=run_dir,
                      variants=CANDIDATES, name=f"{task}_candidates_fold{fold}", splits=("test",), log=log)
    write_report(run_dir, f"{task}_candidates_fold{fold}", sweep_report(cells, baseline="cut15"))
    return cells

