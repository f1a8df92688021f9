"""How every ``senet-ablate`` subcommand's ``--help`` reads: each option with its default, and a runnable example.

The default shown is the parser's own ``default=``, so it cannot drift from what the code uses. An option whose
default is ``None`` or ``SUPPRESS`` (the value then comes from elsewhere: a config, a checkpoint, the machine)
says in its help text what that is; ``tests/test_cli_help.py`` holds every option to one or the other. The
examples sit in the epilog under ``example:``, indented, one command per line, and work on the embedded digits.
"""
from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

EXAMPLE_HEADING = "example:"


def show(value: object) -> str:
    """A default as it is typed on the command line: a list space-separated (empty: none), '' quoted, None null."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if value else "none"
    if value is None:
        return "null"
    return "''" if value == "" else str(value)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, adding ``(default: X)`` to every option with a value and keeping the examples whole."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # Flags (nargs 0) have no value to default; positionals are required or explained in their text; None and
        # SUPPRESS mean "from elsewhere", which only the help text can say. A text that names its default wins.
        if (action.option_strings and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS)
                and "default" not in text.lower()):
            text += f" (default: {show(action.default)})".replace("%", "%%")  # the help is %-formatted after this
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # Plain lines wrap; indented ones (the examples) stay whole, so they can be copied as they are.
        return "\n".join(line if not line or line.startswith(" ") else
                         textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                         for line in text.splitlines())


def add_examples(parser: argparse.ArgumentParser, examples: Sequence[str]) -> None:
    """Append the ``example:`` section (one indented command per line) to the parser's epilog."""
    section = EXAMPLE_HEADING + "".join(f"\n  {line}" for line in examples)
    parser.epilog = f"{parser.epilog}\n\n{section}" if parser.epilog else section


def examples(help_text: str) -> list[str]:
    """The example commands of a ``--help`` text, as printed (a trailing ``# note`` included)."""
    _, found, tail = help_text.partition("\n" + EXAMPLE_HEADING + "\n")
    lines = []
    for line in tail.splitlines() if found else ():
        if not line.startswith("  "):
            break
        lines.append(line.strip())
    return lines
