"""Sweeps: resumable after a kill, a bad variant fails before training, comparisons pair items by
id; and the study recipe on the paper's data (fixtures in the authors' layout)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.evaluation_data import arith_dataset
from tests.fake_cells import outcomes, write_cell

REPO = Path(__file__).resolve().parent.parent


# --- paired comparisons against the baseline -------------------------------------------------------


def test_comparisons_pair_items_by_id_whatever_order_the_rows_were_saved_in(tmp_path):
    from utils.sweep import compare_to_baseline, load_cells

    results = {"standard": outcomes(60, 0.5, 1), "dss": outcomes(60, 0.65, 2)}
    for variant, correct in results.items():
        write_cell(tmp_path / "ordered", variant, 1.0, 0, correct)
        write_cell(tmp_path / "shuffled", variant, 1.0, 0, correct, shuffle=len(variant))
    # Ids that sort differently as text and as numbers ("t10" < "t2"): only a pairing by id is
    # immune to how the rows were written.
    ordered = compare_to_baseline(load_cells(tmp_path / "ordered"))
    assert ordered == compare_to_baseline(load_cells(tmp_path / "shuffled"))
    assert len(ordered) == 1 and ordered[0]["p_value"] <= ordered[0]["p_holm"]
    assert ordered[0]["difference"] == pytest.approx((sum(results["dss"].values()) - sum(results["standard"].values())) / 60)


def test_a_cell_scored_on_other_items_than_its_baseline_is_an_error(tmp_path):
    from utils.sweep import compare_to_baseline, load_cells

    base = outcomes(20, 0.5, 1)
    write_cell(tmp_path, "standard", 1.0, 0, base)
    other = {("x" + k if k in ("t3", "t7") else k): v for k, v in base.items()}
    write_cell(tmp_path, "dss", 1.0, 0, other)
    with pytest.raises(ValueError, match=r"dss \(label\) against standard at fraction 1.*ids differ, "
                                         r"2 only in the first \('xt3', 'xt7'\); 2 only in the second \('t3', 't7'\)"):
        compare_to_baseline(load_cells(tmp_path))


# --- a real sweep, killed and resumed --------------------------------------------------------------


SWEEP_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from datasets import load_from_disk
from utils.config import load_config
from utils.sweep import run_sweep
config = load_config("tiny", student_layers=2, epochs=1.0, batch_size=4, extra={{"save_steps": 0}})
run_sweep(config, (0.5, 1.0), ("standard", "dss"), seeds=(0,), dataset=load_from_disk({data!r}), run_dir={run!r},
          log=lambda line: print(line, flush=True))
"""


@pytest.mark.slow
def test_sweep_resumes_after_a_kill_and_skips_finished_cells(tmp_path):
    from utils.report import render_markdown, validate_report, verify_predictions, write_report
    from utils.sweep import load_cells, sweep_report

    data = tmp_path / "data"
    arith_dataset(8, 4).save_to_disk(str(data))
    run = tmp_path / "run"
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP_SCRIPT.format(repo=str(REPO), data=str(data), run=str(run)))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(run.glob("sweep/cells/*/*/cell.json")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = list(run.glob("sweep/cells/*/*/cell.json"))
    assert len(first) == 1, "the kill came after one finished cell"
    before = first[0].read_text()
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("finished before, skipped") == 1
    assert first[0].read_text() == before, "a finished cell was redone"
    cells = load_cells(run / "sweep")
    assert {(c["variant"], c["fraction"]) for c in cells} == {(m, f) for m in ("standard", "dss") for f in (0.5, 1.0)}
    assert {c["n_train"] for c in cells} == {4, 8}
    assert all(c["resumed_from"] is None for c in cells), "no checkpoints here (save_steps 0): nothing resumed"
    assert not list(run.glob("sweep/cells/*/*/model")), "weights are removed once a cell is scored"
    # the report: schema, recomputable accuracies, Markdown
    (run / "config.json").write_text(json.dumps({"profile": "tiny", "task": "arith"}))
    write_report(run, "sweep", sweep_report(cells))
    report = json.loads((run / "report.json").read_text())
    validate_report(report)
    assert verify_predictions(run) == []
    text = render_markdown(run)
    assert "### sweep: test accuracy" in text and "| dss | label |" in text and "Paired against `standard`" in text
    # a tampered prediction is caught
    path = run / "sweep" / cells[0]["dir"] / cells[0]["results"]["test"]["label"]["predictions"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["prediction"] = rows[0]["gold"] if not rows[0]["correct"] else "nonsense"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(verify_predictions(run)) == 1


def test_a_bad_variant_fails_before_any_training(tmp_path):
    from utils.config import load_config
    from utils.sweep import Variant, run_sweep

    config = load_config("tiny")
    data = arith_dataset(4, 2)
    with pytest.raises(ValueError, match="unknown config field"):
        run_sweep(config, (1.0,), dataset=data, run_dir=tmp_path, variants=[Variant("x", "dss", {"alhpa": 0.3})])
    with pytest.raises(ValueError, match="wants dataset 'all'"):
        run_sweep(config, (1.0,), dataset=data, run_dir=tmp_path, variants=[Variant("x", "dss", dataset="all")])
    with pytest.raises(ValueError, match="alpha must lie"):
        run_sweep(config, (1.0,), dataset=data, run_dir=tmp_path, variants=[Variant("x", "dss", {"alpha": 2.0})])
    assert not list(tmp_path.glob("sweep/cells/*"))


# --- the study recipe on the paper's data (fixtures in the authors' layout) -----------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "paper_datasets"


@pytest.mark.parametrize("task", ["svamp", "cqa"])
def test_study_datasets_carve_validation_from_train_only(task):
    from utils.studies.fractions import study_datasets

    data = study_datasets(FIXTURES, task, validation_fraction=0.4)
    assert set(data) == {"all", "correct"}
    for dd in data.values():
        ids = {split: set(dd[split]["id"]) for split in ("train", "validation", "test")}
        assert ids["validation"] and not ids["validation"] & ids["train"]
        assert not (ids["train"] | ids["validation"]) & ids["test"]
        assert ids == {split: set(data["all"][split]["id"]) for split in ids}, "the same split for both policies"
    kept = sum(1 for r in data["correct"]["train"]["rationale"] if r)
    assert kept <= sum(1 for r in data["all"]["train"]["rationale"] if r)


def test_study_config_per_profile_and_bad_choices():
    from utils.studies.common import study_config

    tiny = study_config("svamp", "tiny")
    assert (tiny.task, tiny.student_layers, tiny.n_train, tiny.max_ops) == ("svamp", 6, None, None)
    assert tiny.rationale_answer is True
    paper = study_config("cqa", "paper")
    assert paper.student_model == "google/t5-v1_1-base" and paper.student_family == "seq2seq"
    with pytest.raises(ValueError, match="Tasks: svamp, cqa, esnli, anli1"):
        study_config("arith")
    with pytest.raises(ValueError, match="Valid profiles"):
        study_config("svamp", "huge")


def test_the_variant_is_chosen_on_validation_never_on_test():
    from utils.studies.fractions import best_variant

    def cell(variant, val_label, val_rat, test_label):
        return {"variant": variant, "fraction": 0.5, "results": {
            "validation": {"label": {"accuracy": val_label}, "rationale": {"accuracy": val_rat}},
            "test": {"label": {"accuracy": test_label}, "rationale": {"accuracy": 0.0}}}}

    cells = [cell("dss", 0.30, 0.10, 0.90), cell("dss-all", 0.20, 0.35, 0.10)]
    assert best_variant(cells, ["dss", "dss-all"]) == ("dss-all", "rationale")
    with pytest.raises(RuntimeError, match="ablation"):
        best_variant([], ["dss"])
