"""Every SE successor in every architecture family at every placement that family allows: the network builds,
runs a training forward and backward pass with every attention module called once and every parameter given a
finite gradient (issue 25). One architecture per block layout; small inputs that still leave every stage at least
2 x 2 (SimAM and SRM need two positions). Weights are drawn directly (``to_empty`` + uniform) instead of each
architecture's initialisation: what is tested is that the operator fits the block, not the starting point."""
from __future__ import annotations

import pytest
import torch
from test_attention import SUCCESSORS, _calls

from senet import build_model, get_arch

# One architecture per block layout, at the smallest input its stages take.
LAYOUTS = {"resnet18": 64, "resnet50": 64, "resnext50_32x4d": 64, "resnet20_cifar": 16, "resnet164_cifar": 16,
           "inception_resnet_v2": 107, "mobilenet_v1": 64, "shufflenet_v1_g3": 64, "vgg16_bn": 64,
           "bn_inception": 64}
CASES = [(arch, placement) for arch in LAYOUTS for placement in get_arch(arch).placements]


def _network(arch: str, op: str, placement: str) -> torch.nn.Module:
    with torch.device("meta"):
        model = build_model(f"se_{arch}", **{"se.operator": op, "se.placement": placement, "num_classes": 10})
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) * 0.1 - 0.05)
        for b in model.buffers():
            b.zero_()
    return model


def test_the_cases_cover_every_family_and_every_placement_it_allows():
    from senet.registry import _ARCHS

    assert {get_arch(a).family for a in LAYOUTS} == {spec.family for spec in _ARCHS.values()}
    assert {p for _, p in CASES} == {p for spec in _ARCHS.values() for p in spec.placements}


@pytest.mark.slow
@pytest.mark.parametrize("op", SUCCESSORS)
@pytest.mark.parametrize(("arch", "placement"), CASES, ids=[f"{a}-{p}" for a, p in CASES])
def test_every_operator_trains_in_every_family_at_every_placement(arch, placement, op):
    torch.manual_seed(0)
    model = _network(arch, op, placement)
    size = LAYOUTS[arch]
    assert set(_calls(model, torch.randn(2, 3, size, size)).values()) == {1}
