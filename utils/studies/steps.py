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
                log=print) -> list[dict]:
    """Train the grid ``steps_plan`` lists, seed by seed, into ``<run_dir>/esnli_steps``; finished
    cells are skipped, so calling it again resumes. Returns every finished cell; the report section
    is rebuilt from them by ``steps_report`` (``--stage report``), which trains nothing."""
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
    for seed in seeds:
        for size in sorted(STEPS_GRID):
            variants = [STEPS_VARIANTS[name] for name in STEPS_GRID[size]]
            run_sweep(steps_config(profile, size), [size / pool], seeds=(seed,), dataset=datasets, run_dir=run_dir,
                      variants=variants, name=STEPS_SECTION, splits=("test",), log=log)
    return load_cells(run_dir / STEPS_SECTION)
