"""Notebooks: committed without outputs, and a smoke run of all five on `tiny` with reduced sizes."""

import json
from pathlib import Path

import nbformat
import pytest

from utils.__main__ import NOTEBOOKS

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_stripped_and_well_formed(name):
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name} has outputs: strip them"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].source.startswith("PROFILE = "), "one parameters cell, PROFILE first"
    import papermill

    # papermill reads every parameter (a comment with a second "=" would hide it from papermill)
    lines = [line for line in tagged[0].source.splitlines() if line.strip() and not line.startswith("#")]
    assert len(papermill.inspect_notebook(str(NB_DIR / f"{name}.ipynb"))) == len(lines)
    text = "\n".join(c.source for c in nb.cells)
    for section in ("## Summary", "## Exercises", "## Next", "write_report("):
        assert section in text, f"{name} lacks {section}"


def test_only_the_five_notebooks_exist():
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.slow
def test_smoke_run_of_all_five_notebooks(tmp_path):
    from utils.__main__ import main

    params = ["N_TRAIN=24", "N_TEST=12", "EPOCHS=1.0", "SWEEP_FRACTIONS=[0.5, 1.0]", "COST_EXAMPLES=2"]
    args = ["demo", "--runs-root", str(tmp_path), "--run-id", "smoke"]
    for p in params:
        args += ["--param", p]
    assert main(args) == 0
    run = tmp_path / "smoke"
    report = json.loads((run / "report.json").read_text())
    for section in ("teacher", "dataset", "student", "evaluation", "deploy", "timings"):
        assert section in report, f"report.json lacks {section}"
    assert report["dataset"]["splits"] == {"train": 24, "test": 12}
    assert set(report["evaluation"]["students"]) == {"standard", "distill", "dss"}
    for result in report["evaluation"]["students"].values():
        assert 0.0 <= result["accuracy"] <= 1.0 and result["n"] == 12
    assert report["evaluation"]["students"]["dss"]["parameters"] < report["evaluation"]["teacher_parameters"]
    assert report["deploy"]["reproduces_evaluation"] is True
    for name in NOTEBOOKS:
        assert (run / "notebooks" / f"{name}.ipynb").exists()
    for figure in ("04_accuracy.png", "04_fractions.png", "04_costs.png"):
        assert (run / "figures" / figure).stat().st_size > 1000
    # issue 7: the report matches its schema, every sweep accuracy is recomputable, Markdown tables
    from utils.report import render_markdown, validate_report, verify_predictions

    validate_report(report)
    sweep = report["evaluation"]["sweep"]
    assert {(c["variant"], c["fraction"]) for c in sweep["cells"]} == {
        (m, f) for m in ("standard", "distill", "dss") for f in (0.5, 1.0)}
    assert {c["variant"] for c in sweep["comparisons"]} == {"distill", "dss"}
    costs = report["evaluation"]["costs"]
    assert costs["student"]["parameters"] < costs["teacher"]["parameters"]
    assert costs["ratios"]["parameters_ratio"] == costs["teacher"]["parameters"] / costs["student"]["parameters"]
    assert verify_predictions(run) == []
    text = render_markdown(run)
    assert "| student: dss |" in text and "### sweep: test accuracy" in text and "Cost on this machine" in text
