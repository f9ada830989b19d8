"""The matched-steps e-SNLI design (utils.studies.steps, utils.report.steps): steps counted and
matched, the plateau rule, the three questions over seeds, ``report --verify`` and the sentences.
Cells are written by hand, as ``run_sweep`` leaves them, except one real two-cell sweep on the
bundled model's two-layer cut that checks what a cell records about its compute."""

import json
import random
from pathlib import Path

import pytest
from test_esnli_study import _fake_datasets, _fake_teacher, write_esnli_cell

from utils.report.steps import (
    compute_text,
    plateau_summary,
    plateaued,
    short_of_plateau,
    steps_questions,
    still_learning,
)
from utils.student import rows_seen
from utils.studies.steps import STEPS_BUDGET, STEPS_SECTION, steps_config, steps_plan

TEST = 60
# per seed, how many more test items dss gets right than standard at 250 (a spread over seeds)
DSS_GAIN = {0: 6, 1: 1, 2: 9, 3: -2, 4: 5}


def _outcome(variant: str, size: int, seed: int) -> dict[str, bool]:
    """standard at 1,000: item i right when i % 10 < 7; smaller standard cells lose 6 items; dss gains
    DSS_GAIN[seed] items over standard at its size; dss-all4 equals dss except one item."""
    right = {f"t{i}": i % 10 < 7 for i in range(TEST)}
    if size < 1000:
        right.update({i: False for i in [k for k in right if right[k]][:6]})
    if variant in ("dss", "dss-all4"):
        gain = DSS_GAIN[seed]
        wrong, good = [k for k in right if not right[k]], [k for k in right if right[k]]
        right.update({i: True for i in wrong[:gain]} if gain > 0 else {i: False for i in good[:-gain]})
    if variant == "dss-all4":
        first = next(iter(right))
        right[first] = not right[first]
    return right


def _curve(seed: int, steps: int = 320) -> list[list]:
    rng = random.Random(seed)
    accs = [0.4, 0.55, 0.62, 0.66, 0.68, 0.69, 0.692, 0.694]  # levels off: the last quarter adds < 1 point
    return [[40 * (k + 1), round(a + rng.uniform(-0.002, 0.002), 4)] for k, a in enumerate(accs)][: steps // 40]


def _write(run_dir: Path, variant: str, size: int, seed: int, steps: int = 320) -> None:
    cell_dir = write_esnli_cell(run_dir / STEPS_SECTION, variant, size, seed, _outcome(variant, size, seed))
    cell = json.loads((cell_dir / "cell.json").read_text())
    cell.update(max_steps=STEPS_BUDGET[size], optimizer_steps=steps, validation_curve=_curve(seed),
                label_rows=steps * 8, rationale_rows=steps * 8, machine={"processor": "test"})
    (cell_dir / "cell.json").write_text(json.dumps(cell))


def _build(run_dir: Path, monkeypatch, seeds=(0, 1, 2, 3, 4)) -> dict:
    from utils.studies import common, steps

    monkeypatch.setattr(common, "paper_teacher", _fake_teacher)
    (run_dir / "config.json").write_text(json.dumps({"profile": "tiny", "task": "esnli"}))
    for variant, size, seed in steps_plan(seeds):
        _write(run_dir, variant, size, seed)
    return steps.steps_report(None, run_dir, datasets=_fake_datasets(), log=lambda *a: None)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("steps")
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_dir, _build(run_dir, monkeypatch)


def test_the_plan_is_seed_major_and_every_cell_of_a_size_gets_the_same_steps():
    plan = steps_plan((0, 1))
    assert plan[:6] == [("standard", 250, 0), ("dss", 250, 0), ("dss-all4", 250, 0), ("standard", 500, 0),
                        ("dss", 500, 0), ("standard", 1000, 0)]
    assert [s for _, _, s in plan] == [0] * 6 + [1] * 6
    for size in STEPS_BUDGET:
        config = steps_config("tiny", size)
        assert (config.max_steps, config.eval_steps) == (STEPS_BUDGET[size], 40)
        assert config.pack_rows and config.prune_vocab and config.flush_denormal
    with pytest.raises(ValueError, match="distinct"):
        steps_plan((0, 0))
    with pytest.raises(ValueError, match="No step budget"):
        steps_config("tiny", 125)


def test_rows_seen_counts_what_the_steps_consume():
    features = [{"task": t} for t in (0, 1, 0, 1, 0)]  # a dss split: 3 label rows, 2 rationale rows
    assert rows_seen(features, 2, 2) == {"label": 2, "rationale": 2}  # batches [0,1] [0,1]
    assert rows_seen(features, 3, 2) == {"label": 3, "rationale": 2}  # then the short last batch [0]
    assert rows_seen(features, 6, 2) == {"label": 6, "rationale": 4}  # two whole passes
    with pytest.raises(ValueError):
        rows_seen(features, 1, 0)


def test_the_plateau_rule():
    rising = [[40 * k, 0.3 + 0.05 * k] for k in range(1, 9)]  # still gaining 10 points in the last quarter
    assert not plateaued(rising, 320)["plateaued"]
    flat = [[40 * k, min(0.7, 0.3 + 0.1 * k)] for k in range(1, 9)]  # best at step 160
    assert plateaued(flat, 320) == {"best_step": 160, "last_quarter_gain": 0.0, "plateaued": True}
    late = [[40, 0.5], [80, 0.6], [120, 0.65], [160, 0.66], [200, 0.67], [240, 0.68], [280, 0.684], [320, 0.685]]
    out = plateaued(late, 320)  # best at the last step, but the last quarter adds 0.5 point: a plateau
    assert out["best_step"] == 320 and out["plateaued"] and out["last_quarter_gain"] == pytest.approx(0.005)


def test_the_report_names_the_cells_still_learning_and_where_each_cell_ran():
    rising = [[40 * k, 0.3 + 0.05 * k] for k in range(1, 9)]
    flat = [[40 * k, min(0.7, 0.3 + 0.1 * k)] for k in range(1, 9)]
    amd = {"processor": "AMD EPYC", "cores": 2, "bf16": True, "gpu": None}
    cells = [{"variant": v, "seed": seed, "n_train": 250, "fraction": 250 / 8620, "max_steps": 320, "optimizer_steps": 320,
              "validation_curve": curve, "seconds": 1800, "machine": machine}
             for v, seed, curve, machine in [("dss-all4", 0, rising, amd), ("dss-all4", 1, rising, amd),
                                             ("dss", 0, flat, amd), ("standard", 0, flat, {"processor": "Intel"})]]
    summary = plateau_summary(cells, pool=8620)
    assert summary["plateaued"] == 2 and still_learning(summary) == "dss-all4 @ 250 (seed 0 +10.0, seed 1 +10.0)"
    assert still_learning(plateau_summary(cells[2:], pool=8620)) == ""
    cells[1]["ids"] = {"validation": [f"v{i}" for i in range(204)]}  # a gain in items: 10 points of 204 is 20
    assert still_learning(plateau_summary(cells, pool=8620)) == "dss-all4 @ 250 (seed 0 +10.0, seed 1 +10.0 = 20 of 204 items)"
    row = {"variant": "dss-all4", "size": 250, "baseline": "dss", "baseline_size": 250, "seeds": [0, 1]}
    assert short_of_plateau(row, summary) == "dss-all4 @ 250 short of its plateau at 2 of 2 seeds"
    assert short_of_plateau({**row, "variant": "standard", "seeds": [0]}, summary) == ""  # both cells reached it
    assert short_of_plateau({**row, "seeds": [1]}, summary) == "dss-all4 @ 250 short of its plateau at 1 of 1 seed"
    assert compute_text(cells) == ("4 cells, 2.0 h of training and scoring, on AMD EPYC, 2 cores, bf16 on, GPU none "
                                   "(3 cells); Intel, bf16 off, GPU none (1 cell)")


def test_the_report_answers_the_three_questions_over_seeds_and_verifies(built):
    from utils.report import describe_steps, load_report, render_markdown, validate_report, verify_predictions

    run_dir, section = built
    validate_report(load_report(run_dir))
    rows = {(r["question"], r["variant"], r["size"]): r for r in section["questions"]["rows"]}
    a = rows[("a", "dss", 250)]
    assert a["k"] == 5 and [r["run"] for r in a["runs"]] == [0, 1, 2, 3, 4]
    assert [round(r["difference"] * TEST) for r in a["runs"]] == [DSS_GAIN[s] for s in range(5)]
    assert a["difference"] == pytest.approx(sum(DSS_GAIN.values()) / 5 / TEST)
    # the hierarchical interval counts the seed spread: wider than the item-only one
    def width(ci):
        return ci[1] - ci[0]
    assert width(a["ci95"]) > width(a["item_only"]["ci95"])
    assert a["p_value"] > 0 and a["p_holm"] >= a["p_value"]
    assert ("b", "dss-all4", 250) in rows and ("b", "dss", 500) not in rows
    c = rows[("c", "dss", 500)]
    assert c["baseline_size"] == 1000 and "equivalence" in c and c["equivalence"]["margin"] == 0.02
    assert section["plateau"] == {**section["plateau"], "plateaued": 30, "total": 30}
    assert verify_predictions(run_dir, "esnli") == []
    text = describe_steps(section)
    assert "(a)" in text and "(b)" in text and "(c)" in text and "5 seeds" in text
    assert f"{100 * a['difference']:+.1f} points" in text
    markdown = render_markdown(run_dir)
    assert "esnli_steps: test accuracy (%) at matched steps" in markdown
    # the equivalence column never says "below" beside a Holm verdict that may not
    assert "not shown within ±2 |" in markdown and "| below |" not in markdown
    assert "short of its plateau" not in markdown + text  # every cell reached it
    from utils.report.steps import markdown_steps

    missed = {**section, "plateau": {**section["plateau"], "cells": [
        {**c, "plateaued": not (c["variant"] == "dss-all4" and c["seed"] < 2)} for c in section["plateau"]["cells"]]}}
    assert ("(b) dss-all4 @ 250 - dss @ 250: dss-all4 @ 250 short of its plateau at 2 of 5 seeds"
            in markdown_steps("esnli_steps", missed))
    assert ("dss-all4 on 250 against dss on 250: " in describe_steps(missed)
            and "(dss-all4 @ 250 short of its plateau at 2 of 5 seeds: compared at equal compute, not at its plateau)"
            in describe_steps(missed))
    assert (run_dir / "figures" / "esnli_steps_sizes.png").stat().st_size > 0
    assert (run_dir / "figures" / "esnli_steps_validation.png").stat().st_size > 0


def test_verify_catches_a_changed_prediction(built, tmp_path):
    import shutil

    from utils.report import verify_predictions

    run_dir = tmp_path / "run"
    shutil.copytree(built[0], run_dir)
    path = next((run_dir / STEPS_SECTION / "cells" / "dss").glob("*-s0")) / "predictions_test_label.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["prediction"] = "nonsense"  # a right answer turned wrong
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = verify_predictions(run_dir, "esnli")
    assert any("questions" in p for p in problems) and any("predictions give" in p for p in problems)


def test_unmatched_steps_are_refused(tmp_path, monkeypatch):
    from utils.studies import common, steps

    monkeypatch.setattr(common, "paper_teacher", _fake_teacher)
    _write(tmp_path, "standard", 250, 0, steps=320)
    _write(tmp_path, "dss", 250, 0, steps=640)  # twice the steps: the old epoch-counted schedule
    with pytest.raises(ValueError, match=r"not matched.*size 250, seed 0"):
        steps.steps_report(None, tmp_path, datasets=_fake_datasets(), log=lambda *a: None)


def test_questions_with_one_seed_are_reported_without_a_seed_interval():
    results = {(v, n, 0): _outcome(v, n, 0) for v, n, _ in steps_plan((0,))}
    rows = steps_questions(results)["rows"]
    assert rows and all(r["k"] == 1 and r["t"]["ci95"] is None and r["mde_80"] is None for r in rows)
    # seed 3's dss is 8 items under standard on 1,000: clearly below over its items, yet one training
    # run cannot say "below" for the recipe, so the equivalence verdict stays inconclusive
    worse = {(v, n, 3): _outcome(v, n, 3) for v, n, _ in steps_plan((3,))}
    c = [r for r in steps_questions(worse)["rows"] if r["question"] == "c"]
    assert c and all(r["item_only"]["ci95"][1] < 0 and r["equivalence"]["verdict"] == "inconclusive" for r in c)


def test_the_study_reports_after_every_cell_it_trains_then_hands_the_cell_on(tmp_path, monkeypatch):
    """A study stopped at any point has reported (and, from the CLI, published) every cell it finished."""
    from utils import sweep
    from utils.studies import steps

    events = []

    def fake_run_sweep(config, fractions, seeds=None, *, variants=None, on_cell=None, **kwargs):
        for v in variants:
            events.append(("trained", v.name, config.max_steps, seeds[0]))
            on_cell({"variant": v.name, "seed": seeds[0]})
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(steps, "esnli_datasets", lambda root: _fake_datasets())
    monkeypatch.setattr(steps, "steps_report", lambda *a, **k: events.append(("report",)))
    steps.steps_study(None, tmp_path, seeds=(3,), after_cell=lambda c: events.append(("after", c["variant"])),
                      log=lambda *a: None)
    plan = steps_plan((3,))
    assert [e[1] for e in events if e[0] == "trained"] == [v for v, _, _ in plan]
    assert {e[2] for e in events if e[0] == "trained"} == {STEPS_BUDGET[250]}
    assert events[:3] == [("trained", plan[0][0], STEPS_BUDGET[250], 3), ("report",), ("after", plan[0][0])]
    assert len(events) == 3 * len(plan)


def test_a_pilot_trains_one_cell_to_its_own_cap_outside_the_grid(tmp_path, monkeypatch):
    """The pilot (what a step budget is sized from) trains the one cell asked for, to its own cap, with
    validation every STEPS_EVAL_EVERY steps, in a folder of its own, and reads the plateau at that cap."""
    from utils import sweep
    from utils.studies import steps

    asked = []

    def fake_run_sweep(config, fractions, seeds=None, *, variants=None, name=None, **kwargs):
        asked.append((config.max_steps, config.eval_steps, [v.name for v in variants], seeds, name))
        curve = [[s, 0.5 + (0.1 if s == 400 else 0.0)] for s in range(40, 641, 40)]  # peaks at 400 of 640
        return [{"variant": variants[0].name, "seed": seeds[0], "max_steps": config.max_steps,
                 "validation_curve": curve}]

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(steps, "esnli_datasets", lambda root: _fake_datasets())
    cell = steps.steps_pilot(None, tmp_path, "dss-all4", 250, 640, seed=2, log=lambda *a: None)
    assert asked == [(640, steps.STEPS_EVAL_EVERY, ["dss-all4"], (2,), "esnli_steps_pilot_640")]
    assert cell["plateau"] == {"best_step": 400, "last_quarter_gain": pytest.approx(-0.1), "plateaued": True}


@pytest.mark.parametrize("args, message", [
    (("ltr", 250, 640), "Unknown variant"), (("dss", 300, 640), "No training size 300"),
    (("dss", 250, 650), "multiple of 40"), (("dss", 250, 120), "at least 160"), (("dss", 250, True), "multiple")])
def test_a_pilot_refuses_what_the_design_does_not_hold(args, message, tmp_path):
    from utils.studies.steps import steps_pilot

    with pytest.raises(ValueError, match=message):
        steps_pilot(tmp_path / "no-data", tmp_path, *args)


@pytest.mark.parametrize("argv, message", [
    (["--design", "sizes", "--pilot", "dss@250"], "apply to --design steps only"),
    (["--design", "steps", "--pilot", "dss-all4"], "VARIANT@SIZE"),
    (["--design", "steps", "--pilot", "dss@250", "--pilot-steps", "100"], "at least 160")])
def test_the_cli_pilot_gives_clear_errors(argv, message, tmp_path):
    from utils.__main__ import main

    with pytest.raises(SystemExit, match=message):
        main(["study", "--paper-data", str(tmp_path), "--run-dir", str(tmp_path / "run"), *argv])


def test_the_cli_pilot_prints_its_curve_and_publishes_its_cell(tmp_path, monkeypatch, capsys):
    """``--pilot ... --publish DEST`` prints the cell's validation curve and plateau, then copies the
    pilot's folder (its cell.json and predictions, no weights) to DEST, like the grid's --publish."""
    from utils.__main__ import main
    from utils.studies import steps

    def fake_pilot(paper_root, run_dir, variant, size, n_steps, seed=0, profile="tiny"):
        cell_dir = Path(run_dir) / f"esnli_steps_pilot_{n_steps}" / "cells" / variant / f"s{seed}"
        (cell_dir / "model" / "checkpoints").mkdir(parents=True)
        (cell_dir / "model" / "weights.json").write_text("{}")
        curve = [[40, 0.5], [80, 0.62], [120, 0.6], [160, 0.61]]
        cell = {"variant": variant, "seed": seed, "validation_curve": curve,
                "results": {"test": {"label": {"accuracy": 0.7}}}}
        (cell_dir / "cell.json").write_text(json.dumps(cell))
        return {**cell, "plateau": {"best_step": 80, "last_quarter_gain": -0.01, "plateaued": True}}

    monkeypatch.setattr(steps, "steps_pilot", fake_pilot)
    dest = tmp_path / "published"
    assert main(["study", "--design", "steps", "--paper-data", str(tmp_path), "--run-dir", str(tmp_path / "run"),
                 "--pilot", "dss@250", "--pilot-steps", "160", "--seed", "3", "--publish", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "dss on 250 items, seed 3, 160 optimizer steps: validation 40 50.0, 80 62.0, 120 60.0, 160 61.0" in out
    assert "best at step 80; the last quarter adds -1.0 points: plateaued; test accuracy 70.0 %" in out
    assert "published 1 cells to" in out
    published = dest / "esnli_steps_pilot_160" / "cells" / "dss" / "s3"
    assert json.loads((published / "cell.json").read_text())["seed"] == 3
    assert not (published / "model").exists()


@pytest.mark.slow
def test_a_real_cell_records_its_steps_rows_and_validation_curve(tmp_path):
    """Two real cells on a two-layer cut of the bundled model, counted in steps: each takes exactly
    max_steps optimizer steps, validates every eval_steps, and records what it consumed."""
    import dataclasses

    from tests.test_sweep import arith_dataset
    from utils.sweep import Variant, run_sweep, split_validation

    data = split_validation(arith_dataset(12, 4), 0.25)
    config = dataclasses.replace(steps_config("tiny", 250), task="arith", student_layers=2, batch_size=4,
                                 max_steps=4, eval_steps=2, prune_vocab=False)
    variants, finished = [Variant("standard", "standard"), Variant("dss", "dss")], []
    cells = run_sweep(config, (1.0,), seeds=(0,), dataset=data, run_dir=tmp_path, name="s", variants=variants,
                      on_cell=finished.append, log=lambda *a: None)
    assert [c["variant"] for c in finished] == ["standard", "dss"]  # after each cell it trained
    run_sweep(config, (1.0,), seeds=(0,), dataset=data, run_dir=tmp_path, name="s", variants=variants,
              on_cell=finished.append, log=lambda *a: None)
    assert len(finished) == 2  # a resumed sweep skips finished cells, and does not report them again
    by = {c["variant"]: c for c in cells}
    for cell in cells:
        assert cell["optimizer_steps"] == 4 and cell["max_steps"] == 4 and cell["epochs_cap"] is None
        assert [step for step, _ in cell["validation_curve"]] == [2, 4]
        assert cell["best_step"] in (2, 4)
    assert by["standard"]["n_train"] == 9  # 12 problems, a quarter carved off for validation
    # batches of 4, 4 and 1 rows make a pass; the fourth step starts the next pass: 13 rows
    assert (by["standard"]["label_rows"], by["standard"]["rationale_rows"]) == (13, 0)
    assert by["dss"]["rationale_rows"] > 0 and by["dss"]["label_rows"] + by["dss"]["rationale_rows"] >= 13
