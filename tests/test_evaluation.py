"""Evaluation: the metric on hand-made predictions, paired statistics, the sweep (resumable after a
kill), the report schema and its Markdown, all on the real bundled model where a model is needed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from utils.evaluation import (
    accuracy_from_predictions,
    bootstrap_ci,
    compare_costs,
    describe_costs,
    evaluate_student,
    latency_stats,
    mcnemar,
    paired_bootstrap,
)
from utils.tasks import task_correct

REPO = Path(__file__).resolve().parent.parent


# --- the metric on hand-made predictions -----------------------------------------------------------

HOSTILE = ["__import__('os').system('echo hi')", "open('/etc/passwd').read()", "9 ** 9 ** 9", "(lambda: 3)()",
           "1 / 0", "x + 1", "3 + 4; import os", "'7'", "[7][0]"]


@pytest.mark.parametrize("task", ["arith", "svamp"])
def test_equation_metric_scores_values_and_rejects_everything_else(task):
    gold = "( 3.0 + 4.0 )"
    assert task_correct(task, "( 3 + 4 )", gold)
    assert task_correct(task, "4 + 3", gold)
    assert task_correct(task, "7", gold)
    assert not task_correct(task, "( 3 + 5 )", gold)
    for bad in ["", None, "seven", "( 3 + ", *HOSTILE]:
        assert not task_correct(task, bad, gold), bad


def test_label_metric_for_classification_tasks():
    assert task_correct("esnli", "Entailment", "entailment")
    assert not task_correct("esnli", "contradiction", "entailment")
    assert not task_correct("esnli", "", "entailment")
    assert not task_correct("esnli", HOSTILE[0], "entailment")


def test_accuracy_is_recomputed_from_gold_and_prediction_not_from_the_saved_flag():
    rows = [{"prediction": "( 2 + 2 )", "gold": "4", "correct": False},
            {"prediction": "__import__('os')", "gold": "4", "correct": True},
            {"prediction": None, "gold": "4", "correct": True},
            {"prediction": "8 / 2", "gold": "( 2 * 2 )", "correct": False}]
    assert accuracy_from_predictions(rows, "svamp") == 0.5
    with pytest.raises(ValueError, match="No predictions"):
        accuracy_from_predictions([], "svamp")


def test_bootstrap_interval_brackets_the_accuracy():
    correct = [True] * 30 + [False] * 70
    lo, hi = bootstrap_ci(correct)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45
    assert bootstrap_ci([True] * 10) == (1.0, 1.0)


def test_mcnemar_exact_values():
    # 3 items only a gets right, 1 only b: two-sided exact binomial p = 2 * P(X <= 1 | n=4) = 0.625
    assert mcnemar([1, 1, 1, 0, 1], [0, 0, 0, 1, 1]) == {"a_only": 3, "b_only": 1, "p_value": 0.625}
    assert mcnemar([1, 0], [1, 0])["p_value"] == 1.0
    assert mcnemar([1] * 12, [0] * 12)["p_value"] == pytest.approx(2 / 2**12)
    with pytest.raises(ValueError, match="same items"):
        mcnemar([1], [1, 0])


def test_paired_bootstrap_sees_a_real_difference_and_no_difference():
    same = [[i % 2 == 0 for i in range(100)]]
    result = paired_bootstrap(same, same)
    assert result["difference"] == 0 and result["p_value"] == 1.0
    better = [[i % 10 != 0 for i in range(100)] for _ in range(3)]  # 90% on every seed
    worse = [[i % 2 == 0 for i in range(100)] for _ in range(3)]  # 50%
    result = paired_bootstrap(better, worse)
    assert result["difference"] == pytest.approx(0.4)
    assert result["p_value"] < 0.01 and result["ci95"][0] > 0.25
    with pytest.raises(ValueError, match="same test items"):
        paired_bootstrap([[True]], [[True, False]])


def test_cost_ratios_are_computed_from_measurements():
    stats = latency_stats([0.1, 0.2, 0.3, 0.4], batch_seconds=0.5, batch_items=4)
    assert stats["latency_ms_p50"] == pytest.approx(250) and stats["throughput_batched"] == 8
    student = {"parameters": 50, "size_mb": 100.0, "latency_ms_p50": 20.0, "throughput_batched": 40.0}
    teacher = {"parameters": 150, "size_mb": 500.0, "latency_ms_p50": 400.0, "throughput_batched": 2.0}
    ratios = compare_costs(student, teacher)
    assert ratios == {"parameters_ratio": 3.0, "size_ratio": 5.0, "latency_p50_ratio": 20.0,
                      "throughput_batched_ratio": 20.0}
    assert "3.0 times fewer parameters" in describe_costs(ratios)
    assert compare_costs(student, {"parameters": None})["parameters_ratio"] is None


# --- a real model, real generation ---------------------------------------------------------------


def _dataset(n_train: int, n_test: int) -> DatasetDict:
    from utils.tasks import load_task

    def rows(split, n):
        out = []
        for ex in load_task("arith", split, n):
            value = ex["answer"]
            out.append({"id": ex["id"], "input": ex["input"], "label": ex["equation"], "teacher_label": ex["equation"],
                        "rationale": f"We compute {ex['equation']} = {value}." if split == "train" else "",
                        "teacher_correct": True})
        return Dataset.from_list(out)

    return DatasetDict({"train": rows("train", n_train), "test": rows("test", n_test)})


@pytest.fixture(scope="module")
def two_layer_student(tmp_path_factory):
    from utils.models import make_layer_subset_student

    return make_layer_subset_student("smollm2-135m-instruct", 2, tmp_path_factory.mktemp("s") / "s2")


@pytest.mark.slow
def test_every_inference_method_saves_what_it_scored(two_layer_student):
    from utils.models import load_model, load_tokenizer
    from utils.rationales import parse_cot

    model, tok = load_model(two_layer_student, "causal"), load_tokenizer(two_layer_student)
    test = _dataset(1, 3)["test"]
    for inference in ("label", "rationale", "self_consistency"):
        result = evaluate_student(model, tok, test, "causal", "arith", max_new_tokens=8, inference=inference,
                                  rationale_tokens=12, num_samples=2)
        assert result["n"] == 3 and result["inference"] == inference
        assert result["accuracy"] == accuracy_from_predictions(result["predictions"], "arith")
        for row in result["predictions"]:
            if inference == "rationale":
                assert row["prediction"] == parse_cot(row["output"], "arith")[1]
            if inference == "self_consistency":
                assert isinstance(row["output"], list) and len(row["output"]) == 2
    with pytest.raises(ValueError, match="Valid choices: label, rationale, self_consistency"):
        evaluate_student(model, tok, test, "causal", "arith", inference="vote")


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
    from utils.evaluation import write_report
    from utils.report import render_markdown, validate_report, verify_predictions
    from utils.sweep import load_cells, sweep_report

    data = tmp_path / "data"
    _dataset(8, 4).save_to_disk(str(data))
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
    data = _dataset(4, 2)
    with pytest.raises(ValueError, match="unknown config field"):
        run_sweep(config, (1.0,), dataset=data, run_dir=tmp_path, variants=[Variant("x", "dss", {"alhpa": 0.3})])
    with pytest.raises(ValueError, match="wants dataset 'all'"):
        run_sweep(config, (1.0,), dataset=data, run_dir=tmp_path, variants=[Variant("x", "dss", dataset="all")])
    with pytest.raises(ValueError, match="alpha must lie"):
        run_sweep(config, (1.0,), dataset=data, run_dir=tmp_path, variants=[Variant("x", "dss", {"alpha": 2.0})])
    assert not list(tmp_path.glob("sweep/cells/*"))


def test_report_schema_names_what_is_wrong():
    from utils.report import validate_report

    validate_report({"schema_version": 1})
    with pytest.raises(ValueError, match="evaluation/teacher/accuracy"):
        validate_report({"schema_version": 1, "evaluation": {"task": "arith", "n_test": 2, "students": {},
                                                              "teacher": {"accuracy": 1.5, "ci95": [0, 1], "n": 2}}})
    with pytest.raises(ValueError, match="schema_version"):
        validate_report({})


# --- the study recipe on the paper's data (fixtures in the authors' layout) -----------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "paper_datasets"


@pytest.mark.parametrize("task", ["svamp", "cqa"])
def test_study_datasets_carve_validation_from_train_only(task):
    from utils.recipes import study_datasets

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
    from utils.recipes import study_config

    tiny = study_config("svamp", "tiny")
    assert (tiny.task, tiny.student_layers, tiny.n_train, tiny.max_ops) == ("svamp", 6, None, None)
    assert tiny.extra["rationale_answer"] is True
    paper = study_config("cqa", "paper")
    assert paper.student_model == "google/t5-v1_1-base" and paper.student_family == "seq2seq"
    with pytest.raises(ValueError, match="Tasks: svamp, cqa, esnli, anli1"):
        study_config("arith")
    with pytest.raises(ValueError, match="Valid profiles"):
        study_config("svamp", "huge")


def test_the_variant_is_chosen_on_validation_never_on_test():
    from utils.recipes import best_variant

    def cell(variant, val_label, val_rat, test_label):
        return {"variant": variant, "fraction": 0.5, "results": {
            "validation": {"label": {"accuracy": val_label}, "rationale": {"accuracy": val_rat}},
            "test": {"label": {"accuracy": test_label}, "rationale": {"accuracy": 0.0}}}}

    cells = [cell("dss", 0.30, 0.10, 0.90), cell("dss-all", 0.20, 0.35, 0.10)]
    assert best_variant(cells, ["dss", "dss-all"]) == ("dss-all", "rationale")
    with pytest.raises(RuntimeError, match="ablation"):
        best_variant([], ["dss"])


def test_rationale_targets_end_the_way_the_task_parser_reads():
    from utils.rationales import parse_cot
    from utils.student import build_rows

    split = Dataset.from_list([{"id": "1", "input": "Q?", "label": "bank", "teacher_label": "bank",
                                "rationale": "Money is kept in a bank.", "teacher_correct": True}])
    rows = build_rows(split, "dss", rationale_answer=True, task="cqa")
    target = [r["target"] for r in rows if r["task"] == 1][0]
    assert target == "Money is kept in a bank. So the answer is bank."
    assert parse_cot(target, "cqa")[1] == "bank"
    assert [r["target"] for r in build_rows(split, "dss") if r["task"] == 1] == ["Money is kept in a bank."]
