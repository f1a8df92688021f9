"""One flag, one meaning, in every subcommand (issue 10): ``--set KEY=VALUE`` is a dotted override, ``--wandb MODE``
the W&B mode, ``--out`` where a command writes its files, ``--output-dir`` where run folders go."""
from __future__ import annotations

import argparse

import pytest

from ablations.cli import build_parser

SHARED = {
    "--set": {"train", "sweep", "quickstart", "complexity", "wandb-sweep", "excitation"},
    "--wandb": {"train", "quickstart", "excitation"},
    "--out": {"complexity", "excitation", "report", "wandb-sweep"},
    "--output-dir": {"train", "quickstart"},
}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("flag", sorted(SHARED))
def test_shared_flags_exist_where_they_mean_something(flag):
    subs = subcommands()
    have = {name for name, p in subs.items() if flag in p._option_string_actions}
    assert SHARED[flag] <= have, f"{flag} missing from {sorted(SHARED[flag] - have)}"


def test_train_set_is_the_same_override_as_a_bare_key_value(capsys):
    from ablations.cli import main

    assert main(["train", "--set", "train.lr=0.3", "--wandb", "disabled", "--print-config"]) == 0
    with_set = capsys.readouterr().out
    assert main(["train", "train.lr=0.3", "--wandb", "disabled", "--print-config"]) == 0
    assert capsys.readouterr().out == with_set and "lr: 0.3" in with_set
