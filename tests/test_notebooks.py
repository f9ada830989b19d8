"""Notebooks: committed without outputs, their anatomy (parameters, reading guides, exercises with
expected outcomes, the record before the summary, short markdown cells, links that resolve), a
notebook opened alone on an empty run folder, and a smoke run of all five on `tiny` with reduced sizes."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from utils.__main__ import DEMO_PARAMETERS, NOTEBOOKS

REPO = Path(__file__).resolve().parent.parent
NB_DIR = REPO / "notebooks"
SOLUTIONS = sorted((NB_DIR / "solutions").glob("*.ipynb"))


def read(name: str):
    return nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)


def parameters_cell(nb):
    return next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


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


def markdown_after(nb, heading: str) -> str:
    """The markdown from the cell holding ``heading`` to the end, as one text."""
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and heading in c.source)
    return "\n".join(c.source for c in nb.cells[start:] if c.cell_type == "markdown")


def test_only_the_five_notebooks_exist():
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_asks_colab_for_a_gpu_and_keeps_cells_short(name):
    nb = read(name)
    assert nb.metadata["accelerator"] == "GPU" and nb.metadata["colab"]["gpuType"] == "T4"
    setup = next(c for c in nb.cells if c.cell_type == "code")
    assert "-r /content/course/requirements-colab.txt" in setup.source and "/requirements.txt" not in setup.source
    for cell in nb.cells:  # the parameters cell lists one knob a line; every other code cell stays short
        if cell.cell_type == "code" and cell is not parameters_cell(nb):
            assert len(cell.source.splitlines()) <= 15, f"{name}: a {len(cell.source.splitlines())}-line cell"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_record_comes_before_the_summary_and_every_exercise_says_what_to_expect(name):
    nb = read(name)
    record = max(i for i, c in enumerate(nb.cells) if "write_report(" in c.source)
    summary = next(i for i, c in enumerate(nb.cells) if "## Summary" in c.source)
    assert record < summary, f"{name}: write_report must come before the Summary"
    exercises = markdown_after(nb, "## Exercises").split("## Exercises")[1].split("## Next")[0]
    items = re.findall(r"^\d+\. ", exercises, flags=re.M)
    assert items and exercises.count("*Expected:*") == len(items), f"{name}: an exercise without its expected outcome"


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize("path", [NB_DIR / f"{n}.ipynb" for n in NOTEBOOKS] + SOLUTIONS, ids=lambda p: p.stem)
def test_no_markdown_cell_runs_over_150_words(path):
    nb = nbformat.read(path, as_version=4)
    long = [(i, words(c.source)) for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and words(c.source) > 150]
    assert not long, f"{path.name}: markdown cells over 150 words (index, words): {long}"


def test_notebook_04_stays_short():
    assert len(read("04_eval_vs_teacher").cells) <= 30


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_header_has_the_badge_the_executed_copy_and_what_it_reads_and_writes(name):
    from utils.colab import badge

    header = read(name).cells[0].source + "\n" + read(name).cells[1].source
    assert header.startswith(f"# {name[:2]} · ")
    assert badge(f"notebooks/{name}.ipynb") in header
    assert f"(../docs/executed/{name}.ipynb)" in header
    assert "**Reads:**" in header and "**Writes:**" in header


LINK = re.compile(r"\]\(((?:\.\./|\./)?[\w./-]+?)(#[\w-]+)?\)")


@pytest.mark.parametrize("path", [NB_DIR / f"{n}.ipynb" for n in NOTEBOOKS] + SOLUTIONS, ids=lambda p: p.stem)
def test_every_relative_link_in_a_notebook_resolves(path):
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    links = [m.group(1) for m in LINK.finditer(text) if not m.group(1).startswith("http")]
    missing = [link for link in links if not (path.parent / link).exists()]
    assert not missing, f"{path.name} links to files that do not exist: {missing}"


def test_the_link_check_finds_a_broken_link():
    text = "see [x](../docs/nowhere.md), [y](https://a.b/c) and [z](../README.md#two-commands)"
    assert [m.group(1) for m in LINK.finditer(text)] == ["../docs/nowhere.md", "../README.md"]


FIGURE_OR_TABLE = re.compile(r"plt\.show\(\)|^(?:display\()?pd\.DataFrame\(|^token_table\(|^table\.iloc", re.M)


def is_reading_guide(cell) -> bool:
    """A reading guide: markdown opening with **Reading..., or a code cell that prints one from the run."""
    if cell.cell_type == "markdown":
        return cell.source.startswith("**Reading")
    return "Reading it" in cell.source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_figure_and_table_is_followed_by_a_reading_guide(name):
    cells = read(name).cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and FIGURE_OR_TABLE.search(cell.source):
            # the first markdown or "Reading it" cell after it (a second table may come first) is its guide
            guide = next((c for c in cells[i + 1 :] if c.cell_type == "markdown" or is_reading_guide(c)), None)
            assert guide is not None and is_reading_guide(guide), f"{name}[{i}] has no reading guide after it"


STUDENT_PARAMETERS = ("STUDENT_MODEL", "STUDENT_FAMILY", "STUDENT_LAYERS", "LEARNING_RATE", "EPOCHS", "BATCH_SIZE",
                      "ALPHA", "LABEL_SOURCE", "RATIONALE_ANSWER", "CHAT_TEMPLATE", "LORA", "BF16")


@pytest.mark.parametrize("name", ["03_multitask_student", "04_eval_vs_teacher"])
def test_the_student_can_be_swapped_from_the_parameters_cell(name):
    import papermill

    params = papermill.inspect_notebook(str(NB_DIR / f"{name}.ipynb"))
    assert set(STUDENT_PARAMETERS) <= set(params)
    for line in parameters_cell(read(name)).source.splitlines():
        if line and not line.startswith("#"):
            variable, comment = line.split("=", 1)[0].strip(), line.partition("#")[2]
            assert variable.isupper() and "|" in comment, f"{name}: {variable} needs ALL_CAPS and its allowed values"
    from utils.config import load_config

    # what the cell passes: None keeps the profile's value, the rest are typed config fields
    config = load_config("tiny", **{k: v for k, v in {"alpha": 0.2, "lora": None, "bf16": False}.items() if v is not None})
    assert (config.alpha, config.lora, config.bf16) == (0.2, None, False)


def test_the_sweep_runs_the_full_grid_by_default_and_the_demo_a_smaller_one_it_names():
    import papermill

    from utils.__main__ import check_params

    params = papermill.inspect_notebook(str(NB_DIR / "04_eval_vs_teacher.ipynb"))
    assert params["SWEEP_SEEDS"]["default"] == "3"
    assert params["SWEEP_FRACTIONS"]["default"] == "[0.25, 0.5, 1.0]"
    assert DEMO_PARAMETERS == {"SWEEP_FRACTIONS": [0.5, 1.0], "SWEEP_SEEDS": 1, "COST_EXAMPLES": 4}
    check_params(DEMO_PARAMETERS)  # every one is declared by a notebook
    text04 = "\n".join(c.source for c in read("04_eval_vs_teacher").cells)
    assert "Budget." in text04 and f"SWEEP_FRACTIONS = {DEMO_PARAMETERS['SWEEP_FRACTIONS']}" in text04
    assert "demo_reference" in text04
    assert "COST_EXAMPLES = 4" in "\n".join(c.source for c in read("05_deploy").cells)


def test_the_committed_demo_reference_holds_the_full_grid():
    from utils.report import load_report, verify_predictions

    reference = REPO / "data" / "results" / "demo_reference"
    cells = load_report(reference)["evaluation"]["sweep"]["cells"]
    grid = {(c["variant"], c["fraction"], c["seed"]) for c in cells}
    assert grid == {(m, f, s) for m in ("standard", "distill", "dss") for f in (0.25, 0.5, 1.0)
                    for s in (123, 124, 125)}
    assert verify_predictions(reference) == []


def test_notebook_05_ships_the_recommendation_and_records_the_refusal():
    text = "\n".join(c.source for c in read("05_deploy").cells)
    assert 'MODE or recommendation["mode"]' in text and "rationale=True" in text
    for key in ("shipped_mode", "recommended_mode", "refused_rationale"):
        assert f'"{key}"' in text
    text04 = "\n".join(c.source for c in read("04_eval_vs_teacher").cells)
    assert "recommend_student(student_evals)" in text04 and '"recommendation": recommendation' in text04


def test_solutions_exist_stripped_and_valid_and_every_notebook_points_to_them():
    assert [p.name for p in SOLUTIONS] == ["exercise_solutions.ipynb"]
    nb = nbformat.read(SOLUTIONS[0], as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "solutions have outputs: strip them"
    text = "\n".join(c.source for c in nb.cells)
    for name in NOTEBOOKS:
        assert f"## {name[:2]} · " in text, f"no solutions for notebook {name}"
        assert "notebooks/solutions/exercise_solutions.ipynb" in "\n".join(c.source for c in read(name).cells)


# --- a notebook opened alone (Colab opens each in a fresh runtime) ------------------------------------


def test_notebook_02_alone_on_an_empty_run_folder_names_the_command(tmp_path, capsys):
    from utils.config import MissingStageError, require_stage, resolve_run_dir

    # notebook 02's first data cell makes exactly these calls (require_earlier wraps require_stage)
    assert any('require_earlier(run_dir, "teacher", run_missing=RUN_EARLIER' in c.source
               for c in read("02_rationale_dataset").cells if c.cell_type == "code")
    run_dir = resolve_run_dir(tmp_path / "fresh")
    assert "created (empty)" in capsys.readouterr().out
    with pytest.raises(MissingStageError) as error:
        require_stage(run_dir, "teacher")
    message = str(error.value)
    assert str(run_dir) in message and f"python -m utils run 01 --run-dir {run_dir}" in message
    assert "RUN_EARLIER = True" in message and "RUNS_ROOT" in message
    assert isinstance(error.value, FileNotFoundError)  # callers that caught the old error still do


def test_notebook_03_alone_runs_the_missing_notebooks_first_when_allowed(tmp_path, capsys):
    from utils.config import require_stage, stage_command

    ran = []

    def fake_runner(notebook, run_dir, profile):  # stands in for `python -m utils run NN`: writes the outputs
        ran.append((notebook, profile))
        outputs = {"01": ["teacher/train_records.jsonl", "teacher/test_records.jsonl"],
                   "02": ["dataset/dataset_dict.json"]}[notebook[:2]]
        for path in outputs:
            (run_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / path).write_text("{}")

    assert require_stage(tmp_path, "dataset", run_missing=True, profile="tiny", runner=fake_runner) == [
        "01_teacher_cot", "02_rationale_dataset"]
    assert ran == [("01_teacher_cot", "tiny"), ("02_rationale_dataset", "tiny")]
    assert "running 01_teacher_cot headless first" in capsys.readouterr().out
    assert require_stage(tmp_path, "dataset", runner=fake_runner) == []  # nothing missing: nothing runs
    command = stage_command("02_rationale_dataset", tmp_path, "colab")
    assert command[1:] == ["-m", "utils", "run", "02", "--run-dir", str(tmp_path), "--profile", "colab"]


def test_a_runner_that_leaves_nothing_behind_is_an_error(tmp_path):
    from utils.config import MissingStageError, require_stage

    with pytest.raises(MissingStageError, match="left no outputs"):
        require_stage(tmp_path, "teacher", run_missing=True, runner=lambda *args: None)


def test_runs_on_a_folder_without_symlinks_are_found_through_latest_txt(tmp_path, monkeypatch):
    from pathlib import Path as P

    from utils.config import latest_run_dir, make_run_dir, resolve_run_dir

    def no_symlinks(self, target):
        raise OSError("Operation not supported")  # as on Google Drive

    monkeypatch.setattr(P, "symlink_to", no_symlinks)
    run = make_run_dir(tmp_path, "20260101-000000")
    assert (tmp_path / "latest.txt").read_text() == "20260101-000000"
    assert latest_run_dir(tmp_path) == run and resolve_run_dir(None, root=tmp_path) == run


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
    # issue 17: 05 ships what 04 recommends, and a label-only student of the run refuses a rationale
    recommended = report["evaluation"]["recommendation"]["mode"]
    assert report["deploy"]["shipped_mode"] == report["deploy"]["recommended_mode"] == recommended
    assert report["deploy"]["refused_rationale"] is True
    assert report["deploy"]["refusing_mode"] in ("standard", "distill")
    executed = nbformat.read(run / "notebooks" / "05_deploy.ipynb", as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert f"shipping the {recommended} student" in outputs and "refused = True" in outputs
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
