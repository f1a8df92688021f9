"""Experiment configs: data, training and logging around a ``senet.ModelConfig`` (docs/DESIGN.md, Configuration).

``ExperimentConfig`` is the one serialisable description of a run. Dotted keys address every
field (``model.se.reduction``, ``train.lr``, ``data.name``) on the command line, in sweep YAML,
in W&B config, in Optuna params and in result rows. ``config_hash`` ignores the fields that only
say where a run writes and how it logs, so the same arm hashes the same everywhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from senet.config import ModelConfig
from senet.tree import apply_overrides, check_choice, check_int, check_number, config_hash, from_dict, to_dict

DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100", "imagenet", "synthetic")
DECODERS = ("pil", "gpu")
# The presets of ``ablations.recipes`` by name. Listed here, not imported from there, so this module stays a
# leaf (recipes builds its presets from TrainConfig); ``ablations.recipes`` checks at import that they agree.
RECIPE_NAMES = ("paper-imagenet", "paper-ablation", "cifar", "quick")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "multistep", "cosine", "plateau", "constant")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
WANDB_MODES = ("offline", "online", "disabled")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives and how it is batched.

    Attributes:
        name: one of ``DATASETS``; ``digits`` is the embedded default (scikit-learn's bundled digits).
        root: dataset folder (``None`` = the dataset's default location, if it has one).
        image_size: side of the square input the model sees.
        batch_size: per-device batch size.
        num_workers: DataLoader workers; ``null`` lets the machine decide (``ablations.data.base.auto_workers``:
            for datasets decoded from files, the CPU cores this process may use shared among the local devices,
            less one for the training process; in-memory datasets: 0). The hash keeps ``null``, not the number.
        val_fraction: held-out share for datasets without a fixed validation split (digits, synthetic).
        num_samples: size of the ``synthetic`` dataset (train split); ignored elsewhere.
        num_classes: classes of the ``synthetic`` dataset; ignored elsewhere.
        download: allow torchvision to download (off: nothing downloads unless asked).
        decoder: ``pil`` (DataLoader workers decode and augment) or ``gpu`` (imagenet only: workers read the
            JPEG bytes, each batch is decoded and augmented on the GPU; ``ablations.data.jpeg_batch``).
    """

    name: str = "digits"
    root: str | None = None
    image_size: int = 32
    batch_size: int = 64
    num_workers: int | None = 0
    val_fraction: float = 0.2
    num_samples: int = 512
    num_classes: int = 10
    download: bool = False
    decoder: str = "pil"

    def __post_init__(self) -> None:
        check_choice("data.name", self.name, DATASETS)
        check_choice("data.decoder", self.decoder, DECODERS)
        if self.decoder == "gpu" and self.name != "imagenet":
            raise ValueError(f"data.decoder='gpu' is not allowed for data.name={self.name!r}: it decodes JPEG folders "
                             "(data.name='imagenet'); the other datasets are tensors already, use data.decoder='pil'")
        check_number("data.image_size", self.image_size, 8)
        check_number("data.batch_size", self.batch_size)
        if self.num_workers is not None:
            check_int("data.num_workers", self.num_workers, 0)
        check_number("data.num_samples", self.num_samples)
        check_number("data.num_classes", self.num_classes, 2)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction={self.val_fraction!r} is not allowed; it must be in (0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and the Trainer's engineering knobs (recipes in ``ablations.recipes``)."""

    recipe: str = "quick"
    epochs: int = 5
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    step_size: int = 30
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    plateau_patience: int = 5
    warmup_epochs: int = 0
    precision: str = "32-true"
    channels_last: bool = False
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    deterministic: bool = True
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    # torch intra-op threads for the run. Float results depend on the thread count (how reductions are split),
    # so sweeps and the quickstart pin it; None leaves torch's default (one per core), recorded in result.json.
    threads: int | None = None
    # torch.compile mode for the network (COMPILE_MODES), None = eager. Compiling reorders and fuses float ops
    # (fp32 losses agree with eager to ~1e-5), so like threads it enters the hash only when set: eager runs keep
    # theirs. Checkpoints hold the plain module's keys and load into an eager model.
    compile: str | None = None

    def __post_init__(self) -> None:
        check_choice("train.recipe", self.recipe, RECIPE_NAMES)
        check_number("train.epochs", self.epochs)
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("train.schedule", self.schedule, SCHEDULES)
        check_choice("train.precision", self.precision, PRECISIONS)
        check_number("train.lr", self.lr, 0)
        check_number("train.devices", self.devices)
        if self.threads is not None:
            check_number("train.threads", self.threads)
        if self.compile is not None:
            check_choice("train.compile", self.compile, COMPILE_MODES)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"train.label_smoothing={self.label_smoothing!r} is not allowed; it must be in [0, 1)")
        object.__setattr__(self, "milestones", tuple(self.milestones))


@dataclass(frozen=True)
class WandbConfig:
    """W&B logging: offline by default (no login needed), ``disabled`` in tests."""

    mode: str = "offline"
    project: str = "senet-ablations"
    group: str | None = None
    job_type: str | None = None
    entity: str | None = None

    def __post_init__(self) -> None:
        check_choice("wandb.mode", self.mode, WANDB_MODES)


@dataclass(frozen=True)
class ExperimentConfig:
    """One run: model, data, training, seed, where it writes and how it logs."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="resnet20_cifar", se=None, num_classes=10))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    output_dir: str = "runs"
    name: str | None = None
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        # numpy and scikit-learn take 32-bit unsigned seeds; say so here rather than in their words mid-setup.
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed={self.seed!r} is not allowed; it must be an integer in [0, {SEED_MAX}]")
        # Deferred: the registry imports the model zoo (torch); a config module imports no builder at load time.
        from senet.registry import check_model_config

        check_model_config(self.model)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentConfig:
        return from_dict(cls, data)

    def override(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """A copy with dotted-key overrides applied (``{"model.se.reduction": 8}``)."""
        return apply_overrides(self, overrides)

    def semantic(self) -> dict:
        """The fields that define the arm (everything but output location, run name and logging)."""
        d = self.to_dict()
        for k in ("output_dir", "name", "wandb"):
            d.pop(k)
        if d["train"].get("threads") is None:
            d["train"].pop("threads", None)  # unpinned: hashes stay those of the runs made before the field existed
        if d["train"].get("compile") is None:
            d["train"].pop("compile", None)  # eager: likewise
        if d["data"].get("decoder") == "pil":
            d["data"].pop("decoder", None)  # the PIL path: likewise
        return d

    def hash(self) -> str:
        """Stable id of the arm+seed; equal configs hash equal whatever the key order."""
        return config_hash(self.semantic())

    def arm_hash(self) -> str:
        """The arm's one identity, the same for each of its seeds: the hash of its config at seed 0. Sweeps store it
        on every trial (``arm_hash``), reports and the quickstart group runs by it, W&B runs carry it."""
        return self.replace(seed=0).hash()

    def replace(self, **changes: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)
