"""What a user types: ``KEY=VALUE`` overrides and dotted keys, read as YAML values, with one-line errors.

``parse_assignments`` is the one ``KEY=VALUE`` parser of every subcommand; ``canonical`` turns a key as typed
(``--se.reduction``) into its dotted config key; ``text_fields`` names the keys whose value stays the text typed.
The experiment these describe is resolved by ``ablations.experiment`` (the precedence is written there). This
module imports no torch, so a sweep spec can be checked before torch loads.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from ablations.yaml_bounds import yaml_problem


def parse_assignments(items: list[str], option: str = "", example: str = "train.lr=0.05",
                      text_keys: Collection[str] = ()) -> dict[str, Any]:
    """``["train.lr=0.05", "model.se.stages=[2, 3]"]`` -> ``{"train.lr": 0.05, "model.se.stages": [2, 3]}``.

    Values are YAML (``8`` -> int, ``true`` -> bool, ``null`` -> None). The one KEY=VALUE parser of the CLI.

    Args:
        items: the ``KEY=VALUE`` strings, in order (a later key wins).
        option: the flag that took them (``--set``), for the message; ``""`` for bare arguments.
        example: a valid item of this option, for the message.
        text_keys: keys of string fields, whose value stays the text typed (``name=2024``) unless YAML reads
            it as a string or null (``name='x'``, ``data.root=null``).
    """
    where = f"{option} " if option else ""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{where}{item!r} is not allowed; use KEY=VALUE, e.g. {where}{example}")
        out[key] = parse_text(text, f"{where}{key}", as_text=key in text_keys)
    return out


def parse_text(text: str, key: str, as_text: bool = False) -> Any:
    """One value typed on the command line, read as YAML (see ``parse_assignments``).

    Raises:
        ValueError: ``text`` is not valid YAML; the message names ``key``, the value and the forms allowed.
    """
    import yaml

    try:
        value = yaml.safe_load(text) if isinstance(text, str) else text
    except yaml.YAMLError as exc:
        if as_text:
            return text
        raise ValueError(f"{key}={text!r} is not allowed: the value is not valid YAML ({yaml_problem(exc)}); "
                         "write it as YAML: 8, 0.05, true, null, a name, or a list such as [2, 3]") from None
    return text if as_text and not (value is None or isinstance(value, str)) else value


def text_fields(cls: type | None = None, prefix: str = "") -> set[str]:
    """The dotted keys of string fields (``name``, ``data.root``, ``model.se.gate``, ...)."""
    import typing

    from senet.tree import unwrap_optional

    if cls is None:
        from ablations.config import ExperimentConfig as cls
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            out |= text_fields(tp, f"{prefix}{f.name}.")
        elif tp is str:
            out.add(prefix + f.name)
    return out


def canonical(key: str) -> str:
    """A key as typed (``--se.reduction``, ``se.reduction``, ``--train.num-nodes``) -> its dotted config key."""
    if key.startswith("--"):
        key = key[2:].replace("-", "_")
    return "model." + key if key == "se" or key.startswith("se.") else key
