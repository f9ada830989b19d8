"""The fractions design on the paper's own data (the authors' published PaLM 540B rationales).

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

from pathlib import Path

from utils.studies.common import STUDY_SETTINGS, paper_teacher, study_config
from utils.sweep import Variant

STAGES = ("recipe", "ablation", "final", "self_consistency", "report")  # report: no training, tables only

SVAMP_SETTINGS = STUDY_SETTINGS["tiny"]

BOTH = ("label", "rationale")
ABLATION = [
    Variant("standard", "standard", dataset="correct"),
    Variant("dss", "dss", {"alpha": 0.5}, "correct", BOTH),
    Variant("dss-all", "dss", {"alpha": 0.5}, "all", BOTH),
    Variant("dss-a0.2", "dss", {"alpha": 0.2}, "correct", BOTH),
    Variant("dss-a0.8", "dss", {"alpha": 0.8}, "correct", BOTH),
]



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

