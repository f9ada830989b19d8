"""The cross-validated study (utils.studies.cv): folds, pooling, paired tests, power, verify."""

import json
import random
from pathlib import Path

import pytest

from utils.config import REPO_ROOT
from utils.report import cv_sections, markdown_cv, verify_cv
from utils.stats import minimum_detectable_effect, power_against
from utils.studies.common import paper_reference
from utils.studies.cv import cv_folds, cv_summary

PAPER = REPO_ROOT.parent / "shared" / "paper_datasets"


def test_folds_cover_every_item_once_and_do_not_depend_on_input_order():
    ids = [f"svamp-train-{i}" for i in range(800)] + [f"svamp-test-{i}" for i in range(200)]
    folds = cv_folds(ids, 5, seed=0)
    assert [len(f) for f in folds] == [200] * 5
    assert sorted(i for f in folds for i in f) == sorted(ids)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert cv_folds(shuffled, 5, seed=0) == folds
    assert cv_folds(ids, 5, seed=1) != folds
    with pytest.raises(ValueError, match="unique"):
        cv_folds(ids + ids[:1])


@pytest.mark.skipif(not PAPER.is_dir(), reason="the authors' released files are in ../shared/paper_datasets")
def test_svamp_folds_hold_out_each_problem_once_and_never_validate_on_it():
    from utils.studies.cv import cv_datasets

    datasets = cv_datasets(PAPER, "svamp")
    tests = [set(d["test"]["id"]) for d in datasets]
    assert len(set().union(*tests)) == 1000 and sum(len(t) for t in tests) == 1000
    for data, held in zip(datasets, tests):
        assert not held & (set(data["train"]["id"]) | set(data["validation"]["id"]))
        assert len(data["train"]) + len(data["validation"]) == 800


def _fold_cell(run_dir: Path, fold: int, variant: str, correct: dict[str, bool], train_ids: list[str]) -> None:
    cell_dir = run_dir / f"svamp_cv_fold{fold}" / "cells" / variant / "f1-s0"
    cell_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "input": "q", "gold": "( 1 + 1 )", "prediction": "2" if ok else "3", "correct": ok}
            for i, ok in correct.items()]
    (cell_dir / "predictions_test_label.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    accuracy = sum(correct.values()) / len(correct)
    cell = {"variant": variant, "mode": variant, "fraction": 1.0, "seed": 0, "n_train": len(train_ids),
            "ids": {"train": train_ids, "validation": [], "test": list(correct)}, "best_epoch": 2.0,
            "train_seconds": 10.0, "seconds": 12.0,
            "results": {"test": {"label": {"accuracy": accuracy, "ci95": [0, 1], "n": len(correct),
                                           "predictions": "predictions_test_label.jsonl"}}}}
    (cell_dir / "cell.json").write_text(json.dumps(cell))


@pytest.fixture
def finished_study(tmp_path):
    """Two folds of 100 items; 'ltr' is right on 30 more items than 'standard', 'dss' on 2 more."""
    rng = random.Random(0)
    items = [f"i{n}" for n in range(200)]
    folds = [items[:100], items[100:]]
    base = {i: rng.random() < 0.5 for i in items}
    wrong = [i for i in items if not base[i]]
    better = dict(base) | {i: True for i in wrong[:30]}
    slightly = dict(base) | {i: True for i in wrong[30:32]}
    for index, fold in enumerate(folds):
        others = [i for i in items if i not in fold]
        for name, marks in (("standard", base), ("dss", slightly), ("ltr", better)):
            _fold_cell(tmp_path, index, name, {i: marks[i] for i in fold}, others)
    return tmp_path, base, better


def test_pooled_summary_pairs_every_item_and_states_power(finished_study):
    from utils.stats import holm, mde_over_runs, power_over_runs

    run_dir, base, better = finished_study
    section = cv_summary(run_dir, "svamp", ["standard", "dss", "ltr"], k=2)
    assert section["folds_finished"] == [0, 1]
    rows = {r["variant"]: r for r in section["summary"]}
    assert rows["standard"]["n"] == 200 and rows["standard"]["accuracy"] == pytest.approx(sum(base.values()) / 200)
    comps = {c["variant"]: c for c in section["comparisons"]}
    # the item-level view, pooled over every item: McNemar on all 200
    assert comps["ltr"]["mcnemar"] == {"a_only": 30, "b_only": 0, "p_value": pytest.approx(2 / 2**30)}
    assert comps["ltr"]["p_mcnemar"] == pytest.approx(2 / 2**30)
    # the fold-level view: each fold's difference, the mean of them the headline
    gained = [sum(1 for i in fold if better[i] and not base[i]) for fold in ([f"i{n}" for n in range(100)],
                                                                             [f"i{n}" for n in range(100, 200)])]
    assert [round(100 * r["difference"]) for r in comps["ltr"]["runs"]] == gained and sum(gained) == 30
    assert comps["ltr"]["difference"] == pytest.approx(0.15) and comps["ltr"]["k"] == 2
    low, high = comps["ltr"]["ci95"]
    assert low <= 0.15 <= high and comps["ltr"]["p_value"] > 0
    assert [c["p_holm"] for c in section["comparisons"]] == pytest.approx(holm([c["p_value"] for c in section["comparisons"]]))
    sd = comps["ltr"]["t"]["sd"]
    assert comps["ltr"]["mde_80"] == pytest.approx(mde_over_runs(sd, 2))
    effects = comps["ltr"]["random_effects"]
    assert effects["k"] == 2 and effects["q"] >= 0 and 0 <= effects["i2"] <= 1
    assert verify_cv(run_dir, "svamp_cv", section, "svamp") == []
    assert "ltr - standard" in markdown_cv("svamp_cv", section)
    from utils.report import describe_cv

    text = describe_cv(section)
    verdict = "significantly better" if comps["ltr"]["p_holm"] < 0.05 else "not significantly different"
    assert f"ltr - standard: +15.0 points (95% CI {100 * low:+.1f} to {100 * high:+.1f}, hierarchical bootstrap " \
           f"over 2 folds and their items, Holm p" in text and verdict in text
    assert f"per fold {', '.join(f'{g:+.1f}' for g in gained)}" in text
    assert "dss - standard: +1.0 points" in text and "not significantly different" in text
    assert section["paper_difference"] == pytest.approx(0.0287)  # Table 1, SVAMP: 65.50 - 62.63
    power = power_over_runs(0.0287, sd, 2)
    assert comps["ltr"]["power_paper"] == pytest.approx(power)
    assert f"had {100 * power:.0f} % power against the paper's +2.9" in text
    assert "Reference: Hsieh et al. 2023, Table 1" in markdown_cv("svamp_cv", section)
    assert f"| ±{100 * comps['ltr']['mde_80']:.1f} | {100 * power:.0f} % |" in markdown_cv("svamp_cv", section)
    other = {**section, **paper_reference("cqa")}  # a task the course has no Table 1 numbers for
    assert other["paper_difference"] is None and "paper's" not in describe_cv(other)
    assert "Reference" not in markdown_cv("cqa_cv", other) and "power against" not in markdown_cv("cqa_cv", other)
    assert cv_sections({"svamp_cv": section, "other": {"summary": []}}) == {"svamp_cv": section}
    from utils.evaluation import plot_paired_differences

    plot_paired_differences(section, run_dir / "differences.png")
    assert (run_dir / "differences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_catches_a_changed_prediction_and_the_pooling_refuses_a_leak(finished_study):
    run_dir, _, _ = finished_study
    section = cv_summary(run_dir, "svamp", ["standard", "dss", "ltr"], k=2)
    path = run_dir / "svamp_cv_fold0" / "cells" / "ltr" / "f1-s0" / "predictions_test_label.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    flip = next(r for r in rows if r["prediction"] == "2")
    flip["prediction"] = "5"  # the saved "correct" flag still says True: verify must not trust it
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert any("ltr" in p for p in verify_cv(run_dir, "svamp_cv", section, "svamp"))
    cell_path = path.parent / "cell.json"
    cell = json.loads(cell_path.read_text())
    cell["ids"]["train"].append(rows[0]["id"])
    cell_path.write_text(json.dumps(cell))
    with pytest.raises(ValueError, match="also trained"):
        cv_summary(run_dir, "svamp", ["standard", "dss", "ltr"], k=2)


def test_a_fold_is_pooled_only_when_every_variant_finished_it(finished_study):
    run_dir, _, _ = finished_study
    for path in (run_dir / "svamp_cv_fold1" / "cells" / "dss").rglob("cell.json"):
        path.unlink()
    section = cv_summary(run_dir, "svamp", ["standard", "dss", "ltr"], k=2)
    assert section["folds_finished"] == [0] and all(r["n"] == 100 for r in section["summary"])
    assert verify_cv(run_dir, "svamp_cv", section, "svamp") == []
    for path in (run_dir / "svamp_cv_fold0" / "cells" / "dss").rglob("cell.json"):
        path.unlink()
    empty = cv_summary(run_dir, "svamp", ["standard", "dss", "ltr"], k=2)
    assert empty["folds_finished"] == [] and empty["comparisons"] == []
    assert verify_cv(run_dir, "svamp_cv", empty, "svamp") == []  # nothing pooled yet is not an error
    assert "0 of 2 folds finished" in markdown_cv("svamp_cv", empty)


def test_minimum_detectable_effect_grows_with_discordance_and_shrinks_with_items():
    assert minimum_detectable_effect(200, 1000) == pytest.approx(0.0396, abs=5e-4)  # (1.96 + 0.84) * sqrt(0.2 / 1000)
    assert minimum_detectable_effect(300, 1000) > minimum_detectable_effect(200, 1000)
    assert minimum_detectable_effect(40, 200) > minimum_detectable_effect(200, 1000)
    with pytest.raises(ValueError):
        minimum_detectable_effect(5, 0)


def test_power_against_a_difference_inverts_the_detectable_effect():
    for discordant, n in [(200, 1000), (253, 1000), (40, 200)]:
        assert power_against(minimum_detectable_effect(discordant, n), discordant, n) == pytest.approx(0.8, abs=1e-6)
    assert power_against(0.0, 200, 1000) == pytest.approx(0.025)  # no effect: only the level's upper tail
    assert power_against(0.02, 200, 1000) < power_against(0.03, 200, 1000) < power_against(0.03, 200, 2000)
    assert power_against(-0.03, 200, 1000) == power_against(0.03, 200, 1000)
    assert power_against(0.5, 10, 100) == 1.0  # more difference than the discordance can hold
    with pytest.raises(ValueError, match="discordant"):
        power_against(0.03, 20, 10)


# --- e-SNLI: a premise-disjoint split, several rationale sources ------------------------------------


def test_premise_split_keeps_every_premise_on_one_side():
    from utils.studies.esnli_split import premise_split

    premises = [f"p{i // 3}" for i in range(300)] + ["lonely"]
    parts = premise_split(premises, n_test=50, n_validation=20, seed=0)
    assert sorted(i for v in parts.values() for i in v) == list(range(301))
    sides = {name: {premises[i] for i in idx} for name, idx in parts.items()}
    assert not (sides["test"] & sides["pool"]) and not (sides["test"] & sides["validation"])
    assert not (sides["validation"] & sides["pool"])
    assert 50 <= len(parts["test"]) < 53 and 20 <= len(parts["validation"]) < 23
    assert premise_split(premises, 50, 20, 0) == parts  # the same seed, the same split


@pytest.mark.skipif(not PAPER.is_dir(), reason="the authors' released files are in ../shared/paper_datasets")
def test_esnli_study_data_is_premise_disjoint_with_at_least_1000_test_items():
    from utils.studies.esnli_split import esnli_datasets

    sources = esnli_datasets(PAPER)
    palm = sources["palm"]
    assert len(palm["test"]) >= 1000 and len(palm["train"]) + len(palm["validation"]) + len(palm["test"]) == 9824
    test_premises = set(palm["test"]["premise"])
    assert not test_premises & (set(palm["train"]["premise"]) | set(palm["validation"]["premise"]))
    for name in ("human1", "all4"):  # every source on the same items
        assert all(sources[name][s]["id"] == palm[s]["id"] for s in palm)
    first = sources["all4"]["train"][0]
    assert first["rationale"] == palm["train"][0]["rationale"] and len(first["extra_rationales"]) == 3
    assert sources["human1"]["train"][0]["rationale"] == first["extra_rationales"][0]


def test_extra_rationales_each_become_a_rationale_row():
    from datasets import Dataset

    from utils.student import build_rows

    split = Dataset.from_list([{"id": "0", "input": "P", "label": "neutral", "teacher_label": "neutral",
                                "rationale": "palm", "rationale_label": "neutral", "teacher_correct": True,
                                "extra_rationales": ["human a", "human b"]}])
    rows = build_rows(split, "dss")
    assert [(r["task"], r["target"]) for r in rows] == [(0, "neutral"), (1, "palm"), (1, "human a"), (1, "human b")]
    assert [r["target"] for r in build_rows(split, "standard")] == ["neutral"]


COMMITTED = REPO_ROOT / "data" / "results" / "svamp_cv"


@pytest.mark.skipif(not (COMMITTED / "report.json").exists(), reason="no committed cross-validated study yet")
def test_the_committed_cross_validated_study_recomputes_from_its_predictions():
    from utils.report import load_report, verify_predictions

    report = load_report(COMMITTED)
    assert verify_predictions(COMMITTED, "svamp") == []
    for name in [k for k in report if k.startswith("svamp_cv_fold")]:
        for cell in report[name]["cells"]:
            test_ids = set(cell["ids"]["test"])
            assert not test_ids & (set(cell["ids"]["train"]) | set(cell["ids"]["validation"]))


def test_verify_wants_every_item_predicted_once_every_fold_finished(finished_study):
    run_dir, _, _ = finished_study
    section = cv_summary(run_dir, "svamp", ["standard", "dss", "ltr"], k=2)
    assert verify_cv(run_dir, "svamp_cv", section, "svamp") == []
    path = run_dir / "svamp_cv_fold1" / "cells" / "standard" / "f1-s0" / "predictions_test_label.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))  # one held-out item lost its prediction; the cell still lists it
    with pytest.raises(ValueError, match="same items"):  # pooling it again refuses
        cv_summary(run_dir, "svamp", ["standard", "dss", "ltr"], k=2)
    problems = verify_cv(run_dir, "svamp_cv", section, "svamp")
    assert "svamp_cv standard: 1 items of the data have no prediction" in problems
    assert not any("dss" in p and "no prediction" in p for p in problems)
