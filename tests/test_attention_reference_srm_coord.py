"""SRM (Lee et al. 2019) and coordinate attention (Hou et al. 2021) against their references.

SRM: timm has none, so the closed form of its released code is written out here (mean, unbiased std, the
channel-wise FC, BN, sigmoid). Coordinate attention: the released formula written out, and timm's ``CoordAttn``
given the same weights where its structure matches; where timm's defaults differ, a test shows how.
timm is a test reference only: ``senet`` never imports it.
"""
from __future__ import annotations

import pytest
import torch

from senet import build_model, se_modules
from senet.attention.srm import SRM
from senet.blocks import set_fused_se
from senet.config import SEConfig
from senet.op_counts import count_ops

pytestmark = pytest.mark.usefixtures("one_thread_module")

CHANNELS = (16, 64, 256)


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Random parameters and BN statistics, so a mapping mistake cannot hide behind an init of ones and zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if t.ndim <= 1 else torch.randn(t.shape, generator=g))


# ---- SRM ---- #


def _srm_closed_form(x: torch.Tensor, w: torch.Tensor, bn: torch.nn.BatchNorm2d, divisor_offset: int = 1,
                     eps: float = 0.0) -> torch.Tensor:
    """SRM Eq. 1-5 in eval mode: μ, σ = sqrt(Σ (x - μ)² / (H·W - ``divisor_offset``) + ``eps``), z = w_0 μ + w_1 σ,
    g = sigmoid(BN(z)) with BN's running statistics; ``w`` (C, 2)."""
    n, c, h, wd = x.shape
    mu = x.sum((2, 3)) / (h * wd)
    sigma = torch.sqrt(((x - mu[:, :, None, None]) ** 2).sum((2, 3)) / (h * wd - divisor_offset) + eps)
    z = w[:, 0] * mu + w[:, 1] * sigma
    z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return x * torch.sigmoid(z)[:, :, None, None]


@pytest.mark.parametrize("channels", CHANNELS)
def test_srm_is_the_released_codes_closed_form(channels):
    ours = SRM(channels, SEConfig(operator="srm")).eval()
    _randomize(ours)
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
