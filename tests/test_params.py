"""Parameter counts against the released models and the paper's closed form (Sec. 4, Eq. 5; Tables 10, 13, 15).

Models are built on the meta device: shapes and counts only, no memory or init cost.
"""
from __future__ import annotations

import functools
import itertools
from unittest import mock

import pytest
import torch

from senet import build_model, se_modules

STAGES = (2, 3, 4, 5)
RESNET50 = {2: (3, 256, 64), 3: (4, 512, 128), 4: (6, 1024, 256), 5: (3, 2048, 512)}  # N_s, C_s, bottleneck width
SUBSETS = [s for k in range(1, 5) for s in itertools.combinations(STAGES, k)]  # the 15 non-empty subsets
RS = (2, 4, 8, 16, 32)


def count(name: str, **overrides) -> int:
    """Learnable parameters of a registered model with dotted overrides."""
    key = tuple(sorted((k, tuple(map(tuple, v)) if k == "se.skip_blocks" else tuple(v) if isinstance(v, list) else v)
                       for k, v in overrides.items()))
    return _count(name, key)


@functools.cache
def _count(name: str, key: tuple) -> int:
    overrides = {k: [list(x) for x in v] if k == "se.skip_blocks" else list(v) if isinstance(v, tuple) else v
                 for k, v in key}
    return sum(p.numel() for p in meta_model(name, **overrides).parameters())


def meta_model(name: str, **overrides) -> torch.nn.Module:
    """The model on the meta device. Random init draws cost most of such a build and cannot change
    a shape, so they are skipped."""
    with torch.device("meta"), mock.patch("torch.nn.init.kaiming_normal_"), \
            mock.patch("torch.nn.init.kaiming_uniform_"):
        return build_model(name, **overrides)


def se_block_params(c: int, r: int, bias: bool) -> int:
    """One SE block on c channels: two FCs of 2·c·(c//r) weights, plus c//r + c biases."""
    s = c // r
    return 2 * c * s + (s + c if bias else 0)


@pytest.mark.parametrize("name, params", [
    ("resnet50", 25_557_032), ("se_resnet50", 28_088_024),
    ("resnet101", 44_549_160), ("se_resnet101", 49_326_872),
    ("resnet152", 60_192_808), ("se_resnet152", 66_821_848),
    ("resnext50_32x4d", 25_028_904), ("se_resnext50_32x4d", 27_559_896),
    ("resnext101_32x4d", 44_177_704), ("se_resnext101_32x4d", 48_955_416),
    ("bn_inception", 11_285_224), ("se_bn_inception", 11_931_622),
])
def test_released_model_counts(name, params):
    """Learnable params of the released prototxts (timm's legacy_se* agree)."""
    assert count(name) == params


def test_stride_placement_does_not_change_counts():
    assert count("se_resnet50", stride_on="3x3") == count("se_resnet50", stride_on="1x1") == 28_088_024


def _grid():
    for r, subset, bias in itertools.product(RS, SUBSETS, (True, False)):
        fast = r == 16 or len(subset) == 4
        yield pytest.param(r, subset, bias, marks=() if fast else pytest.mark.slow,
                           id=f"r{r}-s{''.join(map(str, subset))}-{'bias' if bias else 'nobias'}")


@pytest.mark.parametrize("r, subset, bias", list(_grid()))
def test_se_delta_is_the_closed_form(r, subset, bias):
    """Eq. 5: (2/r)·Σ_s N_s·C_s² FC weights (+ N_s·(C_s/r + C_s) biases) for the stages that get SE."""
    delta = count("resnet50", **{"se.reduction": r, "se.stages": list(subset), "se.bias": bias}) - 25_557_032
    weights = sum(2 * RESNET50[s][0] * RESNET50[s][1] ** 2 // r for s in subset)
    biases = sum(RESNET50[s][0] * (RESNET50[s][1] // r + RESNET50[s][1]) for s in subset)
    assert delta == weights + (biases if bias else 0)
    assert delta == sum(RESNET50[s][0] * se_block_params(RESNET50[s][1], r, bias) for s in subset)


def test_paper_numbers_follow():
    """Sec. 4: 2,514,944 SE weights at r=16 (2,530,992 with biases); 942,080 without the stage-5 blocks."""
    assert count("resnet50", **{"se.bias": False}) - 25_557_032 == 2_514_944
    assert count("se_resnet50") - 25_557_032 == 2_530_992
    assert count("resnet50", **{"se.bias": False, "se.stages": [2, 3, 4]}) - 25_557_032 == 942_080
    # Table 10 (r = 2..32), learnable params with FC biases, in millions ("PT bias")
    table10 = {2: 45.699, 4: 35.636, 8: 30.604, 16: 28.088, 32: 26.830}
    for r, millions in table10.items():
        assert round(count("resnet50", **{"se.reduction": r}) / 1e6, 3) == millions


@pytest.mark.parametrize("skips", [((5, 2), (5, 3)), ((2, 1),), ((3, 4), (4, 1), (4, 6), (5, 1))])
def test_skip_blocks_remove_exactly_their_blocks(skips):
    full = count("se_resnet50")
    pruned = count("se_resnet50", **{"se.skip_blocks": [list(s) for s in skips]})
    assert full - pruned == sum(se_block_params(RESNET50[s][1], 16, True) for s, _ in skips)
    tags = set(se_modules(meta_model("se_resnet50", **{"se.skip_blocks": [list(s) for s in skips]})))
    assert not tags & {f"SE_{s}_{b}" for s, b in skips} and len(tags) == 16 - len(skips)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("r", [4, 16])
def test_after_3x3_acts_on_the_bottleneck_width(r, bias):
    """Table 15 "SE 3x3": the block sees 64/128/256/512 channels, not the unit outputs."""
    delta = count("resnet50", **{"se.placement": "after_3x3", "se.reduction": r, "se.bias": bias}) - 25_557_032
    assert delta == sum(n * se_block_params(w, r, bias) for n, _, w in RESNET50.values())
    m = meta_model("resnet50", **{"se.placement": "after_3x3"})
    assert {se.channels for se in se_modules(m).values()} == {64, 128, 256, 512}


def test_pre_acts_on_the_unit_input_width():
    delta = count("resnet50", **{"se.placement": "pre"}) - 25_557_032
    cins = {2: 64, 3: 256, 4: 512, 5: 1024}  # the first unit of each stage sees the previous stage's output
    assert delta == sum(se_block_params(cins[s], 16, True) + (n - 1) * se_block_params(c, 16, True)
                        for s, (n, c, _) in RESNET50.items())


@pytest.mark.parametrize("placement", ["post", "identity"])
def test_post_and_identity_cost_what_standard_costs(placement):
    assert count("resnet50", **{"se.placement": placement}) == 28_088_024


def test_basic_block_resnets():
    """ResNet-18/34: SE on the 64/128/256/512 unit outputs (64 // 16 = 4, unlike timm's 8)."""
    for name, depths in (("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))):
        delta = count(name, **{"se.reduction": 16}) - count(name)
        assert delta == sum(n * se_block_params(c, 16, True) for n, c in zip(depths, (64, 128, 256, 512)))
    assert count("resnet18") == 11_689_512  # torchvision resnet18


@pytest.mark.parametrize("depth, n, bottleneck", [(20, 3, False), (56, 9, False), (110, 18, False), (164, 18, True)])
def test_cifar_resnets(depth, n, bottleneck):
    name = f"resnet{depth}_cifar"
    widths = (64, 128, 256) if bottleneck else (16, 32, 64)
    for r in (4, 16):
        delta = count(name, **{"se.reduction": r}) - count(name)
        assert delta == sum(n * se_block_params(c, r, True) for c in widths)


def test_bn_inception_se_delta():
    """SE after each of the 10 modules: 646,398 params, hidden widths 16, 20, 36, ... 64 (C // 16)."""
    channels = (256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024)
    assert count("se_bn_inception") - count("bn_inception") == sum(se_block_params(c, 16, True) for c in channels)
    assert sum(se_block_params(c, 16, True) for c in channels) == 646_398
    for r in (8, 32):
        delta = count("bn_inception", **{"se.reduction": r, "se.bias": False})
        assert delta - 11_285_224 == sum(2 * c * (c // r) for c in channels)
    dropped = count("se_bn_inception", **{"se.stages": [3, 4], "se.skip_blocks": [[4, 5]]})
    assert 11_931_622 - dropped == sum(se_block_params(c, 16, True) for c in (1056, 1024, 1024))
