"""``senet-ablate train``: one arm, one seed (docs/DESIGN.md, Training); also the W&B agent's entry point.

Every ``ExperimentConfig`` field is an option under its dotted key (``--train.lr 0.05``,
``--model.se.reduction=8``, the form ``wandb agent`` passes), with ``--se.X`` short for ``--model.se.X``,
and a ``KEY=VALUE`` argument anywhere on the line. ``ablations.experiment.resolve`` turns them into the experiment
(``ablations.experiment`` states the precedence, the one order for every path).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from ablations.config import DATASETS, RECIPE_NAMES, WANDB_MODES, ExperimentConfig
from ablations.overrides import canonical, parse_assignments, parse_text, text_fields
from senet.tree import unwrap_optional

# Short flags for the keys people type most; each is also reachable under its dotted key.
SHORTCUTS = {
    "data": "data.name", "recipe": "train.recipe", "seed": "seed", "epochs": "train.epochs",
    "output-dir": "output_dir", "name": "name", "wandb": "wandb.mode", "devices": "train.devices",
    "strategy": "train.strategy", "accelerator": "train.accelerator", "precision": "train.precision",
}
_SHORTCUT_HELP = {
    "data": f"the dataset: {', '.join(DATASETS)}", "recipe": f"the training recipe: {', '.join(RECIPE_NAMES)}",
    "epochs": "epochs to train",
    "seed": "the seed (weights, data order, the digits split)", "output-dir": "where run folders go",
    "name": "the run folder's name (default: derived from the config's diff to its no-SE baseline)",
    "wandb": f"the W&B mode: {', '.join(WANDB_MODES)}",
}
# SE-ResNet-20 (r = 8) for two epochs on the embedded digits, without W&B.
EXAMPLES = ("senet-ablate train --data digits --epochs 2 model.se.reduction=8 --wandb disabled",)


def config_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, optional sub-configs included (``model.se.reduction``)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            keys += config_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from senet.tree import flatten

    # The shortcuts' defaults are ExperimentConfig's (argparse's stays SUPPRESS: an absent flag must not override
    # a --config file or a recipe); the default recipe equals TrainConfig(), so these are also what quick gives.
    defaults = ExperimentConfig()
    values = flatten(defaults.to_dict())
    parser.add_argument("--config", metavar="FILE", help="an experiment YAML (as written to <run_dir>/config.yaml; "
                        "default: none, the built-in defaults that --print-config shows)")
    parser.add_argument("--model", metavar="NAME", help="a registered model (senet.list_models()), e.g. se_resnet20_cifar "
                        f"(default: {defaults.model.arch}" + (" without SE)" if defaults.model.se is None else ")"))
    parser.add_argument("--print-config", action="store_true", help="check the config and data, print the resolved config and exit")
    parser.add_argument("--no-resume", action="store_true", help="start over even if the run folder has a checkpoint")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="Lightning's progress bar (default: on when stdout is a terminal; otherwise one plain line per epoch)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.lr=0.05")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a dotted override, as in every subcommand (the same as a bare KEY=VALUE)")
    for flag, key in SHORTCUTS.items():
        parser.add_argument(f"--{flag}", dest=key, default=argparse.SUPPRESS, metavar="VALUE",
                            help=_SHORTCUT_HELP.get(flag, f"= --{key}") + _default_text(key, values))
    parser.epilog = ("Every config key is an option too (values parsed as YAML: 8, true, null, [3, 4]; "
                     "--print-config shows each one's value); --se.X is short for --model.se.X: "
                     + ", ".join(f"--{k}" for k in config_keys()))
    group = parser.add_argument_group("config keys")
    for key in config_keys():
        if key in SHORTCUTS:
            continue  # --seed, --name: the shortcut is the same option
        names = [f"--{key}"] + ([f"--{key[len('model.'):]}"] if key.startswith("model.se.") else [])
        group.add_argument(*names, dest=key, default=argparse.SUPPRESS, metavar="VALUE", help=argparse.SUPPRESS)


def _default_text(key: str, values: dict[str, Any]) -> str:
    """`` (default: X)`` for a config key, X as typed on the command line; nothing where the help says it."""
    from ablations.commands.help_format import show

    if values[key] is None:
        return ""
    return f" (default: {show(values[key])})".replace("%", "%%")


def _parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted keys given as ``--key value`` options and ``KEY=VALUE`` arguments (later wins)."""
    known, text = set(config_keys()), text_fields()
    out = {k: parse_text(v, k, as_text=k in text) for k, v in vars(args).items() if k in known}
    text |= {k[len("model."):] for k in text if k.startswith("model.se.")}  # the se.X short forms
    assignments = [*args.overrides, *getattr(args, "sets", [])]
    out.update({canonical(k): v for k, v in parse_assignments(assignments, text_keys=text).items()})
    return out


def run(args: argparse.Namespace) -> int:
    from ablations.experiment import resolve
    from ablations.training.run import run_experiment

    overrides = _parse_overrides(args)
    exp = resolve(args.config, args.model, overrides)  # fails here, before any training
    if args.print_config:
        print(yaml.safe_dump(exp.config.to_dict(), sort_keys=False), end="")
        return 0
    from lightning.pytorch.utilities import rank_zero_only

    # The resolved config is written to <run_dir>/config.yaml (and printed by --print-config); not echoed here, so a
    # refusal by run_experiment (a busy folder, an unreadable checkpoint) stays one line.
    result = run_experiment(exp, resume=not args.no_resume, progress_bar=args.progress)
    if rank_zero_only.rank == 0:
        m = result.metrics
        scores = " ".join(f"{k}={m[k]:.4f}" for k in sorted(m))
        tries = f" over {result.attempts} attempts" if result.attempts > 1 else ""
        print(f"{result.status}: {result.name} ({result.epochs} epochs, {result.wall_time_s:.1f} s{tries}) {scores} "
              f"params={result.params} gmacs={result.gmacs:.4f}" + (f"\n  reason: {result.reason}" if result.reason else ""))
        print(f"  result: {Path(result.run_dir) / 'result.json'}")
        if result.wandb_dir:
            print(f"  W&B: {result.wandb_dir}  (upload: wandb sync {result.wandb_dir})")
    return 0 if result.status == "complete" else 1
