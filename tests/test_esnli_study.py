"""The e-SNLI data-efficiency study (utils.studies.sizes): seed-major order, the paper's statement
(``data_efficiency``), the teacher on the study's own test items, premise-disjointness checked from
hashes, ``report --verify``, the Markdown, the sentences, the figure and the ``--seed`` option.
Cells are written by hand, as ``run_sweep`` leaves them: nothing is trained."""

import json
from pathlib import Path

import pytest

from utils.config import REPO_ROOT
from utils.studies.sizes import ESNLI_SECTION, esnli_plan
from utils.sweep import cell_name

PAPER = REPO_ROOT.parent / "shared" / "paper_datasets"
POOL, TEST, VALIDATION = 2100, 60, 10
LABELS = ("entailment", "neutral", "contradiction")


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _fake_datasets() -> dict:
    """One source's splits with ids and premises (two items per premise, each premise on one side)."""
    from datasets import Dataset, DatasetDict

    parts = {"train": _ids("p", POOL), "validation": _ids("v", VALIDATION), "test": _ids("t", TEST)}
    return {"palm": DatasetDict({split: Dataset.from_dict({"id": ids, "premise": [f"{split} premise {k // 2}"
                                                                                  for k in range(len(ids))]})
                                 for split, ids in parts.items()})}


def _outcome(variant: str, size: int, seed: int) -> dict[str, bool]:
    """Item i of the test items is right for standard at 1000 when i % 10 < 7 (70 %; seed 0 also gets
    t9 right); dss at 125, ltr everywhere and dss-all4 lose 25 of those items, standard below 1000
    loses 3; the other cells equal standard at 1000, item by item."""
    right = {f"t{i}": i % 10 < 7 or (seed == 0 and i == 9) for i in range(TEST)}
    if (variant, size) == ("dss", 125) or variant in ("ltr", "dss-all4") or (variant == "standard" and size < 1000):
        lost = [i for i in right if right[i]][:25 if variant != "standard" else 3]
        right.update({i: False for i in lost})
    return right


def write_esnli_cell(sweep_dir: Path, variant: str, size: int, seed: int, correct: dict[str, bool],
                     train: list[str] | None = None) -> Path:
    """A finished cell: ``cell.json`` with the ids it trained, validated and was tested on, and its predictions."""
    fraction = size / POOL
    cell_dir = sweep_dir / "cells" / variant / cell_name(fraction, seed)
    cell_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "input": "premise / hypothesis", "gold": LABELS[k % 3],
             "prediction": LABELS[k % 3] if ok else LABELS[(k + 1) % 3], "correct": ok}
            for k, (i, ok) in enumerate(correct.items())]
    (cell_dir / "predictions_test_label.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    accuracy = sum(correct.values()) / len(correct)
    train = train if train is not None else _ids("p", POOL)[seed: seed + size]
    cell = {"variant": variant, "mode": "standard" if variant == "standard" else "ltr" if variant == "ltr" else "dss",
            "fraction": fraction, "seed": seed, "dataset": "palm", "n_train": len(train),
            "ids": {"train": train, "validation": _ids("v", VALIDATION), "test": list(correct)},
            "results": {"test": {"label": {"accuracy": accuracy, "ci95": [accuracy, accuracy], "n": len(correct),
                                           "predictions": "predictions_test_label.jsonl"}}}}
    (cell_dir / "cell.json").write_text(json.dumps(cell))
    return cell_dir


def _fake_teacher(paper_root, task, out_dir, ids=None):
    """Stands in for ``paper_teacher``: right on 50 of the test items it is given, predictions saved."""
    from utils.evaluation import save_predictions

    assert task == "esnli" and ids is not None, "the teacher is scored on the study's test ids only"
    rows = [{"id": i, "input": "x", "gold": "neutral", "prediction": "neutral" if k < 50 else "entailment",
             "correct": k < 50} for k, i in enumerate(ids)]
    save_predictions(rows, Path(out_dir) / "teacher_test.jsonl")
    return {"model": "PaLM 540B (fake)", "accuracy": 50 / len(rows), "ci95": [0.7, 0.9], "n": len(rows),
            "predictions": "teacher_test.jsonl"}


def _build(run_dir: Path, monkeypatch, plan=None) -> dict:
    from utils.studies import common
    from utils.studies import sizes as recipes

    monkeypatch.setattr(common, "paper_teacher", _fake_teacher)
    (run_dir / "config.json").write_text(json.dumps({"profile": "tiny", "task": "esnli"}))
    for variant, size, seed in plan if plan is not None else esnli_plan():
        write_esnli_cell(run_dir / ESNLI_SECTION, variant, size, seed, _outcome(variant, size, seed))
    return recipes.esnli_report(None, run_dir, datasets=_fake_datasets(), log=lambda *a: None)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The whole grid, built once; each test gets its own copy to change."""
    run_dir = tmp_path_factory.mktemp("esnli")
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_dir, _build(run_dir, monkeypatch)


@pytest.fixture
def study(built, tmp_path):
    import copy
    import shutil

    shutil.copytree(built[0], tmp_path, dirs_exist_ok=True)
    return tmp_path, copy.deepcopy(built[1])


# --- the grid and its order ------------------------------------------------------------------------


def test_the_plan_finishes_a_whole_one_seed_grid_before_the_next_seed():
    plan = esnli_plan((0, 1, 2))
    assert len(plan) == 32 and len(set(plan)) == 32
    assert [seed for _, _, seed in plan] == [0] * 12 + [1] * 10 + [2] * 10  # the sources at seed 0 only
    assert plan[:12] == [("standard", 1000, 0),
                         ("standard", 500, 0), ("dss", 500, 0), ("ltr", 500, 0),
                         ("standard", 250, 0), ("dss", 250, 0), ("ltr", 250, 0),
                         ("standard", 125, 0), ("dss", 125, 0), ("ltr", 125, 0),
                         ("dss-human1", 250, 0), ("dss-all4", 250, 0)]
    assert plan[12:14] == [("standard", 1000, 1), ("standard", 500, 1)] and ("dss-human1", 250, 1) not in plan


def test_small_sizes_may_train_more_epochs_so_every_cell_may_take_the_same_steps():
    from utils.studies.sizes import ESNLI_MIN_STEPS, ESNLI_SETTINGS, esnli_epochs

    assert ESNLI_MIN_STEPS == 64
    # no early stopping: on 204 validation items patience 1 stopped cells on noise (seed 0's first
    # 125-item cells after 16 steps, seed 1's standard at 1,000 after 2 of 4 epochs); every cell
    # trains to its cap and is scored from its best validation checkpoint
    assert {p: s["early_stopping_patience"] for p, s in ESNLI_SETTINGS.items()} == dict.fromkeys(ESNLI_SETTINGS)
    assert all(s["select_by"] == "accuracy" for s in ESNLI_SETTINGS.values())
    assert [esnli_epochs(n, 16, 4.0) for n in (125, 250, 500, 1000)] == [8.0, 4.0, 4.0, 4.0]
    assert esnli_epochs(100, 16, 4.0) == 10.0  # 7 steps an epoch: 10 epochs reach 64
    assert esnli_epochs(125, 32, 4.0) == 16.0
    with pytest.raises(ValueError, match="size and batch_size"):
        esnli_epochs(0, 16, 4.0)


def test_esnli_study_calls_the_sweep_seed_by_seed_in_the_layout_it_resumes(tmp_path, monkeypatch):
    from utils import sweep
    from utils.studies import sizes as recipes

    calls, reports = [], []

    def fake_run_sweep(config, fractions, seeds=None, *, dataset=None, run_dir=None, variants=None, name="sweep",
                       splits=("test",), log=print, **kwargs):
        calls.append(([v.name for v in variants], [round(f * POOL) for f in fractions], tuple(seeds), name, splits,
                      config.epochs, config.early_stopping_patience))
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(recipes, "esnli_datasets", lambda root: _fake_datasets())
    monkeypatch.setattr(recipes, "esnli_report", lambda *a, **k: reports.append(len(calls)) or {"seed": len(calls)})
    recipes.esnli_study(None, tmp_path, seeds=(2, 0), log=lambda *a: None)
    # one seed at a time, in the order given; one call a size; seed 2 does not vary the source
    assert [c[2] for c in calls] == [(2,)] * 4 + [(0,)] * 5
    assert all(c[3] == ESNLI_SECTION and c[4] == ("test",) for c in calls)
    trained = [(v, n, c[2][0]) for c in calls for n in c[1] for v in c[0]]
    assert trained == esnli_plan((2, 0))  # together the calls train esnli_plan's order
    assert [(c[1], c[5]) for c in calls[:4]] == [([1000], 4.0), ([500], 4.0), ([250], 4.0), ([125], 8.0)]
    assert all(c[6] is None for c in calls)  # every cell trains to its cap (no early stopping)
    assert reports == [4, 9]  # the section is rebuilt after every seed's grid
    with pytest.raises(ValueError, match="distinct"):
        recipes.esnli_study(None, tmp_path, seeds=(0, 0))


# --- the paper's statement -----------------------------------------------------------------------------


def test_data_efficiency_pairs_seeds_and_finds_the_smallest_size_not_below_standard_at_its_largest(study):
    from utils.stats import holm

    run_dir, section = study
    eff = section["data_efficiency"]
    assert (eff["baseline"], eff["baseline_size"]) == ("standard", 1000)
    # one seed cannot test a recipe over seeds: dss-all4's -25 items at 250 is not called "below"
    assert eff["smallest"] == {"dss": 250, "dss-all4": 250, "dss-human1": 250, "ltr": None}
    rows = {(r["variant"], r["size"]): r for r in eff["rows"]}
    assert set(rows) == {("dss", 125), ("dss", 250), ("dss", 500), ("ltr", 125), ("ltr", 250), ("ltr", 500),
                         ("dss-human1", 250), ("dss-all4", 250)}  # rationale variants only, standard is the baseline
    assert rows[("dss-all4", 250)]["seeds"] == [0]
    assert rows[("dss-all4", 250)]["verdict"] == "one seed: not tested over seeds" and not rows[("dss-all4", 250)]["below"]
    below = rows[("dss", 125)]
    assert below["seeds"] == [0, 1, 2] and below["n"] == TEST
    assert below["difference"] == pytest.approx(-25 / TEST) and below["below"] and below["ci95"][1] < 0
    equal = rows[("dss", 250)]
    assert equal["difference"] == 0 and equal["p_value"] == 1 and not equal["below"]
    assert [r["p_holm"] for r in eff["rows"]] == pytest.approx(holm([r["p_value"] for r in eff["rows"]]))
    assert below["mcnemar"][0] == {"seed": 0, "a_only": 0, "b_only": 25, "p_value": pytest.approx(2 / 2**25)}
    curves = {(r["variant"], r["size"]): r for r in section["curves"]}
    base = curves[("standard", 1000)]
    assert base["seeds"] == 3 and base["mean"] == pytest.approx((43 + 42 + 42) / 3 / TEST)  # seed 0 gets t9 too
    assert base["std"] > 0 and base["ci95"][0] < base["mean"] < base["ci95"][1]
    assert section["grid"] == {"expected": 32, "finished": 32, "seeds": {"0": [12, 12], "1": [10, 10], "2": [10, 10]}}
    assert section["design"]["source_seeds"] == [0] and section["design"]["min_steps"] == 64
    assert section["teacher"]["n"] == TEST and section["test_items"] == TEST and section["pool"] == POOL


def test_a_seed_the_baseline_lacks_is_left_out_of_the_pairing(tmp_path, monkeypatch):
    plan = [key for key in esnli_plan() if key != ("standard", 1000, 2)]
    section = _build(tmp_path, monkeypatch, plan)
    rows = {(r["variant"], r["size"]): r for r in section["data_efficiency"]["rows"]}
    assert rows[("dss", 250)]["seeds"] == [0, 1]
    assert section["grid"]["finished"] == 31 and section["grid"]["seeds"]["2"] == [9, 10]


def test_holm_decides_what_counts_as_significantly_below(monkeypatch):
    """Raw p 0.03 is below 0.05, but Holm over three rows makes it 0.06: that size is not below."""
    from utils import stats
    from utils.report import data_efficiency

    p_by_size = {250: 0.01, 500: 0.03, 1000: 0.5}

    def fake_bootstrap(a_runs, b_runs, n_boot=2000, seed=0, level=0.95, small_sample=True):
        size = next(s for s, marks in sizes.items() if marks is a_runs[0])
        return {"difference": -0.1, "ci": (-0.2, 0.0), "p_value": p_by_size[size]}

    monkeypatch.setattr(stats, "hierarchical_bootstrap", fake_bootstrap)
    item = {"a": True, "b": False}
    sizes = {n: dict(item) for n in p_by_size}
    results = {**{("standard", 2000, s): dict(item) for s in (0, 1)},
               **{("dss", n, s): marks for n, marks in sizes.items() for s in (0, 1)}}
    eff = data_efficiency(results, 2000)
    assert [(r["size"], r["p_holm"], r["below"]) for r in eff["rows"]] == [
        (250, pytest.approx(0.03), True), (500, pytest.approx(0.06), False), (1000, pytest.approx(0.5), False)]
    assert eff["smallest"] == {"dss": 500}
    assert data_efficiency(results, 2000, alpha=0.1)["smallest"] == {"dss": 1000}  # 0.06 < 0.1: 500 is below too
    one_seed = {k: v for k, v in results.items() if k[2] == 0}  # the same p, one seed: never "below"
    assert not any(r["below"] for r in data_efficiency(one_seed, 2000)["rows"])
    assert data_efficiency({("standard", 2000, 0): item}, 2000)["rows"] == []
    with pytest.raises(ValueError, match="alpha"):
        data_efficiency(results, 2000, alpha=0)


# --- verify: recomputes every number and checks the split from hashes ------------------------------------


def test_the_report_is_rebuilt_from_a_run_folder_given_relative_to_the_working_directory(tmp_path, monkeypatch):
    """As the CLI is used (``--run-dir runs/esnli``): load_cells then gives paths relative to the
    working directory, and the rebuild must read them as they are, not under the sweep folder again."""
    from utils.report import verify_predictions

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "esnli").mkdir(parents=True)
    section = _build(Path("runs") / "esnli", monkeypatch, plan=[("standard", 1000, 0), ("dss", 125, 0)])
    assert {(c["variant"], c["size"], c["n"]) for c in section["curves"]} == {("standard", 1000, TEST), ("dss", 125, TEST)}
    assert verify_predictions(Path("runs") / "esnli") == []


def test_verify_recomputes_the_study_and_the_report_matches_its_schema(study):
    from utils.report import load_report, validate_report, verify_predictions

    run_dir, section = study
    assert verify_predictions(run_dir) == []
    validate_report(load_report(run_dir))
    hashes = json.loads((run_dir / ESNLI_SECTION / "premise_hashes.json").read_text())["premises"]
    assert len(hashes) == 1002 + VALIDATION + TEST  # every id some cell used (seed 2's 1000 end at p1001)
    assert all(len(h) == 12 and int(h, 16) >= 0 for h in hashes.values())
    assert hashes["t0"] == hashes["t1"] != hashes["t2"]  # one premise, one hash
    assert "test premise" not in (run_dir / ESNLI_SECTION / "premise_hashes.json").read_text()  # no texts


def _cell_json(run_dir: Path, variant: str, size: int, seed: int) -> Path:
    return run_dir / ESNLI_SECTION / "cells" / variant / cell_name(size / POOL, seed) / "cell.json"


def test_verify_catches_a_test_item_in_training(study):
    from utils.report import verify_predictions

    run_dir, _ = study
    path = _cell_json(run_dir, "dss", 500, 1)
    cell = json.loads(path.read_text())
    cell["ids"]["train"].append("t7")
    path.write_text(json.dumps(cell))
    problems = verify_predictions(run_dir)
    assert any("cells/dss/" in p and "also trained or validated on (t7)" in p for p in problems)


def test_verify_catches_a_shared_premise_without_reading_any_text(study):
    from utils.report import verify_predictions

    run_dir, _ = study
    path = run_dir / ESNLI_SECTION / "premise_hashes.json"
    saved = json.loads(path.read_text())
    saved["premises"]["p3"] = saved["premises"]["t10"]  # a training item with a test item's premise
    path.write_text(json.dumps(saved))
    problems = verify_predictions(run_dir)
    assert problems and all("test premises also occur in training" in p for p in problems)
    assert any("test items t10, t11" in p for p in problems)  # both test items of that premise are named


def test_verify_catches_a_wrong_accuracy_and_a_changed_prediction(study):
    from utils.report import verify_predictions

    run_dir, _ = study
    report_path = run_dir / "report.json"
    report = json.loads(report_path.read_text())
    report[ESNLI_SECTION]["curves"][0]["mean"] += 0.01
    report_path.write_text(json.dumps(report))
    assert any("curve" in p and "mean" in p for p in verify_predictions(run_dir))
    report[ESNLI_SECTION]["curves"][0]["mean"] -= 0.01
    report_path.write_text(json.dumps(report))
    pred = _cell_json(run_dir, "dss", 500, 0).parent / "predictions_test_label.jsonl"
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    rows[0]["prediction"] = "nonsense"  # "correct" still says True: verify must not trust it
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = verify_predictions(run_dir)
    assert any(str(pred) in p and "report says" in p for p in problems)
    assert any("data efficiency dss at 500" in p and "difference" in p for p in problems)


def test_verify_catches_a_cell_scored_on_other_test_items(study):
    from utils.report import load_report, verify_disjoint

    run_dir, _ = study
    cell_dir = _cell_json(run_dir, "ltr", 250, 2).parent
    write_esnli_cell(run_dir / ESNLI_SECTION, "ltr", 250, 2, {f"t{i}": True for i in range(TEST - 1)})
    problems = verify_disjoint(run_dir / ESNLI_SECTION, ESNLI_SECTION, load_report(run_dir)[ESNLI_SECTION])
    assert problems == [f"{ESNLI_SECTION} cells/ltr/{cell_dir.name}: tested on {TEST - 1} items, not on the {TEST} "
                        "test items of the teacher (0 extra, 1 missing)"]


def test_a_sweep_without_a_premise_file_is_verified_as_before(study):
    from utils.report import verify_predictions

    run_dir, _ = study
    (run_dir / ESNLI_SECTION / "premise_hashes.json").unlink()
    cell = json.loads(_cell_json(run_dir, "dss", 500, 1).read_text())
    cell["ids"]["train"].append("t7")
    _cell_json(run_dir, "dss", 500, 1).write_text(json.dumps(cell))
    assert verify_predictions(run_dir) == []  # the disjointness check keys off the premise file


# --- the Markdown, the sentences, the figure ------------------------------------------------------------


def test_the_markdown_and_the_sentences_state_the_finding(study):
    from utils.report import describe_sizes, render_markdown

    run_dir, section = study
    text = render_markdown(run_dir)
    assert "#### esnli_sizes: test accuracy (%) by training size" in text
    # standard: 40/39/39 right at 125-500, 43/42/42 at 1000 (seed 0 gets one more)
    assert "| standard | 65.6 ± 1.0 (3) [" in text and "| 70.6 ± 1.0 (3) [" in text
    assert text.index("| dss | 125 | 3 | 28.9 | 70.6 | -41.7 |") < text.index("| ltr | 125 |") \
        < text.index("| dss-human1 | 250 |")  # the design's order, not the alphabet's
    assert "`dss`: smallest size not significantly below `standard` at 1,000 examples: **250** examples" in text
    assert "`ltr`: smallest size not significantly below `standard` at 1,000 examples: **none**" in text
    assert "| per seed | 95% CI (hierarchical) |" in text and "| -41.7, -41.7, -41.7 |" in text
    assert "Teacher, PaLM 540B (fake), on the same 60 test items: 83.3 %" in text
    assert "At equal size, paired against `standard`" in text
    words = describe_sizes(section)
    assert words.startswith("Complete grid: 32 of 32 cells finished")
    assert ("dss against standard at 1,000 examples: on 125: -41.7 points (95% CI -41.7 to -41.7, hierarchical "
            "bootstrap over 3 seeds and 60 test items, Holm p = 0.008; per seed -41.7, -41.7, -41.7; one seed's test "
            "items detect ±22.9 points at 80% power), significantly below") in words
    assert ("on 250: +0.0 points (95% CI +0.0 to +0.0, hierarchical bootstrap over 3 seeds and 60 test items, Holm "
            "p = 1.000; per seed +0.0, +0.0, +0.0") in words and "within the ±2-point margin (90% CI +0.0 to +0.0)" in words
    assert "dss-all4 against standard at 1,000 examples: on 250: -41.7 points" in words
    assert words.count("one seed: not tested over seeds") == 2  # dss-human1 and dss-all4 ran one seed


def test_describe_sizes_without_a_section_and_with_a_partial_grid(tmp_path, monkeypatch):
    from utils.report import describe_sizes

    empty = describe_sizes(None)
    assert "not run yet" in empty and "python -m utils study --design sizes" in empty
    seed0 = [key for key in esnli_plan() if key[2] == 0]
    partial = _build(tmp_path, monkeypatch, seed0 + [("standard", 1000, 1), ("dss", 500, 1)])
    words = describe_sizes(partial)
    assert words.startswith("Partial grid: 14 of 32 cells finished (seed 0: 12 of 12, seed 1: 2 of 10, "
                            "seed 2: 0 of 10)")
    assert "will move as the rest finish" in words and "hierarchical bootstrap over 1 seed and" in words
    _cell_json(tmp_path, "standard", 1000, 0).unlink()
    no_baseline = _build(tmp_path, monkeypatch, [])  # the cells left on disk: standard at 1000 only for seed 1
    assert "cannot be tested yet" not in describe_sizes(no_baseline)  # seed 1's dss is paired
    _cell_json(tmp_path, "standard", 1000, 1).unlink()
    assert "cannot be tested yet" in describe_sizes(_build(tmp_path, monkeypatch, []))


def test_the_size_plot_writes_a_png(study):
    from utils.evaluation import plot_size_curves

    run_dir, section = study
    assert (run_dir / "figures" / "esnli_sizes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # esnli_report's
    fig = plot_size_curves(section, run_dir / "again.png", title="t")
    assert (run_dir / "again.png").stat().st_size > 1000
    assert fig.axes[0].get_xscale() == "log"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["125", "250", "500", "1,000"]
    with pytest.raises(ValueError, match="no finished cell"):
        plot_size_curves({**section, "curves": []}, run_dir / "none.png")


def test_rebuilding_without_finished_cells_is_a_clear_error(tmp_path, monkeypatch):
    from utils.__main__ import main
    from utils.studies import sizes as recipes

    with pytest.raises(FileNotFoundError, match="No finished e-SNLI cell.*--design sizes"):
        recipes.esnli_report(None, tmp_path, datasets=_fake_datasets())
    monkeypatch.setattr(recipes, "esnli_datasets", lambda root: pytest.fail("the split is not needed to say so"))
    with pytest.raises(SystemExit, match="No finished e-SNLI cell"):  # the command line: a message, no traceback
        main(["study", "--design", "sizes", "--paper-data", "x", "--run-dir", str(tmp_path), "--stage", "report"])


# --- the command line ------------------------------------------------------------------------------------


@pytest.fixture
def fake_study(monkeypatch):
    from utils.report import write_report
    from utils.studies import sizes as recipes

    calls = []

    def record(kind):
        def run(paper_root, run_dir, *args, seeds=None, **kwargs):
            calls.append((kind, tuple(seeds if seeds is not None else args[-1])))
            write_report(run_dir, "timings", {})

        return run

    monkeypatch.setattr(recipes, "esnli_study", record("study"))
    monkeypatch.setattr(recipes, "esnli_report", record("report"))
    return calls


def test_the_seed_option_orders_the_seeds_and_refuses_bad_use(tmp_path, fake_study, capsys):
    from utils.__main__ import main

    base = ["study", "--design", "sizes", "--paper-data", "x", "--run-dir", str(tmp_path)]
    assert main(base) == 0 and fake_study[-1] == ("study", (0, 1, 2))
    assert main(base + ["--seed", "2", "--seed", "0"]) == 0 and fake_study[-1] == ("study", (2, 0))
    assert main(base + ["--stage", "report", "--seed", "1"]) == 0 and fake_study[-1] == ("report", (1,))
    assert "has not run yet" in capsys.readouterr().out
    for extra, message in ((["--seed", "1", "--seed", "1"], "distinct"), (["--seed", "-1"], "distinct"),
                           (["--stage", "final"], "one stage, report"), (["--task", "svamp"], "e-SNLI study"),
                           (["--fold", "1"], "--fold applies")):
        with pytest.raises(SystemExit, match=message):
            main(base + extra)
    with pytest.raises(SystemExit, match="--design sizes only"):
        main(["study", "--design", "cv", "--paper-data", "x", "--run-dir", str(tmp_path), "--seed", "1"])
    with pytest.raises(SystemExit) as exc:  # not an integer: argparse's own error
        main(base + ["--seed", "one"])
    assert exc.value.code == 2 and "invalid int value: 'one'" in capsys.readouterr().err
    assert len(fake_study) == 3  # no bad call reached the study


# --- the real files ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not PAPER.is_dir(), reason="the authors' released files are in ../shared/paper_datasets")
def test_the_teacher_line_and_the_hashes_on_the_real_split(tmp_path):
    from utils.studies.common import paper_teacher
    from utils.studies.esnli_split import esnli_datasets, write_premise_hashes

    palm = esnli_datasets(PAPER)["palm"]
    test_ids = list(palm["test"]["id"])
    teacher = paper_teacher(PAPER, "esnli", tmp_path, ids=test_ids)
    rows = [json.loads(line) for line in (tmp_path / "teacher_test.jsonl").read_text().splitlines()]
    assert teacher["n"] == len(test_ids) == len(rows) and {r["id"] for r in rows} == set(test_ids)
    assert teacher["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    with pytest.raises(ValueError, match="no teacher record"):
        paper_teacher(PAPER, "esnli", tmp_path, ids=["svamp-test-0"])
    hashes = json.loads(write_premise_hashes(tmp_path, palm, []).read_text())["premises"]
    assert set(hashes) == set(test_ids) | set(palm["validation"]["id"])
    assert not {hashes[i] for i in test_ids} & {hashes[i] for i in palm["validation"]["id"]}


COMMITTED = REPO_ROOT / "data" / "results" / "esnli"


@pytest.mark.skipif(not (COMMITTED / "report.json").exists(), reason="no committed e-SNLI study yet")
def test_the_committed_esnli_study_verifies_and_the_readme_prints_its_report():
    import re

    from utils.report import describe_sizes, load_report, markdown_sizes, verify_predictions

    assert verify_predictions(COMMITTED, "esnli") == []  # text-free: premise hashes, saved predictions
    section = load_report(COMMITTED)[ESNLI_SECTION]
    published = sorted(p.parent.relative_to(COMMITTED / ESNLI_SECTION).as_posix()
                       for p in (COMMITTED / ESNLI_SECTION / "cells").glob("*/*/cell.json"))
    assert published == sorted(c["dir"] for c in section["cells"])  # the report covers every published cell
    (block,) = re.findall(r"<!-- esnli:begin -->(.*?)<!-- esnli:end -->", (REPO_ROOT / "docs" / "studies.md").read_text(),
                          re.S)
    assert markdown_sizes(ESNLI_SECTION, section).strip() in block
    assert " ".join(describe_sizes(section).split()) in " ".join(block.split())
