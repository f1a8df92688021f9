"""LightningDataModules for the paper's datasets and the embedded default (docs/DESIGN.md, Training).

``build_datamodule(cfg.data, seed)`` is the one entry point. Every module exposes ``num_classes``,
``input_size`` (C, H, W) and ``class_names``, checks its folder on construction (so a wrong path stops
before any training), downloads only in ``prepare_data`` and only when ``data.download`` is set. The data
decides the model fields it serves (``data_fields``: ``model.num_classes``, ``model.in_chans``), and the network
must run on the images it serves (``check_network``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ablations.config import DATASETS, DataConfig, ExperimentConfig
from ablations.data.base import ImageDataModule, TensorImageDataset
from ablations.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from ablations.data.digits import DigitsDataModule
from ablations.data.fashion_mnist import FashionMNISTDataModule, read_idx
from ablations.data.imagenet import ImageNetDataModule
from ablations.data.synthetic import SyntheticDataModule

DATAMODULES: dict[str, type[ImageDataModule]] = {
    cls.name: cls
    for cls in (DigitsDataModule, FashionMNISTDataModule, CIFAR10DataModule, CIFAR100DataModule,
                ImageNetDataModule, SyntheticDataModule)
}


def build_datamodule(cfg: DataConfig, seed: int = 0) -> ImageDataModule:
    """The DataModule that ``cfg.name`` names, its folder already checked.

    Args:
        cfg: the data config (``data.name`` is validated by ``DataConfig`` itself).
        seed: seeds what the dataset draws itself (the digits split, synthetic tensors).

    Raises:
        FileNotFoundError: the folder is missing; the message names the path and the expected layout.
        ValueError: the folder or a file is malformed, or an option does not apply to the dataset.
    """
    return DATAMODULES[cfg.name](cfg, seed=seed)


def data_fields(datamodule: Any) -> dict[str, int]:
    """The ``model`` fields the data decides, as ``datamodule`` serves them: ``num_classes`` and ``in_chans``."""
    return {"num_classes": int(datamodule.num_classes), "in_chans": int(datamodule.input_size[0])}


def with_data_fields(cfg: ExperimentConfig, datamodule: Any) -> ExperimentConfig:
    """``cfg`` with ``model.num_classes`` and ``model.in_chans`` as ``datamodule`` serves them.

    The data decides the classifier's width and input channels (``--data cifar100`` needs no second flag).
    Settle them before a config is hashed: the hash names the network that trains.
    """
    fields = data_fields(datamodule)
    if all(getattr(cfg.model, k) == v for k, v in fields.items()):
        return cfg
    return cfg.replace(model=dataclasses.replace(cfg.model, **fields))


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


__all__ = [
    "DATAMODULES", "DATASETS", "CIFAR10DataModule", "CIFAR100DataModule", "DigitsDataModule",
    "FashionMNISTDataModule", "ImageDataModule", "ImageNetDataModule", "SyntheticDataModule",
    "TensorImageDataset", "build_datamodule", "check_network", "data_fields", "read_idx", "with_data_fields",
]
