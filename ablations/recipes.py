"""Training recipes: named ``TrainConfig`` presets from the paper (Sec. 5.1, Sec. 6) and for quick runs.

A recipe fixes the optimisation (optimizer, lr, schedule, epochs, regularisation) for a reference
global batch size; ``get_recipe(name, batch_size)`` rescales the lr linearly for any other batch
(Goyal et al. 2017). Values that the paper does not state are our choices, listed in ``Recipe.choices``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ablations.config import RECIPE_NAMES, ExperimentConfig, TrainConfig
from senet.tree import check_choice, check_int

# The TrainConfig fields a recipe owns. The rest (devices, precision, accelerator, limits) describe the
# machine, not the method, and an applied recipe leaves them as they were.
RECIPE_FIELDS = (
    "recipe", "epochs", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "label_smoothing",
    "schedule", "step_size", "milestones", "gamma", "plateau_patience", "warmup_epochs",
)


@dataclass(frozen=True)
class Recipe:
    """A named preset: the training config, the global batch its lr belongs to, and its provenance.

    Attributes:
        name: the key in ``RECIPES``.
        train: the ``TrainConfig`` at ``batch_size`` (``train.recipe == name``).
        batch_size: the global batch (all devices) that ``train.lr`` is tuned for.
        image_size: the input side the recipe was published for (``None``: whatever the dataset uses).
        source: where the numbers come from.
        choices: every value the source does not state, with what we chose and why.
    """

    name: str
    train: TrainConfig
    batch_size: int
    image_size: int | None
    source: str
    choices: tuple[str, ...] = ()


_RECIPES = (
    Recipe(
        name="paper-imagenet",
        train=TrainConfig(recipe="paper-imagenet", epochs=100, optimizer="sgd", lr=0.6, momentum=0.9,
                          weight_decay=1e-4, schedule="step", step_size=30, gamma=0.1),
        batch_size=1024,
        image_size=224,
        source="Sec. 5.1: synchronous SGD, momentum 0.9, batch 1024, lr 0.6 divided by 10 every 30 epochs, "
               "100 epochs from scratch; 224 px random-size crops, 256 -> 224 centre-crop evaluation",
        choices=(
            "weight_decay=1e-4: not found in the paper; the ResNet paper's value, which the SE models build on",
            "label_smoothing=0: not mentioned for the main results",
            "nesterov=False, warmup_epochs=0: not mentioned",
        ),
    ),
    Recipe(
        name="paper-ablation",
        train=TrainConfig(recipe="paper-ablation", epochs=300, optimizer="sgd", lr=0.1, momentum=0.9,
                          weight_decay=1e-4, label_smoothing=0.1, schedule="plateau", gamma=0.1,
                          plateau_patience=10),
        batch_size=256,
        image_size=224,
        source="Sec. 6 (Tables 10-16): lr 0.1, divided by 10 each time the validation loss plateaus, three times, "
               "~300 epochs in total; label smoothing; one machine with 8 GPUs",
        choices=(
            "batch_size=256: the ablation batch is not found; 256 is what the released models used (8 GPUs)",
            "label_smoothing=0.1: the paper names label smoothing without a value; 0.1 is Szegedy et al.'s",
            "plateau_patience=10 epochs: 'until the validation loss plateaus' gives no patience",
            "epochs=300: '~300 epochs in total'; the run stops there whether or not the third drop happened",
            "weight_decay=1e-4: not found (as for paper-imagenet)",
        ),
    ),
    Recipe(
        name="cifar",
        train=TrainConfig(recipe="cifar", epochs=164, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                          schedule="multistep", milestones=(82, 123), gamma=0.1),
        batch_size=128,
        image_size=32,
        source="Sec. 5 (Tables 4/5) uses the original papers' settings: He et al. 2016 (ResNet, Sec. 4.2): SGD, "
               "momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, "
               "stopping at 64k",
        choices=(
            "epochs 82/123/164: the 32k/48k/64k iterations at 391 batches of 128 per epoch (50k images)",
            "ResNet-110's lr 0.01 for its first ~400 iterations is not built in; approximate: train.warmup_epochs=1",
        ),
    ),
    Recipe(
        name="quick",
        train=TrainConfig(recipe="quick", epochs=5, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                          schedule="cosine"),
        batch_size=64,
        image_size=None,
        source="ours, for the quickstart on the embedded digits; equals TrainConfig(). Measured: resnet20_cifar, "
               "5 epochs, 233 CPU-seconds (2 shared cores), val top-1 0.964",
        choices=("cosine decay over 5 epochs: a short run has no room for step drops",),
    ),
)

RECIPE_SPECS: dict[str, Recipe] = {r.name: r for r in _RECIPES}
RECIPES: dict[str, TrainConfig] = {r.name: r.train for r in _RECIPES}
if tuple(RECIPES) != RECIPE_NAMES:  # a recipe added here must be named in ablations.config too
    raise ImportError(f"ablations.config.RECIPE_NAMES {RECIPE_NAMES} != the recipes defined here {tuple(RECIPES)}")


def recipe_spec(name: str) -> Recipe:
    """The full ``Recipe`` (reference batch, image size, provenance) for ``name``."""
    check_choice("train.recipe", name, tuple(RECIPE_SPECS))
    return RECIPE_SPECS[name]


def get_recipe(name: str, batch_size: int | None = None) -> TrainConfig:
    """The recipe's ``TrainConfig``, its lr scaled linearly to ``batch_size`` (global, all devices).

    ``get_recipe("paper-imagenet", 256).lr == 0.15``. ``batch_size=None`` keeps the recipe's own batch.
    """
    spec = recipe_spec(name)
    if batch_size is None:
        return spec.train
    check_int("batch_size", batch_size)
    return dataclasses.replace(spec.train, lr=spec.train.lr * batch_size / spec.batch_size)


def apply_recipe(cfg: ExperimentConfig, name: str, batch_size: int | None = None) -> ExperimentConfig:
    """``cfg`` with the recipe's optimisation fields, batch size and image size.

    ``batch_size`` is the global batch (default: the recipe's); ``data.batch_size`` becomes the per-device
    share, ``batch_size / (train.devices * train.num_nodes)``, and the lr is scaled to the global batch.
    The machine fields of ``cfg.train`` (devices, precision, ...) stay as they are.

    Raises:
        ValueError: unknown recipe, or a global batch that the devices cannot share evenly.
    """
    spec = recipe_spec(name)
    total = spec.batch_size if batch_size is None else batch_size
    replicas = cfg.train.devices * cfg.train.num_nodes
    if total % replicas:
        raise ValueError(f"batch_size={total} is not allowed with {replicas} devices: it must divide evenly "
                         f"(train.devices={cfg.train.devices} x train.num_nodes={cfg.train.num_nodes})")
    recipe_train = get_recipe(name, total)
    train = dataclasses.replace(cfg.train, **{f: getattr(recipe_train, f) for f in RECIPE_FIELDS})
    data = dataclasses.replace(cfg.data, batch_size=total // replicas,
                               image_size=spec.image_size or cfg.data.image_size)
    return dataclasses.replace(cfg, train=train, data=data)
