"""e-SNLI at matched optimizer steps, every cell to its plateau, over 5 seeds.

The epoch-capped design (``utils.studies.sizes``) gave a ``dss`` cell twice the optimizer steps of
``standard`` at the same size (a ``dss`` example is two rows) and stopped most cells while their
validation accuracy was still rising. Here every variant at one training size takes the same
number of optimizer steps at the same batch size (``STEPS_BUDGET``), validation accuracy is scored
every ``STEPS_EVAL_EVERY`` steps, and each cell is scored on the test items from its best
validation checkpoint. Same premise-disjoint split and test items as the epoch-capped study
(``utils.studies.esnli_split``).

The grid (``STEPS_GRID``): ``standard``, ``dss`` and ``dss-all4`` at 250 items, ``standard`` and
``dss`` at 500, ``standard`` at 1,000, seed by seed (a study stopped after some hours leaves whole
one-seed grids). The questions it answers, each over seeds (``utils.report.steps``):
(a) at equal size and steps, does the rationale task help (``dss - standard``)? (b) do four
rationales per example help beyond one (``dss-all4 - dss``)? (c) is ``dss`` on fewer items
within a margin of ``standard`` on 1,000, or below it? Usage (resumable; finished cells skipped):
``python -m utils study --design steps --paper-data DIR --run-dir runs/esnli_steps [--seed N ...]``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from utils.studies.common import study_config
from utils.studies.esnli_split import esnli_datasets
from utils.sweep import Variant

STEPS_SECTION = "esnli_steps"  # the sweep folder and the report.json section
STEPS_SEEDS = (0, 1, 2, 3, 4)
# Optimizer steps per training size (batch 16 rows), the same for every variant at that size, and here
# the same at every size, so question (c) compares equal compute too. Sized from the epoch-capped
# study's validation curves (standard on 1,000 items levelled off near 190 steps, dss on 500 near
# 190-250, dss-all4 on 250 near 234-312; the other 250-item cells were still rising at their caps),
# with room above them; seed 0's curves check it: the plateau rule (``utils.report.steps.plateaued``)
# must hold in at least 80 % of cells.
STEPS_BUDGET = {250: 320, 500: 320, 1000: 320}
STEPS_EVAL_EVERY = 40  # validation accuracy (and a checkpoint) every this many optimizer steps: 8 points a cell
STEPS_VARIANTS = {
    "standard": Variant("standard", "standard", dataset="palm"),
    "dss": Variant("dss", "dss", {"alpha": 0.5}, "palm"),  # the paper's recipe: PaLM's rationale, alpha 0.5
    "dss-all4": Variant("dss-all4", "dss", {"alpha": 0.5}, "all4"),  # PaLM's + the three human ones, a row each
}
STEPS_GRID = {250: ("standard", "dss", "dss-all4"), 500: ("standard", "dss"), 1000: ("standard",)}
STEPS_BASELINE_SIZE = 1000  # the paper's claim: a rationale variant on fewer items against standard on this many
STEPS_MARGIN = 0.02  # the equivalence margin of question (c), in accuracy (2 points)
# The speed levers are on (a new recipe from its first cell): packed rows, a vocabulary cut to the
# study's tokens, denormals flushed, bf16 autocast where the CPU has avx512_bf16 (bf16=None).
STEPS_SETTINGS = {
    "tiny": dict(student_layers=None, learning_rate=1e-4, batch_size=16, alpha=0.5, max_source_length=128,
                 max_target_length=96, eval_batch_size=32, select_by="accuracy", early_stopping_patience=None,
                 save_steps=None, rationale_answer=False, pack_rows=True, prune_vocab=True, flush_denormal=True),
    "colab": dict(select_by="accuracy", early_stopping_patience=None),
    "paper": dict(select_by="accuracy", early_stopping_patience=None),
}


def steps_plan(seeds=STEPS_SEEDS) -> list[tuple[str, int, int]]:
    """The grid in the order it trains, ``(variant, size, seed)``: seed by seed, sizes smallest first
    (the questions (a) and (b) live at 250 items), each size's variants in ``STEPS_GRID`` order."""
    return [(name, size, seed) for seed in check_seeds(seeds) for size in sorted(STEPS_GRID)
            for name in STEPS_GRID[size]]


def check_seeds(seeds) -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct integers >= 0, or a clear error."""
    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be one or more integers >= 0, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}.")
    return seeds


def steps_config(profile: str = "tiny", size: int | None = None, **overrides):
    """The run config of the design (``size``: with that size's step budget and validation interval)."""
    config = study_config("esnli", profile, **{**STEPS_SETTINGS[profile], **overrides})
    if size is None:
        return config
    if size not in STEPS_BUDGET:
        raise ValueError(f"No step budget for {size} items; sizes: {sorted(STEPS_BUDGET)}.")
    return dataclasses.replace(config, max_steps=STEPS_BUDGET[size], eval_steps=STEPS_EVAL_EVERY)


def steps_study(paper_root: str | Path, run_dir: str | Path, profile: str = "tiny", seeds=STEPS_SEEDS,
                after_cell=None, log=print) -> list[dict]:
    """Train the grid ``steps_plan`` lists, seed by seed, into ``<run_dir>/esnli_steps``; finished
    cells are skipped, so calling it again resumes. After each cell it trains, the report section is
    rebuilt from every finished cell (``steps_report``), then ``after_cell(cell)`` runs (the CLI's
    ``--publish`` copies the run there), so a study stopped at any point has reported every cell it
    finished. Returns every finished cell."""
    from utils.config import save_config
    from utils.sweep import load_cells, run_sweep

    seeds = check_seeds(seeds)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(steps_config(profile), run_dir)
    datasets = esnli_datasets(paper_root)
    pool = len(datasets["palm"]["train"])
    log(f"e-SNLI at matched steps: pool {pool}, validation {len(datasets['palm']['validation'])}, "
        f"test {len(datasets['palm']['test'])}; optimizer steps per size {STEPS_BUDGET}")

    def report(cell: dict) -> None:
        steps_report(paper_root, run_dir, seeds, datasets=datasets, log=log)
        if after_cell is not None:
            after_cell(cell)

    for seed in seeds:
        for size in sorted(STEPS_GRID):
            variants = [STEPS_VARIANTS[name] for name in STEPS_GRID[size]]
            run_sweep(steps_config(profile, size), [size / pool], seeds=(seed,), dataset=datasets, run_dir=run_dir,
                      variants=variants, name=STEPS_SECTION, splits=("test",), on_cell=report, log=log)
    return load_cells(run_dir / STEPS_SECTION)


def steps_pilot(paper_root: str | Path, run_dir: str | Path, variant: str, size: int, steps: int, seed: int = 0,
                profile: str = "tiny", log=print) -> dict:
    """One cell of the design with its own step cap (validation every ``STEPS_EVAL_EVERY`` steps, the
    learning rate decaying over ``steps``), into ``<run_dir>/esnli_steps_pilot_<steps>``: the measured
    validation curve a size's step budget is chosen from (one seed, a generous cap). Its cells are
    never part of the grid's report. Returns the cell with ``plateau`` (``utils.report.steps.plateaued``
    at this cap); resumable like the grid (a finished cell is read back, not trained again)."""
    from utils.report.steps import plateaued
    from utils.sweep import run_sweep

    if variant not in STEPS_VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; the design's: {', '.join(STEPS_VARIANTS)}.")
    if size not in STEPS_BUDGET:
        raise ValueError(f"No training size {size} in the design; sizes: {sorted(STEPS_BUDGET)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 4 * STEPS_EVAL_EVERY or steps % STEPS_EVAL_EVERY:
        raise ValueError(f"steps must be a multiple of {STEPS_EVAL_EVERY} of at least {4 * STEPS_EVAL_EVERY} "
                         f"(a validation point in every quarter), got {steps!r}.")
    check_seeds((seed,))
    datasets = esnli_datasets(paper_root)
    pool = len(datasets["palm"]["train"])
    config = dataclasses.replace(steps_config(profile, size), max_steps=steps)
    log(f"e-SNLI pilot: {variant} on {size} items, seed {seed}, {steps} optimizer steps (the design: "
        f"{STEPS_BUDGET[size]}), validation every {STEPS_EVAL_EVERY}")
    cells = run_sweep(config, [size / pool], seeds=(seed,), dataset=datasets, run_dir=Path(run_dir),
                      variants=[STEPS_VARIANTS[variant]], name=f"esnli_steps_pilot_{steps}", splits=("test",), log=log)
    cell = next(c for c in cells if c["variant"] == variant and c["seed"] == seed)
    return {**cell, "plateau": plateaued(cell.get("validation_curve") or [], steps)}


def steps_progress(cells: list[dict], pool: int, seeds=STEPS_SEEDS) -> dict:
    """How much of the grid finished: ``expected`` and ``finished`` cells, and per seed ``[finished, expected]``."""
    from utils.report.sizes import cell_size

    done = {(c["variant"], cell_size(c, pool), c["seed"]) for c in cells}
    all_seeds = sorted(set(check_seeds(seeds)) | {seed for _, _, seed in done})
    plan = steps_plan(all_seeds)
    return {"expected": len(steps_plan(seeds)), "finished": sum(1 for key in steps_plan(seeds) if key in done),
            "seeds": {str(s): [sum(1 for k in plan if k[2] == s and k in done), sum(1 for k in plan if k[2] == s)]
                      for s in all_seeds}}


def steps_report(paper_root: str | Path, run_dir: str | Path, seeds=STEPS_SEEDS, datasets=None, log=print) -> dict:
    """Rebuild the ``esnli_steps`` section of ``report.json`` from the finished cells, training nothing:
    accuracy per variant and size (``size_curves``), the plateau of every cell, the three questions
    over seeds (``utils.report.steps.steps_questions``), the PaLM teacher on the same test items, the
    premise hashes, and two figures (accuracy against size with each seed's point; validation
    accuracy against steps at 250 items). Raises ``ValueError`` if compute was not matched."""
    from utils.config import machine_info
    from utils.report import write_report
    from utils.report.sizes import PREMISE_FILE, size_curves, size_results
    from utils.report.steps import STEPS_COMMAND, plateau_summary, steps_questions, unmatched_steps
    from utils.studies.esnli_split import ESNLI_SPLIT_SEED, finished_cells_on_split
    from utils.sweep import sweep_report

    run_dir = Path(run_dir)
    sweep_dir = run_dir / STEPS_SECTION
    cells, data, teacher = finished_cells_on_split(paper_root, sweep_dir, datasets, STEPS_COMMAND)
    pool, test_ids = len(data["train"]), set(data["test"]["id"])
    unmatched = unmatched_steps(cells, pool)
    if unmatched:
        raise ValueError("Compute is not matched: " + "; ".join(unmatched))
    results = size_results(cells, sweep_dir, "esnli", pool)
    batch = steps_config().batch_size
    section = {**sweep_report(cells), "comparisons": [],  # the questions replace the item-only comparisons
               "pool": pool, "validation_items": len(data["validation"]), "test_items": len(test_ids),
               "premises": PREMISE_FILE, "teacher": teacher,
               "design": {"grid": {str(n): list(v) for n, v in STEPS_GRID.items()}, "steps": STEPS_BUDGET[250],
                          "steps_by_size": {str(n): s for n, s in STEPS_BUDGET.items()}, "eval_every": STEPS_EVAL_EVERY,
                          "batch_size": batch, "seeds": list(check_seeds(seeds)), "split_seed": ESNLI_SPLIT_SEED,
                          "machines": sorted({(c.get("machine") or {}).get("processor") or "?" for c in cells})},
               "grid": steps_progress(cells, pool, seeds), "curves": size_curves(results),
               "plateau": plateau_summary(cells, pool),
               "questions": steps_questions(results, STEPS_BASELINE_SIZE, STEPS_MARGIN),
               "reported_on": machine_info().get("processor")}
    write_report(run_dir, STEPS_SECTION, section)
    (run_dir / "figures").mkdir(exist_ok=True)
    plot_steps_sizes(section, results, run_dir / "figures" / "esnli_steps_sizes.png")
    plot_validation_curves(cells, pool, 250, run_dir / "figures" / "esnli_steps_validation.png")
    log(f"e-SNLI at matched steps: {section['grid']['finished']} of {section['grid']['expected']} cells reported")
    return section


def plot_steps_sizes(section: dict, results: dict, out_path: str | Path):
    """Test accuracy against training size at matched steps: each seed's cell a small point, each
    variant's mean over seeds a line, the PaLM teacher a dashed line. Saved as a PNG."""
    from utils.evaluation import load_pyplot

    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    curves = section["curves"]
    for index, name in enumerate(v for v in STEPS_VARIANTS if any(r["variant"] == v for r in curves)):
        line = sorted((r for r in curves if r["variant"] == name), key=lambda r: r["size"])
        nudge = 1 + 0.03 * (index - 1)  # side by side, so the seeds' points do not hide each other
        for (v, size, _seed), marks in sorted(results.items()):
            if v == name:
                ax.plot(size * nudge, 100 * sum(marks.values()) / len(marks), ".", color=f"C{index}", alpha=0.5)
        seeds = max(r["seeds"] for r in line)
        ax.plot([r["size"] * nudge for r in line], [100 * r["mean"] for r in line], marker="o", color=f"C{index}",
                label=f"{name} (mean of {seeds} seed{'s' * (seeds > 1)}; dots: each seed)")
    teacher = section.get("teacher")
    if teacher:
        ax.axhline(100 * teacher["accuracy"], color="k", ls="--", lw=1, label=f"PaLM teacher (n={teacher['n']})")
    sizes = sorted({r["size"] for r in curves})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training examples (log scale); every cell 320 optimizer steps of 16 rows")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"e-SNLI at matched steps ({section['grid']['finished']} of {section['grid']['expected']} cells)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    return fig


def plot_validation_curves(cells: list[dict], pool: int, size: int, out_path: str | Path):
    """Validation accuracy against optimizer steps for the variants at one training size, a thin line
    per seed: what "equal compute" and "trained to its plateau" look like. Saved as a PNG."""
    from utils.evaluation import load_pyplot
    from utils.report.sizes import cell_size

    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for index, name in enumerate(STEPS_VARIANTS):
        mine = [c for c in cells if c["variant"] == name and cell_size(c, pool) == size and c.get("validation_curve")]
        for n, cell in enumerate(sorted(mine, key=lambda c: c["seed"])):
            steps, accs = zip(*cell["validation_curve"])
            ax.plot(steps, [100 * a for a in accs], color=f"C{index}", lw=1, alpha=0.8,
                    label=f"{name} ({len(mine)} seed{'s' * (len(mine) > 1)})" if n == 0 else None)
    ax.set_xlabel("optimizer steps (16 rows each)")
    ax.set_ylabel(f"validation accuracy (%), {size} training examples")
    ax.set_title(f"e-SNLI, {size} training examples: validation accuracy against steps")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    return fig
