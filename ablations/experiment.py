"""The one resolve step: from what a user typed, or from a config, to the ``Experiment`` that trains.

``resolve(config_file, model, overrides)`` is ``senet-ablate train``'s (and so the W&B agent's): the files, flags
and recipe become a config (``resolve_experiment``; a sweep spec's ``base`` goes the same way, ``resolve_base``),
which ``settle`` finishes. ``settle(cfg, baseline)`` is every other path's (a sweep arm, the quickstart, a script:
``training.run.run_config(cfg)`` is ``run_experiment(settle(cfg))``). Both check everything before any work and
return the finished experiment: the config with its data fields settled, the datamodule set up for ``fit``, the
network checked once on the meta device, and the run's identity (its folder's name, its hashes, its dotted
fields), so nothing downstream rebuilds, renames or rehashes it.

The precedence of what describes a config, later wins (docs/DESIGN.md, Configuration):

    defaults < recipe < --config file < --model < dotted keys (--key value, key=value)

The recipe (``train.recipe``, from the file or a flag) goes under everything explicit: it sets its
optimisation fields, its global batch (``data.batch_size`` = the per-device share of it over
``train.devices x train.num_nodes``) and its image size, and an explicit ``data.batch_size`` rescales its
lr linearly to the global batch that gives (``ablations.recipes.apply_recipe``). A config file is a whole
experiment (what it omits takes the defaults); a spec's ``base`` is dotted keys over the defaults. Every mistake
is a ``ValueError`` (or ``FileNotFoundError``) on one line that names the file or the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ablations.config import ExperimentConfig
from ablations.naming import folder_name, run_name
from ablations.overrides import canonical
from ablations.yaml_bounds import read_yaml
from senet.tree import flatten, to_dict


@dataclass(frozen=True)
class Experiment:
    """One arm at one seed, resolved and checked.

    Attributes:
        config: the experiment, ``model.num_classes`` and ``model.in_chans`` as its data serves them.
        datamodule: its datamodule, set up for ``fit`` (the data folder read, the split made).
        name: the run's name and its folder's, ``<output_dir>/<name>`` (``naming.run_name``, with the hash
            appended only where that folder holds another experiment: ``naming.folder_name``).
        config_hash: ``config.hash()``, the run's identity in ``result.json``.
        arm_hash: ``config.arm_hash()``, the arm's identity, the same for each of its seeds: what sweeps store on
            trials, reports group by and W&B runs carry.
        fields: the config as dotted keys (``model.se.reduction``), as flags, sweeps and the W&B config name them.
    """

    config: ExperimentConfig
    datamodule: Any = field(repr=False, compare=False)
    name: str
    config_hash: str
    arm_hash: str
    fields: dict[str, Any] = field(repr=False, compare=False)

    @property
    def input_size(self) -> tuple[int, ...]:
        """(C, H, W) of one image as the datamodule serves it."""
        return tuple(self.datamodule.input_size)


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


def resolve_experiment(config_file: str | None = None, model: str | None = None,
                       overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """The experiment that a config file, a registered model name and dotted overrides describe.

    Precedence as in the module docstring. Raises ``ValueError`` naming any unknown key or bad value.

    Args:
        config_file: an experiment YAML (as ``run_experiment`` writes to ``<run_dir>/config.yaml``).
        model: a registered model name (``senet.list_models()``); it replaces the file's model section.
        overrides: dotted keys (``{"train.lr": 0.05}``; ``se.X`` is short for ``model.se.X``).
    """
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
    from senet.tree import did_you_mean, flatten

    fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    for key in raw:
        if str(key).split(".")[0] not in fields:
            raise ValueError(f"unknown key {key}{did_you_mean(str(key).split('.')[0], fields)}; "
                             f"allowed keys: {', '.join(fields)}")
    name = raw.get("model") if isinstance(raw.get("model"), str) else None
    overrides = flatten({k: v for k, v in raw.items() if not (k == "model" and name is not None)})
    return resolve_experiment(None, name, overrides)


def settle(cfg: ExperimentConfig, baseline: ExperimentConfig | None = None) -> Experiment:
    """``cfg`` checked against its data and settled into an ``Experiment``; raises before any training.

    The data decides the classifier's width and input channels (``data.with_data_fields``), so ``--data cifar100``
    needs no second flag. The network is built once, on the meta device, and run on one image of the data's size,
    so that an impossible SE configuration (an operator that needs larger maps than a stage has) fails now, not in
    a worker.

    Args:
        cfg: the experiment as resolved from files and flags.
        baseline: what the run name is relative to (``naming.run_name``; a sweep passes its base).
    """
    from ablations.data import build_datamodule, check_network, with_data_fields

    check_training(cfg)
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    dm.prepare_data()
    dm.setup("fit")  # a missing or malformed data folder fails here, with its path
    cfg = with_data_fields(cfg, dm)
    check_network(cfg.model, tuple(getattr(dm, "input_size", None) or image_size(cfg)))
    name = run_name(cfg, baseline)
    name = folder_name(cfg, name)  # a folder that holds another experiment: the name gets the hash
    return Experiment(config=cfg, datamodule=dm, name=name, config_hash=cfg.hash(), arm_hash=cfg.arm_hash(),
                      fields=flatten(to_dict(cfg)))


def check_training(cfg: ExperimentConfig) -> None:
    """The rules between ``train`` fields that no single field's check sees (here, not in ``TrainConfig``: a recipe
    and the flags over it pass through combinations on the way to the final config)."""
    if cfg.train.schedule == "plateau" and cfg.train.warmup_epochs:
        raise ValueError("train.warmup_epochs is not allowed with train.schedule='plateau'; use 0, or another schedule")


def image_size(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(C, H, W) of one image as the datamodules serve ``cfg.data`` (square, ``model.in_chans`` once settled)."""
    return cfg.model.in_chans, cfg.data.image_size, cfg.data.image_size


def settle_data_fields(cfg: ExperimentConfig) -> ExperimentConfig:
    """``data.with_data_fields`` for a config alone, as a sweep plans its arms: the datamodule is constructed (folder
    checks, nothing loaded). A dataset that cannot be opened on this machine (a sweep submitted from a login node
    without the data) leaves ``cfg`` as it is; the run's own ``settle`` stops there with the path.
    """
    from ablations.data import build_datamodule, with_data_fields

    try:
        dm = build_datamodule(cfg.data, seed=cfg.seed)
    except (OSError, ValueError, ImportError):
        return cfg
    return with_data_fields(cfg, dm)
