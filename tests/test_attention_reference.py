"""Each of SE's successors against its references: timm's module given the same weights, and the paper.

Ours are written to the papers' released code; where timm's module computes something else, a test here shows
the difference and which one ours follows. timm is a test reference only: ``senet`` never imports it.
"""
from __future__ import annotations

import math

import pytest
import torch
from attention_weights import randomize
from timm.layers import EcaModule
from timm.layers import GlobalContext as TimmGlobalContext
from timm.layers.cbam import CbamModule

from senet.attention.cbam import CBAM
from senet.attention.eca import EfficientChannelAttention, eca_kernel_size
from senet.attention.gc import GlobalContext
from senet.attention.simam import SimAM
from senet.config import SEConfig

pytestmark = pytest.mark.usefixtures("one_thread_module")

CHANNELS = (16, 64, 256)


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _same_outputs(ours: torch.nn.Module, reference: torch.nn.Module, channels: int) -> torch.Tensor:
    """Ours and the reference on the same random inputs (eval mode); returns our output for further checks."""
    ours.eval()
    reference.eval()
    x = _x(3, channels, 9, 7)
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, reference(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(y, x)  # the operator did something
    return y



# ---- ECA (ECA-Net, Wang et al. 2020) ---- #


@pytest.mark.parametrize("channels", [2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1024, 2048, 4096])
def test_eca_kernel_is_the_nearest_odd_to_the_papers_rule(channels):
    """ECA-Net Eq. 12 with gamma = 2, b = 1: t = (log2 C + 1) / 2, then the odd number of [2m, 2m + 2) it falls in."""
    t = (math.log2(channels) + 1) / 2
    assert eca_kernel_size(channels) == 2 * math.floor(t / 2) + 1


def test_eca_kernel_sizes_of_resnet50s_stages():
    # ResNet-50's SE widths 256, 512, 1024, 2048 (and the bottleneck widths 64, 128)
    assert {c: eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)} == {
        64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7}


@pytest.mark.parametrize("channels", CHANNELS)
def test_eca_matches_timm_given_its_weights(channels):
    reference = EcaModule(channels)
    randomize(reference)
    ours = EfficientChannelAttention(channels, SEConfig(operator="eca"))
    assert ours.conv.kernel_size == reference.conv.kernel_size
    ours.load_state_dict(reference.state_dict())
    _same_outputs(ours, reference, channels)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_eca_fixed_kernel_matches_timm(k):
    reference = EcaModule(kernel_size=k)
    randomize(reference)
    ours = EfficientChannelAttention(64, SEConfig(operator="eca", eca_kernel=k))
    ours.load_state_dict(reference.state_dict())
    _same_outputs(ours, reference, 64)


def test_eca_follows_the_papers_kernel_rule_where_timm_raises_it_to_three():
    """timm's EcaModule takes max(k, 3); the paper's code has no floor, so fewer than 8 channels get k = 1."""
    assert EcaModule(4).conv.kernel_size == (3,)
    assert EfficientChannelAttention(4, SEConfig(operator="eca")).conv.kernel_size == (1,)
    # below 8 channels the two modules differ; from 8 on they agree
    assert [c for c in range(2, 64) if EcaModule(c).conv.kernel_size[0] != eca_kernel_size(c)] == list(range(2, 8))


def test_eca_is_one_shared_1d_convolution_across_channels():
    """Eq. 10 written out: ω_i = σ(Σ_j w_j y_{i+j}) over the pooled descriptor y, zero-padded at the ends."""
    ours = EfficientChannelAttention(32, SEConfig(operator="eca", eca_kernel=5)).eval()
    randomize(ours)
    x = _x(2, 32, 4, 6)
    y = x.mean((2, 3))
    w = ours.conv.weight.flatten()
    padded = torch.nn.functional.pad(y, (2, 2))
    logits = torch.stack([sum(w[j] * padded[:, i + j] for j in range(5)) for i in range(32)], 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), x * torch.sigmoid(logits)[:, :, None, None])


def test_eca_costs_k_parameters_and_c_times_k_macs_per_block():
    from senet import build_model, se_modules
    from senet.op_counts import count_ops

    model = build_model("se_resnet20_cifar", **{"se.operator": "eca"})
    plain = build_model("resnet20_cifar")
    blocks = se_modules(model).values()
    ks = [eca_kernel_size(m.channels) for m in blocks]
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters()) == sum(ks)
    counts = count_ops(model, (3, 32, 32), strict=True)
    assert counts.se["conv"] == sum(m.channels * k for m, k in zip(blocks, ks))
    # 32x32 input: stage 2 at 32x32, stage 3 at 16x16, stage 4 at 8x8, three blocks each
    assert counts.se["se_squeeze"] == 3 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)


# ---- SimAM (Yang et al. 2021): no parameters, a closed form ---- #


def _simam_by_the_papers_energy(x: torch.Tensor, lam: float, positions: int) -> torch.Tensor:
    """SimAM Eq. 4-5 as printed: e_t* = 4(σ² + λ) / ((t - μ)² + 2σ² + 2λ), output x * sigmoid(1 / e_t*), with
    σ² = Σ (x_i - μ)² / ``positions``."""
    mu = x.mean((2, 3), keepdim=True)
    var = ((x - mu) ** 2).sum((2, 3), keepdim=True) / positions
    energy = 4 * (var + lam) / ((x - mu) ** 2 + 2 * var + 2 * lam)
    return x * torch.sigmoid(1 / energy)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("lam", [1e-4, 0.1])
def test_simam_is_the_papers_minimal_energy_with_the_released_codes_variance(channels, lam):
    x = _x(2, channels, 7, 5) * 3
    ours = SimAM(channels, SEConfig(operator="simam", simam_lambda=lam))
    with torch.no_grad():
        y = ours(x)
    h, w = x.shape[2:]
    torch.testing.assert_close(y, _simam_by_the_papers_energy(x, lam, h * w - 1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(y, x)
    # The paper's text divides by M = H*W; the released code by H*W - 1, which ours follows.
    assert not torch.allclose(y, _simam_by_the_papers_energy(x, lam, h * w), rtol=1e-5, atol=1e-6)
    assert list(ours.parameters()) == []


def test_simam_refuses_a_single_position_in_one_line():
    with pytest.raises(ValueError, match=r"^SimAM \(SE_5_3\) needs at least 2 spatial positions.*1x1"):
        SimAM(8, SEConfig(operator="simam"), tag="SE_5_3")(_x(1, 8, 1, 1))


def test_simam_lambda_must_be_positive():
    with pytest.raises(ValueError, match=r"^model\.se\.simam_lambda=0 is not allowed; it must be a number > 0$"):
        SEConfig(operator="simam", simam_lambda=0)


# ---- CBAM (Woo et al. 2018) ---- #


def _cbam_from_timm(reference: CbamModule, swap: bool = True) -> dict:
    """timm's CBAM weights under our names; ``swap``: its spatial kernel's inputs (mean, max) into ours (max, mean)."""
    sd = reference.state_dict()
    conv = sd["spatial.conv.conv.weight"]
    out = {"mlp.fc1.weight": sd["channel.fc1.weight"], "mlp.fc2.weight": sd["channel.fc2.weight"],
           "spatial.0.weight": conv.flip(1) if swap else conv}
    out.update({f"spatial.1.{k}": sd[f"spatial.conv.bn.{k}"]
                for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")})
    return out


@pytest.mark.parametrize("kernel", [7, 3])
@pytest.mark.parametrize("channels", CHANNELS)
def test_cbam_matches_timm_given_its_weights(channels, kernel):
    reference = CbamModule(channels, spatial_kernel_size=kernel)
    randomize(reference)
    ours = CBAM(channels, SEConfig(operator="cbam", bias=False, cbam_kernel=kernel), tag="SE_2_1")
    ours.load_state_dict(_cbam_from_timm(reference))
    _same_outputs(ours, reference, channels)


def test_cbam_follows_the_released_code_where_timm_differs():
    """The released code: spatial inputs max then mean, MLP biases, C // r. timm: mean then max, none, round(C / r)."""
    reference = CbamModule(64)
    randomize(reference)
    ours = CBAM(64, SEConfig(operator="cbam", bias=False))
    ours.load_state_dict(_cbam_from_timm(reference, swap=False))
    x = _x(2, 64, 9, 7)
    with torch.no_grad():
        assert not torch.allclose(ours.eval()(x), reference.eval()(x), rtol=1e-3, atol=1e-4)
    default = CBAM(64, SEConfig(operator="cbam"))
    assert default.mlp.fc1.bias is not None and reference.channel.fc1.bias is None
    assert CBAM(40, SEConfig(operator="cbam")).mlp.fc1.out_channels == 40 // 16 == 2
    assert CbamModule(40).channel.fc1.out_channels == 3


def test_cbam_is_the_papers_equations_1_to_3():
    """Eq. 1-3 written out with the released code's layout (one shared MLP with biases, [max; mean], conv + BN)."""
    ours = CBAM(32, SEConfig(operator="cbam", reduction=4)).eval()
    randomize(ours)
    fc1, fc2, conv, bn = ours.mlp.fc1, ours.mlp.fc2, ours.spatial[0], ours.spatial[1]

    def mlp(v):
        hidden = torch.relu(v @ fc1.weight.flatten(1).t() + fc1.bias)
        return hidden @ fc2.weight.flatten(1).t() + fc2.bias

    x = _x(2, 32, 6, 5)
    mc = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.flatten(2).max(2).values))[:, :, None, None]
    f1 = mc * x
    pooled = torch.stack([f1.max(1).values, f1.mean(1)], 1)
    s = torch.nn.functional.conv2d(pooled, conv.weight, padding=3)
    s = (s - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    with torch.no_grad():
        torch.testing.assert_close(ours(x), torch.sigmoid(s) * f1)


# ---- GC (Cao et al. 2019) ---- #


def _gc_from_timm(reference: TimmGlobalContext, fusion: str) -> dict:
    """timm's GC weights under our names (its LayerNorm2d's (C,) affine as the released LayerNorm([C, 1, 1]))."""
    sd = reference.state_dict()
    mlp = "mlp_add" if fusion == "add" else "mlp_scale"
    out = {"squeeze.conv.weight": sd["conv_attn.weight"], "squeeze.conv.bias": sd["conv_attn.bias"]}
    for ours, theirs in (("transform.0", f"{mlp}.fc1"), ("transform.3", f"{mlp}.fc2")):
        out.update({f"{ours}.weight": sd[f"{theirs}.weight"], f"{ours}.bias": sd[f"{theirs}.bias"]})
    out.update({f"transform.1.{k}": sd[f"{mlp}.norm.{k}"][:, None, None] for k in ("weight", "bias")})
    return out


def _timm_gc(channels: int, fusion: str) -> TimmGlobalContext:
    reference = TimmGlobalContext(channels, fuse_add=fusion == "add", fuse_scale=fusion == "scale", rd_ratio=1 / 16)
    randomize(reference)
    return reference


@pytest.mark.parametrize("fusion", ["add", "scale"])
@pytest.mark.parametrize("channels", CHANNELS)
def test_gc_matches_timm_given_its_weights_and_eps(channels, fusion):
    reference = _timm_gc(channels, fusion)
    ours = GlobalContext(channels, SEConfig(operator="gc", gc_fusion=fusion))
    ours.load_state_dict(_gc_from_timm(reference, fusion))
    ours.transform[1].eps = reference.mlp_add.norm.eps if fusion == "add" else reference.mlp_scale.norm.eps
    _same_outputs(ours, reference, channels)


def test_gc_follows_the_released_code_where_timm_differs():
    """The released ContextBlock: LayerNorm eps 1e-5 (timm 1e-6), int(C / r) channels (timm rounds C / r)."""
    reference = _timm_gc(64, "add")
    ours = GlobalContext(64, SEConfig(operator="gc")).eval()
    ours.load_state_dict(_gc_from_timm(reference, "add"))
    assert (ours.transform[1].eps, reference.mlp_add.norm.eps) == (1e-5, 1e-6)
    x = _x(2, 64, 5, 5) * 1e-3  # small activations: the eps shows
    with torch.no_grad():
        assert not torch.allclose(ours(x), reference.eval()(x), rtol=1e-5, atol=1e-7)
    assert GlobalContext(40, SEConfig(operator="gc")).transform[0].out_channels == 2
    assert TimmGlobalContext(40, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16).mlp_add.fc1.out_channels == 3


def test_gc_is_the_papers_equation_3_and_an_add_block_starts_as_the_identity():
    ours = GlobalContext(32, SEConfig(operator="gc", reduction=4))
    x = _x(2, 32, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), x)  # zero last convolution, as released
    randomize(ours)
    w_k, b_k = ours.squeeze.conv.weight.flatten(), ours.squeeze.conv.bias
    alpha = torch.softmax(torch.einsum("c,nchw->nhw", w_k, x).flatten(1) + b_k, 1)  # (N, HW)
    context = torch.einsum("ncp,np->nc", x.flatten(2), alpha)
    fc1, ln, fc2 = ours.transform[0], ours.transform[1], ours.transform[3]
    h = context @ fc1.weight.flatten(1).t() + fc1.bias
    h = (h - h.mean(1, keepdim=True)) / torch.sqrt(h.var(1, unbiased=False, keepdim=True) + ln.eps)
    h = torch.relu(h * ln.weight.flatten() + ln.bias.flatten())
    t = h @ fc2.weight.flatten(1).t() + fc2.bias
    with torch.no_grad():
        torch.testing.assert_close(ours(x), x + t[:, :, None, None])
        ours.fusion, ours.gate = "scale", torch.nn.Sigmoid()
        torch.testing.assert_close(ours(x), x * torch.sigmoid(t)[:, :, None, None])


@pytest.mark.parametrize("fusion", ["add", "scale"])
def test_gc_in_a_network_fuses_only_its_scale_and_is_counted(fusion):
    from senet import build_model, se_modules
    from senet.blocks import set_fused_se
    from senet.op_counts import count_ops

    torch.manual_seed(0)
    model = build_model("se_resnet20_cifar", **{"se.operator": "gc", "se.gc_fusion": fusion}).eval()
    with torch.no_grad():  # away from the released zero init, so the block does something
        for m in se_modules(model).values():
            m.transform[-1].weight.normal_(0, 0.1)
    assert all(m.fuses_residual == (fusion == "scale") for m in se_modules(model).values())
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        set_fused_se(model, False)
        torch.testing.assert_close(model(x), fused, rtol=1e-4, atol=1e-5)
    counts = count_ops(model, (3, 32, 32), strict=True)
    blocks = se_modules(model).values()
    hidden = [m.transform[0].out_channels for m in blocks]
    # MACs: the attention logits (C per position), the weighted sum (C per position), the two transform FCs
    sizes = {16: 32 * 32, 32: 16 * 16, 64: 8 * 8}
    assert counts.se["conv"] + counts.se["linear"] == sum(
        2 * m.channels * sizes[m.channels] + 2 * m.channels * h for m, h in zip(blocks, hidden))
