"""Lightning's own command line over ``SEClassifier`` and the DataModules (docs/DESIGN.md, Training).

``senet-ablate train`` is the product's command: run folders, resume, result rows, sweeps. This is the other
door, for people who know Lightning: ``LightningCLI`` with every Trainer flag, ``fit``/``validate``/``test``/
``predict`` subcommands and ``--print_config``, and none of the run-folder bookkeeping. The model and data
are built from their typed constructors (``--model.config.train.lr``, ``--data.cfg.image_size``); the data
class is named with ``--data`` (required: any ``ImageDataModule`` subclass, e.g. ``DigitsDataModule``)::

    python -m ablations.commands.lightning_cli fit --data=DigitsDataModule --data.cfg.image_size=16 --trainer.max_epochs=2
    python -m ablations.commands.lightning_cli fit --data=CIFAR10DataModule --data.cfg.root=~/data/cifar \\
        --model.config.model.arch=resnet20_cifar --model.config.model.se.reduction=8
    python -m ablations.commands.lightning_cli test --data=DigitsDataModule --ckpt_path=lightning_logs/version_0/checkpoints/...

``--model.config.data`` is not needed: the module records the datamodule's ``cfg`` when training starts; nor are
``--model.config.model.num_classes``/``in_chans``: as in ``senet-ablate train``, the data sets them.
``validate``/``test``/``predict`` with ``--ckpt_path`` evaluate the experiment the checkpoint records: a defining
data field the user did not set (the image size, and the split of digits and synthetic) takes the checkpoint's
value, with one line on stderr saying so; one set to another value is refused by the module.

``CheckpointDataCLI(SEClassifier, DigitsDataModule)`` (or plain ``LightningCLI``, which leaves the checkpoint check
to the module) works as well, with one data class and no ``--data`` choice.

The module applies the training fields it owns (optimiser, schedule, loss, ``channels_last``, and ``compile`` through
the callback it hands the Trainer), and this CLI sets ``--model.config.train.threads`` (torch's intra-op threads) for
the process before anything runs.
The fields that are the Trainer's (``TRAINER_FIELDS``: devices, precision, ...) are refused when written under
``--model.config.train``, with the ``--trainer`` flag to use instead: accepting them would change nothing.
"""
from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace, dict_to_namespace
from lightning.pytorch.cli import LightningCLI

from ablations.config import DataConfig, ExperimentConfig
from ablations.data import ImageDataModule, data_fields
from ablations.training.data_check import adapt_to_record
from ablations.training.module import SEClassifier
from senet import safe_load

EVALUATING = ("validate", "test", "predict")
#: ``train`` fields that the ``Trainer`` applies (``--trainer.<flag>``), not the module: train field -> Trainer flag.
TRAINER_FIELDS = {"precision": "precision", "accelerator": "accelerator", "devices": "devices",
                  "num_nodes": "num_nodes", "strategy": "strategy", "deterministic": "deterministic",
                  "limit_train_batches": "limit_train_batches", "limit_val_batches": "limit_val_batches"}


class CheckpointDataCLI(LightningCLI):
    """``LightningCLI`` whose evaluating subcommands build the datamodule for the checkpoint's experiment: the
    defining data fields (``ablations.training.data_check``) the user did not set take the checkpoint's values, and one
    line on stderr names them."""

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyperparameters here (``torch.load(weights_only=True)``): with the
        project's allowlist (older checkpoints hold numpy arrays), and a file that would run code is one line."""
        with _checked_checkpoint(self.config.get(self.config.get("subcommand") or "", {}).get("ckpt_path")):
            super()._parse_ckpt_path()

    def _run_subcommand(self, subcommand: str) -> None:
        """The Trainer's own load of ``--ckpt_path`` under the same allowlist and refusal."""
        with _checked_checkpoint(self.config_init[subcommand].get("ckpt_path")):
            super()._run_subcommand(subcommand)

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
        train = _train_fields(self.config[sub] if sub else self.config)
        written = _train_fields(self.written[sub] if sub else self.written) if self.written is not None else {}
        for field, flag in TRAINER_FIELDS.items():
            if field in written:
                raise ValueError(f"model.config.train.{field} is not applied under LightningCLI (the Trainer's "
                                 f"setting): give --trainer.{flag}={written[field]} instead")
        if train.get("threads") is not None:
            torch.set_num_threads(int(train["threads"]))  # this process runs one command: no need to restore it
        self._adapt_data_to_checkpoint(sub)
        self._settle_data_fields(sub)

    def _data(self, config: Namespace) -> tuple[Namespace | None, type]:
        """The data class's init arguments (``None`` where its ``cfg`` is not given field by field) and the class."""
        data = config.data
        init = data.init_args if "class_path" in data else data
        cls = _import(data.class_path) if "class_path" in data else self._datamodule_class
        return (init if isinstance(init.get("cfg"), Namespace) else None), cls

    def _settle_data_fields(self, sub: str | None) -> None:
        """The one resolve step's rule (``ablations.data.data_fields``): the data decides the network's
        classes and input channels, so ``model.num_classes`` and ``model.in_chans`` that the user did not write take
        the datamodule's, as ``senet-ablate train --data`` does. A written one that disagrees is refused by the
        module; a checkpoint being evaluated keeps the network it records."""
        config = self.config[sub] if sub else self.config
        init, cls = self._data(config)
        if (sub in EVALUATING and config.get("ckpt_path")) or init is None or self.written is None:
            return
        if _node(config, "model") is not None and config.model.get("config") is None:  # the defaults, field by field
            config.model.config = dict_to_namespace(ExperimentConfig().to_dict())
        model = _node(config, "model", "config", "model")
        if model is None:
            return
        written = _node(self.written[sub] if sub else self.written, "model", "config", "model")
        try:  # constructed only (a folder's classes are read, nothing is loaded); the real one is built next
            dm = cls(DataConfig(**vars(init.cfg)), **({"seed": init.seed} if init.get("seed") is not None else {}))
        except (OSError, TypeError, ValueError):
            return  # its instantiation says why, in its own words
        for key, value in data_fields(dm).items():
            if value and (written is None or key not in written):
                setattr(model, key, value)

    def _adapt_data_to_checkpoint(self, sub: str | None) -> None:
        path = self.config[sub].get("ckpt_path") if sub in EVALUATING else None
        if not path or not Path(path).is_file():
            return
        # mmap: only the hyperparameters are read here, not the weights (the Trainer loads those).
        with _checked_checkpoint(path):
            recorded = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
        if not isinstance(recorded.get("config"), dict):
            return
        init, cls = self._data(self.config[sub])
        if init is None:
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


def _node(config: Namespace | None, *keys: str) -> Namespace | None:
    """The namespace at ``keys`` of a parsed (or user-written) config, through ``init_args``; ``None`` if absent."""
    node: Any = config
    for key in keys:
        node = node.get(key) if isinstance(node, Namespace) else None
        if isinstance(node, Namespace) and "init_args" in node:
            node = node.init_args
    return node if isinstance(node, Namespace) else None


def _train_fields(config: Namespace | None) -> dict[str, Any]:
    """The ``model.config.train`` values of a parsed (or user-written) config; empty where it has none."""
    node = _node(config, "model", "config", "train")
    return {k: v for k, v in vars(node).items() if v is not None} if node is not None else {}


@contextlib.contextmanager
def _checked_checkpoint(path: Any) -> Iterator[None]:
    """Restricted loads of ``path`` inside the block (``senet.safe_load``): a refused file is ``UnsafeCheckpoint``,
    one line naming it, instead of torch's ``UnpicklingError`` traceback."""
    with safe_load.safe_loading():
        try:
            yield
        except pickle.UnpicklingError as exc:
            refused = safe_load.refusal(path, exc) if path else None
            if refused is None:
                raise
            raise refused from None


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
    try:
        main()
    except ValueError as exc:  # bad input: one line, not a traceback
        sys.exit(f"error: {' '.join(str(exc).split())}")
