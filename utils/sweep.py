"""Sweeps: train and evaluate a grid of students, variant x data fraction x seed, resumably.

Every cell lives in ``<run_dir>/<name>/cells/<variant>/f<fraction>-s<seed>/``. Its per-example
predictions are written first, ``cell.json`` last (to a temporary file, then renamed), so a cell
with a ``cell.json`` is finished and a rerun skips it. A cell killed during training continues
from its last checkpoint (``train_student(..., resume=True)``); one killed later is redone.

A *variant* is a training mode plus config overrides (``alpha``, ``epochs``, the student options...),
the dataset it trains on (rationale policies give different datasets) and the inference methods
its students are scored with (``utils.evaluation.INFERENCE``). ``modes=`` alone gives one
variant per mode, named after it, scored on labels: the paper's setting.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Variant:
    """One line of a sweep: how its students are trained and scored."""

    name: str
    mode: str  # standard | distill | dss
    overrides: dict = field(default_factory=dict)  # RunConfig fields (student options included)
    dataset: str = "default"  # key into the datasets run_sweep was given
    inference: tuple[str, ...] = ("label",)  # label | rationale | self_consistency

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def mode_variants(modes) -> list[Variant]:
    """One variant per training mode, with the profile's settings: the paper's comparison."""
    return [Variant(mode, mode) for mode in modes]


def cell_name(fraction: float, seed: int) -> str:
    return f"f{fraction:g}-s{seed}"


def cell_config(config, variant: Variant, seed: int):
    """The run config of one cell: the sweep's config, the variant's overrides, the cell's seed."""
    from utils.config import STUDENT_OPTIONS, validate_config

    overrides = dict(variant.overrides)
    extra = {**config.extra, **overrides.pop("extra", {})}
    # Student options given the old way, in "extra", go to their typed fields (validated below).
    overrides.update({k: extra.pop(k) for k in STUDENT_OPTIONS if k in extra and k not in overrides})
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Variant {variant.name!r}: unknown config field(s) {unknown}. Valid: {', '.join(sorted(known))}.")
    cell = dataclasses.replace(config, seed=seed, extra=extra, **overrides)
    validate_config(cell)
    return cell


def split_validation(dataset, fraction: float = 0.1, seed: int = 0):
    """Carve a ``validation`` split out of ``train`` (never out of ``test``), the same for every
    cell of a sweep: early stopping and variant selection read it, the test split stays unseen."""
    from datasets import DatasetDict

    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction}.")
    parts = dataset["train"].train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return DatasetDict({**{k: v for k, v in dataset.items() if k != "train"}, "train": parts["train"],
                        "validation": parts["test"]})


def _datasets(dataset) -> dict:
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        return {"default": dataset}
    if isinstance(dataset, dict) and dataset and all(isinstance(v, DatasetDict) for v in dataset.values()):
        return dataset
    raise TypeError("dataset must be a DatasetDict or a dict of them (one per variant.dataset key).")


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def load_cells(sweep_dir: str | Path) -> list[dict]:
    """Every finished cell of a sweep folder (``<run_dir>/<name>``), in a stable order."""
    cells = []
    for path in sorted(Path(sweep_dir).glob("cells/*/*/cell.json")):
        cell = json.loads(path.read_text())
        cell["dir"] = str(path.parent)
        cells.append(cell)
    return cells


def run_sweep(config, fractions=DEFAULT_FRACTIONS, modes=("standard", "distill", "dss"), seeds=None, *,
              dataset=None, run_dir=None, variants: list[Variant] | None = None, name: str = "sweep",
              splits=("test",), trained: dict | None = None, keep_models: bool = False,
              on_cell=None, log=print) -> list[dict]:
    """Train and evaluate every (variant, fraction, seed) cell; returns all finished cells.

    ``dataset``: a ``DatasetDict`` with ``train`` and ``test`` (and, for early stopping and
    selection, ``validation``: see ``split_validation``), or a dict of them keyed by
    ``Variant.dataset``; default: the dataset notebook 02 saved in ``run_dir``.
    ``variants`` replaces ``modes`` (``mode_variants(modes)`` by default). ``seeds`` default to
    ``(config.seed,)``. Each seed draws its own nested training subset (``utils.data.subsample``)
    and its own initial order; variants with the same seed and fraction see the same examples.
    ``splits`` are scored with every inference method of the variant (``"validation"`` is
    useful for choosing a variant without looking at the test split).
    ``trained`` maps ``(variant name, fraction, seed)`` to a student already trained that way
    (notebook 03's), which is evaluated instead of trained again.
    Finished cells are skipped, so a sweep stopped at any point is resumed by calling it again.
    ``on_cell(cell)`` runs after each cell this call finishes (not after skipped ones), e.g. to
    rebuild and publish a report while a long study goes on.
    """
    from utils.config import machine_info, pick_device, resolve_run_dir
    from utils.data import load_dataset_from_run, subsample
    from utils.evaluation import evaluate_student, save_predictions
    from utils.models import count_parameters, load_model, load_tokenizer
    from utils.student import train_student

    run_dir = resolve_run_dir(run_dir)
    datasets = _datasets(dataset if dataset is not None else load_dataset_from_run(run_dir))
    variants = list(variants) if variants is not None else mode_variants(modes)
    seeds = tuple(seeds) if seeds is not None else (config.seed,)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"Variant names must be unique: {names}.")
    for variant in variants:
        if variant.dataset not in datasets:
            raise ValueError(f"Variant {variant.name!r} wants dataset {variant.dataset!r}; given: {list(datasets)}.")
        for split in splits:
            if split not in datasets[variant.dataset]:
                raise ValueError(f"Split {split!r} is not in dataset {variant.dataset!r} (has {list(datasets[variant.dataset])}).")
        cell_config(config, variant, seeds[0])  # a bad override fails now, not after hours of training
    sweep_dir = Path(run_dir) / name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    meta_path = sweep_dir / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"variants": {}, "calls": []}
    meta["variants"].update({v.name: v.to_dict() for v in variants})  # calls with other variants add to it
    meta["config"] = config.to_dict()
    meta["calls"].append({"fractions": list(fractions), "seeds": list(seeds), "variants": names,
                          "splits": list(splits), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    _write_json(meta_path, meta)
    total = len(seeds) * len(fractions) * len(variants)
    done = 0
    for seed in seeds:
        for fraction in sorted(fractions, reverse=True):
            for variant in variants:
                done += 1
                cell_dir = sweep_dir / "cells" / variant.name / cell_name(fraction, seed)
                tag = f"[{done}/{total}] {variant.name} fraction={fraction:g} seed={seed}"
                if (cell_dir / "cell.json").exists():
                    if not keep_models and not json.loads((cell_dir / "cell.json").read_text()).get("model"):
                        shutil.rmtree(cell_dir / "model", ignore_errors=True)  # a kill right after cell.json left it
                    log(f"{tag}: finished before, skipped")
                    continue
                cell_dir.mkdir(parents=True, exist_ok=True)
                cfg = cell_config(config, variant, seed)
                data = subsample(datasets[variant.dataset], fraction, seed)
                start, cpu_start = time.perf_counter(), time.process_time()
                given = (trained or {}).get((variant.name, fraction, seed))
                model_dir = Path(given) if given else cell_dir / "model"
                train_info = {}
                if not given:
                    log(f"{tag}: training on {len(data['train'])} examples")
                    result = train_student(data, cfg, variant.mode, model_dir, resume=True)
                    evals = [h for h in result.log_history if "eval_loss" in h]
                    by_accuracy = cfg.select_by == "accuracy" and all("eval_accuracy" in h for h in evals)
                    pick = (lambda h: h["eval_accuracy"]) if by_accuracy else (lambda h: -h["eval_loss"])
                    best = max(evals, key=pick) if evals else None  # first of equals, as the Trainer keeps it
                    train_info = {"train_seconds": result.train_seconds, "target_tokens": result.target_tokens,
                                  "eval_losses": [(h.get("epoch"), h["eval_loss"]) for h in evals],
                                  "eval_accuracies": [(h.get("epoch"), h["eval_accuracy"]) for h in evals
                                                      if "eval_accuracy" in h],
                                  "selected_by": "accuracy" if by_accuracy else "loss",
                                  "epochs_trained": max((h.get("epoch") or 0 for h in result.log_history), default=None),
                                  "best_epoch": best.get("epoch") if best else None,
                                  # compute, counted: a dss example is two rows, so epochs do not compare
                                  "optimizer_steps": result.optimizer_steps,
                                  "label_rows": result.rows_seen.get("label", 0),
                                  "rationale_rows": result.rows_seen.get("rationale", 0),
                                  "validation_curve": [[h["step"], h["eval_accuracy"]] for h in evals
                                                       if "eval_accuracy" in h],
                                  "best_step": best.get("step") if best else None,
                                  # a cell resumed from a checkpoint: its seconds cover the resumed part only
                                  "resumed_from": result.resumed_from,
                                  "train_losses": [(h.get("epoch"), h["loss"]) for h in result.log_history if "loss" in h]}
                model = load_model(model_dir, cfg.student_family).to(pick_device(verbose=False))
                tokenizer = load_tokenizer(model_dir)
                results = {}
                for split in splits:
                    results[split] = {}
                    for inference in variant.inference:
                        scored = evaluate_student(model, tokenizer, data[split], cfg.student_family, cfg.task,
                                                  batch_size=cfg.eval_batch_size, max_new_tokens=48, inference=inference,
                                                  rationale_tokens=cfg.max_target_length + 32, seed=seed,
                                                  max_source_length=cfg.max_source_length)
                        file = f"predictions_{split}_{inference}.jsonl"
                        save_predictions(scored["predictions"], cell_dir / file)
                        results[split][inference] = {"accuracy": scored["accuracy"], "ci95": scored["ci95"],
                                                     "n": scored["n"], "cut_sources": scored["cut_sources"],
                                                     "predictions": file}
                cell = {"variant": variant.name, "mode": variant.mode, "fraction": fraction, "seed": seed,
                        "dataset": variant.dataset, "n_train": len(data["train"]),
                        # which items trained, validated and tested this cell, and on which machine
                        "ids": {split: list(data[split]["id"]) for split in data},
                        "machine": machine_info(),
                        "n_rationales": sum(1 for r in data["train"]["rationale"] if r),
                        "epochs_cap": None if cfg.max_steps else cfg.epochs,  # the most epochs it could train
                        "max_steps": cfg.max_steps,  # a schedule in optimizer steps (then epochs_cap is None)
                        "parameters": count_parameters(model), "model": str(model_dir) if given or keep_models else None,
                        "results": results, "seconds": time.perf_counter() - start,
                        # CPU time of this process, all threads: unlike wall seconds, not inflated by a
                        # paused process or (much) by other jobs sharing the cores
                        "cpu_seconds": time.process_time() - cpu_start, **train_info,
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
                del model
                _write_json(cell_dir / "cell.json", cell)
                if not given and not keep_models:
                    shutil.rmtree(model_dir, ignore_errors=True)
                shown = ", ".join(f"{s}/{i} {100 * r['accuracy']:.1f}%" for s, d in results.items() for i, r in d.items())
                log(f"{tag}: {shown} ({cell['seconds']:.0f} s)")
                if on_cell is not None:
                    on_cell(cell)
    return load_cells(sweep_dir)


# --- summaries and paired comparisons ------------------------------------------------------------


def _correct_by_id(cell: dict, split: str, inference: str) -> dict[str, bool]:
    """A cell's per-item results on a split, ``{id: correct}``, read from its predictions file."""
    from utils.evaluation import load_predictions
    from utils.stats import correct_by_id

    return correct_by_id(load_predictions(Path(cell["dir"]) / cell["results"][split][inference]["predictions"]))


def summarize_cells(cells: list[dict], split: str = "test") -> list[dict]:
    """Mean, spread (sample standard deviation), min and max over seeds, per variant, inference
    method and fraction."""
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        for inference in cell["results"].get(split, {}):
            groups.setdefault((cell["variant"], inference, cell["fraction"]), []).append(cell)
    rows = []
    for (variant, inference, fraction), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        accs = [m["results"][split][inference]["accuracy"] for m in sorted(members, key=lambda m: m["seed"])]
        rows.append({"variant": variant, "inference": inference, "fraction": fraction, "seeds": len(accs),
                     "seed_list": sorted(m["seed"] for m in members), "accuracies": accs,
                     "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "min": min(accs), "max": max(accs), "n": members[0]["results"][split][inference]["n"]})
    return rows


def compare_to_baseline(cells: list[dict], baseline: str = "standard", split: str = "test",
                        baseline_inference: str = "label", n_boot: int = 2000) -> list[dict]:
    """Each variant (and inference method) against ``baseline`` on the same test items, at each
    fraction, over the seeds both have, the seed as the unit of replication
    (``utils.report.core.compare_runs``): the mean difference over seeds with the hierarchical
    bootstrap's 95% interval and p-value (seeds, then items; with one seed, items only), each seed's
    difference (``runs``) and exact McNemar test (``mcnemar``), items paired by id (a cell scored on
    other items than its baseline is an error). Every p-value comes with its Holm-adjusted ``p_holm``
    over all the rows returned (``utils.stats.holm_comparisons``)."""
    from utils.report.core import compare_runs
    from utils.stats import holm_comparisons

    base = {(c["fraction"], c["seed"]): c for c in cells if c["variant"] == baseline and split in c["results"]}
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        if cell["variant"] == baseline:
            continue
        for inference in cell["results"].get(split, {}):
            groups.setdefault((cell["variant"], inference, cell["fraction"]), []).append(cell)
    rows = []
    for (variant, inference, fraction), members in sorted(groups.items()):
        pairs = [(m, base[(fraction, m["seed"])]) for m in sorted(members, key=lambda m: m["seed"])
                 if (fraction, m["seed"]) in base]
        if not pairs:
            continue
        try:
            row = compare_runs({m["seed"]: _correct_by_id(m, split, inference) for m, _ in pairs},
                               {m["seed"]: _correct_by_id(b, split, baseline_inference) for m, b in pairs},
                               n_boot=n_boot)
        except ValueError as exc:  # say which cells, not only which ids
            raise ValueError(f"{variant} ({inference}) against {baseline} at fraction {fraction:g}, seeds "
                             f"{[m['seed'] for m, _ in pairs]}: {exc}") from exc
        per_seed = [{"seed": r["run"], "a_only": r["a_only"], "b_only": r["b_only"], "p_value": r["p_mcnemar"]}
                    for r in row["runs"]]
        rows.append({"variant": variant, "inference": inference, "fraction": fraction, "baseline": baseline,
                     "seeds": [m["seed"] for m, _ in pairs], "difference": row["difference"],
                     "ci95": row["ci95"], "p_value": row["p_value"], "runs": row["runs"], "t": row["t"],
                     "item_only": row["item_only"], "mcnemar": per_seed})
    return holm_comparisons(rows)


def sweep_report(cells: list[dict], baseline: str = "standard", split: str = "test") -> dict:
    """The ``report.json`` section of a sweep: every cell (without predictions, which stay in
    their files), the summary over seeds and the paired comparisons (raw and Holm-adjusted p)."""
    slim = [{**{k: v for k, v in c.items() if k not in ("train_losses", "dir")},
             "dir": "/".join(Path(c["dir"]).parts[-3:])} for c in cells]  # cells/<variant>/<cell>
    has_baseline = any(c["variant"] == baseline for c in cells)
    return {"split": split, "baseline": baseline, "cells": slim, "summary": summarize_cells(cells, split),
            "comparisons": compare_to_baseline(cells, baseline, split) if has_baseline else []}
