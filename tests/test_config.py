"""SEConfig / ModelConfig: validation messages, YAML/JSON round trips, dotted overrides, config_hash."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from ablations.config import ExperimentConfig
from senet import build_model, model_config, se_modules
from senet.config import ModelConfig, SEConfig
from senet.tree import apply_overrides, config_hash, flatten, from_dict, parse_value, to_dict


def test_defaults_are_the_papers():
    se = SEConfig()
    assert (se.reduction, se.width_rounding, se.squeeze, se.activation, se.gate, se.bias, se.placement) == (
        16, "floor", "avg", "relu", "sigmoid", True, "standard")
    assert se.stages is None and se.skip_blocks == ()
    assert model_config("resnet50").se is None
    assert model_config("se_resnet50").se == SEConfig()


@pytest.mark.parametrize("kwargs, field, allowed", [
    ({"reduction": 0}, "se.reduction=0", ">= 1"),
    ({"reduction": -4}, "se.reduction=-4", ">= 1"),
    ({"reduction": 2.5}, "se.reduction=2.5", "integer"),
    ({"reduction": True}, "se.reduction=True", "integer"),
    ({"divisor": 0}, "se.divisor=0", ">= 1"),
    ({"divisor": True}, "se.divisor=True", ">= 1"),
    ({"width_rounding": "ceil"}, "se.width_rounding='ceil'", "floor, round, divisor"),
    ({"squeeze": "mean"}, "se.squeeze='mean'", "avg, max, avgmax, none"),
    ({"activation": "swish"}, "se.activation='swish'", "relu, silu, gelu"),
    ({"gate": "softmax"}, "se.gate='softmax'", "sigmoid, hard_sigmoid, tanh, relu"),
    ({"placement": "middle"}, "se.placement='middle'", "standard, pre, post, identity, after_3x3"),
    ({"bias": "yes"}, "se.bias='yes'", "True, False"),
    ({"stages": ()}, "se.stages=()", "non-empty"),
    ({"stages": ("2",)}, "se.stages=('2',)", "stage ids"),
    ({"skip_blocks": [[5, 0]]}, "se.skip_blocks", "count from 1"),
    ({"skip_blocks": [[5]]}, "se.skip_blocks", "(stage, block) pairs"),
])
def test_se_config_errors_name_field_value_and_allowed(kwargs, field, allowed):
    with pytest.raises(ValueError) as err:
        SEConfig(**kwargs)
    assert field in str(err.value) and allowed in str(err.value)


@pytest.mark.parametrize("kwargs, expected", [
    ({"arch": "resnet51"}, ["model.arch='resnet51'", "resnet50", "resnext50_32x4d", "bn_inception"]),
    ({"stride_on": "2x2"}, ["model.stride_on='2x2'", "1x1, 3x3"]),
    ({"num_classes": 0}, ["model.num_classes=0", ">= 1"]),
    ({"in_chans": True}, ["model.in_chans=True"]),
    ({"se": SEConfig(stages=(7,))}, ["model.se.stages contains 7", "resnet50", "2, 3, 4, 5"]),
    ({"se": SEConfig(skip_blocks=((6, 1),))}, ["stage 6", "2, 3, 4, 5"]),
    ({"se": SEConfig(skip_blocks=((5, 4),))}, ["block 4 of stage 5", "allowed: 1..3"]),
    ({"arch": "bn_inception", "se": SEConfig(placement="post")}, ["model.se.placement='post'", "bn_inception",
                                                                "standard"]),
    ({"arch": "bn_inception", "se": SEConfig(stages=(2, 3))}, ["contains 2", "3, 4, 5"]),
    ({"arch": "bn_inception", "se": SEConfig(skip_blocks=((4, 6),))}, ["block 6 of stage 4", "1..5"]),
    ({"arch": "resnet20_cifar", "se": SEConfig(stages=(5,))}, ["contains 5", "2, 3, 4"]),
])
def test_model_config_errors_name_field_value_and_allowed(kwargs, expected):
    """Field checks fail in ``ModelConfig``; the architecture's (registry) checks in every consumer of it."""
    def experiment() -> None:
        ExperimentConfig(model=ModelConfig(**kwargs))

    def build() -> None:
        with torch.device("meta"):
            build_model(ModelConfig(**kwargs))

    for make in (experiment, build):
        with pytest.raises(ValueError) as err:
            make()
        for text in expected:
            assert text in str(err.value)


def test_model_config_is_a_leaf_and_the_registry_checks_it():
    """``ModelConfig`` alone does not consult the registry (no import cycle); ``model_config`` and
    ``build_model`` refuse an architecture mismatch before any layer is made."""
    cfg = ModelConfig(arch="resnet20_cifar", se=SEConfig(stages=(5,)))
    assert cfg.arch == "resnet20_cifar"
    with pytest.raises(ValueError, match="contains 5"):
        model_config("se_resnet20_cifar", **{"se.stages": [5]})
    with pytest.raises(ValueError, match="contains 5"):
        build_model(cfg)


@pytest.mark.parametrize("name, r, channels", [("se_resnet20_cifar", 32, 16), ("se_resnet50", 512, 256),
                                               ("se_bn_inception", 300, 256)])
def test_reduction_larger_than_a_stage_fails_before_any_work(name, r, channels):
    """r > C leaves zero excitation channels: refused when the model is built, naming r and its bound."""
    with pytest.raises(ValueError) as err:
        build_model(name, **{"se.reduction": r})
    assert f"se.reduction={r}" in str(err.value) and f"reduction <= {channels}" in str(err.value)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        build_model(name, **{"se.reduction": r, "se.width_rounding": "divisor"})  # never below the divisor


def test_configs_are_frozen():
    cfg = model_config("se_resnet50")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.se.reduction = 8


CONFIGS = [
    ModelConfig(),
    ModelConfig(arch="resnet18", se=None, num_classes=10, in_chans=1, stride_on="3x3"),
    ModelConfig(arch="resnet50", se=SEConfig(reduction=8, squeeze="max", gate="tanh", bias=False,
                                             placement="identity", stages=(3, 4), skip_blocks=((4, 6), (3, 1)))),
    ModelConfig(arch="bn_inception", se=SEConfig(width_rounding="divisor", divisor=4, skip_blocks=((4, 5),))),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.arch)
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip_through_yaml_and_json(cfg, fmt):
    dump, load = (yaml.safe_dump, yaml.safe_load) if fmt == "yaml" else (json.dumps, json.loads)
    text = dump(to_dict(cfg))
    back = from_dict(ModelConfig, load(text))
    assert back == cfg
    assert config_hash(back) == config_hash(cfg)
    if back.se is not None:  # YAML/JSON lists come back as the tuples the frozen config holds
        assert isinstance(back.se.skip_blocks, tuple) and all(isinstance(p, tuple) for p in back.se.skip_blocks)
        assert back.se.stages is None or isinstance(back.se.stages, tuple)


def test_from_dict_refuses_unknown_keys_listing_the_allowed():
    data = to_dict(ModelConfig())
    data["se"]["ratio"] = 8
    with pytest.raises(ValueError, match=r"unknown key se\.ratio; allowed keys: se\.reduction, .*se\.skip_blocks"):
        from_dict(ModelConfig, data)


def test_dotted_overrides():
    base = model_config("se_resnet50")
    arm = apply_overrides(base, {"se.reduction": 8, "stride_on": "3x3"})
    assert arm == dataclasses.replace(base, se=dataclasses.replace(base.se, reduction=8), stride_on="3x3")
    assert apply_overrides(base, {"se": None}).se is None
    # values typed on a command line are parsed with YAML rules
    arm = apply_overrides(base, {"se.stages": parse_value("[2, 3]"), "se.bias": parse_value("false"),
                                 "se.skip_blocks": parse_value("[[3, 4]]")})
    assert arm.se.stages == (2, 3) and arm.se.bias is False and arm.se.skip_blocks == ((3, 4),)
    # the arm differs from its baseline in exactly the overridden field
    diff = {k for k, v in flatten(to_dict(arm)).items() if flatten(to_dict(base))[k] != v}
    assert diff == {"se.stages", "se.bias", "se.skip_blocks"}


def test_overriding_an_se_field_on_a_baseline_turns_se_on_with_paper_defaults():
    cfg = model_config("resnet50", **{"se.reduction": 8})
    assert cfg.se == SEConfig(reduction=8)
    assert model_config("resnet50", **{"se.gate": "tanh"}).se == SEConfig(gate="tanh")
    with torch.device("meta"):
        assert len(se_modules(build_model("resnet50", **{"se.stages": [5]}))) == 3


def test_overrides_are_validated_and_name_the_full_key():
    with pytest.raises(ValueError, match=r"unknown key model\.se\.ratio; allowed keys: model\.se\.reduction"):
        model_config("se_resnet50", **{"se.ratio": 8})
    with pytest.raises(ValueError, match=r"unknown key model\.width"):
        model_config("se_resnet50", width=2)
    with pytest.raises(ValueError, match=r"se\.reduction=0"):
        model_config("se_resnet50", **{"se.reduction": 0})
    with pytest.raises(ValueError, match=r"model\.se\.stages contains 7"):
        model_config("se_resnet50", **{"se.stages": [7]})


def test_config_hash_is_stable_over_key_order_and_changes_with_values():
    cfg = CONFIGS[2]
    d = to_dict(cfg)
    reordered = {k: d[k] for k in reversed(list(d))}
    reordered["se"] = {k: d["se"][k] for k in reversed(list(d["se"]))}
    assert list(reordered) != list(d)
    assert config_hash(reordered) == config_hash(d) == config_hash(cfg)
    assert config_hash(from_dict(ModelConfig, reordered)) == config_hash(cfg)
    assert config_hash(apply_overrides(cfg, {"se.reduction": 16})) != config_hash(cfg)


# The hash of CONFIGS[2], pinned: run folders, result.json and a sweep's grid dedup key on it, so a change of
# the hash function or of the canonical form would silently split every existing study into new arms.
PINNED_HASH = "9ce4740e9824"


def test_config_hash_agrees_across_routes_and_matches_the_pinned_value():
    """Four independent routes to one config give the pinned hash; changing any one field moves it."""
    by_constructor = CONFIGS[2]
    by_dotted_keys = model_config("resnet50", **{
        "se.reduction": 8, "se.squeeze": "max", "se.gate": "tanh", "se.bias": False, "se.placement": "identity",
        "se.stages": parse_value("[3, 4]"), "se.skip_blocks": parse_value("[[4, 6], [3, 1]]")})
    by_replace = dataclasses.replace(ModelConfig(arch="resnet50"), se=dataclasses.replace(
        SEConfig(), reduction=8, squeeze="max", gate="tanh", bias=False, placement="identity",
        stages=(3, 4), skip_blocks=((4, 6), (3, 1))))
    by_yaml = from_dict(ModelConfig, yaml.safe_load("""
        se: {stages: [3, 4], placement: identity, bias: false, gate: tanh, squeeze: max, reduction: 8,
             skip_blocks: [[4, 6], [3, 1]]}
        arch: resnet50
    """))
    routes = {"constructor": by_constructor, "dotted": by_dotted_keys, "replace": by_replace, "yaml": by_yaml}
    assert {name: config_hash(c) for name, c in routes.items()} == dict.fromkeys(routes, PINNED_HASH)
    changed = {key: apply_overrides(by_constructor, {key: value}) for key, value in {
        "arch": "resnet101", "num_classes": 10, "in_chans": 1, "stride_on": "3x3", "drop_rate": 0.1,
        "stem_pool": "torchvision", "se.reduction": 4, "se.squeeze": "avg", "se.gate": "sigmoid", "se.bias": True,
        "se.activation": "silu", "se.placement": "standard", "se.stages": (3,), "se.skip_blocks": ((4, 6),),
        "se.width_rounding": "divisor", "se.divisor": 4}.items()}
    hashes = {key: config_hash(c) for key, c in changed.items()}
    assert PINNED_HASH not in hashes.values(), hashes
    assert len(set(hashes.values())) == len(hashes), hashes  # no two single-field changes collide
    assert config_hash(apply_overrides(by_constructor, {"se": None})) != PINNED_HASH
