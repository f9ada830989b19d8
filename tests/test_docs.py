"""The README and docs/: a front page of at most 200 lines with the commands and the findings up front,
generated blocks that match the reports they are printed from, numbers in the studies' prose that
the generated tables print, links that resolve, and executed notebooks whose code is the notebooks'."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from utils import findings
from utils.__main__ import NOTEBOOKS

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
EXECUTED = DOCS / "executed"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"
    first = "\n".join(lines[:80])
    for must in ("make demo", "make test", "jupyter lab notebooks/", "docs/executed/"):
        assert must in first, f"{must!r} is not in the README's first 80 lines"
    assert findings.findings_markdown() in first, "the findings block must be whole within the first 80 lines"


def test_the_readme_findings_are_what_the_reports_say():
    assert findings.blocks_in(README.read_text())["findings"] == findings.findings_markdown(), (
        "README.md's findings are stale: python -m utils.findings --update README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_generated_block_matches_its_report(page):
    blocks = findings.blocks_in(page.read_text())
    unknown = set(blocks) - set(findings.BLOCKS)
    assert not unknown, f"{page.name}: blocks no renderer knows: {unknown}"
    stale = [name for name, text in blocks.items() if text != findings.BLOCKS[name]()]
    assert not stale, f"{page.name}: stale blocks {stale}: python -m utils.findings --update {page.relative_to(REPO)}"


def test_the_studies_page_generates_each_studys_tables():
    assert {"svamp_cv", "esnli", "svamp_study", "svamp_candidates"} <= set(findings.blocks_in((DOCS / "studies.md").read_text()))


NUMBER = re.compile(r"(?<![\w.])[+-]?\d[\d,]*(?:\.\d+)?")
# Not claims: citation years, notebook numbers, model sizes in names (135M, 540B), the paper's name.
NOT_A_CLAIM = re.compile(r"et\s+al\.,?\s+\d{4}|[Nn]otebooks? \d\d|\b\d+(?:\.\d+)?[MB]\b|\barXiv:[\d.]+|\bv\d\b|\bt5-v1_1\b")


def prose_numbers(text: str) -> set[str]:
    """The numbers a page states outside its generated blocks, code and link targets."""
    text = re.sub(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = NOT_A_CLAIM.sub("", text)
    return {n.replace(",", "").lstrip("+-") for n in NUMBER.findall(text)}


def block_numbers(text: str) -> set[str]:
    return {n.replace(",", "") for body in findings.blocks_in(text).values() for n in re.findall(r"\d[\d,]*(?:\.\d+)?", body)}


def test_every_number_in_the_studies_prose_is_one_its_tables_print():
    text = (DOCS / "studies.md").read_text()
    loose = sorted(prose_numbers(text) - block_numbers(text))
    assert not loose, f"docs/studies.md states numbers no generated block prints: {loose}"


def test_the_number_check_catches_a_stated_number():
    page = "dss gains 8.5 points (Hsieh et al., 2023; notebook 04; a 135M student)\n<!-- esnli:begin -->\n+8.5\n<!-- esnli:end -->"
    assert prose_numbers(page) == {"8.5"} and not prose_numbers(page) - block_numbers(page)
    assert prose_numbers(page.replace("8.5 points", "9.1 points")) - block_numbers(page) == {"9.1"}


LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_figure_resolves(page):
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert targets and not missing, f"{page.name} links to paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_user_facing_text_speaks_of_the_course_not_of_how_it_was_built(page):
    assert not re.search(r"\bissues?\b", page.read_text(), re.I), f"{page.name} speaks of issues"


def test_the_readme_says_where_the_course_has_run_and_how_to_point_colab_at_a_fork():
    text = " ".join(README.read_text().split())
    assert "has not yet run on a Colab GPU" in text and "python -m utils.colab --repo" in text


# --- the executed notebooks ---------------------------------------------------------------------------


def code_cells(nb) -> list[str]:
    """A notebook's code, cell by cell, without the cell papermill injects with the run's parameters."""
    return [c.source for c in nb.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_executed_copy_runs_the_notebooks_code(name):
    source = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    executed = nbformat.read(EXECUTED / f"{name}.ipynb", as_version=4)
    assert code_cells(executed) == code_cells(source), (
        f"docs/executed/{name}.ipynb drifted from notebooks/{name}.ipynb: make executed")


def test_the_drift_check_sees_a_changed_cell():
    source = nbformat.read(REPO / "notebooks" / f"{NOTEBOOKS[0]}.ipynb", as_version=4)
    changed = nbformat.read(REPO / "notebooks" / f"{NOTEBOOKS[0]}.ipynb", as_version=4)
    next(c for c in changed.cells if c.cell_type == "code").source += "\nprint('changed')"
    assert code_cells(changed) != code_cells(source)
    injected = nbformat.v4.new_code_cell('RUN_DIR = "runs/x"', metadata={"tags": ["injected-parameters"]})
    source.cells.insert(5, injected)
    assert code_cells(source) != code_cells(changed)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_executed_copy_holds_outputs_and_no_widget_state(name):
    executed = nbformat.read(EXECUTED / f"{name}.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{name}: a cell did not run"
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2
    assert "widgets" not in executed.metadata
    text = (EXECUTED / f"{name}.ipynb").read_text()
    assert str(REPO) not in text and "application/vnd.jupyter.widget-view+json" not in text
    if name in ("01_teacher_cot", "03_multitask_student", "04_eval_vs_teacher"):
        assert "image/png" in text, f"{name}: its figures are missing"


def test_the_readme_states_the_published_runs_time():
    timings = json.loads((EXECUTED / "timings.json").read_text())
    total = round(timings["seconds"]["total"])
    assert f"{total // 60} min {total % 60} s" in README.read_text()
    assert timings["parameters"]["SWEEP_FRACTIONS"] and timings["machine"]["cores"]


def test_the_earlier_demo_row_and_the_run_to_run_gap_are_the_records():
    """The performance page's Dec 6 demo row and README's "7 min 42 s" are that run's committed record
    (docs/benchmarks/demo_timings_2026-12-06.json, the executed copy's timings of that day); the
    stated gap between the two runs is computed from the two records."""
    earlier = json.loads((README.parent / "docs" / "benchmarks" / "demo_timings_2026-12-06.json").read_text())
    latest = json.loads((EXECUTED / "timings.json").read_text())

    def minutes(record):
        total = round(record["seconds"]["total"])
        return f"{total // 60} min {total % 60} s"

    per_notebook = " / ".join(str(round(v)) for k, v in earlier["seconds"].items() if k != "total")
    performance = (README.parent / "docs" / "performance.md").read_text()
    assert f"| {minutes(earlier)} | {per_notebook} |" in performance
    assert minutes(earlier) in " ".join(README.read_text().split())
    gap = round(100 * (1 - latest["seconds"]["total"] / earlier["seconds"]["total"]))
    assert f"a day apart, {gap} % apart" in " ".join(performance.split())


def test_the_readme_states_the_recorded_test_suite_time():
    """The `make test` time on the README and the performance page is the committed record's (`make test-record`)."""
    record = json.loads((EXECUTED / "test_suite.json").read_text())
    seconds = round(record["seconds"])
    time = f"{seconds // 60} min {seconds % 60} s"
    assert record["failed"] == record["error"] == 0 and record["passed"] > 0 and record["machine"]["cores"]
    assert time in README.read_text(), time
    performance = (README.parent / "docs" / "performance.md").read_text()
    assert f"{time} ({record['passed']} passed, {record['skipped']} skipped)" in performance


def test_the_levers_figures_on_the_performance_page_are_the_benchmark_s_printed_table():
    """Every number of the levers paragraph stands in the committed output of the run that printed it."""
    import re

    docs = Path(__file__).resolve().parent.parent / "docs"
    page = (docs / "performance.md").read_text()
    paragraph = page[page.index("**All the levers at once"):page.index("**The levers, each measured")]
    printed = (docs / "benchmarks" / "levers_2026-12-06.md").read_text()
    figures = re.findall(r"\d+\.\d+x|\d+\.\d\d s", paragraph)
    assert figures, "the paragraph quotes the benchmark's figures"
    for figure in figures:
        assert figure.replace(" s", "") in printed, figure
