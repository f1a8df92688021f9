"""Whether a DataModule serves the images a network was trained on, and the one line that says where it does not.

A trained network is evaluated (``validate``/``test``/``predict``) on the experiment its config records: the
dataset, the image size, and for datasets that draw their own split, what draws it. Those are the *defining*
fields: the dataset's name, then the datamodule class's ``experiment_fields`` (``ImageDataModule``); ``seed``
there means the datamodule's ``seed`` argument, recorded as the experiment's ``seed``. The other data fields
(root, batch size, workers, decoder) change where and how fast images come, not which images or how they are
normalised, so they may differ. The model's classes and input channels must match the data in every stage.

``SEClassifier`` refuses a datamodule that disagrees (``mismatch``); ``python -m ablations.commands.lightning_cli`` first
takes the checkpoint's values for defining fields the user did not set (``adapt_to_record``).
"""
from __future__ import annotations

from typing import Any

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
