"""The report of a data-size study (``utils.studies.sizes``, e-SNLI epoch-capped): accuracy by
training size, the paper's statement, a split disjoint by premise, their check and their words."""

from __future__ import annotations

import json
from pathlib import Path

from utils.report.core import (
    _ci,
    _differs,
    _num,
    _pct,
    _read_rows,
    _signed_ci,
    _table,
    _with_holm,
    equivalence_words,
    runs_text,
)
from utils.stats import p_in_sentence as _p_eq
from utils.stats import p_text as _p

# --- data-size studies: accuracy by training size, the paper's statement, a disjoint split ----------

PREMISE_FILE = "premise_hashes.json"  # beside a data-size study's cells: item id -> short hash of its premise
SIZES_COMMAND = ("python -m utils study --design sizes --task esnli --paper-data <folder> --run-dir runs/esnli "
                 "--publish data/results/esnli")



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
                    alpha: float = 0.05, n_boot: int = 2000, margin: float = 0.02) -> dict:
    """The paper's statement tested: each rationale variant (every variant but ``baseline``) at each
    of its training sizes against ``baseline`` at ``baseline_size`` (its largest size).

    Each row pairs the seeds both have finished (seed s of the variant with seed s of the baseline)
    on the same test items, paired by id, with the seed as the unit of replication
    (``utils.report.core.compare_runs``): ``difference`` is the mean over seeds of the variant's
    accuracy minus the baseline's, ``ci95`` and the two-sided ``p_value`` come from the hierarchical
    bootstrap (seeds, then test items within each), ``runs`` holds each seed's difference and
    McNemar test, ``t`` the t interval over seeds, ``item_only`` the interval that treats the trained
    models as fixed (too narrow), and ``mde_80`` the difference the design detects at 80 % power
    under the observed seed-to-seed spread (with one seed: from its McNemar discordance, items only);
    ``p_holm`` is Holm's adjustment over all rows (one family).

    A row is *significantly below* the baseline when it rests on at least two seeds, ``difference < 0``
    and ``p_holm < alpha`` (``below``); a one-seed row is tested over items only and its verdict says
    so. ``equivalence`` asks the paper's question as it should be asked: is the difference within
    ``±margin`` (TOST on the hierarchical bootstrap: ``equivalent``), wholly below or above 0, or
    ``inconclusive``? ``smallest[variant]`` is the smallest size whose row is not significantly below
    the baseline, or None when every row is: "not significantly below" is not "as good as"; the
    equivalence verdict and the interval's lower end say how much worse the variant may be.
    Variants with no row paired with the baseline are absent.
    """
    from utils.report.core import compare_runs
    from utils.stats import holm, minimum_detectable_effect

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
    base = {seed: marks for (variant, size, seed), marks in results.items()
            if variant == baseline and size == baseline_size}
    rows = []
    for (variant, size), by_seed in sorted(_by_seed(results, skip=baseline).items()):
        seeds = sorted(set(by_seed) & set(base))
        if not seeds:
            continue
        try:
            row = compare_runs({s: by_seed[s] for s in seeds}, {s: base[s] for s in seeds}, n_boot=n_boot,
                               margin=margin)
        except ValueError as exc:  # say which cells, not only which ids
            raise ValueError(f"{variant} at size {size} against {baseline} at {baseline_size}, seeds {seeds}: "
                             f"{exc}") from exc
        row["mde_basis"] = "runs"
        if row["mde_80"] is None:  # one seed, or seeds that all agree: only the items say what it could detect
            discordant = round(sum(r["a_only"] + r["b_only"] for r in row["runs"]) / len(row["runs"]))
            row["mde_80"], row["mde_basis"] = minimum_detectable_effect(discordant, row["n"]), "items"
        rows.append({"variant": variant, "size": size, "baseline": baseline, "baseline_size": baseline_size,
                     "seeds": seeds, **row,
                     "mcnemar": [{"seed": r["run"], "a_only": r["a_only"], "b_only": r["b_only"],
                                  "p_value": r["p_mcnemar"]} for r in row["runs"]]})
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = adjusted
        over_runs = len(row["seeds"]) > 1
        row["below"] = over_runs and row["difference"] < 0 and adjusted < alpha
        row["verdict"] = ("one seed: not tested over seeds" if not over_runs else
                          "significantly below" if row["below"] else
                          "significantly above" if row["difference"] > 0 and adjusted < alpha else
                          "not significantly different")
    smallest = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        fine = [r["size"] for r in rows if r["variant"] == variant and not r["below"]]
        smallest[variant] = min(fine) if fine else None
    return {"baseline": baseline, "baseline_size": baseline_size, "alpha": alpha, "n_boot": n_boot, "margin": margin,
            "test": "hierarchical bootstrap over the seeds both sides finished, then the test items within each; "
                    "Holm's adjustment over every row",
            "rule": f"significantly below: two or more seeds, difference < 0 and Holm p < {alpha:g}; equivalence: "
                    f"the 90% hierarchical interval inside ±{100 * margin:g} points",
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
        again = data_efficiency(results, eff["baseline_size"], eff["baseline"], eff["alpha"], eff["n_boot"],
                                eff.get("margin", 0.02))
    except (OSError, ValueError, KeyError) as exc:
        return [f"{name}: the curves and the data efficiency cannot be recomputed: {exc}"]
    problems = _compare_rows(f"{name} curve", section["curves"], curves, ("seed_list", "mean", "std", "ci95", "n"))
    problems += _compare_rows(f"{name} data efficiency", eff["rows"], again["rows"],
                              ("seeds", "n", "difference", "ci95", "p_value", "p_holm", "below"))
    if eff["smallest"] != again["smallest"]:
        problems.append(f"{name}: smallest sizes not below the baseline: {eff['smallest']} in the report, "
                        f"{again['smallest']} from the predictions")
    return problems



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
    """A data-size section (``utils.studies.sizes.esnli_report``): test accuracy per variant and training
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
                          "per seed", "95% CI (hierarchical)", "p", "p (Holm)", "detectable at 80% power",
                          "verdict"],
                         [[r["variant"], f"{r['size']:,}", len(r["seeds"]), _pct(r["accuracy"]),
                           _pct(r["baseline_accuracy"]), f"{100 * r['difference']:+.1f}",
                           runs_text(r) if r.get("runs") else "", _signed_ci(r["ci95"]), _p(r["p_value"]),
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
        lines += ["", f"At equal size, paired against `{section.get('baseline', 'standard')}` (hierarchical "
                      f"bootstrap over seeds, then items; Holm over these {len(comps)} rows):", "",
                  _table(["variant", "examples", "seeds", "difference (points)", "per seed", "95% CI", "p", "p (Holm)"],
                         [[c["variant"], f"{round(c['fraction'] * pool):,}", len(c["seeds"]),
                           f"{100 * c['difference']:+.1f}", runs_text(c) if c.get("runs") else "", _signed_ci(c["ci95"]),
                           _p(c["p_value"]), _p(c["p_holm"])] for c in comps])]
    return "\n".join(lines)


def describe_sizes(section: dict | None, command: str = SIZES_COMMAND) -> str:
    """The finding of a data-size study in plain sentences, read from its report section (so prose
    quoting it cannot drift from the numbers): how much of the grid finished, the teacher, and per
    rationale variant and size its difference from the baseline at its largest size, with the
    hierarchical interval, seeds, Holm-adjusted p, verdict and equivalence verdict. Without a
    section: that the study has not run, and the command."""
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
        rows = sorted((r for r in eff["rows"] if r["variant"] == variant), key=lambda r: r["size"])
        parts = [f"on {r['size']:,}: {_diff(r)}, {r['verdict']}"
                 + (f"; {equivalence_words(r['equivalence'])}" if r.get("equivalence") and len(r["seeds"]) > 1 else "")
                 for r in rows]
        lines.append(f"{variant} against {base}: " + "; ".join(parts) + ".")
    lines.append(f"Holm's adjustment runs over all {len(eff['rows'])} rows against {base}. 'Not significantly "
                 "different' is not 'as good as': only an equivalence verdict says the variant is within the margin.")
    return "\n".join(lines)


def _diff(r: dict) -> str:
    """A data-efficiency row's difference in words: interval, test, seeds, Holm p, per-seed
    differences, detectable effect."""
    seeds = len(r["seeds"])
    detects = (f"under this seed-to-seed spread the design detects ±{100 * r['mde_80']:.1f} points at 80% power"
               if r.get("mde_basis", "runs") == "runs" and seeds > 1 else
               f"one seed's test items detect ±{100 * r['mde_80']:.1f} points at 80% power")
    per_seed = f"; per seed {runs_text(r)}" if r.get("runs") else ""
    return (f"{100 * r['difference']:+.1f} points (95% CI {_signed_ci(r['ci95'])}, hierarchical bootstrap over "
            f"{seeds} seed{'s' * (seeds > 1)} and {r['n']:,} test items, Holm p {_p_eq(r['p_holm'])}{per_seed}; "
            f"{detects})")


