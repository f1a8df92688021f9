"""Training recipes (ablations.recipes): the paper's numbers, lr scaling, applying a recipe to an experiment."""
from __future__ import annotations

import dataclasses

import pytest

from ablations.config import ExperimentConfig, TrainConfig
from ablations.recipes import RECIPE_FIELDS, RECIPE_SPECS, RECIPES, apply_recipe, get_recipe, recipe_spec


def test_names_and_labels():
    assert set(RECIPES) == {"paper-imagenet", "paper-ablation", "cifar", "quick"}
    for name, train in RECIPES.items():
        assert isinstance(train, TrainConfig) and train.recipe == name
        assert RECIPE_SPECS[name].train is train


def test_paper_imagenet_is_sec_5_1():
    r = get_recipe("paper-imagenet")
    assert (r.optimizer, r.momentum, r.lr, r.epochs) == ("sgd", 0.9, 0.6, 100)
    assert (r.schedule, r.step_size, r.gamma) == ("step", 30, 0.1)
    spec = recipe_spec("paper-imagenet")
    assert (spec.batch_size, spec.image_size) == (1024, 224)
    assert any(c.startswith("weight_decay=") and "not found" in c for c in spec.choices)


def test_paper_ablation_and_cifar():
    a = get_recipe("paper-ablation")
    assert (a.lr, a.schedule, a.gamma) == (0.1, "plateau", 0.1) and a.label_smoothing > 0
    c = get_recipe("cifar")
    assert (c.lr, c.weight_decay, c.milestones, c.epochs, c.schedule) == (0.1, 1e-4, (82, 123), 164, "multistep")
    assert recipe_spec("cifar").batch_size == 128


def test_quick_is_the_default_train_config():
    assert RECIPES["quick"] == TrainConfig()


def test_every_unstated_value_is_documented():
    for spec in RECIPE_SPECS.values():
        assert spec.source and spec.choices, spec.name


@pytest.mark.parametrize("batch, lr", [(1024, 0.6), (256, 0.15), (2048, 1.2), (32, 0.01875)])
def test_linear_lr_scaling(batch, lr):
    r = get_recipe("paper-imagenet", batch_size=batch)
    assert r.lr == pytest.approx(lr)
    assert dataclasses.replace(r, lr=0.6) == RECIPES["paper-imagenet"]  # nothing else changes


def test_unknown_recipe_lists_the_names():
    with pytest.raises(ValueError, match="train.recipe='imagenet'.*paper-imagenet, paper-ablation, cifar, quick"):
        get_recipe("imagenet")


@pytest.mark.parametrize("bad", [0, -8, 1.5, True])
def test_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        get_recipe("quick", batch_size=bad)


@pytest.mark.parametrize("bad", [0, -64, 64.0, True])
def test_apply_recipe_refuses_a_bad_global_batch_in_the_recipes_words(bad):
    """A script's ``apply_recipe(cfg, name, batch_size)`` gets ``get_recipe``'s check, not a later field's."""
    with pytest.raises(ValueError, match=rf"^batch_size={bad!r} is not allowed; it must be an integer >= 1$"):
        apply_recipe(ExperimentConfig(), "quick", bad)


def test_apply_recipe_splits_the_global_batch_and_keeps_the_machine():
    base = ExperimentConfig().override({"train.devices": 8, "train.num_nodes": 4, "train.precision": "bf16-mixed"})
    cfg = apply_recipe(base, "paper-imagenet")
    assert cfg.data.batch_size == 32 and cfg.data.image_size == 224  # 1024 = 32 images x 8 GPUs x 4 servers
    assert cfg.train.lr == 0.6 and cfg.train.recipe == "paper-imagenet"
    assert (cfg.train.devices, cfg.train.num_nodes, cfg.train.precision) == (8, 4, "bf16-mixed")
    assert {f: getattr(cfg.train, f) for f in RECIPE_FIELDS} == \
        {f: getattr(RECIPES["paper-imagenet"], f) for f in RECIPE_FIELDS}
    assert cfg.model == base.model and cfg.seed == base.seed


def test_apply_recipe_with_another_batch():
    cfg = apply_recipe(ExperimentConfig(), "paper-imagenet", batch_size=256)
    assert (cfg.data.batch_size, cfg.train.lr) == (256, pytest.approx(0.15))
    quick = apply_recipe(ExperimentConfig().override({"data.image_size": 16}), "quick")
    assert quick.data.image_size == 16  # quick has no image size of its own
    with pytest.raises(ValueError, match="batch_size=100 .* 8 devices"):
        apply_recipe(ExperimentConfig().override({"train.devices": 8}), "quick", batch_size=100)
