"""SRM (Lee et al. 2019) and coordinate attention (Hou et al. 2021) against their references.

SRM: timm has none, so the closed form of its released code is written out here (mean, unbiased std, the
channel-wise FC, BN, sigmoid). Coordinate attention: the released formula written out, and timm's ``CoordAttn``
given the same weights where its structure matches; where timm's defaults differ, a test shows how.
timm is a test reference only: ``senet`` never imports it.
"""
from __future__ import annotations

import pytest
import torch
from attention_weights import randomize
from timm.layers.coord_attn import CoordAttn

from senet import build_model, se_modules
from senet.attention.coord import CoordinateAttention, coord_width
from senet.attention.srm import SRM
from senet.blocks import set_fused_se
from senet.config import SEConfig
from senet.op_counts import count_ops

pytestmark = pytest.mark.usefixtures("one_thread_module")

CHANNELS = (16, 64, 256)


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))



# ---- SRM ---- #


def _srm_closed_form(x: torch.Tensor, w: torch.Tensor, bn: torch.nn.BatchNorm2d,
                     divisor_offset: int = 1) -> torch.Tensor:
    """SRM Eq. 1-5 in eval mode: μ, σ = sqrt(Σ (x - μ)² / (H·W - ``divisor_offset``)) (no epsilon, as released),
    z = w_0 μ + w_1 σ, g = sigmoid(BN(z)) with BN's running statistics; ``w`` (C, 2)."""
    h, wd = x.shape[2:]
    mu = x.sum((2, 3)) / (h * wd)
    sigma = torch.sqrt(((x - mu[:, :, None, None]) ** 2).sum((2, 3)) / (h * wd - divisor_offset))
    z = w[:, 0] * mu + w[:, 1] * sigma
    z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return x * torch.sigmoid(z)[:, :, None, None]


@pytest.mark.parametrize("channels", CHANNELS)
def test_srm_is_the_released_codes_closed_form(channels):
    ours = SRM(channels, SEConfig(operator="srm")).eval()
    randomize(ours)
    x = _x(3, channels, 9, 7) * 2 + 0.5
    w = ours.cfc.weight.detach().reshape(channels, 2)
    with torch.no_grad():
        y = ours(x)
        expected = _srm_closed_form(x, w, ours.bn)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(y, x)
    # the released code's std: unbiased (H·W - 1), no epsilon; the population std (H·W) is something else
    assert not torch.allclose(y, _srm_closed_form(x, w, ours.bn, divisor_offset=0), rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in ours.parameters()) == 2 * channels + 2 * channels  # CFC, BN affine


def test_srm_starts_as_the_released_code_does_and_its_gradients_are_finite():
    ours = SRM(32, SEConfig(operator="srm"))
    assert ours.cfc.weight.shape == (32, 1, 2) and (ours.cfc.weight == 0).all() and ours.cfc.bias is None
    x = _x(4, 32, 6, 5).requires_grad_()
    x.data[:, 3] = 0.7  # a constant channel: σ = 0, torch's std has a zero gradient there
    ours.train()(x).square().sum().backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert torch.isfinite(x.grad).all()
    assert ours.cfc.weight.grad.abs().sum() > 0


def test_srm_refuses_a_single_position_in_one_line():
    with pytest.raises(ValueError, match=r"^SRM \(SE_5_3\) needs at least 2 spatial positions.*1x1") as e:
        SRM(8, SEConfig(operator="srm"), tag="SE_5_3")(_x(2, 8, 1, 1))
    assert "\n" not in str(e.value)


def test_srm_refuses_every_knob_in_one_line():
    with pytest.raises(ValueError, match=r"^model\.se\.reduction=8 does not apply to model\.se\.operator='srm', "
                                         r"which reads: no knobs but where it goes"):
        SEConfig(operator="srm", reduction=8)


def test_srm_in_a_network_fuses_and_is_counted():
    torch.manual_seed(0)
    model = build_model("se_resnet20_cifar", **{"se.operator": "srm"}).eval()
    blocks = list(se_modules(model).values())
    assert all((m.cfc.weight == 0).all() for m in blocks)  # init_weights keeps the released zero CFC
    with torch.no_grad():
        for m in blocks:
            m.cfc.weight.normal_(0, 1)
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        set_fused_se(model, False)
        torch.testing.assert_close(model(x), fused, rtol=1e-4, atol=1e-5)
    counts = count_ops(model, (3, 32, 32), strict=True)
    assert counts.params == sum(p.numel() for p in model.parameters())
    plain = build_model("resnet20_cifar")
    assert counts.params - sum(p.numel() for p in plain.parameters()) == sum(4 * m.channels for m in blocks)
    sizes = {16: 32 * 32, 32: 16 * 16, 64: 8 * 8}
    assert counts.se["conv"] + counts.se["linear"] == sum(2 * m.channels for m in blocks)  # the CFC
    assert counts.se["se_scale"] == sum(m.channels * sizes[m.channels] for m in blocks)
    assert counts.se["se_squeeze"] > 0


# ---- Coordinate attention ---- #

def _h_swish(v: torch.Tensor) -> torch.Tensor:
    """The released code's h_swish: x * ReLU6(x + 3) / 6."""
    return v * torch.clamp(v + 3, 0, 6) / 6


def _coord_closed_form(x: torch.Tensor, ours: CoordinateAttention) -> torch.Tensor:
    """Eq. 4-9 as the released ``CoordAtt`` computes them, in eval mode."""
    h = x.shape[2]
    z = torch.cat([x.mean(3), x.mean(2)], 2)  # (N, C, H + W): z^h then z^w

    def conv(m, v):  # a 1x1 convolution with bias over (N, C, L)
        return torch.einsum("oc,ncl->nol", m.weight.flatten(1), v) + m.bias[:, None]

    bn = ours.bn1
    f = conv(ours.conv1, z)
    f = (f - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
    f = f * bn.weight[:, None] + bn.bias[:, None]
    f = _h_swish(f)
    g_h = torch.sigmoid(conv(ours.conv_h, f[:, :, :h]))[:, :, :, None]
    g_w = torch.sigmoid(conv(ours.conv_w, f[:, :, h:]))[:, :, None, :]
    return x * g_w * g_h


@pytest.mark.parametrize("reduction", [32, 4])
@pytest.mark.parametrize("channels", CHANNELS)
def test_coord_is_the_released_codes_closed_form(channels, reduction):
    ours = CoordinateAttention(channels, SEConfig(operator="coord", coord_reduction=reduction)).eval()
    assert ours.conv1.out_channels == max(8, channels // reduction)
    randomize(ours)
    x = _x(3, channels, 9, 7)
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, _coord_closed_form(x, ours), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("channels", CHANNELS)
def test_coord_matches_timm_given_its_weights_with_the_released_width_and_biases(channels):
    mip = coord_width(channels, 32)
    reference = CoordAttn(channels, rd_channels=mip, bias=True)
    randomize(reference)
    ours = CoordinateAttention(channels, SEConfig(operator="coord"))
    ours.load_state_dict(reference.state_dict())  # same names: conv1, bn1, conv_h, conv_w
    x = _x(3, channels, 9, 7)
    with torch.no_grad():
        y = ours.eval()(x)
        torch.testing.assert_close(y, reference.eval()(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(y, x)


def test_coord_follows_the_released_code_where_timm_differs():
    """Released: biases, mip = max(8, C // 32), h_swish. timm's defaults: no biases, make_divisible(C / 16 * 2 / 3, 8),
    nn.Hardswish (the same function)."""
    assert CoordAttn(64).conv1.bias is None
    assert CoordinateAttention(64, SEConfig(operator="coord")).conv1.bias is not None
    widths = {c: (coord_width(c, 32), CoordAttn(c).conv1.out_channels) for c in (64, 256, 512, 1024, 2048)}
    assert widths == {64: (8, 8), 256: (8, 8), 512: (16, 24), 1024: (32, 40), 2048: (64, 88)}
    v = torch.linspace(-5, 5, 101)
    torch.testing.assert_close(torch.nn.Hardswish()(v), _h_swish(v))
    # timm's default (no biases) against ours at the same width and weights: ours adds the biases
    reference = CoordAttn(256)
    randomize(reference)
    ours = CoordinateAttention(256, SEConfig(operator="coord")).eval()
    ours.load_state_dict(reference.state_dict(), strict=False)
    x = _x(2, 256, 9, 7)
    with torch.no_grad():
        assert not torch.allclose(ours(x), reference.eval()(x), rtol=1e-4, atol=1e-5)
        for m in (ours.conv1, ours.conv_h, ours.conv_w):
            m.bias.zero_()
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


def test_coord_reduction_is_a_positive_integer_and_coord_only():
    with pytest.raises(ValueError, match=r"^model\.se\.coord_reduction=0 is not allowed; it must be an integer >= 1$"):
        SEConfig(operator="coord", coord_reduction=0)
    with pytest.raises(ValueError, match=r"^model\.se\.coord_reduction=16 does not apply to model\.se\.operator='se'"):
        SEConfig(coord_reduction=16)
    with pytest.raises(ValueError, match=r"^model\.se\.reduction=8 does not apply to model\.se\.operator='coord', "
                                         r"which reads: coord_reduction;"):
        SEConfig(operator="coord", reduction=8)


def test_coord_fuses_its_full_size_gate_into_the_residual_sum_with_the_same_gradients():
    """g^h * g^w is one gate per element: x * s with s (N, C, H, W), so the unit hands its sum in (float64: see
    test_attention.py's fused test for the float32 rounding)."""
    torch.manual_seed(0)
    fused = build_model("se_resnet20_cifar", **{"se.operator": "coord"}).double()
    plain = build_model("se_resnet20_cifar", **{"se.operator": "coord"}).double()
    plain.load_state_dict(fused.state_dict())
    set_fused_se(plain, False)
    assert all(m.fuses_residual for m in se_modules(fused).values())
    x = _x(2, 3, 32, 32).double()
    outs, grads = [], []
    for model in (fused, plain):
        y = model.train()(x)
        y.square().sum().backward()
        outs.append(y)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)
    for name in grads[0]:
        assert torch.isfinite(grads[0][name]).all(), name
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-10, msg=name)


def test_coord_in_a_network_is_counted():
    model = build_model("se_resnet20_cifar", **{"se.operator": "coord"}).eval()
    blocks = list(se_modules(model).values())
    counts = count_ops(model, (3, 32, 32), strict=True)
    assert counts.params == sum(p.numel() for p in model.parameters())
    plain = build_model("resnet20_cifar")
    mips = [m.conv1.out_channels for m in blocks]
    assert mips == [8] * 9
    # conv1 (C -> mip, bias), BN (mip), conv_h and conv_w (mip -> C, bias)
    assert counts.params - sum(p.numel() for p in plain.parameters()) == sum(
        (m.channels + 1) * mip + 2 * mip + 2 * (mip + 1) * m.channels for m, mip in zip(blocks, mips))
    sides = {16: 32, 32: 16, 64: 8}
    # conv1 on H + W positions, conv_h on H, conv_w on W
    assert counts.se["conv"] + counts.se["linear"] == sum(
        2 * m.channels * mip * 2 * sides[m.channels] for m, mip in zip(blocks, mips))
    assert counts.se["se_scale"] == sum(2 * m.channels * sides[m.channels] ** 2 for m in blocks)
    assert counts.se["se_squeeze"] == sum(2 * m.channels * sides[m.channels] ** 2 for m in blocks)  # two means
