"""Finished sweep cells written by hand (no model): ``cell.json`` and its predictions, as ``run_sweep`` leaves them."""

from __future__ import annotations

import json
import random
from pathlib import Path


def write_cell(sweep_dir: Path, variant: str, fraction: float, seed: int, correct: dict[str, bool],
               shuffle: int | None = None, mode: str | None = None) -> Path:
    """A finished cell of ``variant`` scored on the test items ``correct`` (id -> right or wrong);
    ``shuffle`` writes the prediction rows in a random order (a seed), as another run might."""
    from utils.sweep import cell_name

    cell_dir = sweep_dir / "cells" / variant / cell_name(fraction, seed)
    cell_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "input": f"q {i}", "gold": "( 1 + 1 )", "prediction": "2" if ok else "3", "correct": ok}
            for i, ok in correct.items()]
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)
    (cell_dir / "predictions_test_label.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    accuracy = sum(correct.values()) / len(correct)
    cell = {"variant": variant, "mode": mode or ("standard" if variant == "standard" else "dss"), "fraction": fraction,
            "seed": seed, "dataset": "default", "n_train": 10, "n_rationales": 0, "parameters": 1, "model": None,
            "results": {"test": {"label": {"accuracy": accuracy, "ci95": [accuracy, accuracy], "n": len(correct),
                                           "predictions": "predictions_test_label.jsonl"}}}}
    (cell_dir / "cell.json").write_text(json.dumps(cell))
    return cell_dir


def outcomes(n: int, rate: float, seed: int) -> dict[str, bool]:
    """``n`` test items (ids ``t0``...) of which about ``rate`` are right, drawn with ``seed``."""
    rng = random.Random(seed)
    return {f"t{i}": rng.random() < rate for i in range(n)}
