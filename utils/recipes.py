"""Recipes on the paper's own data: the authors' published PaLM 540B rationales.

``paper_study`` runs, through ``utils.sweep.run_sweep`` (resumable, every finished cell written
at once), the study of issue "make step-by-step pay" in three stages (on CPU, for SVAMP):

1. ``recipe`` (the hour-long CPU recipe): standard fine-tuning against distilling step by step
   (alpha 0.5, teacher-correct rationales) on all the training data, one seed;
2. ``ablation`` (on half the training data, one seed, to fit 2 CPU cores): rationales all vs
   teacher-correct, alpha 0.2 / 0.5 / 0.8, each student scored with label-only inference (the
   paper) and rationale-then-answer inference;
3. ``final``: the variant with the best *validation* accuracy against standard fine-tuning, over
   3 seeds and 25 / 50 / 100 % of the training data, with paired tests on the test items
   (``utils.sweep.compare_to_baseline``).

Every cell uses the same student (on ``tiny``: a 6-layer cut of the bundled SmolLM2-135M-Instruct),
the same validation split (10 % carved from train, at most 500 examples, seed 0) for early stopping
and selection, and the same test items. Usage:
``python -m utils study --task svamp --paper-data DIR --run-dir runs/svamp``; DIR holds ``svamp/``
from the authors' ``datasets.zip`` (``utils.paper_data.download_paper_data`` fetches it). With
``--profile paper`` (a GPU) the student is the paper's T5 v1.1 base with the paper's settings, and
``--task`` may be any of the paper's four tasks.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from utils.sweep import Variant

STAGES = ("recipe", "ablation", "final", "self_consistency", "report")  # report: no training, tables only

PAPER_TASKS = ("svamp", "cqa", "esnli", "anli1")
# Settings per profile on top of the profile's own. tiny: sized for 2 CPU cores (about 90 minutes
# for the SVAMP study); paper: the profile's T5 v1.1 base, 20 epochs, lr 5e-5 (a GPU).
STUDY_SETTINGS = {
    "tiny": dict(student_layers=6, epochs=2.0, learning_rate=3e-4, batch_size=16, alpha=0.5,
                 max_source_length=128, max_target_length=128, eval_batch_size=32),
    "colab": {},
    "paper": {},
}
SVAMP_SETTINGS = STUDY_SETTINGS["tiny"]
# Checkpoint and validation every half epoch; the lowest validation loss wins (early stopping).
SVAMP_OPTIONS = {"save_steps": 0.5, "rationale_answer": True}

BOTH = ("label", "rationale")
ABLATION = [
    Variant("standard", "standard", dataset="correct"),
    Variant("dss", "dss", {"alpha": 0.5}, "correct", BOTH),
    Variant("dss-all", "dss", {"alpha": 0.5}, "all", BOTH),
    Variant("dss-a0.2", "dss", {"alpha": 0.2}, "correct", BOTH),
    Variant("dss-a0.8", "dss", {"alpha": 0.8}, "correct", BOTH),
]


def study_config(task: str = "svamp", profile: str = "tiny", **overrides):
    """The run config of a study: the profile, the study settings for it, the task's data in full."""
    from utils.config import PROFILES, load_config

    if task not in PAPER_TASKS:
        raise ValueError(f"Unknown task {task!r} for a study on the paper's data. Tasks: {', '.join(PAPER_TASKS)}.")
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Valid profiles: {', '.join(PROFILES)}.")
    # The committed studies trained padded rows over the whole vocabulary, denormals kept; a study keeps
    # one recipe from its first cell to its last, so the tiny profile's speed levers stay off unless a
    # design sets them.
    values = dict(task=task, n_train=None, n_test=None, max_ops=None, teacher_cache_seed=None, pack_rows=False,
                  prune_vocab=False, flush_denormal=False, **STUDY_SETTINGS[profile], **SVAMP_OPTIONS)
    return load_config(profile, **{**values, **overrides})


def svamp_config(**overrides):
    return study_config("svamp", "tiny", **overrides)


def study_datasets(paper_root: str | Path, task: str = "svamp", validation_fraction: float = 0.1,
                   max_validation: int = 500) -> dict:
    """The task's ``DatasetDict`` per rationale policy (``all``, ``correct``), each with the same
    ``validation`` split carved from train (never from test) and every test item."""
    from utils.data import build_rationale_dataset
    from utils.paper_data import load_paper_rationales, read_paper_split
    from utils.sweep import split_validation

    records = load_paper_rationales(paper_root, task, "train")
    test = read_paper_split(paper_root, task, "test")
    fraction = min(validation_fraction, max_validation / max(1, len(records)))
    return {policy: split_validation(build_rationale_dataset(records, task, policy, test, label_field="label"),
                                     fraction, seed=0)
            for policy in ("all", "correct")}


def svamp_datasets(paper_root: str | Path, validation_fraction: float = 0.1) -> dict:
    return study_datasets(paper_root, "svamp", validation_fraction)


ABLATION_FRACTION = 0.5


def best_variant(cells: list[dict], candidates: list[str], fraction: float = ABLATION_FRACTION) -> tuple[str, str]:
    """The (variant, inference) with the highest mean validation accuracy at ``fraction``; ties go
    to the first."""
    best, best_acc = None, -1.0
    for name in candidates:
        for inference in BOTH:
            accs = [c["results"]["validation"][inference]["accuracy"] for c in cells
                    if c["variant"] == name and c["fraction"] == fraction and inference in c["results"].get("validation", {})]
            if accs and sum(accs) / len(accs) > best_acc:
                best, best_acc = (name, inference), sum(accs) / len(accs)
    if best is None:
        raise RuntimeError("No finished ablation cell with validation results: run the 'ablation' stage first.")
    return best


def paper_study(paper_root: str | Path, run_dir: str | Path, task: str = "svamp", profile: str = "tiny",
                stages=STAGES, seeds=(0, 1, 2), fractions=(0.25, 0.5, 1.0), log=print) -> list[dict]:
    """Run the stages in order (finished cells are skipped); returns every finished cell.
    The sweep folder and the ``report.json`` section are both named ``<task>_study``."""
    from utils.config import save_config
    from utils.evaluation import plot_fraction_sweep
    from utils.report import write_report
    from utils.sweep import load_cells, run_sweep, sweep_report

    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"Unknown stage(s) {unknown}. Stages: {', '.join(STAGES)}.")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"{task}_study"
    config = study_config(task, profile)
    save_config(config, run_dir)
    datasets = study_datasets(paper_root, task)
    splits = ("validation", "test")
    by_name = {v.name: v for v in ABLATION}

    def sweep(variants, fractions_, seeds_, splits_=splits):
        return run_sweep(config, fractions_, seeds=seeds_, dataset=datasets, run_dir=run_dir, variants=variants,
                         name=name, splits=splits_, log=log)

    if "recipe" in stages:
        sweep([by_name["standard"], by_name["dss"]], (1.0,), seeds[:1])
    if "ablation" in stages:
        sweep(ABLATION, (ABLATION_FRACTION,), seeds[:1])
    chosen = None
    candidates = [v.name for v in ABLATION if v.mode == "dss"]
    if "final" in stages or "self_consistency" in stages:
        chosen = best_variant(load_cells(run_dir / name), candidates)
        log(f"best variant on validation: {chosen[0]} with {chosen[1]} inference")
    if "final" in stages:
        # Only the chosen inference method (and label-only, the paper's) is scored, on the test split.
        best = by_name[chosen[0]]
        best = Variant(best.name, best.mode, best.overrides, best.dataset, tuple(dict.fromkeys(("label", chosen[1]))))
        for fraction in sorted(fractions, reverse=True):  # all seeds at 100 % first
            sweep([by_name["standard"], best], (fraction,), seeds, ("test",))
    if "self_consistency" in stages:
        variant = by_name[chosen[0]]
        sc = Variant(f"{variant.name}-sc", variant.mode, variant.overrides, variant.dataset, ("self_consistency",))
        log(f"{sc.name}: scoring with self-consistency means training it again (cells keep no weights)")
        sweep([sc], (1.0,), seeds, ("test",))
    cells = load_cells(run_dir / name)
    if chosen is None:
        try:  # the report names the choice as soon as the ablation has run
            chosen = best_variant(cells, candidates)
        except RuntimeError:
            pass
    teacher = paper_teacher(paper_root, task, run_dir / name)
    report = {**sweep_report(cells), "chosen": chosen, "teacher": teacher}
    write_report(run_dir, name, report)
    if cells:
        (run_dir / "figures").mkdir(exist_ok=True)
        shown = {"standard", "dss", chosen[0] if chosen else "dss"}  # the baseline, the paper's recipe, the choice
        plot_fraction_sweep([r for r in report["summary"] if r["variant"] in shown],
                            teacher, run_dir / "figures" / f"{task}_fractions.png", inference=None,
                            title=f"{task}: {config.student_model} ({config.student_layers or 'all'} layers), "
                                  "PaLM 540B rationales")
    return cells


def paper_teacher(paper_root: str | Path, task: str, out_dir: str | Path, ids=None) -> dict:
    """The PaLM teacher on the test items, from the authors' released outputs (parsed the
    course's way), with its predictions saved beside the cells. ``ids``: only these items of the
    authors' test split (a study's own held-out test set), each of which must exist."""
    from utils.evaluation import evaluate_teacher_records, save_predictions
    from utils.paper_data import load_paper_rationales

    records = load_paper_rationales(paper_root, task, "test")
    if ids is not None:
        wanted = {str(i) for i in ids}
        records = [r for r in records if str(r["id"]) in wanted]
        missing = wanted - {str(r["id"]) for r in records}
        if missing:
            raise ValueError(f"{len(missing)} test ids have no teacher record in the authors' {task} test split "
                             f"(e.g. {sorted(missing)[:3]}): ids of another split or task?")
    scored = evaluate_teacher_records(records)
    save_predictions(scored["predictions"], Path(out_dir) / "teacher_test.jsonl")
    return {"model": "PaLM 540B, few-shot CoT (the authors' released outputs)", "accuracy": scored["accuracy"],
            "ci95": scored["ci95"], "n": scored["n"], "predictions": "teacher_test.jsonl"}


# --- SVAMP, 5-fold cross-validation over all 1,000 problems (issue "Prove it or refute it") -------

CV_FOLDS = 5
CV_SEED = 0  # the folds and each fold's validation split are drawn with this seed
# The student every variant shares (chosen from benchmarks/student_candidates.py's table; see the README):
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
    per-fold accuracies, and against ``baseline`` the exact McNemar test, the paired bootstrap, Holm's
    adjustment across variants and the minimum detectable effect (80 % power, p < 0.05) from the
    observed discordance. Only folds every variant has finished are pooled."""
    from utils.evaluation import load_predictions
    from utils.stats import bootstrap_ci, holm, mcnemar, minimum_detectable_effect, paired_bootstrap
    from utils.sweep import load_cells

    run_dir = Path(run_dir)
    by_fold = {}
    for index in range(k):
        cells = {c["variant"]: c for c in load_cells(run_dir / f"{task}_cv_fold{index}")} \
            if (run_dir / f"{task}_cv_fold{index}").is_dir() else {}
        if all(v in cells for v in variants):
            by_fold[index] = cells
    pooled, per_fold = {}, {v: {} for v in variants}
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
    base = {i: r["correct"] for i, r in pooled.get(baseline, {}).items()}
    for name in variants:
        if name == baseline or not base:
            continue
        other = {i: r["correct"] for i, r in pooled[name].items()}
        test = mcnemar(other, base)
        boot = paired_bootstrap([other], [base], n_boot=2000)
        discordant = test["a_only"] + test["b_only"]
        comparisons.append({"variant": name, "baseline": baseline, "n": len(base),
                            "difference": boot["difference"], "ci95": boot["ci95"], "p_bootstrap": boot["p_value"],
                            "mcnemar": test, "p_value": test["p_value"], "discordant": discordant,
                            "mde_80": minimum_detectable_effect(discordant, len(base))})
    for row, adjusted in zip(comparisons, holm([c["p_value"] for c in comparisons])):
        row["p_holm"] = adjusted
    return {"design": f"{k}-fold cross-validation over every item; each variant predicts each item once, "
                      "from a model that never saw it", "task": task, "folds_finished": sorted(by_fold),
            "k": k, "summary": summary, "comparisons": comparisons, **paper_reference(task)}


# The paper's own numbers to set a study's effect beside (Hsieh et al. 2023, Table 1, T5-base, all the
# data): standard fine-tuning and distilling step by step, accuracy %. Only tasks this course studies.
PAPER_TABLE1 = {"svamp": (62.63, 65.50)}


def paper_reference(task: str) -> dict:
    """``paper_effect`` (a sentence) and ``paper_difference`` (a fraction, step-by-step minus
    standard) for ``task`` from ``PAPER_TABLE1``; both None for a task without a reference."""
    if task not in PAPER_TABLE1:
        return {"paper_effect": None, "paper_difference": None}
    standard, dss = PAPER_TABLE1[task]
    return {"paper_effect": f"Hsieh et al. 2023, Table 1 (T5-base, all data): standard {standard:.2f}, "
                            f"step-by-step {dss:.2f} ({dss - standard:+.1f} points)",
            "paper_difference": round((dss - standard) / 100, 4)}


# --- e-SNLI data efficiency on a premise-disjoint split (issue "Prove it or refute it") ------------
# PaLM rationales exist for the 9,824 items of e-SNLI's test split only, so the study carves its
# own test set, validation set and training pool from those items, disjoint by premise. It trains
# seed by seed (esnli_plan), and esnli_report rebuilds its report section from the finished cells:
# the accuracy curves, the teacher on the same test items, the paper's statement (data_efficiency
# in utils.report, beside verify, which recomputes it) and a text-free file of premise hashes.

ESNLI_SPLIT_SEED = 0
ESNLI_TEST_ITEMS = 1000  # at least this many held-out test items (whole premises)
ESNLI_VALIDATION_ITEMS = 200  # early stopping and checkpoint choice; never tested on
# Sized from the first measured cell (standard, 250 items: 334 s) to fit the study's CPU budget beside
# the SVAMP folds: the rationale variants train on 12.5, 25 and 50 % of standard's largest size, the
# paper's own fractions, so "step-by-step on 12.5 % beats standard on all of it" is asked as the paper asks it.
ESNLI_SIZES = (125, 250, 500)  # training examples per cell; standard also at ESNLI_STANDARD_MAX
ESNLI_STANDARD_MAX = 1000
ESNLI_SOURCE_SIZE = 250  # the size at which the rationale source is varied
ESNLI_SOURCE_SEEDS = (0,)  # the seeds that vary the source (a secondary question; each seed costs ~0.6 h)
# Every cell takes at least this many optimizer steps (the paper trains a fixed number of steps at
# every size): the epoch cap rises for small sizes (8 epochs at 125 items, batch 16).
ESNLI_MIN_STEPS = 64
# Every cell trains to its epoch cap and is scored from its best validation checkpoint; no early
# stopping. On 204 validation items patience 1 stopped on noise: seed 1's standard at 1,000 after 2
# of 4 epochs (a tie, then a dip), 61.8 % on test against 73.9 % for its standard at 500, and the
# floor of ESNLI_MIN_STEPS steps only moved where such stops could happen.
ESNLI_SETTINGS = {
    "tiny": dict(student_layers=None, epochs=4.0, learning_rate=1e-4, batch_size=16, alpha=0.5,
                 max_source_length=128, max_target_length=96, eval_batch_size=32, select_by="accuracy",
                 early_stopping_patience=None, save_steps=None, rationale_answer=False),
    "colab": dict(select_by="accuracy", early_stopping_patience=None),
    "paper": dict(select_by="accuracy", early_stopping_patience=None),
}
ESNLI_VARIANTS = [
    Variant("standard", "standard", dataset="palm"),
    Variant("dss", "dss", {"alpha": 0.5}, "palm"),
    Variant("ltr", "ltr", {}, "palm"),
]
ESNLI_SOURCE_VARIANTS = [
    Variant("dss-human1", "dss", {"alpha": 0.5}, "human1"),  # explanation_1 instead of PaLM's rationale
    Variant("dss-all4", "dss", {"alpha": 0.5}, "all4"),  # PaLM's + the three human ones, a row each
]


def premise_split(premises: list[str], n_test: int = ESNLI_TEST_ITEMS, n_validation: int = ESNLI_VALIDATION_ITEMS,
                  seed: int = ESNLI_SPLIT_SEED) -> dict[str, list[int]]:
    """Item positions for ``test``, ``validation`` and ``pool`` (training), every premise on one side:
    distinct premises (sorted) are shuffled with ``seed`` and dealt whole to test until it holds at
    least ``n_test`` items, then to validation until ``n_validation``, the rest to the pool."""
    import random

    by_premise: dict[str, list[int]] = {}
    for index, premise in enumerate(premises):
        by_premise.setdefault(premise, []).append(index)
    order = sorted(by_premise)
    random.Random(seed).shuffle(order)
    parts: dict[str, list[int]] = {"test": [], "validation": [], "pool": []}
    for premise in order:
        side = ("test" if len(parts["test"]) < n_test else
                "validation" if len(parts["validation"]) < n_validation else "pool")
        parts[side].extend(by_premise[premise])
    return {k: sorted(v) for k, v in parts.items()}


def esnli_datasets(paper_root: str | Path, seed: int = ESNLI_SPLIT_SEED) -> dict:
    """The e-SNLI study's ``DatasetDict`` per rationale source, all on one premise-disjoint split:
    ``palm`` (the authors' PaLM rationales, every parsed one kept, as the paper does), ``human1``
    (the first human explanation as the rationale) and ``all4`` (PaLM's rationale plus the three
    human explanations as ``extra_rationales``, one rationale row each). Each has ``train`` (the
    pool), ``validation`` and ``test``; ids are ``esnli-test-<line>`` of the authors' file."""
    from datasets import Dataset, DatasetDict

    from utils.data import build_rationale_dataset
    from utils.paper_data import load_paper_rationales, paper_split_path

    raw_path = paper_split_path(paper_root, "esnli", "test")
    raw = [json.loads(line) for line in raw_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = load_paper_rationales(paper_root, "esnli", "test")
    if len(raw) != len(records):
        raise ValueError(f"{raw_path}: {len(raw)} items but {len(records)} teacher records.")
    parts = premise_split([row["premise"] for row in raw], seed=seed)
    palm = build_rationale_dataset(records, "esnli", "all")["train"].to_list()
    sources = {}
    for name in ("palm", "human1", "all4"):
        rows = []
        for row, item in zip(palm, raw, strict=True):
            humans = [str(item.get(f"explanation_{k}") or "").strip() for k in (1, 2, 3)]
            if name == "human1":
                row = {**row, "rationale": humans[0], "rationale_label": row["label"] if humans[0] else ""}
            extra = [h for h in humans if h] if name == "all4" else []
            rows.append({**row, "extra_rationales": extra, "premise": item["premise"]})
        sources[name] = DatasetDict({split: Dataset.from_list([rows[i] for i in positions])
                                     for split, positions in (("train", parts["pool"]), ("validation",
                                                              parts["validation"]), ("test", parts["test"]))})
    return sources


ESNLI_SEEDS = (0, 1, 2)
ESNLI_SECTION = "esnli_sizes"  # the sweep folder and the report.json section


def premise_hash(premise: str) -> str:
    """A short, text-free fingerprint of a premise: the first 12 hex digits of its UTF-8 SHA-256.
    Equal premises give equal hashes, so a published run can prove its split disjoint without texts."""
    import hashlib

    return hashlib.sha256(premise.encode("utf-8")).hexdigest()[:12]


def write_premise_hashes(sweep_dir: str | Path, data, cells: list[dict]) -> Path:
    """``PREMISE_FILE`` in the sweep folder: every id the study used (the test and validation items,
    and each finished cell's training items) -> ``premise_hash`` of its premise; no text.
    ``data`` is one source's ``DatasetDict`` (they share items and premises)."""
    from utils.config import atomic_write_json
    from utils.report import PREMISE_FILE

    premises = {str(i): p for split in ("train", "validation", "test")
                for i, p in zip(data[split]["id"], data[split]["premise"])}
    used = set(data["test"]["id"]) | set(data["validation"]["id"])
    for cell in cells:
        used.update(i for split in ("train", "validation", "test") for i in cell.get("ids", {}).get(split, []))
    unknown = sorted(str(i) for i in used if str(i) not in premises)
    if unknown:
        raise ValueError(f"{len(unknown)} ids of the finished cells are not in the study's split (e.g. {unknown[:3]}): "
                         "cells from another split or task in this run folder?")
    return atomic_write_json(Path(sweep_dir) / PREMISE_FILE, {
        "hash": "first 12 hex digits of the SHA-256 of the premise (UTF-8)",
        "premises": {i: premise_hash(premises[i]) for i in sorted(used)}})


def esnli_plan(seeds=ESNLI_SEEDS, sizes=ESNLI_SIZES) -> list[tuple[str, int, int]]:
    """The e-SNLI grid in the order it is trained, ``(variant, size, seed)``: seed by seed (a study
    stopped after some hours leaves whole one-seed grids), each seed standard at
    ``ESNLI_STANDARD_MAX``, then the three variants at ``sizes`` (largest first, each size's variants
    in turn), then, for the seeds in ``ESNLI_SOURCE_SEEDS``, the rationale sources at ``ESNLI_SOURCE_SIZE``."""
    plan = []
    for seed in seeds:
        plan.append((ESNLI_VARIANTS[0].name, ESNLI_STANDARD_MAX, seed))
        plan += [(v.name, size, seed) for size in sorted(sizes, reverse=True) for v in ESNLI_VARIANTS]
        if seed in ESNLI_SOURCE_SEEDS:
            plan += [(v.name, ESNLI_SOURCE_SIZE, seed) for v in ESNLI_SOURCE_VARIANTS]
    return plan


def esnli_epochs(size: int, batch_size: int, epochs: float) -> float:
    """The epoch cap of a cell of ``size`` training examples: ``epochs``, raised so that the cell can
    take ``ESNLI_MIN_STEPS`` optimizer steps (125 items at batch 16: 8 steps an epoch, 8 epochs); the
    settings' ``early_stopping_min_steps`` keeps early stopping from cutting it shorter."""
    import math

    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be >= 1, got {size} and {batch_size}.")
    return float(max(epochs, math.ceil(ESNLI_MIN_STEPS / math.ceil(size / batch_size))))


def _check_grid(seeds, sizes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    seeds, sizes = tuple(seeds), tuple(sizes)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be one or more integers >= 0, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}.")
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or not 0 < n < ESNLI_STANDARD_MAX
                        for n in sizes):
        raise ValueError(f"sizes must be integers in (0, {ESNLI_STANDARD_MAX}) (standard's own size), got {sizes!r}.")
    return seeds, sizes


def esnli_study(paper_root: str | Path, run_dir: str | Path, profile: str = "tiny", seeds=ESNLI_SEEDS,
                sizes=ESNLI_SIZES, log=print) -> dict:
    """Train the grid ``esnli_plan`` lists, seed by seed: each seed's standard at
    ``ESNLI_STANDARD_MAX``, standard / dss / ltr at ``sizes`` (largest first) and, for the seeds in
    ``ESNLI_SOURCE_SEEDS``, the rationale sources at ``ESNLI_SOURCE_SIZE``, then the next seed. Each
    size trains under its own epoch cap (``esnli_epochs``). Cells live in ``run_sweep``'s layout under
    ``<run_dir>/esnli_sizes`` and finished ones are skipped, so calling it again resumes. After each
    seed the section ``esnli_sizes`` is rebuilt from every finished cell (``esnli_report``)."""
    from utils.config import save_config
    from utils.sweep import run_sweep

    seeds, sizes = _check_grid(seeds, sizes)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = study_config("esnli", profile, **ESNLI_SETTINGS[profile])
    save_config(config, run_dir)
    datasets = esnli_datasets(paper_root)
    pool = len(datasets["palm"]["train"])
    if max(sizes) > pool:
        raise ValueError(f"sizes {sizes} exceed the training pool of {pool} items.")
    log(f"e-SNLI: pool {pool}, validation {len(datasets['palm']['validation'])}, test {len(datasets['palm']['test'])}")

    def sweep(variants, sizes_, seed):
        for size in sorted(sizes_, reverse=True):  # one call a size: its own epoch cap (esnli_epochs)
            cap = esnli_epochs(size, config.batch_size, config.epochs)
            run_sweep(dataclasses.replace(config, epochs=cap), [size / pool], seeds=(seed,), dataset=datasets,
                      run_dir=run_dir, variants=variants, name=ESNLI_SECTION, splits=("test",), log=log)

    section = None
    for seed in seeds:
        log(f"e-SNLI: seed {seed}")
        sweep(ESNLI_VARIANTS[:1], (ESNLI_STANDARD_MAX,), seed)
        sweep(ESNLI_VARIANTS, sizes, seed)
        if seed in ESNLI_SOURCE_SEEDS:
            sweep(ESNLI_SOURCE_VARIANTS, (ESNLI_SOURCE_SIZE,), seed)
        section = esnli_report(paper_root, run_dir, seeds, sizes, datasets=datasets, log=log)
    return section


def esnli_progress(cells: list[dict], pool: int, seeds=ESNLI_SEEDS, sizes=ESNLI_SIZES) -> dict:
    """How much of the grid finished: ``expected`` and ``finished`` cells in all, and per seed
    ``[finished, expected]`` (the seeds asked for and any other seed a finished cell has)."""
    from utils.report import cell_size

    done = {(c["variant"], cell_size(c, pool), c["seed"]) for c in cells}
    all_seeds = sorted(set(seeds) | {seed for _, _, seed in done})
    plan = esnli_plan(all_seeds, sizes)
    per_seed = {str(seed): [sum(1 for v, n, s in plan if s == seed and (v, n, s) in done),
                            sum(1 for _, _, s in plan if s == seed)] for seed in all_seeds}
    expected = len(esnli_plan(seeds, sizes))
    return {"expected": expected, "finished": sum(1 for key in plan if key in done and key[2] in seeds),
            "seeds": per_seed}


def esnli_report(paper_root: str | Path, run_dir: str | Path, seeds=ESNLI_SEEDS, sizes=ESNLI_SIZES, datasets=None,
                 log=print) -> dict:
    """Rebuild the ``esnli_sizes`` section of ``report.json`` from the finished cells, training
    nothing: the sweep (``sweep_report``), accuracy per variant and size (``size_curves``: mean ± sd
    over seeds, 95 % interval pooled over seeds), the PaLM teacher on the study's test items only
    (its predictions saved beside the cells), the paper's statement (``data_efficiency`` against
    standard at ``ESNLI_STANDARD_MAX``), how much of the grid finished, the premise hashes
    (``write_premise_hashes``) and the figure ``figures/esnli_sizes.png``. Returns the section."""
    from utils.evaluation import plot_size_curves
    from utils.report import PREMISE_FILE, SIZES_COMMAND, data_efficiency, size_curves, size_results, write_report
    from utils.sweep import load_cells, sweep_report

    seeds, sizes = _check_grid(seeds, sizes)
    run_dir = Path(run_dir)
    sweep_dir = run_dir / ESNLI_SECTION
    cells = load_cells(sweep_dir) if sweep_dir.is_dir() else []
    if not cells:
        raise FileNotFoundError(f"No finished e-SNLI cell in {sweep_dir}: run the study first ({SIZES_COMMAND}).")
    data = (datasets or esnli_datasets(paper_root))["palm"]
    pool, test_ids = len(data["train"]), set(data["test"]["id"])
    for cell in cells:
        if set(cell["ids"]["test"]) != test_ids:
            raise ValueError(f"{cell['dir']} was tested on other items than the study's split "
                             f"(split seed {ESNLI_SPLIT_SEED}): a run folder of another split?")
    write_premise_hashes(sweep_dir, data, cells)
    teacher = paper_teacher(paper_root, "esnli", sweep_dir, ids=data["test"]["id"])
    results = size_results(cells, sweep_dir, "esnli", pool)
    section = {**sweep_report(cells), "pool": pool, "validation_items": len(data["validation"]),
               "test_items": len(test_ids), "premises": PREMISE_FILE, "teacher": teacher,
               "design": {"variants": [v.name for v in ESNLI_VARIANTS + ESNLI_SOURCE_VARIANTS], "sizes": list(sizes),
                          "standard_max": ESNLI_STANDARD_MAX, "source_size": ESNLI_SOURCE_SIZE, "seeds": list(seeds),
                          "source_seeds": [s for s in seeds if s in ESNLI_SOURCE_SEEDS], "min_steps": ESNLI_MIN_STEPS,
                          "split_seed": ESNLI_SPLIT_SEED,
                          "split_rule": f"the {pool + len(data['validation']) + len(test_ids):,} e-SNLI items with "
                                        "PaLM rationales (the authors' test split), dealt by premise (distinct "
                                        f"premises shuffled with seed {ESNLI_SPLIT_SEED}): {len(test_ids):,} test, "
                                        f"{len(data['validation']):,} validation, {pool:,} training pool; no premise "
                                        "on two sides"},
               "grid": esnli_progress(cells, pool, seeds, sizes),
               "curves": size_curves(results), "data_efficiency": data_efficiency(results, ESNLI_STANDARD_MAX)}
    write_report(run_dir, ESNLI_SECTION, section)
    (run_dir / "figures").mkdir(exist_ok=True)
    plot_size_curves(section, run_dir / "figures" / "esnli_sizes.png",
                     title=f"e-SNLI: accuracy against training size ({section['grid']['finished']} of "
                           f"{section['grid']['expected']} cells)")
    log(f"e-SNLI report: {section['grid']['finished']} of {section['grid']['expected']} cells")
    return section


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


def publish_study(run_dir: str | Path, dest: str | Path, skip_dirs: tuple[str, ...] = ()) -> int:
    """Copy a study's run folder to ``dest`` (e.g. ``data/results/<name>``) without model weights
    and without the problem texts (the authors' data): ``report.json``, ``config.json``, figures,
    and every finished cell's ``cell.json`` and predictions (``input`` dropped). Top-level folders
    named in ``skip_dirs`` are left out too (a demo run's ``student``, ``export``, ...). Returns
    the cells copied."""
    import shutil

    from utils.config import atomic_write_text

    run_dir, dest = Path(run_dir), Path(dest)
    copied = 0
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_dir() or any(part in ("model", "checkpoints") for part in rel.parts) or rel.parts[0] in skip_dirs:
            continue
        target = dest / rel
        if path.suffix == ".jsonl" and path.name.startswith(("predictions_", "teacher_")):
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            atomic_write_text(target, "".join(json.dumps({k: v for k, v in r.items() if k != "input"}) + "\n"
                                              for r in rows))
        elif path.suffix in (".json", ".png", ".md"):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += path.name == "cell.json"
    return copied
