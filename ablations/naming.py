"""Run names derived mechanically from a config's difference to its no-SE baseline (docs/DESIGN.md, Configuration).

``se_resnet20_cifar-r8-pre_digits_s0`` reads: the SE variant of ``resnet20_cifar`` with r = 8 and the
SE-PRE placement (paper Fig. 5), trained on digits, seed 0. SE fields are named against the paper's
defaults (``SEConfig()``: r = 16, avg squeeze, sigmoid gate, standard placement), every other field
against the baseline, so one arm has one name wherever it runs and distinct arms never share one.
A successor operator (``model.se.operator``) heads the name in SE's place: ``eca_resnet20_cifar-k5_digits_s0``.
The run's folder is ``<output_dir>/<name>``, with the config hash appended where that folder holds another
experiment (``folder_name``, from the ``config.yaml`` it records: ``stored_hash``).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from ablations.config import ExperimentConfig
from ablations.yaml_bounds import read_yaml
from senet.config import SEConfig
from senet.tree import flatten

# Short prefixes for the SE knobs; the value follows (``r8``, ``sq-max``, ``gate-tanh``).
_SE_PREFIX = {
    "reduction": "r",
    "width_rounding": "wr-",
    "divisor": "div",
    "squeeze": "sq-",
    "activation": "act-",
    "gate": "gate-",
    "placement": "",  # pre / post / identity / after_3x3 read on their own
    "stages": "st",
    "skip_blocks": "skip",
    "operator": "",  # never a token: the operator heads the name (model_name)
    "eca_kernel": "k",  # an operator's own knobs apply to it alone: the operator heading the name says whose
    "simam_lambda": "lam",
    "cbam_kernel": "k",
    "gc_fusion": "",  # add / scale
    "ge_extent": "e",
    "ge_variant": "",  # theta / theta_plus
    "coord_reduction": "r",
}
# Short names for the fields a sweep most often varies besides the SE block.
_ABBREV = {
    "train.epochs": "e", "train.lr": "lr", "data.batch_size": "bs", "data.image_size": "px",
    "train.weight_decay": "wd", "train.label_smoothing": "ls", "train.optimizer": "opt-",
    "train.schedule": "sched-", "train.recipe": "recipe-", "train.precision": "prec-",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_fmt(v) for v in value)
    return str(value)


def se_tokens(se: SEConfig | None) -> list[str]:
    """The SE knobs that differ from the paper's defaults, as name tokens (``["r8", "pre"]``)."""
    if se is None:
        return []
    default = SEConfig()
    tokens = []
    for f in dataclasses.fields(SEConfig):
        value = getattr(se, f.name)
        if value == getattr(default, f.name) or f.name == "operator":
            continue
        if f.name == "bias":
            tokens.append("bias" if value else "nobias")
        elif f.name == "stages":
            tokens.append("st" + ".".join(map(str, value)))
        elif f.name == "skip_blocks":
            tokens.append("skip" + "+".join(f"{s}.{b}" for s, b in value))
        else:
            tokens.append(_SE_PREFIX[f.name] + _fmt(value))
    return tokens


def default_baseline(cfg: ExperimentConfig) -> ExperimentConfig:
    """The arm's baseline: the same experiment with the SE block switched off (``model.se=None``)."""
    return cfg.replace(model=dataclasses.replace(cfg.model, se=None))


def _other_tokens(cfg: ExperimentConfig, baseline: ExperimentConfig) -> list[str]:
    """Tokens for every semantic field besides the SE block and the seed that differs from the baseline."""
    mine, base = flatten(cfg.semantic()), flatten(baseline.semantic())
    keys = sorted(k for k in set(mine) | set(base)
                  if not k.startswith("model.se") and k not in ("seed", "model.arch") and mine.get(k) != base.get(k))
    leaves = [k.rsplit(".", 1)[-1] for k in mine]
    tokens = []
    for k in keys:
        leaf = k.rsplit(".", 1)[-1]
        # The leaf alone is ambiguous when two groups share it (data.num_classes, model.num_classes).
        prefix = _ABBREV.get(k, (leaf if leaves.count(leaf) == 1 else k) + "=")
        tokens.append(prefix + _fmt(mine.get(k)))
    return tokens


def model_name(cfg: ExperimentConfig) -> str:
    """The model's name: ``resnet50`` (baseline), ``se_resnet50`` (SE, the registry's name) or the operator's
    prefix in SE's place (``eca_resnet50``, ``cbam_resnet50``: ``model.se.operator``)."""
    se = cfg.model.se
    return ("" if se is None else f"{se.operator}_") + cfg.model.arch


def arm_name(cfg: ExperimentConfig, baseline: ExperimentConfig | None = None) -> str:
    """The run name without its seed: identifies the arm, shared by all its seeds."""
    baseline = default_baseline(cfg) if baseline is None else baseline
    head = "-".join([model_name(cfg), *se_tokens(cfg.model.se)])
    data = "-".join([cfg.data.name, *_other_tokens(cfg, baseline)])
    return _UNSAFE.sub("", f"{head}_{data}")


def run_name(cfg: ExperimentConfig, baseline: ExperimentConfig | None = None) -> str:
    """The run's name: ``cfg.name`` if set, else ``<arm>_s<seed>`` from the diff to ``baseline`` (its folder's name
    unless that folder holds another experiment: ``folder_name``).

    Args:
        cfg: the experiment.
        baseline: what the name is relative to; ``None`` means ``cfg`` with ``model.se=None``, so only the
            SE block (against the paper's defaults), the data set and the seed appear. A sweep passes its base
            experiment, so the fields it varies appear too (``..._digits-lr0.05_s1``).
    """
    if cfg.name:
        if _UNSAFE.search(cfg.name) or cfg.name in (".", ".."):
            raise ValueError(f"name={cfg.name!r} is not allowed; use letters, digits and . _ + = - only")
        return cfg.name
    return f"{arm_name(cfg, baseline)}_s{cfg.seed}"


def folder_name(cfg: ExperimentConfig, name: str) -> str:
    """The run folder's name: ``name``, or ``name-<hash>`` when ``<output_dir>/<name>`` holds another experiment.

    Names encode only what differs from the baseline, so two runs that differ elsewhere (say in
    ``train.epochs``) can share one; the second then gets its config hash appended instead of overwriting
    the first. An explicit ``cfg.name`` is never renamed: a clash is an error.
    """
    folder = Path(cfg.output_dir) / name
    if stored_hash(folder) in (None, cfg.hash()):
        return name
    if cfg.name:
        raise ValueError(f"name={cfg.name!r}: {folder} holds a different experiment; choose another name or output_dir")
    return f"{name}-{cfg.hash()[:8]}"


def stored_hash(folder: Path) -> str | None:
    """The config hash of the experiment a run folder records (its ``config.yaml``): ``None`` where it records none,
    ``""`` where that file cannot be read as one (read with the bounds of every YAML file: a shared folder may hold
    an alias bomb)."""
    stored = Path(folder) / "config.yaml"
    if not stored.exists():
        return None
    try:
        return ExperimentConfig.from_dict(read_yaml(stored, "run folder config")).hash()
    except (ValueError, TypeError, FileNotFoundError):
        return ""


def group(cfg: ExperimentConfig) -> str:
    """The W&B group: ``cfg.wandb.group`` if set, else ``<arch>_<data>`` (baseline and its SE arms together)."""
    return cfg.wandb.group or f"{cfg.model.arch}_{cfg.data.name}"


def job_type(cfg: ExperimentConfig) -> str:
    """The W&B job type: ``cfg.wandb.job_type`` if set, else ``train``."""
    return cfg.wandb.job_type or "train"
