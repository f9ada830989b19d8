"""The command line: every subcommand parses, and the report command reads a run folder."""

import pytest

from utils.__main__ import main

COMMANDS = ("demo", "run", "report", "convert", "teacher", "study", "serve")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"python -m utils {command}" in capsys.readouterr().out


def test_report_of_a_folder_without_a_report_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No report.json"):
        main(["report", str(tmp_path)])


@pytest.mark.parametrize("item", ["SWEEP_SEEDS=three", "SWEEP_SEEDS", "=3", "not a name=3"])
def test_a_malformed_param_is_a_clear_error(item):
    from utils.__main__ import parse_params

    with pytest.raises(SystemExit, match="expected NAME=JSON"):
        parse_params([item])


def test_params_are_json_and_a_param_no_notebook_declares_is_refused_before_anything_runs(tmp_path):
    from utils.__main__ import check_params, parse_params

    assert parse_params(["SWEEP_FRACTIONS=[0.5, 1.0]", "SWEEP_SEEDS=3"]) == {"SWEEP_FRACTIONS": [0.5, 1.0],
                                                                           "SWEEP_SEEDS": 3}
    check_params({"SWEEP_SEEDS": 1, "COST_EXAMPLES": 4, "PROFILE": "tiny"})
    with pytest.raises(SystemExit, match="SWEEP_SEED\\b"):
        check_params({"SWEEP_SEED": 3})
    with pytest.raises(SystemExit, match="SWEEP_SEED\\b"):  # demo stops before it makes a run folder
        main(["demo", "--runs-root", str(tmp_path), "--param", "SWEEP_SEED=3"])
    assert not any(tmp_path.iterdir())


def test_publishing_a_run_leaves_out_weights_and_the_named_folders(tmp_path):
    import json

    from utils.studies.common import publish_study

    run = tmp_path / "run"
    for rel in ("report.json", "config.json", "figures/a.png", "sweep/cells/dss/f1-s1/cell.json",
                "sweep/cells/dss/f1-s1/model/config.json", "student/dss/config.json", "notebooks/x.json"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text("{}")
    (run / "sweep/cells/dss/f1-s1/predictions_test_label.jsonl").write_text(
        json.dumps({"id": "a", "input": "text", "prediction": "1", "gold": "1"}) + "\n")
    assert publish_study(run, tmp_path / "out", skip_dirs=("student", "notebooks")) == 1
    kept = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert kept == ["config.json", "figures/a.png", "report.json", "sweep/cells/dss/f1-s1/cell.json",
                    "sweep/cells/dss/f1-s1/predictions_test_label.jsonl"]
    row = json.loads((tmp_path / "out/sweep/cells/dss/f1-s1/predictions_test_label.jsonl").read_text())
    assert "input" not in row and row["prediction"] == "1"
