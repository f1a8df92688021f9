"""The ``senet-ablate`` command line: a thin dispatcher over ``ablations.commands.*``.

Each subcommand lives in its own module (``add_arguments(parser)``, ``run(args) -> int``) and is
imported only when used, so ``--help`` stays fast. User mistakes (``ValueError``,
``FileNotFoundError``) end in one ``error:`` line and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import signal
import sys
import typing

# subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("ablations.commands.train", "train one experiment (one arm, one seed)"),
    "quickstart": ("ablations.commands.quickstart", "baseline vs SE variants on the embedded digits, with a table"),
    "complexity": ("ablations.commands.complexity", "regenerate the paper's params/GMACs tables, ours beside the paper's"),
    "sweep": ("ablations.commands.sweep", "run an Optuna study from a sweep YAML (local, N workers, or SLURM)"),
    "wandb-sweep": ("ablations.commands.wandb_sweep", "write (and optionally create) the equivalent W&B sweep"),
    "report": ("ablations.commands.report", "turn a study into the paper's table layout and plots"),
    "excitation": ("ablations.commands.excitation", "record and plot the excitation of a trained model (Sec. 7.2)"),
    "dashboard": ("ablations.reporting.dashboards", "print or create the W&B workspace for SE ablations"),
}


class Parser(argparse.ArgumentParser):
    """argparse, whose error for an unknown flag or an invalid choice names the closest valid ones (difflib), and
    whose help shows every default (``ablations.commands.help_format``)."""

    def __init__(self, *args, **kwargs) -> None:
        from ablations.commands.help_format import HelpFormatter

        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        from senet.tree import did_you_mean

        flags = [s for a in self._actions for s in a.option_strings]
        if message.startswith("unrecognized arguments: "):
            unknown = [w.split("=")[0] for w in message.split(": ", 1)[1].split() if w.startswith("-")]
            message += "".join(did_you_mean(w, flags) for w in unknown[:1])
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2]))
        super().error(message)


class UserError(Exception):
    """A mistake in the user's input, reported as one line without a traceback."""


def _available() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def add_command_arguments(parser: argparse.ArgumentParser, module: str) -> None:
    """A subcommand's options and, after them in its help, its example commands (the module's ``EXAMPLES``)."""
    from ablations.commands.help_format import add_examples

    imported = importlib.import_module(module)
    imported.add_arguments(parser)
    add_examples(parser, imported.EXAMPLES)


def command_parser(name: str) -> Parser:
    """The parser of one subcommand alone, as ``main`` uses it (``senet-ablate NAME ...``)."""
    module, help_ = _available()[name]
    parser = Parser(prog=f"senet-ablate {name}", description=help_)
    add_command_arguments(parser, module)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from ablations.training.provenance import package_version

    parser = Parser(prog="senet-ablate", description="Ablation experiments for Squeeze-and-Excitation networks.")
    parser.add_argument("--version", action="version", version=f"senet-ablate {package_version() or 'unknown'}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        add_command_arguments(p, module)
    return parser


def main(argv: list[str] | None = None) -> int:
    own_argv = argv is None
    argv = sys.argv[1:] if argv is None else argv
    # Import only the chosen subcommand's module (and peek for --help over all of them).
    commands = _available()
    if argv and argv[0] in commands:
        module = importlib.import_module(commands[argv[0]][0])
        parser = command_parser(argv[0])
        # Intermixed: KEY=VALUE arguments may sit between options (train --data digits train.lr=0.05 --epochs 2).
        args = parser.parse_intermixed_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
        module = importlib.import_module(args._module)
    if own_argv and getattr(args, "storage", None):
        # A storage URL's password must not outlive parsing in sys.argv, which W&B records in every run.
        from ablations.sweep.storage import move_storage_to_env

        move_storage_to_env(args.storage)
    from ablations.training.interrupts import RunInterrupted

    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except BrokenPipeError:  # the reader went away (`senet-ablate sweep --dry-run ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail again
        return 128 + signal.SIGPIPE
    except RunInterrupted as exc:  # recorded as "interrupted" where a run was training; 128 + signal, as a shell does
        print(f"senet-ablate {argv[0] if argv else ''}: {exc}; rerun the same command to resume", file=sys.stderr)
        return exc.exit_code
    # Paths the user named: missing, a file where a folder goes (or the reverse), not writable.
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
            PermissionError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception's text held
        print(f"senet-ablate {argv[0] if argv else ''}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
