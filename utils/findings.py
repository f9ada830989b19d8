"""What the course found, in words read from the committed reports (torch-free).

The README's three findings lines, the generated blocks of ``docs/studies.md`` and the "Reading it"
cells of the notebooks print these functions' sentences, so the prose follows the numbers: a
changed report changes the sentence, and ``tests/test_docs.py`` fails until the page is
regenerated (``python -m utils.findings --update README.md docs/studies.md``).

Every number comes from a report field, read through the small accessors below (``_difference``,
``_interval``, ``_interval_name``, ``_equivalence``, ``_p_holm``, ``_seeds``, ``_steps_rows``): where
the reports' fields change, those are the lines to change. Nothing here computes a statistic.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from utils.report import describe_cv, describe_sizes, load_report, markdown_cv, markdown_sizes, markdown_sweep

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "data" / "results"
DEMO_DIR = RESULTS / "demo_reference"  # make demo with the notebooks' full grid (3 seeds)
SVAMP_CV_DIR = RESULTS / "svamp_cv"  # SVAMP, 5-fold cross-validation, PaLM 540B rationales
ESNLI_DIR = RESULTS / "esnli"  # e-SNLI by training size, epoch-capped, 3 seeds
ESNLI_STEPS_DIR = RESULTS / "esnli_steps"  # e-SNLI at matched optimizer steps (preferred when present)
SVAMP_STUDY_DIR = RESULTS / "svamp_study"  # the first SVAMP study (6-layer student, fractions)
ESNLI_PILOT_DIR = RESULTS / "esnli_steps_pilot"  # pilots of the matched-steps design at a larger step cap


# --- accessors: the report fields every sentence reads ------------------------------------------------


def _difference(comparison: dict) -> float:
    """A comparison's difference (variant minus baseline), as a share (0.013 is 1.3 points)."""
    return comparison["difference"]


def _interval(comparison: dict) -> tuple[float, float]:
    """A comparison's headline 95 % interval."""
    return tuple(comparison["ci95"])


def _interval_name(comparison: dict, runs: str, items: str) -> str:
    """What the headline interval resamples. Reports that treat the training run as the unit carry
    ``item_only`` beside the headline (a hierarchical bootstrap over ``runs``, then ``items`` within
    each); older ones resample the items alone, pooled over the runs."""
    if "item_only" in comparison:
        k = comparison.get("k") or _seeds(comparison)
        return f"hierarchical bootstrap over {k} {runs} and their {items}"
    return f"paired bootstrap over {items}, pooled over {runs}"


def _equivalence(comparison: dict) -> str:
    """The equivalence verdict in the report's words, or "" where the comparison has none (or one run)."""
    if not comparison.get("equivalence") or (comparison.get("k") or _seeds(comparison)) < 2:
        return ""
    from utils.report.core import equivalence_words

    return equivalence_words(comparison["equivalence"])


def _p_holm(comparison: dict) -> float:
    """A comparison's Holm-adjusted p (the one its verdict rests on)."""
    return comparison["p_holm"]


def _seeds(comparison: dict) -> int:
    """How many training runs (seeds) a comparison pools."""
    seeds = comparison.get("seeds", [])
    return len(seeds) if isinstance(seeds, list) else int(seeds)


# --- wording -------------------------------------------------------------------------------------------


def points(share: float) -> str:
    """A difference in points with its sign, as the reports print it: ``+1.3``."""
    return f"{100 * share:+.1f}"


def interval_text(ci: tuple[float, float]) -> str:
    """A 95 % interval in points, as the reports print it: ``-1.8 to +4.6``."""
    return f"{points(ci[0])} to {points(ci[1])}"


def verdict(difference: float, p_holm: float, higher: str = "above", lower: str = "below") -> str:
    """The report's rule in words: significant when the Holm-adjusted p is below 0.05."""
    if p_holm >= 0.05:
        return "not significantly different"
    return f"significantly {higher if difference > 0 else lower}"


def load_section(folder: str | Path, name: str) -> dict | None:
    """Section ``name`` of ``folder/report.json``, or None when the folder or the section is missing."""
    path = Path(folder) / "report.json"
    return load_report(path.parent).get(name) if path.exists() else None


# --- the three findings ----------------------------------------------------------------------------------


def demo_comparison(report: dict) -> dict:
    """The demo sweep's ``dss`` against ``standard`` at its largest data fraction."""
    comparisons = [c for c in report["evaluation"]["sweep"]["comparisons"]
                   if c["variant"] == "dss" and c.get("inference", "label") == "label"]
    return max(comparisons, key=lambda c: c["fraction"])


def demo_finding(folder: str | Path = DEMO_DIR) -> str:
    """The ``tiny`` demo in one line: the teacher's vote accuracy on the training problems, ``dss``
    against ``standard`` with all the data (the committed full grid), and the student that ships."""
    report = load_report(folder)
    c = demo_comparison(report)
    teacher = report["teacher"]["train"]["accuracy_vote"]
    shipped = report["evaluation"]["recommendation"]["mode"]
    seeds = _seeds(c)
    return (f"**`tiny` demo** (a 135M teacher right on {100 * teacher:.1f} % of the training problems; "
            f"{seeds} seed{'s' * (seeds != 1)}): with {100 * c['fraction']:.0f} % of the data `dss` - `standard` = "
            f"{points(_difference(c))} points (95 % CI {interval_text(_interval(c))}, "
            f"{_interval_name(c, 'seeds', 'test items')}): {verdict(_difference(c), _p_holm(c))}; `{shipped}` ships.")


def svamp_finding(folder: str | Path = SVAMP_CV_DIR) -> str:
    """SVAMP in one line: ``dss`` against ``standard`` over every problem of the cross-validation."""
    section = load_section(folder, "svamp_cv")
    if not section or not section["comparisons"]:
        return "**SVAMP**: the cross-validated study has not finished a fold yet."
    c = next(c for c in section["comparisons"] if c["variant"] == "dss")
    folds = len(section["folds_finished"])
    return (f"**SVAMP** (the authors' PaLM 540B rationales; {folds}-fold cross-validation over {c['n']:,} "
            f"problems, one training run per fold; a 135M student): `dss` - `standard` = "
            f"{points(_difference(c))} points (95 % CI {interval_text(_interval(c))}, "
            f"{_interval_name(c, 'folds', 'problems')}): {verdict(_difference(c), _p_holm(c))}.")


def _steps_rows(section: dict) -> list[dict]:
    """The matched-steps study's answers (``utils.report.steps.steps_questions``): one row per comparison,
    with ``question`` (a, b, c), ``variant``, ``size``, ``baseline``, ``baseline_size``, ``k`` (seeds),
    the difference, its interval, ``verdict`` and, for (c), ``equivalence``."""
    return section["questions"]["rows"]


def _steps_part(r: dict, plateau: dict | None = None) -> str:
    """One answer of the matched-steps study: the comparison, its interval and the report's verdicts,
    and the cells it compares short of their plateau (``utils.report.steps.short_of_plateau``)."""
    from utils.report.steps import short_of_plateau

    words = ", ".join(w for w in (r["verdict"], _equivalence(r)) if w)
    short = short_of_plateau(r, plateau) if plateau else ""
    return (f"`{r['variant']}` on {r['size']:,} - `{r['baseline']}` on {r['baseline_size']:,} = "
            f"{points(_difference(r))} (95 % CI {interval_text(_interval(r))}): {words}"
            + (f" ({short})" if short else ""))


def esnli_steps_finding(section: dict) -> str:
    """e-SNLI at matched optimizer steps in one line: (a) each rationale variant against ``standard`` at
    equal size and steps (by size, ``dss`` first), (b) four rationales against one, (c) ``dss`` on its largest size
    against ``standard`` on the baseline size, each as the report states it."""
    rows = _steps_rows(section)
    a = sorted((r for r in rows if r["question"] == "a"), key=lambda r: (r["size"], r["variant"] != "dss"))
    b = [r for r in rows if r["question"] == "b"]
    c = sorted((r for r in rows if r["question"] == "c" and r["variant"] == "dss"), key=lambda r: r["size"])[-1:]
    ks = sorted({r.get("k") or _seeds(r) for r in [*a, *b, *c]}) or [0]
    seeds = (f"{ks[0]}-{ks[-1]} seeds a comparison" if len(ks) > 1  # a partial grid: some rows on fewer seeds
             else f"{ks[0]} seed{'s' * (ks[0] != 1)}")
    grid = section.get("grid") or {}
    partial = (f"partial grid, {grid['finished']} of {grid['expected']} cells; "
               if grid and grid["finished"] < grid["expected"] else "")
    parts = [f"({key}) " + "; ".join(_steps_part(r, section.get("plateau")) for r in group) for key, group in (("a", a), ("b", b), ("c", c))
             if group]
    return (f"**e-SNLI** (PaLM rationales, premise-disjoint split; matched optimizer steps, {partial}{seeds}, "
            f"a 135M student; hierarchical bootstrap over seeds, then test items): " + "; ".join(parts) + ".")


def curve_text(curve: list) -> str:
    """A validation curve as the pilot prints it: ``40 31.4, 80 50.5, ...`` (step, accuracy in %)."""
    return ", ".join(f"{step} {100 * acc:.1f}" for step, acc in curve)


def esnli_pilot_finding(pilot_dir: str | Path = ESNLI_PILOT_DIR, steps_dir: str | Path = ESNLI_STEPS_DIR) -> str:
    """The pilots of the matched-steps design (``study --design steps --pilot``), one paragraph each:
    the cell's validation curve at its own step cap, the plateau rule at that cap, its test accuracy,
    and the grid's cell of the same variant, size and seed beside it (its curve, plateau and test
    accuracy at the grid's cap). Empty when no pilot is committed. Reads the cells themselves (a pilot
    has no report section) and applies the report's plateau rule to each at its own cap."""
    from utils.report.steps import plateaued

    grid = load_section(steps_dir, "esnli_steps") or {}
    pool = grid.get("pool")
    texts = []
    for path in sorted(Path(pilot_dir).glob("esnli_steps_pilot_*/cells/*/*/cell.json")):
        pilot = json.loads(path.read_text(encoding="utf-8"))
        size = f"{round(pilot['fraction'] * pool):,} items" if pool else f"{pilot['n_train']:,} training items"
        parts = []
        for name, cell in (("pilot", pilot), ("grid", _grid_cell(steps_dir, path))):
            if not cell:
                continue
            curve, steps = cell.get("validation_curve") or [], cell.get("max_steps") or 0
            rule = plateaued(curve, steps)
            n = len((cell.get("ids") or {}).get("validation") or [])
            items = f" ({round(rule['last_quarter_gain'] * n)} of {n} items)" if n else ""
            parts.append(f"{'the pilot' if name == 'pilot' else 'the grid cell'}, {steps} optimizer steps: validation "
                         f"accuracy {curve_text(curve)}; best at step {rule['best_step']}, the last quarter adds "
                         f"{points(rule['last_quarter_gain'])} points{items}: "
                         f"{'plateaued' if rule['plateaued'] else 'still learning'}; test accuracy "
                         f"{100 * cell['results']['test']['label']['accuracy']:.1f} %")
        texts.append(f"`{pilot['variant']}` on {size}, seed {pilot['seed']}: " + "; ".join(parts) + ".")
    return "\n\n".join(texts)


def _grid_cell(steps_dir: str | Path, pilot_cell: Path) -> dict | None:
    """The grid's cell with the pilot's variant, size and seed (the same folder name), if committed."""
    path = Path(steps_dir) / "esnli_steps" / "cells" / pilot_cell.parent.parent.name / pilot_cell.parent.name / "cell.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def esnli_sizes_finding(section: dict) -> str:
    """The epoch-capped e-SNLI study in one line, labelled as such: ``dss`` on its largest size against
    ``standard`` on the baseline size, and ``dss`` against ``standard`` at equal size where they differ most."""
    eff = section["data_efficiency"]
    row = max((r for r in eff["rows"] if r["variant"] == "dss"), key=lambda r: r["size"])
    same = [c for c in section["comparisons"] if c["variant"] == "dss"]
    best = max(same, key=lambda c: _difference(c))
    best_size = round(best["fraction"] * section["pool"])
    words = ", ".join(w for w in (row["verdict"], _equivalence(row)) if w)
    return (f"**e-SNLI** (PaLM rationales, premise-disjoint split; the epoch-capped study, {_seeds(row)} seeds, "
            f"where a `dss` example's two rows gave it twice the optimizer steps of `standard`): `dss` on "
            f"{row['size']:,} items - `standard` on {eff['baseline_size']:,} = {points(_difference(row))} points "
            f"(95 % CI {interval_text(_interval(row))}, {_interval_name(row, 'seeds', 'test items')}): {words}; "
            f"at equal size ({best_size:,} items) `dss` - `standard` = {points(_difference(best))} "
            f"(95 % CI {interval_text(_interval(best))}).")


def esnli_finding(steps_dir: str | Path = ESNLI_STEPS_DIR, sizes_dir: str | Path = ESNLI_DIR) -> str:
    """e-SNLI in one line: the matched-steps study when its report has answers, else the committed
    epoch-capped study, labelled as epoch-capped."""
    steps = load_section(steps_dir, "esnli_steps")
    if steps and steps.get("questions", {}).get("rows"):
        return esnli_steps_finding(steps)
    sizes = load_section(sizes_dir, "esnli_sizes")
    if not sizes:
        return "**e-SNLI**: no committed study yet."
    return esnli_sizes_finding(sizes)


def study_figure(steps_dir: str | Path = ESNLI_STEPS_DIR, sizes_dir: str | Path = ESNLI_DIR) -> Path | None:
    """The e-SNLI figure of the study ``esnli_finding`` reads: the matched-steps study's when its report
    has answers, else the epoch-capped study's; None when neither has a figure."""
    steps = load_section(steps_dir, "esnli_steps")
    rows = bool(steps and steps.get("questions", {}).get("rows"))
    folder, pattern = (steps_dir, "*size*.png") if rows else (sizes_dir, "esnli_sizes*.png")
    return next(iter(sorted((Path(folder) / "figures").glob(pattern))), None)


def findings() -> list[str]:
    """The course's three findings, one line each: the ``tiny`` demo, SVAMP, e-SNLI."""
    return [demo_finding(), svamp_finding(), esnli_finding()]


def findings_markdown() -> str:
    """The README's findings block: one bullet a finding."""
    return "\n".join(f"- {line}" for line in findings())


# --- the notebooks' "Reading it" cells ------------------------------------------------------------------


def teacher_reading(train: dict, test: dict) -> str:
    """Notebook 01: what the teacher's numbers say, worded from them (a ``teacher`` report section)."""
    gain = train["correct_rationale_yield"] / max(train["accuracy_greedy"], 1e-9)
    return (f"The teacher's greedy answer is right on {100 * train['accuracy_greedy']:.1f} % of the training "
            f"problems and {100 * test['accuracy_greedy']:.1f} % of the test problems, its majority vote on "
            f"{100 * train['accuracy_vote']:.1f} % of the training problems. Sampling several answers finds a correct rationale for "
            f"{100 * train['correct_rationale_yield']:.1f} % of the training problems, {gain:.1f} times the greedy "
            f"accuracy: that is what the extra samples buy.")


def students_reading(students: dict, teacher: dict) -> str:
    """Notebook 04: each student against the teacher, by whether their 95 % intervals overlap."""
    lines = []
    for mode, r in sorted(students.items(), key=lambda kv: -kv[1]["accuracy"]):
        low, high = r["ci95"]
        side = ("above" if low > teacher["ci95"][1] else "below" if high < teacher["ci95"][0] else
                "not separable from")
        lines.append(f"{mode}: {100 * r['accuracy']:.1f} % ({100 * low:.0f}-{100 * high:.0f}), {side} the teacher's "
                     f"{100 * teacher['accuracy']:.1f} % ({100 * teacher['ci95'][0]:.0f}-{100 * teacher['ci95'][1]:.0f})")
    return "\n".join(lines)


def sweep_reading(sweep: dict) -> str:
    """Notebook 04: each variant against the baseline at each fraction, from the sweep's comparisons,
    and the spread between seeds where there are several."""
    lines = []
    for c in sorted(sweep["comparisons"], key=lambda c: (c["variant"], c["fraction"])):
        lines.append(f"{c['variant']} - {c['baseline']} at {100 * c['fraction']:.0f} % of the data, {_seeds(c)} "
                     f"seed{'s' * (_seeds(c) != 1)}: {points(_difference(c))} points (95 % CI "
                     f"{interval_text(_interval(c))}): {verdict(_difference(c), _p_holm(c))}")
    spread = [r for r in sweep["summary"] if r["seeds"] > 1]
    if spread:
        widest = max(spread, key=lambda r: r["std"])
        lines.append(f"largest spread between seeds: {widest['variant']} at {100 * widest['fraction']:.0f} % "
                     f"(sd {100 * widest['std']:.1f} points over {widest['seeds']} seeds)")
    return "\n".join(lines)


def shipping_reading(recommendation: dict, teacher_train: dict | None = None) -> str:
    """Notebook 05: why this student ships, from the run's recommendation (and, when the most accurate
    student cannot explain, the teacher whose rationales the explaining student learned from)."""
    text = recommendation["reason"]
    c = recommendation.get("comparison")
    if recommendation["mode"] != "dss" and c and teacher_train and c["variant"] == "dss" and _difference(c) < 0:
        text += (f" The rationales `dss` learned from come from a teacher whose vote is right on "
                 f"{100 * teacher_train['accuracy_vote']:.1f} % of the training problems; on this run they cost "
                 f"the student {points(-_difference(c))[1:]} points.")
    return text


# --- generated blocks of README.md and docs/ ---------------------------------------------------------------


def _svamp_cv_block() -> str:
    section = load_section(SVAMP_CV_DIR, "svamp_cv")
    return f"{markdown_cv('svamp_cv', section)}\n\nIn words (`utils.report.describe_cv`): {describe_cv(section)}"


def _esnli_block() -> str:
    section = load_section(ESNLI_DIR, "esnli_sizes")
    return f"{markdown_sizes('esnli_sizes', section)}\n\nIn words (`utils.report.describe_sizes`): " \
           f"{describe_sizes(section)}"


def _esnli_steps_block() -> str:
    from utils.report import describe_steps, markdown_steps

    section = load_section(ESNLI_STEPS_DIR, "esnli_steps")
    if not section:
        return describe_steps(None)
    return f"{markdown_steps('esnli_steps', section)}\n\nIn words (`utils.report.describe_steps`): " \
           f"{describe_steps(section)}"


def _esnli_pilot_block() -> str:
    return esnli_pilot_finding() or "No pilot is committed."


def _svamp_study_block() -> str:
    return markdown_sweep("svamp_study", load_section(SVAMP_STUDY_DIR, "svamp_study"))


def _svamp_candidates_block() -> str:
    return markdown_sweep("svamp_candidates_fold0", load_section(SVAMP_CV_DIR, "svamp_candidates_fold0"))


def _demo_block() -> str:
    return markdown_sweep("demo_reference", load_report(DEMO_DIR)["evaluation"]["sweep"])


BLOCKS: dict[str, Callable[[], str]] = {
    "findings": findings_markdown, "svamp_cv": _svamp_cv_block, "esnli": _esnli_block, "esnli_steps": _esnli_steps_block,
    "esnli_pilot": _esnli_pilot_block,
    "svamp_study": _svamp_study_block, "svamp_candidates": _svamp_candidates_block, "demo_grid": _demo_block,
}
_BLOCK = re.compile(r"<!-- (\w+):begin -->\n?(.*?)\n?<!-- \1:end -->", re.S)


def blocks_in(text: str) -> dict[str, str]:
    """The generated blocks of a page: name -> the text between its begin and end markers."""
    return {m.group(1): m.group(2) for m in _BLOCK.finditer(text)}


def render_blocks(text: str) -> str:
    """``text`` with every known generated block rewritten from the reports (others left as they are)."""
    def fill(m: re.Match) -> str:
        body = BLOCKS[m.group(1)]() if m.group(1) in BLOCKS else m.group(2)
        return f"<!-- {m.group(1)}:begin -->\n{body}\n<!-- {m.group(1)}:end -->"

    return _BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.findings`` prints the findings; ``--update PAGE ...`` rewrites pages' blocks."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--update"]:
        for page in argv[1:]:
            path = Path(page)
            path.write_text(render_blocks(path.read_text()))
            print(f"updated {path}")
        return 0
    print(findings_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
