"""Whether a DataModule serves the images a network was trained on, and the one line that says where it does not.

A trained network is evaluated (``validate``/``test``/``predict``) on the experiment its config records: the
dataset, the image size, and for datasets that draw their own split, what draws it. Those are the *defining*
fields: the dataset's name, then the datamodule class's ``experiment_fields`` (``ImageDataModule``); ``seed``
there means the datamodule's ``seed`` argument, recorded as the experiment's ``seed``. The other data fields
(root, batch size, workers, decoder) change where and how fast images come, not which images or how they are
normalised, so they may differ. The model's classes and input channels must match the data in every stage.

``DataCheck``, the callback ``SEClassifier`` hands every Trainer, refuses a datamodule that disagrees (``mismatch``)
and has an untrained module record the data it is given (``adopted``); ``python -m ablations.commands.lightning_cli``
first takes the checkpoint's values for defining fields the user did not set (``adapt_to_record``).
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ablations.config import DataConfig, ExperimentConfig

# What a datamodule without ``experiment_fields`` (not an ImageDataModule) is compared on, besides its name.
DEFAULT_FIELDS = ("image_size",)


def defining_fields(datamodule_class: type) -> tuple[str, ...]:
    """The defining fields of a datamodule class, ``name`` first."""
    return ("name", *getattr(datamodule_class, "experiment_fields", DEFAULT_FIELDS))


def recorded_value(cfg: ExperimentConfig, field: str) -> Any:
    """A defining field as the experiment config records it (``seed`` is the experiment's seed)."""
    return cfg.seed if field == "seed" else getattr(cfg.data, field)


def served_value(data: DataConfig, seed: int, field: str) -> Any:
    """A defining field as a datamodule built from ``data`` and ``seed`` serves it."""
    return seed if field == "seed" else getattr(data, field)


def hint(field: str, value: Any, datamodule_class: str) -> str:
    """How to ask for ``value``: the LightningCLI flag, then the Python spelling."""
    if field == "name":
        from ablations.data import DATAMODULES  # deferred: the datasets' imports (sklearn, torchvision) are heavy

        cls = DATAMODULES[value].__name__ if value in DATAMODULES else f"the {value!r} DataModule"
        return f"pass --data={cls} (LightningCLI) or {cls}(DataConfig(name={value!r}, ...)) (Python)"
    if field == "seed":
        return f"pass --data.seed={value} (LightningCLI) or {datamodule_class}(cfg, seed={value}) (Python)"
    return f"pass --data.cfg.{field}={value} (LightningCLI) or DataConfig({field}={value!r}, ...) (Python)"


def mismatch(trained: ExperimentConfig, datamodule: Any) -> str | None:
    """One line naming every defining field where ``datamodule`` differs from what ``trained`` records; ``None``
    when it serves the same images. A different dataset is named alone: its other fields say nothing then."""
    cls = type(datamodule).__name__
    lines = []
    for field in defining_fields(type(datamodule)):
        want = recorded_value(trained, field)
        got = served_value(datamodule.cfg, getattr(datamodule, "seed", trained.seed), field)
        if want != got:
            lines.append(f"seed: the model was trained on the split drawn with seed {want}, the {cls} draws it with "
                         f"{got}; {hint(field, want, cls)}" if field == "seed" else
                         f"data.{field}: the model was trained with {want!r}, the {cls} gives {got!r}; "
                         f"{hint(field, want, cls)}")
            if field == "name":
                break
    return "; ".join(lines) or None


def model_mismatch(cfg: ExperimentConfig, datamodule: Any) -> str | None:
    """One line when the network's classes or input channels are not the datamodule's; ``None`` when they fit."""
    m = cfg.model
    name = getattr(datamodule.cfg, "name", type(datamodule).__name__)
    classes = getattr(datamodule, "num_classes", 0)
    if classes and classes != m.num_classes:
        return (f"model.num_classes={m.num_classes} but the {name!r} datamodule has {classes} classes; "
                f"set model.num_classes={classes} (--model.config.model.num_classes)")
    size = getattr(datamodule, "input_size", None)
    if size and size[0] != m.in_chans:
        return (f"model.in_chans={m.in_chans} but the {name!r} datamodule serves {size[0]}-channel images; "
                f"set model.in_chans={size[0]} (--model.config.model.in_chans)")
    return None


def adopted(cfg: ExperimentConfig, datamodule: Any) -> ExperimentConfig:
    """``cfg`` recording the data ``datamodule`` serves: its data section, and its seed where the seed draws the
    split (a network about to be trained records the images it sees; the excitation analysis rebuilds them)."""
    out = cfg if datamodule.cfg == cfg.data else cfg.replace(data=datamodule.cfg)
    seed = getattr(datamodule, "seed", cfg.seed)
    if "seed" in defining_fields(type(datamodule)) and seed != cfg.seed:
        out = out.replace(seed=seed)
    return out


def adapt_to_record(trained: ExperimentConfig, datamodule_class: type, given: dict[str, Any],
                    explicit: set[str]) -> tuple[dict[str, Any], str | None]:
    """The defining values to change in ``given`` (the parsed ``--data.cfg.*`` fields and ``seed``) so that the
    datamodule serves what ``trained`` records, and one line saying so (``None``: nothing to change).

    Only fields the user did not set (not in ``explicit``) change: a value set by hand stays, and ``mismatch``
    refuses it later with its own line. The dataset is never changed (``--data`` names the class on purpose).
    """
    changes, was = {}, []
    for field in defining_fields(datamodule_class)[1:]:
        want = recorded_value(trained, field)
        if field in given and field not in explicit and given[field] != want:
            changes[field] = want
            was.append(repr(given[field]))
    if not changes:
        return {}, None
    flags = ", ".join(f"--data.{'seed' if f == 'seed' else 'cfg.' + f}={v}" for f, v in changes.items())
    return changes, (f"{flags}: taken from the checkpoint, which was trained with it "
                     f"({datamodule_class.__name__}'s default: {', '.join(was)})")


def served_datamodule(trainer: pl.Trainer | None) -> Any | None:
    """The Trainer's datamodule when it is one of ours (a ``DataConfig`` as ``cfg``), else ``None``."""
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    return dm if isinstance(getattr(dm, "cfg", None), DataConfig) else None


def input_size(module: pl.LightningModule) -> tuple[int, int, int]:
    """(C, H, W) of one image for ``module`` (the complexity count's and the model summary's): its ``input_size``
    argument, else its Trainer's datamodule's, else its config's ``(model.in_chans, data.image_size, ...)``."""
    size = module.hparams.get("input_size")
    trainer = module._trainer
    if size is None and trainer is not None and getattr(trainer, "datamodule", None) is not None:
        size = getattr(trainer.datamodule, "input_size", None)
    if size is None:
        size = (module.cfg.model.in_chans, module.cfg.data.image_size, module.cfg.data.image_size)
    return tuple(int(v) for v in size)


def example_input(cfg: ExperimentConfig, size: tuple[int, ...] | None = None) -> torch.Tensor:
    """One zero image of ``size``, else of ``cfg``'s ``(model.in_chans, data.image_size, data.image_size)``."""
    return torch.zeros(1, *(size or (cfg.model.in_chans, cfg.data.image_size, cfg.data.image_size)))


class DataCheck(Callback):
    """A Trainer's datamodule against the network, at ``setup``: classes and input channels in every stage
    (``model_mismatch``); a trained network (``trained_on``) is evaluated only on the images it was trained on
    (``mismatch``). Otherwise the module records the datamodule's data (``adopted``): under LightningCLI ``--data.cfg``
    and ``--model.config.data`` are separate flags, and a checkpoint's config must name the images that trained it
    (the excitation analysis rebuilds its datamodule from it). ``run_experiment`` passes equal ones: nothing changes.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = served_datamodule(trainer)
        if dm is None:
            return
        if (line := model_mismatch(pl_module.cfg, dm)) is not None:
            raise ValueError(line)
        if stage != "fit" and pl_module.trained_on is not None and (line := mismatch(pl_module.trained_on, dm)):
            raise ValueError(line)
        cfg = adopted(pl_module.cfg, dm)
        if cfg != pl_module.cfg:
            pl_module.cfg = cfg
            pl_module.hparams["config"] = cfg.to_dict()  # the checkpoint stores the hparams as they are at save time
            if pl_module.example_input_array is not None and pl_module.hparams.get("input_size") is None:
                pl_module.example_input_array = example_input(cfg)  # the summary shows the images it is given
        if stage == "fit":
            pl_module.trained_on = pl_module.cfg
