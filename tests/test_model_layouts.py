"""Where SE sits and what the layouts compute: each placement's unit output is paper Fig. 5's formula, the
``after_3x3`` and identity placements, the MAC counts of the conv/fc layouts and ``stride_on``, BN-Inception's
released SE blocks, channels_last models. (Registry and one-step training of every model: test_models.py.)"""
from __future__ import annotations

import pytest
import torch
from test_models import small_input
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from senet import build_model, se_modules
from senet.blocks import BottleneckBranch, ResidualUnit, conv1x1, unit_se
from senet.config import SEConfig

pytestmark = pytest.mark.usefixtures("one_thread_module")


# ---- Placements sit where paper Fig. 5 puts them ---- #


def _units(model):
    return [m for m in model.modules() if isinstance(m, ResidualUnit)]


@pytest.mark.parametrize("name", ["resnet18", "resnet20_cifar", "resnet164_cifar"])
@pytest.mark.parametrize("placement", ["standard", "pre", "post", "identity"])
def test_unit_output_is_fig5_formula(name, placement):
    """(b) relu(SE(F(x)) + x), (c) relu(F(SE(x)) + x), (d) SE(relu(F(x) + x)), (e) relu(F(x) + SE(x));
    the pre-activation CIFAR units have no ReLU after the sum. Checked on a projection unit and an
    identity unit of the built network."""
    model = build_model(name, **{"se.placement": placement}).eval()
    units = _units(model)
    for unit in (units[1], next(u for u in units if u.shortcut is not None and u is not units[0])):
        x = torch.randn(2, unit.branch.conv1.in_channels, 8, 8)
        act, f, se = unit.act, unit.branch, unit.se
        sc = unit.shortcut if unit.shortcut is not None else nn.Identity()
        with torch.no_grad():
            if placement == "standard":
                expected = act(se(f(x)) + sc(x))
            elif placement == "pre":
                expected = act(f(se(x)) + sc(x))
            elif placement == "post":
                expected = se(act(f(x) + sc(x)))
            else:
                expected = act(f(x) + se(sc(x)))
            torch.testing.assert_close(unit(x), expected)


@pytest.mark.parametrize("name, conv_before, conv_after, width", [
    ("resnet18", "conv1", "conv2", 64), ("resnet50", "conv2", "conv3", 64),
    ("resnet20_cifar", "conv1", "conv2", 16), ("resnet164_cifar", "conv2", "conv3", 16),
])
def test_after_3x3_runs_between_the_3x3_conv_and_the_next(name, conv_before, conv_after, width):
    model = build_model(name, **{"se.placement": "after_3x3"})
    unit = _units(model)[1]
    assert unit.se is None and unit.branch.se is not None and unit.branch.se.channels == width
    order = []
    for tag in (conv_before, conv_after):
        getattr(unit.branch, tag).register_forward_hook(lambda m, i, o, t=tag: order.append(t))
    unit.branch.se.register_forward_hook(lambda m, i, o: order.append("se"))
    assert getattr(unit.branch, conv_before).kernel_size == (3, 3)
    with torch.no_grad():
        unit(torch.randn(1, unit.branch.conv1.in_channels, 8, 8))
    assert order == [conv_before, "se", conv_after]


def test_identity_placement_follows_the_projection():
    """Fig. 5e on a projection unit: the SE sees the projected shortcut (unit output width)."""
    cfg = SEConfig(placement="identity")
    se, se3 = unit_se(cfg, 3, 1, 256, 128, 512)
    unit = ResidualUnit(BottleneckBranch(256, 128, 512, 2, 1, "1x1", se3),
                        nn.Sequential(conv1x1(256, 512, 2), nn.BatchNorm2d(512)), se, cfg.placement).eval()
    seen = []
    unit.se.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        unit(x)
        torch.testing.assert_close(seen[0], unit.shortcut(x))


def test_pre_placement_leaves_the_identity_path_unscaled():
    model = build_model("resnet18", **{"se.placement": "pre"}).eval()
    unit = _units(model)[1]  # identity shortcut
    with torch.no_grad():
        for p in unit.branch.parameters():
            p.zero_()  # branch output 0 -> unit output relu(x), whatever the SE does
        x = torch.randn(2, 64, 8, 8)
        torch.testing.assert_close(unit(x), torch.relu(x))


# ---- Layouts ---- #


def _macs(name: str, **overrides) -> int:
    with torch.device("meta"):
        model = build_model(name, **overrides)
        with FlopCounterMode(display=False) as counter:
            out = model.forward_features(torch.empty(1, 3, 224, 224))
            model.fc(out.mean((2, 3)))
    return counter.get_total_flops() // 2, tuple(out.shape)


@pytest.mark.parametrize("name, stride_on, macs", [
    ("resnet50", "1x1", 3_857_973_248), ("resnet50", "3x3", 4_089_184_256),
    ("resnext50_32x4d", "3x3", 4_230_479_872), ("bn_inception", None, 2_032_600_064),
])
def test_conv_fc_macs_of_the_layouts(name, stride_on, macs):
    """The paper's printed values: conv+FC multiply-accumulates at 224 (paper: 3.86, -, 4.24, 2.03 GFLOPs)."""
    got, shape = _macs(name, **({"stride_on": stride_on} if stride_on else {}))
    assert got == macs
    assert shape[1:] == ((1024, 7, 7) if name == "bn_inception" else (2048, 7, 7))


def test_se_fc_macs():
    """The SE FCs add 2,514,944 MACs to ResNet-50 and 639,360 to BN-Inception (1x1 convs on 1x1 maps)."""
    assert _macs("se_resnet50")[0] - _macs("resnet50")[0] == 2_514_944
    assert _macs("se_bn_inception")[0] - _macs("bn_inception")[0] == 639_360


def test_stride_on_moves_the_stride_not_the_shapes():
    with torch.device("meta"):
        caffe, tv = build_model("resnet50", stride_on="1x1"), build_model("resnet50", stride_on="3x3")
        x = torch.empty(2, 3, 64, 64)
        assert caffe(x).shape == tv(x).shape == (2, 1000)
        assert caffe.forward_features(x).shape == tv.forward_features(x).shape == (2, 2048, 2, 2)
    for layer in ("layer2", "layer3", "layer4"):
        assert getattr(caffe, layer)[0].branch.conv1.stride == (2, 2)
        assert getattr(caffe, layer)[0].branch.conv2.stride == (1, 1)
        assert getattr(tv, layer)[0].branch.conv1.stride == (1, 1)
        assert getattr(tv, layer)[0].branch.conv2.stride == (2, 2)
    with torch.device("meta"):
        rx = build_model("resnext50_32x4d")  # released layout: stride on the grouped 3x3
    assert rx.layer2[0].branch.conv2.stride == (2, 2) and rx.layer2[0].branch.conv2.groups == 32


def test_bn_inception_has_the_released_se_blocks():
    with torch.device("meta"):
        model = build_model("se_bn_inception")
    blocks = se_modules(model)
    assert list(blocks) == [f"SE_{m}" for m in ("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    assert [b.channels for b in blocks.values()] == [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]
    assert [b.fc1.out_channels for b in blocks.values()] == [16, 20, 36, 36, 36, 38, 38, 66, 64, 64]


def test_channels_last_model():
    model = build_model("se_resnet20_cifar").to(memory_format=torch.channels_last)
    x = small_input("resnet20_cifar").to(memory_format=torch.channels_last)
    ref = build_model("se_resnet20_cifar")
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref.eval()(x.contiguous()), rtol=1e-4, atol=1e-5)
