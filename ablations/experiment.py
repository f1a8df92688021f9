"""The one resolve step: from what a user typed, or from a config, to the ``Experiment`` that trains.

``resolve(config_file, model, overrides)`` is ``senet-ablate train``'s (and so the W&B agent's); ``settle(cfg,
baseline)`` is every other path's (a sweep arm, the quickstart, a script: ``training.run.run_config(cfg)`` is
``run_experiment(settle(cfg))``). Both check everything before any work and return the finished experiment: the config with its
data fields settled, the datamodule set up for ``fit``, the network checked once on the meta device, and the
run's identity (its name and hash), so nothing downstream rebuilds, renames or rehashes it. The precedence of
files, recipes and flags is ``ablations.resolve``'s (docs/DESIGN.md, Configuration).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ablations.config import ExperimentConfig
from ablations.naming import run_name
from ablations.resolve import resolve_experiment


@dataclass(frozen=True)
class Experiment:
    """One arm at one seed, resolved and checked.

    Attributes:
        config: the experiment, ``model.num_classes`` and ``model.in_chans`` as its data serves them.
        datamodule: its datamodule, set up for ``fit`` (the data folder read, the split made).
        name: the run folder's name (``naming.run_name``; ``run_experiment`` appends the hash to it only when
            that folder holds another experiment).
        config_hash: ``config.hash()``, the run's identity in ``result.json``.
    """

    config: ExperimentConfig
    datamodule: Any = field(repr=False, compare=False)
    name: str
    config_hash: str

    @property
    def input_size(self) -> tuple[int, ...]:
        """(C, H, W) of one image as the datamodule serves it."""
        return tuple(self.datamodule.input_size)


def settle(cfg: ExperimentConfig, baseline: ExperimentConfig | None = None) -> Experiment:
    """``cfg`` checked against its data and settled into an ``Experiment``; raises before any training.

    The data decides the classifier's width and input channels: ``model.num_classes`` and ``model.in_chans``
    are set from the datamodule, so ``--data cifar100`` needs no second flag. The network is built once, on the
    meta device, and run on one image of the data's size, so that an impossible SE configuration (an operator
    that needs larger maps than a stage has) fails now, not in a worker.

    Args:
        cfg: the experiment as resolved from files and flags.
        baseline: what the run name is relative to (``naming.run_name``; a sweep passes its base).
    """
    from ablations.data import build_datamodule

    check_training(cfg)
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")  # a missing or malformed data folder fails here, with its path
    cfg = with_data_fields(cfg, dm)
    check_network(cfg.model, tuple(getattr(dm, "input_size", None) or image_size(cfg)))
    return Experiment(config=cfg, datamodule=dm, name=run_name(cfg, baseline), config_hash=cfg.hash())


def check_training(cfg: ExperimentConfig) -> None:
    """The rules between ``train`` fields that no single field's check sees (here, not in ``TrainConfig``: a recipe
    and the flags over it pass through combinations on the way to the final config)."""
    if cfg.train.schedule == "plateau" and cfg.train.warmup_epochs:
        raise ValueError("train.warmup_epochs is not allowed with train.schedule='plateau'; use 0, or another schedule")


def image_size(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(C, H, W) of one image as the datamodules serve ``cfg.data`` (square, ``model.in_chans`` once settled)."""
    return cfg.model.in_chans, cfg.data.image_size, cfg.data.image_size


def check_network(model: Any, size: tuple[int, ...]) -> None:
    """Build ``model`` (a ``ModelConfig``) on the meta device (no memory, no weights) and run one image of ``size``
    through it: a configuration that cannot exist (an r that leaves zero channels) or cannot run on maps of that size
    (an operator that needs more positions than a stage has) raises ``ValueError`` now, not in a worker."""
    import torch

    from senet import build_model

    with torch.device("meta"):
        network = build_model(model)
        try:
            network.eval()(torch.empty(1, *size))
        except ValueError as exc:  # the SE operators' own checks of the maps they get
            raise ValueError(f"model {model.arch} on {'x'.join(map(str, size))} images: {exc}") from None


def with_data_fields(cfg: ExperimentConfig, datamodule: Any) -> ExperimentConfig:
    """``cfg`` with ``model.num_classes`` and ``model.in_chans`` as ``datamodule`` serves them.

    The data decides the classifier's width and input channels (``--data cifar100`` needs no second flag).
    Settle them before a config is hashed: the hash names the network that trains.
    """
    fields = data_fields(datamodule)
    if all(getattr(cfg.model, k) == v for k, v in fields.items()):
        return cfg
    return cfg.replace(model=dataclasses.replace(cfg.model, **fields))


def data_fields(datamodule: Any) -> dict[str, int]:
    """The ``model`` fields the data decides, as ``datamodule`` serves them: ``num_classes`` and ``in_chans``."""
    return {"num_classes": int(datamodule.num_classes), "in_chans": int(datamodule.input_size[0])}


def settle_data_fields(cfg: ExperimentConfig) -> ExperimentConfig:
    """``with_data_fields`` for a config alone, as a sweep plans its arms: the datamodule is constructed (folder
    checks, nothing loaded). A dataset that cannot be opened on this machine (a sweep submitted from a login node
    without the data) leaves ``cfg`` as it is; the run's own ``settle`` stops there with the path.
    """
    from ablations.data import build_datamodule

    try:
        dm = build_datamodule(cfg.data, seed=cfg.seed)
    except (OSError, ValueError, ImportError):
        return cfg
    return with_data_fields(cfg, dm)


def resolve(config_file: str | None, model: str | None, overrides: dict[str, Any]) -> Experiment:
    """The experiment a ``--config`` file, a ``--model`` name and dotted overrides describe, settled (``settle``).

    ``model.num_classes`` and ``model.in_chans`` given as flags must agree with the data, which sets them.
    """
    cfg = resolve_experiment(config_file, model, overrides)
    exp = settle(cfg)
    data = exp.config.data
    for key, what in (("num_classes", "classes"), ("in_chans", "image channels")):
        given, actual = overrides.get(f"model.{key}"), getattr(exp.config.model, key)
        if given is not None and given != actual:
            hint = f" or set data.num_classes={given!r}" if key == "num_classes" and data.name == "synthetic" else ""
            raise ValueError(f"model.{key}={given!r} is not allowed with data {data.name!r}, which has {actual} {what}: "
                             f"the data sets it; drop model.{key}{hint}")
    return exp
