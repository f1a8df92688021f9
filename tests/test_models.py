"""The model zoo: registry, every model x SE knob trains one step (placements and layouts: test_model_layouts.py).

Forward and backward run on small inputs (the registry's native size, capped at 64 pixels for
ImageNet nets). A peer implementation shipped SE blocks that were built but never called, so every
SE block's calls are counted with forward hooks.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from senet import build_model, get_arch, list_archs, list_models, model_config, registry, se_modules
from senet.blocks import ResidualUnit
from senet.config import GATES, PLACEMENTS, SQUEEZES, ModelConfig, SEConfig
from senet.se import SqueezeExcite

# Deep nets: their default build and the one-factor grid run in the slow tier only.
HEAVY = {"resnet101", "resnet152", "resnext101_32x4d", "vgg16_bn", "inception_resnet_v2", "resnet164_cifar"}


pytestmark = pytest.mark.usefixtures("one_thread_module")


def small_input(arch: str, batch: int = 2) -> torch.Tensor:
    c, h, _ = get_arch(arch).input_size
    side = h if h <= 64 else 64 if h <= 224 else math.ceil(h / 4)  # 299-pixel nets need at least 75
    return torch.randn(batch, c, side, side, generator=torch.Generator().manual_seed(0))


def train_step(model: nn.Module, x: torch.Tensor, finite: bool = True) -> dict[str, int]:
    """One forward + backward; returns how often each SE block ran, checks nothing is unused and, if
    ``finite``, nothing is NaN or infinite."""
    calls = {tag: 0 for tag in se_modules(model)}
    assert len(calls) == sum(isinstance(m, SqueezeExcite) for m in model.modules()), "duplicate SE tags"
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.__setitem__(mod.tag, calls[mod.tag] + 1))
             for m in se_modules(model).values()]
    try:
        model.train()
        y = model(x)
        assert y.shape == (x.shape[0], model.cfg.num_classes)
        assert torch.isfinite(y).all() or not finite
        loss = nn.functional.cross_entropy(y, torch.arange(x.shape[0]) % model.cfg.num_classes)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() or not finite, f"{name} has a non-finite gradient"
    return calls


# ---- Registry ---- #


def test_registered_names_follow_the_paper():
    names = set(list_models())
    expected = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                "resnext101_32x4d", "bn_inception", *(f"resnet{d}_cifar" for d in (20, 32, 56, 110, 164))}
    assert expected | {f"se_{n}" for n in expected} <= names
    for arch in list_archs():  # every architecture is reachable as its baseline and its SE model
        assert model_config(arch).se is None and model_config(f"se_{arch}").se == SEConfig()
        assert model_config(arch).num_classes == get_arch(arch).num_classes
    assert list_models() == sorted(list_models())


def test_duplicates_are_refused(monkeypatch):
    monkeypatch.setattr(registry, "_ARCHS", dict(registry._ARCHS))
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    with pytest.raises(ValueError, match="architecture 'resnet50' is already registered"):
        registry.register_arch("resnet50", stages=(2, 3, 4, 5))(lambda cfg: None)
    with pytest.raises(ValueError, match="model 'se_resnet50' is already registered"):
        registry.register("se_resnet50")(lambda **kw: None)
    registry.register_arch("toy", stages=(1,))(lambda cfg: nn.Linear(1, 1))

    @registry.register_model
    def toy(**fields):
        return registry.arch_config("toy", None, **fields)

    assert "toy" in registry.list_models() and isinstance(build_model("toy"), nn.Linear)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_arch("toy", stages=(1,))(lambda cfg: None)
    with pytest.raises(ValueError, match="model 'toy' is already registered"):
        registry.register_model(toy)


def test_every_public_name_is_a_builder_function_of_its_family_module():
    """As timm's ``@register_model def seresnet50``: each name, ``se_*`` included, has a definition to find."""
    for name in list_models():
        fn = registry._MODELS[name]
        cfg = fn()
        assert fn.__name__ == name and fn.__doc__, name
        build = get_arch(cfg.arch).build
        assert fn.__module__ == getattr(build, "func", build).__module__ != "senet.registry", name  # func: a partial
        assert cfg.se == (SEConfig() if name.startswith("se_") else None), name


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError) as err:
        build_model("se_resnet51")
    assert "model='se_resnet51' is not registered (did you mean se_resnet50" in str(err.value)
    assert "senet.list_models() names all" in str(err.value)
    with pytest.raises(ValueError) as err:
        build_model("zzz")  # nothing close: every name
    assert all(n in str(err.value) for n in ("se_resnet50", "se_bn_inception", "resnet110_cifar"))
    with pytest.raises(ValueError, match=r"model\.arch='vgg19' is not registered \(did you mean vgg16_bn\?\); "
                                         r"choose one of: .*resnet50"):
        build_model(ModelConfig(arch="vgg19"))
    with pytest.raises(TypeError, match="ModelConfig or a model name"):
        build_model({"arch": "resnet50"})


def test_name_and_config_build_the_same_network():
    a = build_model("se_resnet20_cifar", **{"se.reduction": 4})
    b = build_model(ModelConfig(arch="resnet20_cifar", se=SEConfig(reduction=4), num_classes=10))
    assert a.cfg == b.cfg and [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


# ---- Every model trains one step; every SE block runs exactly once ---- #


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n.removeprefix("se_") in HEAVY else n for n in list_models()])
def test_every_registered_model_trains_one_step(name):
    model = build_model(name)
    calls = train_step(model, small_input(model.cfg.arch))
    assert (len(calls) > 0) == (model.cfg.se is not None)
    assert set(calls.values()) <= {1}, f"SE blocks not called exactly once: {calls}"


def _grid():
    """Placement x squeeze x gate. The SE block is the same module everywhere, so the full product
    runs on the smallest net (resnet20_cifar; its one-factor-at-a-time subset in the fast tier) and
    every other architecture but the deep ones runs each squeeze and each gate (slow tier);
    placements, which depend on the architecture, are covered for all of them below."""
    for arch in list_archs():
        if arch == "resnet20_cifar":
            combos = itertools.product(get_arch(arch).placements, SQUEEZES, GATES)
        elif arch not in HEAVY:
            combos = [("standard", s, "sigmoid") for s in SQUEEZES] + [("standard", "avg", g) for g in GATES]
        else:
            continue
        for p, s, g in dict.fromkeys(combos):
            one_factor = (p == "standard") + (s == "avg") + (g == "sigmoid") >= 2
            fast = arch == "resnet20_cifar" and one_factor
            yield pytest.param(arch, p, s, g, marks=() if fast else pytest.mark.slow, id=f"{arch}-{p}-{s}-{g}")


def _placements():
    """Every placement of every architecture; fast for the paper's ablation backbone (ResNet-50), one
    basic-unit net per family and the non-residual zoo, slow for the other (deeper) variants."""
    fast_archs = {"resnet18", "resnet50", "resnet20_cifar"}
    for arch in list_archs():
        fast = arch in fast_archs or (get_arch(arch).family != "resnet" and arch not in HEAVY)
        for p in get_arch(arch).placements:
            yield pytest.param(arch, p, marks=() if fast else pytest.mark.slow, id=f"{arch}-{p}")


@pytest.mark.parametrize("arch, placement, squeeze, gate", list(_grid()))
def test_se_grid_trains_one_step(arch, placement, squeeze, gate):
    se = SEConfig(placement=placement, squeeze=squeeze, gate=gate, bias=False, reduction=8)
    cfg = model_config(arch, se={"reduction": 8, "placement": placement, "squeeze": squeeze, "gate": gate,
                                 "bias": False})
    assert cfg.se == se
    model = build_model(cfg)
    calls = train_step(model, small_input(arch), finite=not unstable(placement, gate))
    assert calls and set(calls.values()) == {1}, f"SE blocks not called exactly once: {calls}"


def unstable(placement: str, gate: str) -> bool:
    """An unbounded gate makes x * s(x) quadratic in x; on the identity path (post, identity) the
    units compose it, so activations grow doubly exponentially and overflow float32 at init."""
    return placement in ("post", "identity") and gate in ("relu", "identity")


def test_unbounded_gate_on_the_identity_path_overflows_at_init():
    """The reason ``unstable`` combinations are exempt from the finiteness check above: documented
    behaviour of the configuration, not of the code (a bounded gate or the standard placement is fine)."""
    torch.manual_seed(0)
    x = small_input("resnet20_cifar")

    def peak(**se):
        model = build_model("resnet20_cifar", **{f"se.{k}": v for k, v in se.items()})
        peaks = []
        for unit in model.modules():
            if isinstance(unit, ResidualUnit):
                unit.register_forward_hook(lambda m, i, o: peaks.append(o.abs().max().item()))
        with torch.no_grad():
            model(x)
        return peaks

    grown = peak(placement="post", squeeze="none", gate="relu")
    assert grown[0] < 1e4 and not math.isfinite(grown[-1])  # finite after one unit, overflowed at the end
    for ok in ({"placement": "post", "squeeze": "none", "gate": "sigmoid"}, {"placement": "standard", "squeeze": "none",
                                                                             "gate": "relu"}):
        assert max(peak(**ok)) < 1e4


@pytest.mark.parametrize("arch, placement", list(_placements()))
def test_every_placement_of_every_arch(arch, placement):
    model = build_model(arch, **{"se.placement": placement})
    calls = train_step(model, small_input(arch))
    assert calls and set(calls.values()) == {1}


def test_disallowed_placement_is_a_clear_error():
    for arch in list_archs():
        for p in set(PLACEMENTS) - set(get_arch(arch).placements):
            with pytest.raises(ValueError, match=f"placement='{p}' does not apply to {arch}; choose one of"):
                model_config(arch, **{"se.placement": p})
    assert get_arch("bn_inception").placements == ("standard",)
