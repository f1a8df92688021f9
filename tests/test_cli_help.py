"""Every subcommand's ``--help`` shows each option's default and a runnable example (issue 24)."""
from __future__ import annotations

import argparse
import shlex

import pytest

from ablations.cli import COMMANDS, build_parser, command_parser, main
from ablations.commands.help_format import examples, show


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def rendered(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """One option's entry in the help, as printed."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def example_argv(name: str) -> list[list[str]]:
    """The example commands of ``senet-ablate NAME --help``, as argument lists after the subcommand."""
    lines = examples(subcommands()[name].format_help())
    assert lines, f"senet-ablate {name} --help shows no example"
    out = []
    for line in lines:
        argv = shlex.split(line, comments=True)
        assert argv[:2] == ["senet-ablate", name], line
        out.append(argv[2:])
    return out


def test_every_subcommand_is_covered():
    assert set(subcommands()) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_shows_its_default(name):
    parser = subcommands()[name]
    # A flag (no value), a positional and a required option have no default to show; every other option does.
    valued = [a for a in parser._actions if a.help is not argparse.SUPPRESS and a.option_strings and a.nargs != 0
              and not a.required]
    assert valued
    missing = [a.option_strings[0] for a in valued if "default" not in rendered(parser, a).lower()]
    assert not missing, f"senet-ablate {name} --help shows no default for {missing}"


def test_train_shortcuts_show_the_config_defaults():
    from ablations.commands.train import SHORTCUTS
    from ablations.config import ExperimentConfig
    from senet.tree import flatten

    values = flatten(ExperimentConfig().to_dict())
    text = " ".join(subcommands()["train"].format_help().split())
    for flag, key in SHORTCUTS.items():
        if values[key] is not None:
            assert f"--{flag} VALUE" in text and f"(default: {show(values[key])})" in text, flag
    assert f"(default: {ExperimentConfig().model.arch} without SE)" in text


def test_quickstart_defaults_are_the_config_ones():
    from ablations.quickstart import QuickstartConfig

    q, args = QuickstartConfig(), command_parser("quickstart").parse_args([])
    assert (tuple(args.seeds), args.epochs, args.image_size, args.output_dir, args.data, args.wandb) == \
        (q.seeds, q.epochs, q.image_size, q.output_dir, q.data, q.wandb_mode)
    assert f"seeds per arm (default: {show(q.seeds)})" in " ".join(command_parser("quickstart").format_help().split())


def test_max_arms_shows_the_cap_the_spec_reader_uses():
    from ablations.sweep.grid_size import MAX_ARMS

    for name in ("sweep", "wandb-sweep"):
        assert f"(default: {MAX_ARMS})" in " ".join(subcommands()[name].format_help().split())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_example_parses(name):
    for argv in example_argv(name):
        try:
            command_parser(name).parse_intermixed_args(argv)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"senet-ablate {name} {shlex.join(argv)}: refused ({exc})")


def test_examples_read_the_same_in_both_help_paths(capsys):
    """``senet-ablate NAME --help`` (main's own parser) prints what ``build_parser`` holds."""
    with pytest.raises(SystemExit):
        main(["excitation", "--help"])
    assert examples(capsys.readouterr().out) == examples(subcommands()["excitation"].format_help())


# The cheap ones run as printed (or checked without training: train --print-config, sweep --dry-run).
@pytest.mark.parametrize("name, extra, expected", [
    ("complexity", [], "se_resnet50 se.reduction=8"),
    ("dashboard", [], "runs grouped by config:model.se.reduction"),
    ("wandb-sweep", [], "name: digits-reduction"),
    ("sweep", ["--dry-run"], "15 trials (arm x seed)"),
    ("train", ["--print-config"], "reduction: 8"),
])
def test_examples_run_on_the_embedded_data(name, extra, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands here
    [argv] = example_argv(name)
    assert main([name, *argv, *extra]) == 0
    assert expected in capsys.readouterr().out
