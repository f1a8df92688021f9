"""Lightning's own command line over ``SEClassifier`` and the DataModules (DESIGN: Training; issue 13).

``senet-ablate train`` is the product's command: run folders, resume, result rows, sweeps. This is the other
door, for people who know Lightning: ``LightningCLI`` with every Trainer flag, ``fit``/``validate``/``test``/
``predict`` subcommands and ``--print_config``, and none of the run-folder bookkeeping. The model and data
are built from their typed constructors (``--model.config.train.lr``, ``--data.cfg.image_size``); the data
class is named with ``--data`` (required: any ``ImageDataModule`` subclass, e.g. ``DigitsDataModule``)::

    python -m ablations.lightning_cli fit --data=DigitsDataModule --data.cfg.image_size=16 --trainer.max_epochs=2
    python -m ablations.lightning_cli fit --data=CIFAR10DataModule --data.cfg.root=~/data/cifar \\
        --model.config.model.arch=resnet20_cifar --model.config.model.se.reduction=8
    python -m ablations.lightning_cli test --data=DigitsDataModule --ckpt_path=lightning_logs/version_0/checkpoints/...

``--model.config.data`` is not needed: the module records the datamodule's ``cfg`` when training starts.
``validate``/``test``/``predict`` with ``--ckpt_path`` evaluate the experiment the checkpoint records: a defining
data field the user did not set (the image size, and the split of digits and synthetic) takes the checkpoint's
value, with one line on stderr saying so; one set to another value is refused by the module.

``CheckpointDataCLI(SEClassifier, DigitsDataModule)`` (or plain ``LightningCLI``, which leaves the checkpoint check
to the module) works as well, with one data class and no ``--data`` choice.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from ablations.config import ExperimentConfig
from ablations.data import ImageDataModule
from ablations.data_check import adapt_to_record
from ablations.module import SEClassifier

EVALUATING = ("validate", "test", "predict")


class CheckpointDataCLI(LightningCLI):
    """``LightningCLI`` whose evaluating subcommands build the datamodule for the checkpoint's experiment: the
    defining data fields (``ablations.data_check``) the user did not set take the checkpoint's values, and one
    line on stderr names them."""

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        # What the user wrote (flags and config files), without the defaults: only those are never replaced.
        # Where this second parse fails, everything counts as written, and the module refuses what disagrees.
        try:
            self.written = (parser.parse_object(args, defaults=False) if isinstance(args, (dict, Namespace))
                            else parser.parse_args(args, defaults=False))
        except SystemExit:
            self.written = None

    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        path = self.config[sub].get("ckpt_path") if sub in EVALUATING else None
        if not path or not Path(path).is_file():
            return
        # mmap: only the hyperparameters are read here, not the weights (the Trainer loads those).
        recorded = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
        if not isinstance(recorded.get("config"), dict):
            return
        data = self.config[sub].data
        init = data.init_args if "class_path" in data else data
        cls = _import(data.class_path) if "class_path" in data else self._datamodule_class
        if not isinstance(init.get("cfg"), Namespace):
            return
        given = {**vars(init.cfg), "seed": init.get("seed")}
        changes, line = adapt_to_record(ExperimentConfig.from_dict(recorded["config"]), cls, given,
                                        explicit=set(given) if self.written is None else written_data(self.written[sub]))
        for field, value in changes.items():
            setattr(init if field == "seed" else init.cfg, field, value)
        if line:
            print(f"{sub}: {line}", file=sys.stderr)


def written_data(written: Namespace) -> set[str]:
    """The data fields (``cfg`` fields and ``seed``) among the values the user wrote for one subcommand."""
    data = written.get("data")
    if not isinstance(data, Namespace):
        return set()
    init = data.get("init_args", Namespace()) if "class_path" in data else data
    cfg = init.get("cfg")
    return set(vars(cfg) if isinstance(cfg, Namespace) else ()) | ({"seed"} if "seed" in init else set())


def _import(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def main(args: list[str] | None = None, run: bool = True) -> CheckpointDataCLI:
    """Parse ``args`` (``sys.argv[1:]`` when ``None``) and run the subcommand; returns the CLI object.

    ``--data`` has no default on purpose: jsonargparse carries a default class's ``init_args`` over to the class
    that ``--data`` names, so a digits default would hand ``data.name='digits'`` to every other DataModule.
    """
    return CheckpointDataCLI(SEClassifier, ImageDataModule, subclass_mode_data=True, args=args, run=run)


if __name__ == "__main__":
    main()
