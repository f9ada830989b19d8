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
