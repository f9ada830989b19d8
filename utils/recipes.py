"""Recipes on the paper's own data: SVAMP with the authors' published PaLM 540B rationales.

``svamp_study`` runs, through ``utils.sweep.run_sweep`` (resumable, every finished cell written
at once), the study of issue "make step-by-step pay" in three stages:

1. ``recipe`` (the hour-long CPU recipe): standard fine-tuning against distilling step by step
   (alpha 0.5, teacher-correct rationales) on all the training data, one seed;
2. ``ablation``: rationales all vs teacher-correct, alpha 0.2 / 0.5 / 0.8, each student scored
   with label-only inference (the paper) and rationale-then-answer inference;
3. ``final``: the variant with the best *validation* accuracy against standard fine-tuning, over
   3 seeds and 25 / 50 / 100 % of the training data, with paired tests on the test items
   (``utils.sweep.compare_to_baseline``).

Every cell uses the same student (a 6-layer cut of the bundled SmolLM2-135M-Instruct), the same
validation split (10 % carved from train, seed 0) for early stopping and selection, and the same
200 test items. Usage: ``python -m utils svamp --paper-data DIR --run-dir runs/svamp``; DIR holds
``svamp/`` from the authors' ``datasets.zip`` (``utils.data.download_paper_data`` fetches it).
"""

from __future__ import annotations

from pathlib import Path

from utils.sweep import Variant

STAGES = ("recipe", "ablation", "final", "self_consistency")

# The paper's SVAMP numbers (Hsieh et al., 2023) are quoted in the README beside ours, from the paper.
SVAMP_SETTINGS = dict(
    task="svamp", n_train=None, n_test=None, max_ops=None, teacher_cache_seed=None,
    student_layers=6, epochs=2.0, learning_rate=3e-4, batch_size=16, alpha=0.5,
    max_source_length=128, max_target_length=128, eval_batch_size=32,
)
# Checkpoint and validation every half epoch; the lowest validation loss wins (early stopping).
SVAMP_EXTRA = {"save_steps": 0.5, "rationale_answer": True}

BOTH = ("label", "rationale")
ABLATION = [
    Variant("standard", "standard", dataset="correct"),
    Variant("dss", "dss", {"alpha": 0.5}, "correct", BOTH),
    Variant("dss-all", "dss", {"alpha": 0.5}, "all", BOTH),
    Variant("dss-a0.2", "dss", {"alpha": 0.2}, "correct", BOTH),
    Variant("dss-a0.8", "dss", {"alpha": 0.8}, "correct", BOTH),
]


def svamp_config(**overrides):
    from utils.config import load_config

    extra = {**SVAMP_EXTRA, **overrides.pop("extra", {})}
    return load_config("tiny", **{**SVAMP_SETTINGS, **overrides}, extra=extra)


def svamp_datasets(paper_root: str | Path, validation_fraction: float = 0.1) -> dict:
    """The SVAMP ``DatasetDict`` per rationale policy (``all``, ``correct``), each with the same
    ``validation`` split carved from train and the 200 test items."""
    from utils.data import build_rationale_dataset, load_paper_rationales
    from utils.sweep import split_validation
    from utils.tasks import read_paper_split

    records = load_paper_rationales(paper_root, "svamp", "train")
    test = read_paper_split(paper_root, "svamp", "test")
    return {policy: split_validation(build_rationale_dataset(records, "svamp", policy, test, label_field="label"),
                                     validation_fraction, seed=0)
            for policy in ("all", "correct")}


def best_variant(cells: list[dict], candidates: list[str]) -> tuple[str, str]:
    """The (variant, inference) with the highest mean validation accuracy; ties go to the first."""
    best, best_acc = None, -1.0
    for name in candidates:
        for inference in BOTH:
            accs = [c["results"]["validation"][inference]["accuracy"] for c in cells
                    if c["variant"] == name and c["fraction"] == 1.0 and inference in c["results"].get("validation", {})]
            if accs and sum(accs) / len(accs) > best_acc:
                best, best_acc = (name, inference), sum(accs) / len(accs)
    if best is None:
        raise RuntimeError("No finished ablation cell with validation results: run the 'ablation' stage first.")
    return best


def svamp_study(paper_root: str | Path, run_dir: str | Path, stages=STAGES, seeds=(0, 1, 2),
                fractions=(0.25, 0.5, 1.0), name: str = "svamp_study", log=print) -> list[dict]:
    """Run the stages in order (finished cells are skipped); returns every finished cell."""
    from utils.config import save_config
    from utils.evaluation import plot_fraction_sweep, write_report
    from utils.sweep import load_cells, run_sweep, sweep_report

    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"Unknown stage(s) {unknown}. Stages: {', '.join(STAGES)}.")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = svamp_config()
    save_config(config, run_dir)
    datasets = svamp_datasets(paper_root)
    splits = ("validation", "test")
    by_name = {v.name: v for v in ABLATION}

    def sweep(variants, fractions_, seeds_):
        return run_sweep(config, fractions_, seeds=seeds_, dataset=datasets, run_dir=run_dir, variants=variants,
                         name=name, splits=splits, log=log)

    if "recipe" in stages:
        sweep([by_name["standard"], by_name["dss"]], (1.0,), seeds[:1])
    if "ablation" in stages:
        sweep(ABLATION, (1.0,), seeds[:1])
    chosen = None
    if "final" in stages or "self_consistency" in stages:
        chosen = best_variant(load_cells(run_dir / name), [v.name for v in ABLATION if v.mode == "dss"])
        log(f"best variant on validation: {chosen[0]} with {chosen[1]} inference")
    if "final" in stages:
        for fraction in sorted(fractions, reverse=True):  # all seeds at 100 % first
            sweep([by_name["standard"], by_name[chosen[0]]], (fraction,), seeds)
    if "self_consistency" in stages:
        variant = by_name[chosen[0]]
        sc = Variant(f"{variant.name}-sc", variant.mode, variant.overrides, variant.dataset, ("self_consistency",))
        log(f"{sc.name}: scoring with self-consistency means training it again (cells keep no weights)")
        sweep([sc], (1.0,), seeds)
    cells = load_cells(run_dir / name)
    teacher = svamp_teacher(paper_root, run_dir / name)
    report = {**sweep_report(cells), "chosen": chosen, "teacher": teacher}
    write_report(run_dir, name, report)
    if cells:
        (run_dir / "figures").mkdir(exist_ok=True)
        plot_fraction_sweep([r for r in report["summary"] if r["variant"] in ("standard", chosen[0] if chosen else "dss")],
                            teacher, run_dir / "figures" / "svamp_fractions.png", inference=None,
                            title="SVAMP: 6-layer student, PaLM 540B rationales")
    return cells


def svamp_teacher(paper_root: str | Path, out_dir: str | Path) -> dict:
    """The PaLM teacher on the 200 test items, from the authors' released outputs (parsed the
    course's way), with its predictions saved beside the cells."""
    from utils.data import load_paper_rationales
    from utils.evaluation import evaluate_teacher_records, save_predictions

    scored = evaluate_teacher_records(load_paper_rationales(paper_root, "svamp", "test"))
    save_predictions(scored["predictions"], Path(out_dir) / "teacher_test.jsonl")
    return {"model": "PaLM 540B, few-shot CoT (the authors' released outputs)", "accuracy": scored["accuracy"],
            "ci95": scored["ci95"], "n": scored["n"], "predictions": "teacher_test.jsonl"}
