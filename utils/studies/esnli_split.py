"""The e-SNLI split every e-SNLI design shares: the 9,824 items with PaLM rationales (the
authors' test split) dealt by premise into a test set, a validation set and a training pool,
one ``DatasetDict`` per rationale source, and text-free premise hashes that prove it disjoint."""

from __future__ import annotations

import json
from pathlib import Path

ESNLI_SPLIT_SEED = 0
ESNLI_TEST_ITEMS = 1000  # at least this many held-out test items (whole premises)
ESNLI_VALIDATION_ITEMS = 200  # early stopping and checkpoint choice; never tested on


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



def finished_cells_on_split(paper_root: str | Path, sweep_dir: str | Path, datasets: dict | None,
                            command: str) -> tuple[list[dict], object, dict]:
    """The finished cells of an e-SNLI sweep folder, checked to be tested on the study's own test
    items, with the premise hashes written beside them and the PaLM teacher scored on those items.
    Returns the cells, the ``palm`` source's ``DatasetDict`` and the teacher; raises
    ``FileNotFoundError`` (naming ``command``) when no cell has finished."""
    from utils.studies.common import paper_teacher
    from utils.sweep import load_cells

    sweep_dir = Path(sweep_dir)
    cells = load_cells(sweep_dir) if sweep_dir.is_dir() else []
    if not cells:
        raise FileNotFoundError(f"No finished e-SNLI cell in {sweep_dir}: run the study first ({command}).")
    data = (datasets or esnli_datasets(paper_root))["palm"]
    test_ids = set(data["test"]["id"])
    for cell in cells:
        if set(cell["ids"]["test"]) != test_ids:
            raise ValueError(f"{cell['dir']} was tested on other items than the study's split "
                             f"(split seed {ESNLI_SPLIT_SEED}): a run folder of another split?")
    write_premise_hashes(sweep_dir, data, cells)
    return cells, data, paper_teacher(paper_root, "esnli", sweep_dir, ids=data["test"]["id"])
