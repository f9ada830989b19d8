"""report.json: its schema, the writer, the Markdown with raw and Holm-adjusted p-values, the
committed study's report, and that reading a report needs neither torch nor the evaluation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_cells import outcomes, write_cell

REPO = Path(__file__).resolve().parent.parent
STUDY = REPO / "data" / "results" / "svamp_study"


def _imports(module: str) -> set[str]:
    """The ``utils``/``torch`` modules a fresh interpreter holds after importing ``module``."""
    code = f"import json, sys, {module}; print(json.dumps([m for m in sys.modules if m.split('.')[0] in ('utils', 'torch')]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(json.loads(out.stdout))


def _shown(p: float) -> str:
    """A p-value as the Markdown prints it."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def test_report_loads_neither_torch_nor_the_evaluation_and_the_evaluation_not_the_report():
    assert not {"torch", "utils.evaluation", "utils.student"} & _imports("utils.report")
    assert "utils.report" not in _imports("utils.evaluation")


def test_report_schema_names_what_is_wrong():
    from utils.report import validate_report

    validate_report({"schema_version": 1})
    with pytest.raises(ValueError, match="evaluation/teacher/accuracy"):
        validate_report({"schema_version": 1, "evaluation": {"task": "arith", "n_test": 2, "students": {},
                                                              "teacher": {"accuracy": 1.5, "ci95": [0, 1], "n": 2}}})
    with pytest.raises(ValueError, match="schema_version"):
        validate_report({})


def test_a_report_with_two_variants_against_one_baseline_shows_raw_and_holm_p(tmp_path):
    from utils.report import load_report, markdown_sweep, render_markdown, validate_report, write_report
    from utils.sweep import load_cells, sweep_report

    sweep_dir = tmp_path / "sweep"
    for seed in (0, 1):
        write_cell(sweep_dir, "standard", 1.0, seed, outcomes(80, 0.5, seed))
        write_cell(sweep_dir, "dss", 1.0, seed, outcomes(80, 0.7, 10 + seed), shuffle=seed)
        write_cell(sweep_dir, "distill", 1.0, seed, outcomes(80, 0.45, 20 + seed), shuffle=5 + seed)
    (tmp_path / "config.json").write_text(json.dumps({"profile": "tiny", "task": "arith"}))
    write_report(tmp_path, "sweep", sweep_report(load_cells(sweep_dir)))
    report = load_report(tmp_path)
    validate_report(report)
    assert report["schema_version"] and report["config"]["task"] == "arith" and "versions" in report
    comps = report["sweep"]["comparisons"]
    assert {c["variant"] for c in comps} == {"dss", "distill"}
    for c in comps:
        assert c["p_value"] <= c["p_holm"] <= 1 and all(m["p_value"] <= m["p_holm"] for m in c["mcnemar"])
    assert min(c["p_holm"] for c in comps) == pytest.approx(min(1.0, 2 * min(c["p_value"] for c in comps)))
    text = render_markdown(tmp_path)
    assert "| p (bootstrap) | p (Holm) |" in text
    for c in comps:
        line = next(row for row in text.splitlines() if row.startswith(f"| {c['variant']} | label | 100% |"))
        cells = [x.strip() for x in line.strip("|").split("|")]
        assert cells[6:8] == [_shown(c["p_value"]), _shown(c["p_holm"])]
    # a report written before p_holm existed still shows both columns, computed when printed
    old = json.loads(json.dumps(report["sweep"]))
    for c in old["comparisons"]:
        del c["p_holm"]
        for m in c["mcnemar"]:
            del m["p_holm"]
    assert markdown_sweep("sweep", old) == markdown_sweep("sweep", report["sweep"])


@pytest.mark.skipif(not (STUDY / "report.json").exists(), reason="the committed study is not in this checkout")
def test_the_committed_study_verifies_and_states_holm():
    from utils.report import render_markdown, validate_report, verify_predictions

    report = json.loads((STUDY / "report.json").read_text())
    validate_report(report)
    assert verify_predictions(STUDY) == []
    assert "p (Holm)" in render_markdown(STUDY)
