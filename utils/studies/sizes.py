"""e-SNLI data efficiency, epoch-capped (the committed 3-seed study in ``data/results/esnli``):
standard, dss and ltr at 125, 250 and 500 items and standard at 1,000, each cell to its epoch
cap. Its schedules count epochs, so a ``dss`` cell took twice the optimizer steps of ``standard``
at one size; ``utils.studies.steps`` is the design that matches steps. Kept to rebuild and verify
the committed run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from utils.studies.common import study_config
from utils.studies.esnli_split import ESNLI_SPLIT_SEED, esnli_datasets, finished_cells_on_split
from utils.sweep import Variant

# --- e-SNLI data efficiency on a premise-disjoint split (issue "Prove it or refute it") ------------
# PaLM rationales exist for the 9,824 items of e-SNLI's test split only, so the study carves its
# own test set, validation set and training pool from those items, disjoint by premise. It trains
# seed by seed (esnli_plan), and esnli_report rebuilds its report section from the finished cells:
# the accuracy curves, the teacher on the same test items, the paper's statement (data_efficiency
# in utils.report, beside verify, which recomputes it) and a text-free file of premise hashes.

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



ESNLI_SEEDS = (0, 1, 2)
ESNLI_SECTION = "esnli_sizes"  # the sweep folder and the report.json section


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
    from utils.sweep import sweep_report

    seeds, sizes = _check_grid(seeds, sizes)
    run_dir = Path(run_dir)
    sweep_dir = run_dir / ESNLI_SECTION
    cells, data, teacher = finished_cells_on_split(paper_root, sweep_dir, datasets, SIZES_COMMAND)
    pool, test_ids = len(data["train"]), set(data["test"]["id"])
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

