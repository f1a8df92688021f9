"""``excitation --set data.KEY=VALUE`` (train's spelling); the old ``--data KEY=VALUE`` still works, with one line."""
from __future__ import annotations

import pytest

from ablations.cli import command_parser, main
from ablations.commands.excitation import DEPRECATED_DATA, options


def overrides(argv: list[str]) -> dict:
    return options(command_parser("excitation").parse_intermixed_args(["run", *argv])).data


def test_set_and_the_old_data_give_the_same_overrides(capsys):
    new = overrides(["--set", "data.root=/data/digits", "--set", "data.download=true", "--batch-size", "16"])
    assert new == {"data.root": "/data/digits", "data.download": True, "data.batch_size": 16}
    assert capsys.readouterr().err == ""
    old = overrides(["--data", "root=/data/digits", "--data", "data.download=true", "--batch-size", "16"])
    assert old == new
    assert capsys.readouterr().err == DEPRECATED_DATA + "\n"  # once, however many --data


def test_deprecation_names_the_new_spelling():
    assert "--data KEY=VALUE is deprecated; use --set data.KEY=VALUE" in DEPRECATED_DATA


def test_old_data_on_the_command_line_warns_once_then_runs_on(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["excitation", str(missing), "--data", "root=/x", "--data", "download=true"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err.count(DEPRECATED_DATA) == 1
    assert "checkpoints/last.ckpt" in err[-1]  # the same refusal as without --data: the checkpoint is missing


@pytest.mark.parametrize("item, message", [
    ("model.se.reduction=4", "--set 'model.se.reduction' is not allowed; only data.* keys can change"),
    ("root=/x", "--set 'root' is not allowed; only data.* keys can change"),
    ("rootless", "--set 'rootless' is not allowed; use KEY=VALUE"),
])
def test_set_refuses_what_it_cannot_change_in_one_line(item, message, tmp_path, capsys):
    assert main(["excitation", str(tmp_path), "--set", item]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_the_flag_is_listed_as_set_and_the_old_one_hidden():
    text = command_parser("excitation").format_help()
    assert "--set KEY=VALUE" in text and "--data" not in text
