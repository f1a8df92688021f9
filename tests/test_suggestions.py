"""Every unknown name gets the closest valid ones (difflib): model, dataset, recipe, key, flag, subcommand; --version."""
from __future__ import annotations

import pytest

from ablations.cli import main


@pytest.mark.parametrize("argv, expected", [
    (["train", "--model", "se_resnet5", "--print-config"], "model='se_resnet5' is not registered (did you mean se_resnet50"),
    (["train", "--data", "digit", "--print-config"], "data.name='digit' is not allowed (did you mean digits?)"),
    (["train", "--recipe", "quik", "--print-config"], "train.recipe='quik' is not allowed (did you mean quick?)"),
    (["train", "model.se.reducton=8", "--print-config"], "(did you mean model.se.reduction"),
    (["train", "--model.se.gate=sigmoidd", "--print-config"], "model.se.gate='sigmoidd' is not allowed (did you mean sigmoid"),
    (["sweep", "reductoin", "--dry-run"], "did you mean reduction or paper/reduction?"),
])
def test_unknown_names_suggest_the_closest(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["train", "--se.reducton", "8"], "unrecognized arguments: --se.reducton (did you mean --se.reduction"),
    (["sweep", "--lst"], "(did you mean --list"),
    (["trian"], "invalid choice: 'trian'"),
])
def test_unknown_flags_and_commands_suggest_the_closest(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and expected in err and "did you mean" in err


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"senet-ablate {version('senet-ablations')}"
