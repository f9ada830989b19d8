"""``report.json``: its schema, a check against it, and the Markdown tables ``python -m utils report`` prints.

A run folder's ``report.json`` holds one section per stage; each notebook (and each sweep) adds
its own with ``write_report``, which also stamps ``schema_version``, the package ``versions`` and
the ``machine``. ``REPORT_SCHEMA`` (JSON Schema) documents every section; the
values are plain JSON: accuracies are fractions in [0, 1], times in seconds unless the key
says ``_ms``, sizes in MB (2**20 bytes), parameters as counts.

Torch-free: reading, checking and printing a report never loads a model (nor ``utils.evaluation``).
"""

from __future__ import annotations

import json
from pathlib import Path

from utils.stats import p_in_sentence as _p_eq
from utils.stats import p_text as _p

SCHEMA_VERSION = 1

_ACC = {"type": "number", "minimum": 0, "maximum": 1}
_CI = {"type": "array", "items": _ACC, "minItems": 2, "maxItems": 2}
_P = {"type": "number", "minimum": 0, "maximum": 1}
_SCORE = {"type": "object", "required": ["accuracy", "ci95", "n"],
          "properties": {"accuracy": _ACC, "ci95": _CI, "n": {"type": "integer", "minimum": 0}}}
_COSTS = {
    "type": "object",
    "description": "What one model costs on this machine, measured in its own process (utils.costs).",
    "required": ["parameters", "latency_ms_p50", "latency_ms_p95", "throughput_batch1"],
    "properties": {
        "parameters": {"type": ["integer", "null"]},
        "size_mb": {"type": ["number", "null"], "description": "weight files on disk"},
        "latency_ms_p50": {"type": "number"}, "latency_ms_p95": {"type": "number"},
        "throughput_batch1": {"type": "number", "description": "examples per second, one at a time"},
        "throughput_batched": {"type": ["number", "null"], "description": "examples per second, batched"},
        "peak_memory_mb": {"type": ["number", "null"], "description": "peak process RSS (CPU) or CUDA allocation"},
        "engine": {"type": "string"}, "device": {"type": "string"}, "n": {"type": "integer"},
    },
}
_SWEEP = {
    "type": "object",
    "description": "A sweep (utils.sweep.sweep_report): every cell, the summary over seeds, paired comparisons.",
    "required": ["cells", "summary", "comparisons"],
    "properties": {
        "split": {"type": "string"},
        "baseline": {"type": "string"},
        "cells": {"type": "array", "items": {
            "type": "object",
            "required": ["variant", "mode", "fraction", "seed", "n_train", "results", "dir"],
            "properties": {
                "variant": {"type": "string"}, "mode": {"enum": ["standard", "distill", "dss", "ltr"]},
                "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "seed": {"type": "integer"}, "n_train": {"type": "integer"},
                "dir": {"type": "string", "description": "cells/<variant>/<cell>, relative to the sweep folder"},
                "results": {"type": "object", "description": "split -> inference -> score and predictions file",
                            "additionalProperties": {"type": "object", "additionalProperties": {
                                "allOf": [_SCORE, {"required": ["predictions"]}]}}},
            },
        }},
        "summary": {"type": "array", "items": {
            "type": "object", "required": ["variant", "inference", "fraction", "seeds", "mean", "std", "min", "max"],
            "properties": {"mean": _ACC, "std": {"type": "number", "minimum": 0}, "seeds": {"type": "integer"}}}},
        "comparisons": {"type": "array", "items": {
            "type": "object", "required": ["variant", "inference", "fraction", "difference", "ci95", "p_value", "mcnemar"],
            "properties": {
                "difference": {"type": "number"}, "p_value": _P,
                "p_holm": {**_P, "description": "p_value Holm-adjusted over every comparison of the sweep against "
                                                "its baseline (older reports lack it; the Markdown computes it)"},
                "mcnemar": {"type": "array", "items": {"type": "object", "properties": {
                    "p_value": _P, "p_holm": {**_P, "description": "Holm-adjusted over the sweep's McNemar tests"}}}},
            }}},
    },
}
REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "report.json of a distilling-step-by-step run folder",
    "type": "object",
    "required": ["schema_version"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "versions": {"type": "object", "description": "package -> version (utils.config.package_versions)"},
        "machine": {"type": "object", "description": "platform, processor, cores, bf16 support, GPU"},
        "config": {"type": "object", "description": "the RunConfig of the run (config.json)"},
        "teacher": {"type": "object", "description": "notebook 01: backend, model, sampling, yields on train and test"},
        "dataset": {"type": "object", "description": "notebook 02: split sizes, rationale policy and counts"},
        "student": {"type": "object", "description": "notebook 03: per mode, parameters, training time and tokens"},
        "evaluation": {
            "type": "object",
            "description": "notebook 04: the teacher and the students on the same test items",
            "required": ["task", "n_test", "teacher", "students"],
            "properties": {
                "teacher": _SCORE,
                "students": {"type": "object", "additionalProperties": _SCORE},
                "costs": {"type": "object", "properties": {"student": _COSTS, "teacher": _COSTS,
                                                          "ratios": {"type": "object"}}},
                "sweep": _SWEEP,
            },
        },
        "svamp_study": _SWEEP,
        "esnli_sizes": {"allOf": [_SWEEP, {
            "type": "object",
            "description": "A data-size study (utils.recipes.esnli_report): the sweep plus accuracy per variant and "
                           "training size, the teacher on the same test items, and the paper's statement "
                           "(data_efficiency); premises: the file of premise hashes beside the cells.",
            "required": ["pool", "curves", "data_efficiency", "teacher", "grid"],
            "properties": {
                "pool": {"type": "integer", "minimum": 1},
                "teacher": _SCORE,
                "curves": {"type": "array", "items": {
                    "type": "object", "required": ["variant", "size", "seeds", "mean", "std", "ci95", "n"],
                    "properties": {"mean": _ACC, "ci95": _CI, "size": {"type": "integer", "minimum": 1}}}},
                "data_efficiency": {"type": "object", "required": ["baseline", "baseline_size", "rows", "smallest"],
                                    "properties": {"rows": {"type": "array", "items": {
                                        "type": "object",
                                        "required": ["variant", "size", "seeds", "difference", "ci95", "p_value",
                                                     "p_holm", "below"],
                                        "properties": {"p_value": _P, "p_holm": _P}}}}},
            }}]},
        "deploy": {"type": "object", "description": "notebook 05: export, latency, service"},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}


def write_report(run_dir: str | Path, section: str, payload: dict) -> Path:
    """Merge ``payload`` into ``run_dir/report.json`` under ``section`` (other sections kept).

    Every write also records ``schema_version``; the first one the package ``versions`` and the
    ``machine``, and the run's ``config.json`` when there is one."""
    from utils.config import atomic_write_json, machine_info, package_versions

    path = Path(run_dir) / "report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report["schema_version"] = SCHEMA_VERSION
    report.setdefault("versions", package_versions())
    report.setdefault("machine", machine_info())
    if "config" not in report and (Path(run_dir) / "config.json").exists():
        report["config"] = json.loads((Path(run_dir) / "config.json").read_text())
    report[section] = payload
    return atomic_write_json(path, report)


def validate_report(report: dict) -> None:
    """Raise ``ValueError`` listing every place where ``report`` breaks ``REPORT_SCHEMA``."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(REPORT_SCHEMA).iter_errors(report), key=lambda e: list(e.path))
    if errors:
        lines = [f"- {'/'.join(str(p) for p in e.path) or '(top)'}: {e.message}" for e in errors[:20]]
        raise ValueError("report.json does not match its schema:\n" + "\n".join(lines))


def load_report(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"No report.json in {run_dir}: run the notebooks (make demo) or a sweep first.")
    return json.loads(path.read_text())


def sweep_sections(report: dict) -> dict[str, dict]:
    """Every sweep in a report: ``evaluation.sweep`` and top-level sections shaped like one."""
    found = {}
    if isinstance(report.get("evaluation", {}).get("sweep"), dict):
        found["sweep"] = report["evaluation"]["sweep"]
    for key, value in report.items():
        if isinstance(value, dict) and {"cells", "summary", "comparisons"} <= set(value):
            found[key] = value
    return found


def cv_sections(report: dict) -> dict[str, dict]:
    """The pooled sections of cross-validated studies (``utils.recipes.cv_summary``)."""
    return {k: v for k, v in report.items() if isinstance(v, dict) and "folds_finished" in v and "summary" in v}


def verify_cv(run_dir: Path, name: str, section: dict, task: str) -> list[str]:
    """Recompute a pooled section from the folds' prediction files: every variant predicts each
    item exactly once, from a cell that never trained or validated on it (and, once every fold
    finished, every item of the data has its prediction); pooled accuracies and McNemar counts equal
    what the report says (gold against prediction, through the task's metric)."""
    from utils.metrics import score

    problems, correct, universes = [], {}, set()
    prefix = name + "_fold"
    for row in section["summary"]:
        variant, seen = row["variant"], {}
        for fold in section["folds_finished"]:
            cell_path = run_dir / f"{prefix}{fold}" / "cells" / variant / "f1-s0" / "cell.json"
            cell = json.loads(cell_path.read_text())
            rows = _read_rows(cell_path.parent / cell["results"]["test"]["label"]["predictions"])
            trained = set(cell["ids"]["train"]) | set(cell["ids"].get("validation", []))
            universes.add(frozenset(trained | set(cell["ids"]["test"])))
            marks = score(task, [r["prediction"] for r in rows], [r["gold"] for r in rows])
            for r, ok in zip(rows, marks):
                if r["id"] in trained:
                    problems.append(f"{name} {variant} fold {fold}: {r['id']} was trained or validated on")
                if r["id"] in seen:
                    problems.append(f"{name} {variant}: {r['id']} predicted twice")
                seen[r["id"]] = ok
        correct[variant] = seen
        again = sum(seen.values()) / len(seen) if seen else None
        if not seen and row["n"] == 0:
            continue  # no fold finished by every variant yet: nothing to recompute
        if len(seen) != row["n"] or again is None or abs(again - row["accuracy"]) > 1e-9:
            problems.append(f"{name} {variant}: report says {row['accuracy']} (n={row['n']}), "
                            f"predictions give {again} (n={len(seen)})")
    if len(universes) > 1:
        problems.append(f"{name}: the cells' train, validation and test ids cover different items "
                        f"({sorted(len(u) for u in universes)}): folds of different data?")
    elif universes and sorted(section["folds_finished"]) == list(range(section["k"])):
        for variant, seen in correct.items():  # every fold finished: each item has its one prediction
            missing = len(next(iter(universes)) - set(seen))
            if missing:
                problems.append(f"{name} {variant}: {missing} items of the data have no prediction")
    for comp in section["comparisons"]:
        a, b = correct[comp["variant"]], correct[comp["baseline"]]
        a_only = sum(1 for i in a if a[i] and not b.get(i))
        b_only = sum(1 for i in b if b[i] and not a.get(i))
        if set(a) != set(b) or (a_only, b_only) != (comp["mcnemar"]["a_only"], comp["mcnemar"]["b_only"]):
            problems.append(f"{name} {comp['variant']} vs {comp['baseline']}: McNemar counts differ "
                            f"({a_only}, {b_only}) vs the report's")
    return problems


def verify_predictions(run_dir: str | Path, task: str | None = None) -> list[str]:
    """Recompute every sweep accuracy from its saved predictions (gold against prediction, through
    the task's metric); returns the mismatches (an empty list when all agree)."""
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    task = task or report.get("config", {}).get("task") or json.loads((run_dir / "config.json").read_text())["task"]
    problems = []
    for name, sweep in sweep_sections(report).items():
        folder = run_dir / name
        scored = [(cell["dir"], score) for cell in sweep["cells"] for by_inference in cell["results"].values()
                  for score in by_inference.values()]
        if isinstance(sweep.get("teacher"), dict) and sweep["teacher"].get("predictions"):
            scored.append((".", sweep["teacher"]))
        for where, score in scored:
            path = folder / where / score["predictions"]
            if not path.exists():
                problems.append(f"{path}: missing")
                continue
            rows = _read_rows(path)
            again = _accuracy(rows, task)
            if len(rows) != score["n"] or abs(again - score["accuracy"]) > 1e-9:
                problems.append(f"{path}: report says {score['accuracy']:.4f} (n={score['n']}), "
                                f"predictions give {again:.4f} (n={len(rows)})")
        if (folder / PREMISE_FILE).exists():  # a split disjoint by a grouping key (e-SNLI: the premise)
            problems += verify_disjoint(folder, name, sweep)
        if "data_efficiency" in sweep:
            problems += verify_sizes(folder, name, sweep, task)
    for name, section in cv_sections(report).items():
        problems += verify_cv(run_dir, name, section, task)
    return problems


def _accuracy(rows: list[dict], task: str) -> float:
    """The accuracy of saved predictions, from gold and prediction only (``correct`` is ignored),
    through the task's metric (``utils.metrics.score``)."""
    from utils.metrics import score

    if not rows:
        raise ValueError("No predictions to score.")
    return sum(score(task, [r["prediction"] for r in rows], [r["gold"] for r in rows])) / len(rows)


# --- data-size studies: accuracy by training size, the paper's statement, a disjoint split ----------

PREMISE_FILE = "premise_hashes.json"  # beside a data-size study's cells: item id -> short hash of its premise
SIZES_COMMAND = ("python -m utils study --design sizes --task esnli --paper-data <folder> --run-dir runs/esnli "
                 "--publish data/results/esnli")


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def cell_size(cell: dict, pool: int) -> int:
    """A cell's nominal training size: its share of the training pool times the pool (the study asks
    for ``size / pool`` of the pool; the stratified draw may keep an example more or fewer)."""
    return round(cell["fraction"] * pool)


def cell_dir(sweep_dir: str | Path, cell: dict) -> Path:
    """A cell's folder: the report's ``dir`` (``cells/<variant>/<cell>``) is relative to the sweep
    folder; ``utils.sweep.load_cells`` gives the path as found (absolute, or relative to the working
    directory when the sweep folder was given that way), which is used as it is."""
    path = Path(cell["dir"])
    return path if path.is_absolute() or path.parts[:1] != ("cells",) else Path(sweep_dir) / path


def size_results(cells: list[dict], sweep_dir: str | Path, task: str, pool: int, split: str = "test",
                 inference: str = "label") -> dict[tuple, dict[str, bool]]:
    """Every cell's per-item results, ``(variant, size, seed) -> {id: correct}``, scored again from
    the saved gold and prediction through the task's metric (the saved ``correct`` flag is not
    trusted). A cell's folder is found by ``cell_dir``."""
    from utils.metrics import score

    out: dict[tuple, dict[str, bool]] = {}
    for cell in cells:
        if inference not in cell["results"].get(split, {}):
            continue
        key = (cell["variant"], cell_size(cell, pool), cell["seed"])
        if key in out:
            raise ValueError(f"Two cells of {cell['variant']} at size {key[1]} with seed {key[2]}: one per size and seed.")
        path = cell_dir(sweep_dir, cell) / cell["results"][split][inference]["predictions"]
        rows = _read_rows(path)
        marks = score(task, [r["prediction"] for r in rows], [r["gold"] for r in rows])
        out[key] = {str(r["id"]): ok for r, ok in zip(rows, marks)}
        if len(out[key]) != len(rows):
            raise ValueError(f"{path}: an item id appears twice.")
    return out


def _by_seed(results: dict[tuple, dict[str, bool]], skip: str | None = None) -> dict[tuple, dict[int, dict]]:
    groups: dict[tuple, dict[int, dict]] = {}
    for (variant, size, seed), marks in results.items():
        if variant != skip:
            groups.setdefault((variant, size), {})[seed] = marks
    return groups


def size_curves(results: dict[tuple, dict[str, bool]], n_boot: int = 1000) -> list[dict]:
    """Test accuracy per variant and training size over its finished seeds (``size_results``):
    ``mean`` and sample ``std`` of the seeds' accuracies, and ``ci95``, pooled over the seeds: a
    percentile bootstrap over the test items of each item's share of seeds that got it right (so
    the interval holds item noise; seed noise enters through the mean, and ``std`` shows it).
    Every seed of a row must be scored on the same items."""
    from statistics import fmean, stdev

    from utils.stats import bootstrap_ci, check_same_ids

    rows = []
    for (variant, size), by_seed in sorted(_by_seed(results).items()):
        seeds = sorted(by_seed)
        first = by_seed[seeds[0]]
        if not first:
            raise ValueError(f"{variant} at size {size}, seed {seeds[0]}: no test predictions.")
        for seed in seeds[1:]:
            check_same_ids(first, by_seed[seed], f"every seed of {variant} at size {size}")
        ids = sorted(first)
        share = [sum(by_seed[s][i] for s in seeds) / len(seeds) for i in ids]
        accuracies = [sum(by_seed[s].values()) / len(ids) for s in seeds]
        rows.append({"variant": variant, "size": size, "seeds": len(seeds), "seed_list": seeds,
                     "accuracies": accuracies, "mean": fmean(accuracies),
                     "std": stdev(accuracies) if len(seeds) > 1 else 0.0,
                     "ci95": list(bootstrap_ci(share, n_boot=n_boot)), "n": len(ids), "n_boot": n_boot})
    return rows


def data_efficiency(results: dict[tuple, dict[str, bool]], baseline_size: int, baseline: str = "standard",
                    alpha: float = 0.05, n_boot: int = 2000) -> dict:
    """The paper's statement tested: each rationale variant (every variant but ``baseline``) at each
    of its training sizes against ``baseline`` at ``baseline_size`` (its largest size).

    Each row pairs the seeds both have finished (seed s of the variant with seed s of the baseline)
    on the same test items, paired by id: ``difference`` is the variant's accuracy minus the
    baseline's (per item the share of seeds right, averaged over items), with ``ci95`` and the
    two-sided ``p_value`` of the paired bootstrap over items, pooled over those seeds
    (``utils.stats.paired_bootstrap``); ``p_holm`` is Holm's adjustment over all rows (one family).
    ``mde_80`` is the difference one seed's design detects at 80 % power (p < 0.05), from the mean
    McNemar discordance over the seeds (``utils.stats.minimum_detectable_effect``); pooling seeds
    averages seed noise away, so it is on the cautious side.

    A row is *significantly below* the baseline when ``difference < 0`` and ``p_holm < alpha``
    (``below``); every other row is *not significantly below* it (not significantly different, or
    significantly above). ``smallest[variant]`` is the smallest size whose row is not significantly
    below the baseline, or None when every row of the variant is significantly below it. It is the
    paper's kind of statement ("step-by-step with less data is not worse than standard with all of
    it") and no more: "not significantly below" is not "as good as"; the interval's lower end says
    how much worse the variant may be. Variants with no row paired with the baseline are absent.
    """
    from statistics import fmean

    from utils.stats import holm, mcnemar, minimum_detectable_effect, paired_bootstrap

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
    base = {seed: marks for (variant, size, seed), marks in results.items()
            if variant == baseline and size == baseline_size}
    rows = []
    for (variant, size), by_seed in sorted(_by_seed(results, skip=baseline).items()):
        seeds = sorted(set(by_seed) & set(base))
        if not seeds:
            continue
        ours, theirs = [by_seed[s] for s in seeds], [base[s] for s in seeds]
        try:
            boot = paired_bootstrap(ours, theirs, n_boot=n_boot)
            tests = [mcnemar(a, b) for a, b in zip(ours, theirs)]
        except ValueError as exc:  # say which cells, not only which ids
            raise ValueError(f"{variant} at size {size} against {baseline} at {baseline_size}, seeds {seeds}: "
                             f"{exc}") from exc
        n = len(ours[0])
        discordant = round(fmean(t["a_only"] + t["b_only"] for t in tests))
        rows.append({"variant": variant, "size": size, "baseline": baseline, "baseline_size": baseline_size,
                     "seeds": seeds, "n": n, "accuracy": fmean(sum(o.values()) / n for o in ours),
                     "baseline_accuracy": fmean(sum(t.values()) / n for t in theirs),
                     "difference": boot["difference"], "ci95": list(boot["ci95"]), "p_value": boot["p_value"],
                     "mcnemar": [{"seed": s, **t} for s, t in zip(seeds, tests)],
                     "mde_80": minimum_detectable_effect(discordant, n)})
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = adjusted
        row["below"] = row["difference"] < 0 and adjusted < alpha
        row["verdict"] = ("significantly below" if row["below"] else
                          "significantly above" if row["difference"] > 0 and adjusted < alpha else
                          "not significantly different")
    smallest = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        fine = [r["size"] for r in rows if r["variant"] == variant and not r["below"]]
        smallest[variant] = min(fine) if fine else None
    return {"baseline": baseline, "baseline_size": baseline_size, "alpha": alpha, "n_boot": n_boot,
            "test": "paired bootstrap over the test items, pooled over the seeds both sides finished; "
                    "Holm's adjustment over every row",
            "rule": f"not significantly below: not (difference < 0 and Holm p < {alpha:g}); smallest: the "
                    "smallest size whose row is not significantly below, else None",
            "rows": rows, "smallest": smallest}


def verify_disjoint(folder: Path, name: str, sweep: dict) -> list[str]:
    """For a sweep whose folder holds ``PREMISE_FILE`` (item id -> a short hash of the item's
    grouping key, e-SNLI's premise; no text): every cell was tested on the ids its predictions hold
    and its ``cell.json`` records, none of them trained or validated on, no test premise among its
    training or validation premises, and every cell (and the teacher) on the same test ids."""
    hashes = json.loads((folder / PREMISE_FILE).read_text())["premises"]
    problems, reference, source = [], None, None
    teacher = sweep.get("teacher")
    if isinstance(teacher, dict) and teacher.get("predictions") and (folder / teacher["predictions"]).exists():
        reference, source = {str(r["id"]) for r in _read_rows(folder / teacher["predictions"])}, "the teacher"
    for cell in sweep["cells"]:
        tag, path = f"{name} {cell['dir']}", folder / cell["dir"] / "cell.json"
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        saved = json.loads(path.read_text())
        ids = saved.get("ids") or {}
        if "test" not in ids or "train" not in ids:
            problems.append(f"{tag}: cell.json records no train and test ids, so disjointness cannot be checked")
            continue
        test = {str(i) for i in ids["test"]}
        seen = {str(i) for i in ids["train"]} | {str(i) for i in ids.get("validation", [])}
        for inference, score in saved["results"].get("test", {}).items():
            scored = folder / cell["dir"] / score["predictions"]
            if scored.exists() and {str(r["id"]) for r in _read_rows(scored)} != test:
                problems.append(f"{tag}: its {inference} predictions are not on the test ids cell.json records")
        leaked = test & seen
        if leaked:
            problems.append(f"{tag}: {len(leaked)} test items were also trained or validated on "
                            f"({', '.join(sorted(leaked)[:5])})")
        missing = sorted(i for i in test | seen if i not in hashes)
        if missing:
            problems.append(f"{tag}: {len(missing)} ids have no premise hash in {PREMISE_FILE} ({', '.join(missing[:5])})")
        shared = {hashes[i] for i in test if i in hashes} & {hashes[i] for i in seen if i in hashes}
        if shared:
            items = sorted(i for i in test if hashes.get(i) in shared)
            problems.append(f"{tag}: {len(shared)} test premises also occur in training or validation "
                            f"(test items {', '.join(items[:5])})")
        if reference is None:
            reference, source = test, f"cell {cell['dir']}"
        elif test != reference:
            problems.append(f"{tag}: tested on {len(test)} items, not on the {len(reference)} test items of {source} "
                            f"({len(test - reference)} extra, {len(reference - test)} missing)")
    return problems


def _differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a != b
    return abs(a - b) > 1e-9


def _compare_rows(what: str, saved: list[dict], again: list[dict], fields: tuple[str, ...]) -> list[str]:
    keyed = {(r["variant"], r["size"]): r for r in again}
    problems = [f"{what}: the report has {len(saved)} rows, the predictions give {len(again)}"] \
        if len(saved) != len(again) else []
    for row in saved:
        other = keyed.get((row["variant"], row["size"]))
        if other is None:
            problems.append(f"{what} {row['variant']} at {row['size']}: no such row from the predictions")
            continue
        wrong = [f for f in fields if _differs(row.get(f), other.get(f))]
        if wrong:
            problems.append(f"{what} {row['variant']} at {row['size']}: "
                            + ", ".join(f"{f} {row.get(f)} in the report, {other.get(f)} from the predictions"
                                        for f in wrong))
    return problems


def verify_sizes(folder: Path, name: str, section: dict, task: str) -> list[str]:
    """Recompute a data-size section's accuracy curves and its data-efficiency rows (differences,
    intervals, raw and Holm-adjusted p, the smallest sizes) from the saved predictions, through
    the task's metric, and compare them with the report."""
    eff = section["data_efficiency"]
    try:
        results = size_results(section["cells"], folder, task, section["pool"])
        n_boot = section["curves"][0].get("n_boot", 1000) if section["curves"] else 1000
        curves = size_curves(results, n_boot=n_boot)
        again = data_efficiency(results, eff["baseline_size"], eff["baseline"], eff["alpha"], eff["n_boot"])
    except (OSError, ValueError, KeyError) as exc:
        return [f"{name}: the curves and the data efficiency cannot be recomputed: {exc}"]
    problems = _compare_rows(f"{name} curve", section["curves"], curves, ("seed_list", "mean", "std", "ci95", "n"))
    problems += _compare_rows(f"{name} data efficiency", eff["rows"], again["rows"],
                              ("seeds", "n", "difference", "ci95", "p_value", "p_holm", "below"))
    if eff["smallest"] != again["smallest"]:
        problems.append(f"{name}: smallest sizes not below the baseline: {eff['smallest']} in the report, "
                        f"{again['smallest']} from the predictions")
    return problems


# --- Markdown ------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _ci(ci) -> str:
    return f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}" if ci else ""


def _num(x, digits=1) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def _signed_ci(ci) -> str:
    """An interval of a difference, in points with signs: ``-8.8 to +1.2``."""
    return f"{100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}"


def markdown_evaluation(report: dict) -> str:
    evaluation = report.get("evaluation")
    if not evaluation:
        return ""
    teacher = evaluation["teacher"]
    tname = report.get("teacher", {}).get("model", "teacher")
    rows = [[f"teacher: {tname}, few-shot CoT", _num((evaluation.get("teacher_parameters") or 0) / 1e6),
             _pct(teacher["accuracy"]), _ci(teacher["ci95"]), teacher["n"]]]
    for mode, res in evaluation["students"].items():
        rows.append([f"student: {mode}", _num(res.get("parameters", 0) / 1e6), _pct(res["accuracy"]),
                     _ci(res["ci95"]), res["n"]])
    out = [f"### Test accuracy ({evaluation['task']}, n={evaluation['n_test']})", "",
           _table(["model", "parameters (M)", "accuracy (%)", "95% CI", "n"], rows)]
    costs = evaluation.get("costs")
    if costs and costs.get("student") and costs.get("teacher"):
        crow = []
        measured = [(name, c) for name, c in costs.items() if isinstance(c, dict) and "latency_ms_p50" in c]
        for name, c in measured:
            crow.append([f"{name} ({c.get('engine', '')}, {c.get('device', '')})", _num((c.get("parameters") or 0) / 1e6),
                         _num(c.get("size_mb")), _num(c.get("latency_ms_p50"), 0), _num(c.get("latency_ms_p95"), 0),
                         _num(c.get("throughput_batch1"), 2), _num(c.get("throughput_batched"), 2),
                         _num(c.get("peak_memory_mb"), 0)])
        out += ["", "### Cost on this machine", "",
                _table(["model", "parameters (M)", "weights (MB)", "latency p50 (ms)", "latency p95 (ms)",
                        "examples/s, batch 1", "examples/s, batched", "peak memory (MB)"], crow)]
        if costs.get("ratios"):
            from utils.costs import describe_costs

            out += ["", describe_costs(costs["ratios"])]
    return "\n".join(out)


def _with_holm(comparisons: list[dict]) -> list[dict]:
    """The comparisons with their stored Holm-adjusted p-values, or (a report written before
    ``p_holm`` existed) with them computed here, as ``utils.sweep.compare_to_baseline`` does."""
    from utils.stats import holm_comparisons

    if all("p_holm" in c and all("p_holm" in m for m in c["mcnemar"]) for c in comparisons):
        return comparisons
    return holm_comparisons(comparisons)


def markdown_sweep(name: str, sweep: dict) -> str:
    """The Markdown tables of a sweep section: accuracy per variant and data share, then the
    paired comparisons with raw and Holm-adjusted p-values."""
    summary = sweep["summary"]
    fractions = sorted({r["fraction"] for r in summary})
    keys = sorted({(r["variant"], r["inference"]) for r in summary})
    rows = []
    for variant, inference in keys:
        row = [variant, inference]
        for f in fractions:
            match = [r for r in summary if (r["variant"], r["inference"], r["fraction"]) == (variant, inference, f)]
            if not match:
                row.append("")
                continue
            r = match[0]
            spread = f" ± {100 * r['std']:.1f}" if r["seeds"] > 1 else ""
            row.append(f"{100 * r['mean']:.1f}{spread} ({r['seeds']})")
        rows.append(row)
    header = ["variant", "inference"] + [f"{100 * f:g}% data" for f in fractions]
    split = sweep.get("split", "test")
    teacher = sweep.get("teacher")
    if teacher:
        rows.append([f"teacher: {teacher.get('model', 'teacher')}", "few-shot CoT"]
                    + [f"{100 * teacher['accuracy']:.1f} [{_ci(teacher['ci95'])}]"] * len(fractions))
    out = [f"### {name}: {split} accuracy (%), mean ± sd over seeds (number of seeds)", "", _table(header, rows)]
    comps = sweep.get("comparisons") or []
    if comps:
        comps = _with_holm(comps)
        crow = [[c["variant"], c["inference"], f"{100 * c['fraction']:g}%", len(c["seeds"]),
                 f"{100 * c['difference']:+.1f}", _signed_ci(c["ci95"]), _p(c["p_value"]),
                 _p(c["p_holm"]),
                 ", ".join(f"{m['a_only']}/{m['b_only']} p={_p(m['p_value'])} (Holm {_p(m['p_holm'])})"
                           for m in c["mcnemar"])]
                for c in comps]
        out += ["", f"Paired against `{sweep.get('baseline', 'standard')}` (label inference) on the same {split} items; "
                f"Holm's correction over the {len(comps)} comparisons (and over all McNemar tests):",
                "", _table(["variant", "inference", "data", "seeds", "difference (points)", "95% CI (paired bootstrap)",
                            "p (bootstrap)", "p (Holm)",
                            "McNemar per seed: only variant right / only baseline right"], crow)]
    return "\n".join(out)


def markdown_cv(name: str, section: dict) -> str:
    """A pooled cross-validation section: accuracy per variant over every item, per-fold accuracy,
    epochs to the best checkpoint and CPU seconds; then the paired tests against the baseline."""
    folds = section["folds_finished"]
    lines = [f"#### {name}: {section['design']} ({len(folds)} of {section['k']} folds finished)", ""]
    rows = [[r["variant"], r["n"], _pct(r["accuracy"]), _ci(r["ci95"]),
             " / ".join(_pct(r["folds"].get(str(f), r["folds"].get(f))) for f in folds),
             " / ".join(str(r["best_epochs"].get(str(f))) for f in folds), _num(r["train_seconds"], 0),
             f"{_num(r['cpu_seconds'], 0)} ({r['cpu_cells']} of {len(folds)} cells)" if r.get("cpu_cells") else "not recorded"]
            for r in section["summary"]]
    lines.append(_table(["variant", "items", "accuracy %", "95% CI", "per fold %", "best epoch per fold",
                         "train s (wall)", "CPU s, all threads"], rows))
    paper = section.get("paper_difference")
    if section["comparisons"]:
        lines += ["", _table(["variant - baseline", "difference (points)", "95% CI (paired bootstrap)",
                              "McNemar b / c", "p (exact)", "p (Holm)", "detectable at 80% power"]
                             + ([f"power against the paper's {100 * paper:+.1f}"] if paper is not None else []),
                             [[f"{c['variant']} - {c['baseline']}", f"{100 * c['difference']:+.1f}",
                               _signed_ci(c["ci95"]),
                               f"{c['mcnemar']['a_only']} / {c['mcnemar']['b_only']}",
                               _p(c["p_value"]), _p(c["p_holm"]), f"±{_num(100 * c['mde_80'])}"]
                              + ([f"{100 * _paper_power(c, paper):.0f} %"] if paper is not None else [])
                              for c in section["comparisons"]])]
        if section.get("paper_effect"):
            lines += ["", f"Reference: {section['paper_effect']}."]
    return "\n".join(lines)


def _paper_power(comparison: dict, paper: float) -> float:
    """The power a comparison's design had against a true difference of the paper's size."""
    from utils.stats import power_against

    return power_against(paper, comparison["discordant"], comparison["n"])


def describe_cv(section: dict | None) -> str:
    """The finding of a cross-validated study in sentences, read from its report (so prose that
    quotes it cannot drift from the numbers): per comparison the difference, its interval, the exact
    and Holm-adjusted p, the difference the design could detect and, where the paper has a reference,
    the power the design had against an effect of the paper's size."""
    if not section or not section["comparisons"]:
        return "The study has not finished a fold with every variant yet."
    lines = [f"{len(section['folds_finished'])} of {section['k']} folds finished "
             f"({section['comparisons'][0]['n']} items, each predicted once per variant)."]
    paper = section.get("paper_difference")
    for c in section["comparisons"]:
        verdict = ("significantly better" if c["p_holm"] < 0.05 and c["difference"] > 0 else
                   "significantly worse" if c["p_holm"] < 0.05 else "not significantly different")
        scale = "" if paper is None else (
            f", {'more' if c['mde_80'] > abs(paper) else 'no more'} than the paper's {100 * paper:+.1f}; "
            f"its power against a true {100 * paper:+.1f} was {100 * _paper_power(c, paper):.0f} %")
        lines.append(f"{c['variant']} - {c['baseline']}: {100 * c['difference']:+.1f} points (95% CI "
                     f"{_signed_ci(c['ci95'])}), McNemar p {_p_eq(c['p_value'])}, Holm "
                     f"p {_p_eq(c['p_holm'])}: {verdict}; the design detects ±{100 * c['mde_80']:.1f} points "
                     f"at 80% power{scale}.")
    return "\n".join(lines)


def _variant_order(section: dict, names) -> list[str]:
    """The design's order of variants (the baseline first), then any others by name."""
    design = [section.get("baseline", "standard")] + list((section.get("design") or {}).get("variants", []))
    names = set(names)
    return [v for v in dict.fromkeys(design) if v in names] + sorted(names - set(design))


def _grid_text(grid: dict | None) -> str:
    if not grid:
        return ""
    per_seed = ", ".join(f"seed {seed}: {done} of {expected}" for seed, (done, expected) in grid["seeds"].items())
    return f"{grid['finished']} of {grid['expected']} cells finished ({per_seed})"


def markdown_sizes(name: str, section: dict) -> str:
    """A data-size section (``utils.recipes.esnli_report``): test accuracy per variant and training
    size (mean ± sd over seeds, the number of seeds, the 95 % interval pooled over seeds), the
    teacher on the same items, each rationale variant against the baseline at its largest size
    (the paper's statement, Holm-adjusted) and the same-size paired comparisons."""
    curves = section["curves"]
    sizes = sorted({r["size"] for r in curves})
    by_key = {(r["variant"], r["size"]): r for r in curves}
    rows = []
    for variant in _variant_order(section, {r["variant"] for r in curves}):
        row = [variant]
        for size in sizes:
            r = by_key.get((variant, size))
            row.append("" if r is None else f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f} ({r['seeds']}) "
                                            f"[{_ci(r['ci95'])}]")
        rows.append(row)
    n = curves[0]["n"] if curves else section.get("test", "")
    lines = [f"#### {name}: test accuracy (%) by training size, mean ± sd over seeds (seeds) [95% CI]", ""]
    if (section.get("design") or {}).get("split_rule"):
        lines += [f"Split: {section['design']['split_rule']}.", ""]
    if section.get("grid"):
        lines += [f"Grid: {_grid_text(section['grid'])}. The interval is a bootstrap over the {n} test items "
                  "of each item's share of seeds right.", ""]
    lines.append(_table(["variant"] + [f"{size:,} examples" for size in sizes], rows))
    teacher = section.get("teacher")
    if teacher:
        lines += ["", f"Teacher, {teacher.get('model', 'teacher')}, on the same {teacher['n']} test items: "
                      f"{_pct(teacher['accuracy'])} % [{_ci(teacher['ci95'])}]."]
    eff = section["data_efficiency"]
    base = f"`{eff['baseline']}` at {eff['baseline_size']:,} examples"
    order = {v: i for i, v in enumerate(_variant_order(section, eff["smallest"]))}
    ranked = sorted(eff["rows"], key=lambda r: (order.get(r["variant"], len(order)), r["size"]))
    if eff["rows"]:
        lines += ["", f"Against {base}, paired by seed on the same test items ({eff['test']}, "
                      f"{len(eff['rows'])} rows); {eff['rule']}:", "",
                  _table(["variant", "examples", "seeds", "variant %", "baseline %", "difference (points)",
                          "95% CI (paired bootstrap)", "p (bootstrap)", "p (Holm)", "detectable at 80% power",
                          "verdict"],
                         [[r["variant"], f"{r['size']:,}", len(r["seeds"]), _pct(r["accuracy"]),
                           _pct(r["baseline_accuracy"]), f"{100 * r['difference']:+.1f}",
                           _signed_ci(r["ci95"]), _p(r["p_value"]),
                           _p(r["p_holm"]), f"±{_num(100 * r['mde_80'])}", r["verdict"]] for r in ranked])]
        lines += [""] + [f"- `{v}`: smallest size not significantly below {base}: "
                         + (f"**{size:,}** examples" if size is not None else "**none** (below at every size tested)")
                         for v, size in sorted(eff["smallest"].items(), key=lambda kv: order[kv[0]])]
    else:
        lines += ["", f"No rationale cell is paired with {base} yet."]
    comps = section.get("comparisons") or []
    pool = section.get("pool")
    if comps and pool:
        comps = _with_holm(comps)
        lines += ["", f"At equal size, paired against `{section.get('baseline', 'standard')}` (paired bootstrap "
                      f"pooled over seeds; Holm over these {len(comps)} rows):", "",
                  _table(["variant", "examples", "seeds", "difference (points)", "95% CI", "p (bootstrap)", "p (Holm)"],
                         [[c["variant"], f"{round(c['fraction'] * pool):,}", len(c["seeds"]),
                           f"{100 * c['difference']:+.1f}", _signed_ci(c["ci95"]),
                           _p(c["p_value"]), _p(c["p_holm"])] for c in comps])]
    return "\n".join(lines)


def describe_sizes(section: dict | None, command: str = SIZES_COMMAND) -> str:
    """The finding of a data-size study in plain sentences, read from its report section (so prose
    quoting it cannot drift from the numbers): how much of the grid finished, the teacher, and per
    rationale variant the paper's statement (the smallest training size at which it is not
    significantly below the baseline at its largest size, or that none is) with its interval,
    Holm-adjusted p and seeds. Without a section: that the study has not run, and the command."""
    if not section:
        return f"The e-SNLI data-efficiency study has not run yet (no esnli_sizes section). Run it with:\n{command}"
    eff = section["data_efficiency"]
    base = f"{eff['baseline']} at {eff['baseline_size']:,} examples"
    grid = section.get("grid")
    lines = []
    if grid and grid["finished"] < grid["expected"]:
        lines.append(f"Partial grid: {_grid_text(grid)}. Every number below uses only the finished cells and will "
                     "move as the rest finish.")
    elif grid:
        lines.append(f"Complete grid: {_grid_text(grid)}.")
    teacher = section.get("teacher")
    if teacher:
        lines.append(f"The PaLM 540B teacher scores {_pct(teacher['accuracy'])} % (95% CI {_ci(teacher['ci95'])}) "
                     f"on the same {teacher['n']} held-out test items.")
    anchor = [r for r in section["curves"] if r["variant"] == eff["baseline"] and r["size"] == eff["baseline_size"]]
    if anchor:
        a = anchor[0]
        lines.append(f"{base}: {_pct(a['mean'])} % (mean over {a['seeds']} seed{'s' * (a['seeds'] > 1)}, "
                     f"95% CI {_ci(a['ci95'])}).")
    if not eff["rows"]:
        lines.append(f"No rationale cell is paired with {base} yet (it has not finished for a seed a rationale "
                     "cell has), so the paper's statement cannot be tested yet.")
        return "\n".join(lines)
    for variant in _variant_order(section, eff["smallest"]):
        smallest = eff["smallest"][variant]
        rows = sorted((r for r in eff["rows"] if r["variant"] == variant), key=lambda r: r["size"])
        sizes = ", ".join(f"{r['size']:,}" for r in rows)
        if smallest is None:
            r = rows[-1]
            lines.append(f"{variant} is significantly below {base} at every size tested ({sizes}); at {r['size']:,}: "
                         f"{_diff(r)}.")
            continue
        r = next(r for r in rows if r["size"] == smallest)
        share = 100 * smallest / eff["baseline_size"]
        text = (f"In the paper's terms: the smallest training size at which {variant} is not significantly below "
                f"{base} is {smallest:,} examples ({share:.0f} % of the baseline's data; sizes tested: {sizes}): "
                f"{_diff(r)}.")
        later = [x for x in rows if x["size"] > smallest and x["below"]]
        if later:
            text += (" But it is significantly below at " + ", ".join(f"{x['size']:,}" for x in later)
                     + ", so the result at the smaller size is more likely noise than a trend.")
        lines.append(text)
    lines.append(f"'Not significantly below' is not 'as good as': the lower end of each interval says how much "
                 f"worse the variant may be. Holm's adjustment runs over all {len(eff['rows'])} rows against {base}.")
    return "\n".join(lines)


def _diff(r: dict) -> str:
    """A data-efficiency row's difference in words: interval, test, seeds, Holm p, detectable effect."""
    seeds = len(r["seeds"])
    return (f"{100 * r['difference']:+.1f} points (95% CI {_signed_ci(r['ci95'])}, "
            f"paired bootstrap over {r['n']} test items pooled over {seeds} seed{'s' * (seeds > 1)}, Holm p {_p_eq(r['p_holm'])}; "
            f"one seed's design detects ±{100 * r['mde_80']:.1f} points at 80% power)")


def render_markdown(run_dir: str | Path) -> str:
    """The Markdown ``python -m utils report RUN`` prints: tables of every section present."""
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    config = report.get("config") or (json.loads((run_dir / "config.json").read_text())
                                      if (run_dir / "config.json").exists() else {})
    machine = report.get("machine", {})
    parts = [f"## Results of `{run_dir.name}`", ""]
    if config:
        teacher_clause = (f", teacher `{config.get('teacher_model')}` via `{config.get('teacher_backend')}`"
                          if "teacher" in report else "")  # a study on released outputs ran no teacher
        parts.append(f"Profile `{config.get('profile')}`, task `{config.get('task')}`, student "
                     f"`{config.get('student_model')}` ({config.get('student_layers') or 'all'} layers){teacher_clause}.")
    if machine:
        parts.append(f"Machine: {machine.get('processor') or machine.get('platform')}, {machine.get('cores')} cores, "
                     f"bf16 {'on' if machine.get('bf16') else 'off'}, GPU: {machine.get('gpu') or 'none'}.")
    teacher = report.get("teacher", {})
    if "train" in teacher:
        tr = teacher["train"]
        parts.append(f"Teacher yield on train: {tr.get('examples')} inputs, vote accuracy {_pct(tr.get('accuracy_vote'))}%, "
                     f"correct rationales for {_pct(tr.get('correct_rationale_yield'))}% of inputs.")
    text = markdown_evaluation(report)
    if text:
        parts += ["", text]
    for name, sweep in sweep_sections(report).items():
        parts += ["", markdown_sizes(name, sweep) if "data_efficiency" in sweep else markdown_sweep(name, sweep)]
    for name, section in cv_sections(report).items():
        parts += ["", markdown_cv(name, section)]
    if report.get("timings"):
        parts += ["", _table(["stage", "seconds"], [[k, v] for k, v in report["timings"].items()])]
    return "\n".join(parts) + "\n"
