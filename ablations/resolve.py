"""From what a user typed to an ``ExperimentConfig``: YAML files, ``KEY=VALUE`` overrides, recipes, precedence.

The one resolver behind ``senet-ablate train`` (and so the W&B agent) and a sweep spec's ``base`` (and so
every Optuna trial), so one description gives one experiment on every path. Precedence, later wins:

    defaults < recipe < --config file < --model < dotted keys (--key value, key=value)

The recipe (``train.recipe``, from the file or a flag) goes under everything explicit: it sets its
optimisation fields, its global batch (``data.batch_size`` = the per-device share of it over
``train.devices x train.num_nodes``) and its image size, and an explicit ``data.batch_size`` rescales its
lr linearly to the global batch that gives (``ablations.recipes.apply_recipe``). A config file is a whole
experiment (what it omits takes the defaults); a spec's ``base`` is dotted keys over the defaults.

Every mistake is a ``ValueError`` (or ``FileNotFoundError``) on one line that names the file or the key.
This module imports no torch, so a sweep spec can be checked before torch loads.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the config pulls in torch
    from ablations.config import ExperimentConfig


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML of a file; a missing, unreadable, binary, malformed or too large file is one line naming it
    (the bounds on size and alias expansion: ``ablations.yaml_bounds``).

    Args:
        path: the file.
        what: how the user gave it, for the message (``--config``, ``sweep spec``).
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such file")
    if not path.is_file():
        raise ValueError(f"{what} {path}: not a file; give a YAML file")
    from ablations.yaml_bounds import OverBound, check_size, safe_load_bounded

    try:
        check_size(path.stat().st_size)  # before reading: a huge file is refused without loading it
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path}: not a text file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} "
                         "is not UTF-8); give a YAML file") from None
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    except OverBound as exc:
        raise ValueError(f"{what} {path}: {exc}") from None
    try:
        return safe_load_bounded(text)
    except OverBound as exc:
        raise ValueError(f"{what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path}: not valid YAML: {yaml_problem(exc)}") from None


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


def yaml_problem(exc: Exception) -> str:
    """One line from a YAML error: the problem and where it is (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = (getattr(exc, "problem", None) or str(exc).splitlines()[0]).replace("'<stream end>'", "the end")
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


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


def resolve_experiment(config_file: str | None = None, model: str | None = None,
                   overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """The experiment that a config file, a registered model name and dotted overrides describe.

    Precedence as in the module docstring. Raises ``ValueError`` naming any unknown key or bad value.

    Args:
        config_file: an experiment YAML (as ``run_experiment`` writes to ``<run_dir>/config.yaml``).
        model: a registered model name (``senet.list_models()``); it replaces the file's model section.
        overrides: dotted keys (``{"train.lr": 0.05}``; ``se.X`` is short for ``model.se.X``).
    """
    from ablations.config import ExperimentConfig
    from ablations.recipes import apply_recipe
    from senet import model_config
    from senet.tree import apply_overrides, flatten, from_dict, layer

    explicit: dict[str, Any] = {}
    cfg = ExperimentConfig()
    if config_file is not None:
        data = read_yaml(config_file, "--config") or {}
        if not isinstance(data, dict):
            raise ValueError(f"--config {config_file}: expected a mapping of experiment fields, got {type(data).__name__}")
        try:
            cfg = from_dict(ExperimentConfig, data)  # a file is a whole experiment: what it omits takes the defaults
        except ValueError as exc:
            raise ValueError(f"--config {config_file}: {exc}") from None
        explicit = flatten(data)
        if model is not None:
            explicit = {k: v for k, v in explicit.items() if k != "model" and not k.startswith("model.")}
    flags = {canonical(k): v for k, v in (overrides or {}).items()}
    explicit = layer(explicit, flags)
    recipe = explicit.pop("train.recipe", None)
    flags.pop("train.recipe", None)
    if model is not None:
        cfg = cfg.replace(model=model_config(model))
    cfg = apply_overrides(cfg, flags)
    if recipe is not None:
        batch = explicit.get("data.batch_size")
        total = None if batch is None else cfg.data.batch_size * cfg.train.devices * cfg.train.num_nodes
        # The recipe goes under everything explicit: re-apply the file's and the flags' values on top.
        cfg = apply_overrides(apply_recipe(cfg, recipe, total), explicit)
    return cfg


def resolve_base(raw: dict) -> ExperimentConfig:
    """A sweep spec's ``base`` mapping, resolved as ``senet-ablate train`` resolves the same keys as flags.

    ``model`` may be a registered model name (as ``--model``) or a mapping of model fields; every other entry
    is a (nested or dotted) config key over the defaults.
    """
    from ablations.config import ExperimentConfig
    from senet.tree import did_you_mean, flatten

    fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    for key in raw:
        if str(key).split(".")[0] not in fields:
            raise ValueError(f"unknown key {key}{did_you_mean(str(key).split('.')[0], fields)}; "
                             f"allowed keys: {', '.join(fields)}")
    name = raw.get("model") if isinstance(raw.get("model"), str) else None
    overrides = flatten({k: v for k, v in raw.items() if not (k == "model" and name is not None)})
    return resolve_experiment(None, name, overrides)
