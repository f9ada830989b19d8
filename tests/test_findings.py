"""utils.findings: the course's findings in words, read from the reports (so the README, docs/studies.md
and the notebooks' "Reading it" cells follow the numbers), and the generated blocks of the pages."""

import copy
import json

import pytest

from utils import findings
from utils.report import load_report

SIZES = load_report(findings.ESNLI_DIR)["esnli_sizes"]


def write_report(folder, name, section):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({"schema_version": 1, name: section}))
    return folder


def test_the_three_findings_name_their_data_their_runs_and_an_interval():
    demo, svamp, esnli = findings.findings()
    assert demo.startswith("**`tiny` demo**") and "seeds" in demo and "95 % CI" in demo and "ships" in demo
    assert svamp.startswith("**SVAMP**") and "one training run per fold" in svamp and "95 % CI" in svamp
    assert esnli.startswith("**e-SNLI**") and "seeds" in esnli and "95 % CI" in esnli
    assert findings.findings_markdown().splitlines() == [f"- {line}" for line in (demo, svamp, esnli)]


def test_the_demo_finding_reads_the_largest_fraction_and_the_shipped_student():
    report = load_report(findings.DEMO_DIR)
    c = findings.demo_comparison(report)
    assert c["variant"] == "dss" and c["fraction"] == max(x["fraction"] for x in report["evaluation"]["sweep"]["comparisons"])
    line = findings.demo_finding()
    assert f"{100 * c['difference']:+.1f} points" in line
    assert f"({100 * c['ci95'][0]:+.1f} to {100 * c['ci95'][1]:+.1f}" in line.replace("95 % CI ", "")
    assert f"`{report['evaluation']['recommendation']['mode']}` ships" in line
    assert f"{100 * report['teacher']['train']['accuracy_vote']:.1f} %" in line


def test_the_svamp_finding_follows_its_report(tmp_path):
    section = copy.deepcopy(load_report(findings.SVAMP_CV_DIR)["svamp_cv"])
    dss = next(c for c in section["comparisons"] if c["variant"] == "dss")
    assert "not significantly different" in findings.svamp_finding()
    dss.update(difference=0.05, ci95=[0.01, 0.09], p_holm=0.01)
    line = findings.svamp_finding(write_report(tmp_path / "cv", "svamp_cv", section))
    assert "+5.0 points (95 % CI +1.0 to +9.0" in line and "significantly above" in line
    assert findings.svamp_finding(tmp_path / "nowhere").endswith("has not finished a fold yet.")


def test_esnli_falls_back_to_the_epoch_capped_study_and_says_so(tmp_path):
    line = findings.esnli_finding(steps_dir=tmp_path / "no-steps-yet")
    assert "epoch-capped" in line and f"{len(SIZES['design']['seeds'])} seeds" in line
    assert "hierarchical bootstrap over 3 seeds" in line
    row = max((r for r in SIZES["data_efficiency"]["rows"] if r["variant"] == "dss"), key=lambda r: r["size"])
    assert f"`dss` on {row['size']:,} items" in line and f"{100 * row['difference']:+.1f} points" in line
    assert row["verdict"] in line


def test_esnli_prefers_the_matched_steps_study_when_its_report_has_answers(tmp_path):
    def row(question, variant, size, baseline, baseline_size, difference, ci95, verdict, **extra):
        return {"question": question, "variant": variant, "size": size, "baseline": baseline,
                "baseline_size": baseline_size, "seeds": [0, 1, 2, 3, 4], "k": 5, "difference": difference,
                "ci95": ci95, "item_only": {"ci95": [0, 0]}, "verdict": verdict, **extra}

    rows = [row("a", "dss", 250, "standard", 250, 0.031, [-0.012, 0.074], "not significantly different"),
            row("a", "dss-all4", 250, "standard", 250, 0.05, [0.01, 0.09], "significantly above"),
            row("b", "dss-all4", 250, "dss", 250, 0.02, [-0.01, 0.05], "not significantly different"),
            row("c", "dss", 250, "standard", 1000, -0.09, [-0.12, -0.06], "significantly below"),
            row("c", "dss", 500, "standard", 1000, -0.04, [-0.07, -0.01], "significantly below",
                equivalence={"margin": 0.02, "ci90": [-0.065, -0.015], "verdict": "below"})]
    section = {"questions": {"rows": rows}, "grid": {"finished": 30, "expected": 30}}
    steps = write_report(tmp_path / "steps", "esnli_steps", section)
    line = findings.esnli_finding(steps_dir=steps)
    assert "matched optimizer steps, 5 seeds" in line and "epoch-capped" not in line
    assert "(a) `dss` on 250 - `standard` on 250 = +3.1 (95 % CI -1.2 to +7.4): not significantly different" in line
    assert "; `dss-all4` on 250 - `standard` on 250 = +5.0 (95 % CI +1.0 to +9.0): significantly above; (b)" in line
    assert "(b) `dss-all4` on 250 - `dss` on 250 = +2.0" in line
    assert "(c) `dss` on 500 - `standard` on 1,000 = -4.0 (95 % CI -7.0 to -1.0): significantly below, " \
           "not shown to be within the ±2-point margin (90% CI -6.5 to -1.5)." in line
    assert "`dss` on 250 - `standard` on 1,000" not in line  # (c) at the largest size only
    section["plateau"] = {"cells": [{"variant": "dss-all4", "size": 250, "seed": s, "plateaued": s != 4} for s in range(5)]}
    line = findings.esnli_finding(steps_dir=write_report(tmp_path / "q", "esnli_steps", section))
    assert "(b) `dss-all4` on 250 - `dss` on 250 = +2.0 (95 % CI -1.0 to +5.0): not significantly different " \
           "(dss-all4 @ 250 short of its plateau at 1 of 5 seeds)" in line
    del section["plateau"]
    section["grid"]["finished"] = 12
    rows[0].update(seeds=[0, 1], k=2)  # a partial grid: the line says its rows rest on different seed counts
    line = findings.esnli_finding(steps_dir=write_report(tmp_path / "p", "esnli_steps", section))
    assert "partial grid, 12 of 30 cells; 2-5 seeds a comparison," in line
    empty = write_report(tmp_path / "started", "esnli_steps", {"questions": {"rows": []}})  # no answers yet
    assert "epoch-capped" in findings.esnli_finding(steps_dir=empty)


@pytest.mark.parametrize("difference, p, expected", [(0.05, 0.01, "significantly above"),
                                                      (-0.05, 0.01, "significantly below"),
                                                      (0.05, 0.2, "not significantly different")])
def test_the_verdict_is_the_reports_rule(difference, p, expected):
    assert findings.verdict(difference, p) == expected


def test_the_reading_cells_word_the_run_they_are_given():
    report = load_report(findings.DEMO_DIR)
    train, test = report["teacher"]["train"], report["teacher"]["test"]
    assert f"{100 * train['correct_rationale_yield']:.1f} %" in findings.teacher_reading(train, test)
    students = findings.students_reading(report["evaluation"]["students"], report["evaluation"]["teacher"])
    assert students.splitlines()[0].startswith("standard: 84.0 %")  # the most accurate first
    sweep = findings.sweep_reading(report["evaluation"]["sweep"])
    assert "dss - standard at 100 % of the data, 3 seeds: -22.7 points" in sweep
    assert "largest spread between seeds: dss at 100 %" in sweep
    shipping = findings.shipping_reading(report["evaluation"]["recommendation"], train)
    assert shipping.startswith(report["evaluation"]["recommendation"]["reason"])
    assert f"right on {100 * train['accuracy_vote']:.1f} %" in shipping and "cost the student 19.0 points" in shipping


def test_shipping_reading_adds_nothing_when_dss_ships():
    recommendation = {"mode": "dss", "reason": "dss ships.", "comparison": {"variant": "dss", "difference": -0.01}}
    assert findings.shipping_reading(recommendation, {"accuracy_vote": 0.2}) == "dss ships."


def test_a_pilot_is_read_beside_the_grid_cell_it_repeats_at_a_larger_cap(tmp_path):
    """The pilot paragraph reads the pilot's own curve and applies the plateau rule at the pilot's cap
    (here the best comes at step 400 of 640: plateaued), and sets the grid's cell of the same variant,
    size and seed beside it, read from the committed grid (dss-all4 @ 250, seed 0: still learning)."""
    name = "f0.0290057-s0"
    grid_cell = findings.ESNLI_STEPS_DIR / "esnli_steps" / "cells" / "dss-all4" / name / "cell.json"
    pilot = json.loads(grid_cell.read_text())
    pilot.update(max_steps=640, validation_curve=[[s, 0.6 + (0.1 if s == 400 else 0.0)] for s in range(40, 641, 40)])
    pilot["results"]["test"]["label"]["accuracy"] = 0.75
    folder = tmp_path / "esnli_steps_pilot_640" / "cells" / "dss-all4" / name
    folder.mkdir(parents=True)
    (folder / "cell.json").write_text(json.dumps(pilot))
    text = findings.esnli_pilot_finding(tmp_path)
    assert text.startswith("`dss-all4` on 250 items, seed 0: the pilot, 640 optimizer steps: validation accuracy 40 60.0")
    assert "best at step 400, the last quarter adds -10.0 points (-20 of 204 items): plateaued; test accuracy 75.0 %" in text
    grid = json.loads(grid_cell.read_text())
    assert f"the grid cell, 320 optimizer steps: validation accuracy 40 {100 * grid['validation_curve'][0][1]:.1f}" in text
    assert "still learning" in text.split("the grid cell")[1]
    assert findings.esnli_pilot_finding(tmp_path / "none") == ""


def test_the_committed_pilot_agrees_with_its_predictions_and_took_its_steps():
    """The committed pilot the studies page reads: its test accuracy is its saved predictions' share
    correct, on the grid's test items, and it took the steps it was given."""
    cells = sorted(findings.ESNLI_PILOT_DIR.glob("esnli_steps_pilot_*/cells/*/*/cell.json"))
    assert cells, "no committed pilot"
    def predictions(folder):
        return [json.loads(line) for line in (folder / "predictions_test_label.jsonl").read_text().splitlines()]

    grid = next((findings.ESNLI_STEPS_DIR / "esnli_steps" / "cells" / "standard").iterdir())
    test_ids = {r["id"] for r in predictions(grid)}
    assert len(test_ids) == load_report(findings.ESNLI_STEPS_DIR)["esnli_steps"]["test_items"]
    for path in cells:
        cell = json.loads(path.read_text())
        rows = predictions(path.parent)
        assert cell["results"]["test"]["label"]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
        assert {r["id"] for r in rows} == test_ids
        assert cell["optimizer_steps"] == cell["max_steps"] == int(path.parts[-5].rsplit("_", 1)[1])


def test_render_blocks_rewrites_known_blocks_and_leaves_the_rest():
    page = "a\n<!-- findings:begin -->\nstale\n<!-- findings:end -->\nb\n<!-- other:begin -->\nmine\n<!-- other:end -->\n"
    rendered = findings.render_blocks(page)
    assert findings.blocks_in(rendered) == {"findings": findings.findings_markdown(), "other": "mine"}
    assert rendered.startswith("a\n") and rendered.endswith("b\n<!-- other:begin -->\nmine\n<!-- other:end -->\n")
    assert findings.render_blocks(rendered) == rendered  # idempotent


def test_findings_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, utils.findings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=findings.REPO_ROOT).stdout.strip()
    assert out == "False"
