"""The sweep spec (ablations.sweep.spec/space): parsing, validation messages, grid cells, Optuna encoding."""
from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from ablations.experiment import resolve_base
from ablations.sweep.space import decode, encode, encode_params, suggest
from ablations.sweep.spec import load_spec, make_config, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = {
    "name": "t",
    "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}}, "data": {"name": "digits"},
             "train": {"recipe": "quick"}, "wandb": {"mode": "disabled"}},
    "baseline": True,
    "space": {"model.se.reduction": [4, 8], "model.se.stages": [[2], [3, 4]]},
    "objectives": [{"val/top1_best": "maximize"}],
    "seeds": 2,
}

# An ImageNet network on 8 px digits: its third stage is 1x1.
TINY_IMAGENET_NET = {"model": {"arch": "resnet18", "se": {"reduction": 16}}, "data": {"name": "digits", "image_size": 8}}


def spec(**changes):
    raw = copy.deepcopy(SPEC)
    raw.update(changes)
    return parse_spec(raw)


def test_grid_cells_cover_arms_times_seeds_with_one_baseline():
    s = spec()
    cells = s.grid()
    assert len(cells) == (1 + 2 * 2) * 2
    configs = [make_config(s, c) for c in cells]
    assert len({c.hash() for c in configs}) == len(cells)
    baselines = [c for c in configs if c.model.se is None]
    assert [c.seed for c in baselines] == [0, 1]
    assert {c.model.se.stages for c in configs if c.model.se} == {(2,), (3, 4)}


def test_recipe_expands_like_the_train_command():
    from ablations.recipes import get_recipe

    s = spec(base={**SPEC["base"], "train": {"recipe": "paper-ablation", "epochs": 3}})
    assert s.base.train.lr == get_recipe("paper-ablation").lr
    assert s.base.train.epochs == 3


@pytest.mark.parametrize("model", [{"arch": "resnet20_cifar", "se": {"reduction": 16}}, "se_resnet20_cifar"],
                         ids=["model-fields", "model-name"])
def test_spec_base_and_train_flags_resolve_to_one_experiment(model):
    """The Optuna path (a spec's base) and the W&B agent's (train's flags) give one config and one hash."""
    from ablations.experiment import resolve_experiment
    from senet.tree import flatten

    base = {"model": model, "data": {"name": "digits", "image_size": 16, "batch_size": 256},
            "train": {"recipe": "quick", "devices": 2}}
    from_spec = resolve_base(copy.deepcopy(base))
    name = model if isinstance(model, str) else None
    from_flags = resolve_experiment(None, name, flatten({k: v for k, v in base.items() if not (k == "model" and name)}))
    assert from_spec == from_flags and from_spec.hash() == from_flags.hash()
    # quick's lr 0.1 belongs to a global batch of 64; this one is 256 per device x 2 devices = 512
    assert (from_spec.train.lr, from_spec.data.batch_size, from_spec.train.devices) == (pytest.approx(0.8), 256, 2)


def test_variant_merges_and_names_the_study():
    raw = copy.deepcopy(SPEC)
    raw["variants"] = {"tiny": {"base": {"data": {"image_size": 8}}, "space": {"model.se.reduction": [2]}}}
    s = parse_spec(raw, variant="tiny")
    assert s.name == "tiny-t" and s.base.data.image_size == 8
    assert s.space[0].values == (2,)
    with pytest.raises(ValueError, match="--variant='cifar'.*this spec has: tiny"):
        parse_spec(raw, variant="cifar")


@pytest.mark.parametrize("change, message", [
    ({"spaec": {}}, r"unknown key spaec; allowed keys: name, description"),
    ({"space": {"model.se.reductoin": [4]}}, r"space.model.se.reductoin: value 4 gives no valid config: unknown key"),
    ({"space": {"model.se.reduction": [0]}}, r"se.reduction=0 is not allowed"),
    ({"space": {"model.se.stages": [[7]]}}, r"stages contains 7"),
    ({"space": {"model.se.reduction": [8, 32]}}, r"an arm of resnet20_cifar cannot be built: se.reduction=32 leaves 0"),
    # The arm runs on its data's images, as train's resolve step checks: SimAM needs 2 positions, 8 px leave 1.
    ({"space": {"model.se.operator": ["se", "simam"]}, "base": {**SPEC["base"], **TINY_IMAGENET_NET}},
     r"^space: an arm of resnet18 cannot be built: model resnet18 on 3x8x8 images: SimAM \(SE_3_1\) needs "
     r"at least 2 spatial positions"),
    ({"space": {"model.se.operator": ["se", "simam"]}, "sampler": "random", "budget": {"n_trials": 2},
      "base": {**SPEC["base"], **TINY_IMAGENET_NET}}, r"on 3x8x8 images: SimAM \(SE_3_1\) needs"),
    ({"space": {"train.lr": {"type": "normal", "low": 1}}}, r"space.train.lr.type='normal' is not allowed; choose one of: categorical, int, float, log"),
    ({"space": {"train.lr": {"type": "log", "low": 0, "high": 1}}}, r"a log distribution needs low > 0"),
    ({"space": {"train.lr": {"type": "float", "low": 1, "high": 0.1}}}, r"it must be below high"),
    ({"space": {"train.lr": {"type": "float", "low": 0.1, "high": 1, "mean": 2}}}, r"unknown key space.train.lr.mean"),
    ({"space": {"seed": [0, 1]}}, r"space.seed cannot be searched"),
    ({"objectives": [{"val/top1_bset": "maximize"}]}, r"objectives\[0\].metric='val/top1_bset' is not allowed; choose one of: train/loss"),
    ({"objectives": [{"gmacs": "smaller"}]}, r"direction='smaller' is not allowed"),
    ({"sampler": "bayes"}, r"sampler='bayes' is not allowed; choose one of: grid, random, tpe, nsga2"),
    ({"pruner": "median", "objectives": ["val/top1_best", "gmacs"]}, r"a multi-objective study cannot prune"),
    ({"sampler": "tpe"}, r"budget.n_trials is required with sampler 'tpe'"),
    ({"seeds": 0}, r"seeds=0 is not allowed"),
    ({"storage": "redis://x"}, r"storage='redis://x' is not allowed; give an SQLAlchemy URL"),
    ({"base": {"trian": {}}}, r"base: unknown key trian"),
    ({"space": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1}}}, r"a grid sweep needs categorical values"),
    # A rule between train fields, checked for every arm as a run's resolve step checks it (not in a worker).
    ({"space": {"train.schedule": ["cosine", "plateau"]},
      "base": {**SPEC["base"], "train": {"recipe": "quick", "warmup_epochs": 2}}},
     r"^space: an arm cannot run: train.warmup_epochs is not allowed with train.schedule='plateau'"),
])
def test_bad_specs_name_field_value_and_allowed(change, message):
    with pytest.raises(ValueError, match=message):
        spec(**change)


def test_objective_forms_and_defaults():
    s = spec(objectives=["val/top1_best", {"metric": "gmacs", "direction": "min"}], sampler="nsga2",
             budget={"n_trials": 4})
    assert [(o.metric, o.direction) for o in s.objectives] == [("val/top1_best", "maximize"), ("gmacs", "minimize")]
    assert s.multi_objective and s.directions == ["maximize", "minimize"]


def test_list_values_round_trip_through_optuna_categoricals():
    s = spec()
    stages = s.space[1]
    assert encode((3, 4)) == "[3, 4]"
    assert decode(stages, "[3, 4]") == (3, 4)
    cell = s.grid()[3]
    study = optuna.create_study(directions=s.directions)
    study.enqueue_trial(encode_params(s, cell))
    trial = study.ask()
    assert suggest(trial, s) == cell
    assert all(isinstance(v, (type(None), bool, int, float, str)) for v in trial.params.values())


def test_sampled_space_suggests_within_bounds():
    s = spec(sampler={"type": "tpe", "n_startup_trials": 2}, budget={"n_trials": 3},
             space={"train.lr": {"type": "log", "low": 1e-3, "high": 1e-1}, "train.epochs": {"type": "int", "low": 1, "high": 3}})
    study = optuna.create_study()
    for _ in range(3):
        t = study.ask()
        p = suggest(t, s)
        assert 1e-3 <= p["train.lr"] <= 1e-1 and p["train.epochs"] in (1, 2, 3) and "seed" not in p
        study.tell(t, 0.5)
    assert study.trials[0].distributions["train.lr"].log


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_specs_validate_in_every_variant(path):
    raw = yaml.safe_load(path.read_text())
    load_spec(path)
    for variant in raw.get("variants") or {}:
        s = load_spec(path, variant=variant)
        if s.is_grid:
            assert len(s.grid()) >= 2
