"""The SE block (paper Eq. 2-4) and its knobs: widths, squeezes, gates, memory format."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import SEModule, make_divisible
from timm.models.senet import SEModule as LegacySEModule

from senet.blocks import set_fused_se
from senet.config import ACTIVATIONS, GATES, SQUEEZES, SEConfig
from senet.recalibration import make_se, se_modules
from senet.se import Squeeze, SqueezeExcite, se_width


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("squeeze", SQUEEZES)
def test_output_keeps_the_input_shape_and_excitation_is_per_channel(squeeze):
    se = SqueezeExcite(64, SEConfig(squeeze=squeeze))
    x = _x(2, 64, 7, 5)
    assert se(x).shape == x.shape
    s = se.excitation(x)
    # NoSqueeze (Table 16) keeps the spatial size; the others give one value per channel
    assert s.shape == ((2, 64, 7, 5) if squeeze == "none" else (2, 64, 1, 1))


@pytest.mark.parametrize("channels", [16, 24, 64, 100, 256, 576, 1056, 2048])
@pytest.mark.parametrize("r", [2, 4, 8, 16, 32])
def test_width_per_rounding_rule(channels, r):
    assert se_width(channels, SEConfig(reduction=r)) == channels // r  # paper, Caffe
    assert se_width(channels, SEConfig(reduction=r, width_rounding="round")) == round(channels / r)  # pycls
    # timm's SEModule: make_divisible(C * rd_ratio, 8, round_limit=0)
    timm_width = SEModule(channels, rd_ratio=1 / r).fc1.out_channels
    ours = se_width(channels, SEConfig(reduction=r, width_rounding="divisor"))
    assert ours == timm_width == make_divisible(channels / r, 8, round_limit=0.0)
    for d in (4, 16):
        assert se_width(channels, SEConfig(reduction=r, width_rounding="divisor", divisor=d)) == make_divisible(
            channels / r, d, round_limit=0.0)


def test_narrow_stage_widths_differ_between_conventions():
    """The anchors' example: 64 channels at r=16 squeeze to 4 (paper) but 8 (timm)."""
    assert se_width(64, SEConfig()) == 4
    assert se_width(64, SEConfig(width_rounding="divisor")) == 8
    assert SqueezeExcite(64, SEConfig()).fc1.out_channels == 4


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_is_2Cs_plus_biases(bias):
    c, r = 256, 16
    se = SqueezeExcite(c, SEConfig(reduction=r, bias=bias))
    s = c // r
    assert sum(p.numel() for p in se.parameters()) == 2 * c * s + (s + c if bias else 0)
    assert (se.fc1.bias is None) is (not bias)


@pytest.mark.parametrize("gate, low, high", [
    ("sigmoid", 0.0, 1.0), ("hard_sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0), ("relu", 0.0, float("inf")),
])
def test_gate_ranges(gate, low, high):
    se = SqueezeExcite(32, SEConfig(gate=gate, reduction=4))
    x = _x(16, 32, 4, 4)
    s = se.excitation(x).detach()
    assert s.min() >= low and s.max() <= high
    with torch.no_grad():
        for p in se.parameters():
            p.mul_(20)  # saturate the gate: both ends of its range are reached, never passed
        s = se.excitation(x)
    assert s.min() >= low and s.max() <= high
    if gate == "relu":
        assert s.min() == 0 and s.max() > 1
    else:
        assert s.min() < low + 0.01 and s.max() > high - 0.01


# Each knob against its torch function. LeakyReLU's negative slope is the module's choice (0.1, not torch's 0.01).
GATE_FNS = {"sigmoid": torch.sigmoid, "hard_sigmoid": F.hardsigmoid, "tanh": torch.tanh, "relu": F.relu,
            "identity": lambda t: t}
ACT_FNS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
           "tanh": torch.tanh, "identity": lambda t: t}
SQUEEZE_FNS = {"avg": lambda x: x.mean((2, 3), keepdim=True), "max": lambda x: x.amax((2, 3), keepdim=True),
               "avgmax": lambda x: 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True)),
               "none": lambda x: x}


def _by_hand(se: SqueezeExcite, x: torch.Tensor, squeeze: str, activation: str, gate: str) -> torch.Tensor:
    """s = gate(W2 act(W1 squeeze(x) + b1) + b2) from the module's own weights, as 1x1 convolutions."""
    z = SQUEEZE_FNS[squeeze](x)
    h = ACT_FNS[activation](F.conv2d(z, se.fc1.weight, se.fc1.bias))
    return GATE_FNS[gate](F.conv2d(h, se.fc2.weight, se.fc2.bias))


def _fixed_se(squeeze: str, activation: str, gate: str) -> SqueezeExcite:
    torch.manual_seed(0)
    se = SqueezeExcite(8, SEConfig(reduction=2, squeeze=squeeze, activation=activation, gate=gate))
    with torch.no_grad():  # pre-activations and pre-gates spread over about [-4, 4]: every function differs there
        for p in se.parameters():
            p.copy_(_x(*p.shape, seed=p.numel()) * 1.5)
    return se


def test_the_fixed_input_tells_every_gate_and_activation_apart():
    """Without this, a block that maps every knob to one function could agree with the references below."""
    x = _x(4, 8, 3, 3)
    gates = {g: _by_hand(_fixed_se("avg", "relu", g), x, "avg", "relu", g) for g in GATES}
    acts = {a: _by_hand(_fixed_se("avg", a, "identity"), x, "avg", a, "identity") for a in ACTIVATIONS}
    for outs in (gates, acts):
        for a in outs:
            for b in outs:
                assert a == b or (outs[a] - outs[b]).abs().max() > 1e-2, (a, b)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("gate", GATES)
def test_every_knob_computes_its_torch_function(activation, gate):
    """``excitation``, ``forward`` and the residual-fused ``forward`` equal the hand computation for every squeeze
    on every path: the fast one (hand-written Functions, with autograd on), plain ops (no autograd) and the
    released arithmetic (``set_fused_se(False)``)."""
    x, residual = _x(4, 8, 3, 3), _x(4, 8, 3, 3, seed=1)
    for squeeze in SQUEEZES:
        se = _fixed_se(squeeze, activation, gate)
        s = _by_hand(se, x, squeeze, activation, gate)
        assert s.shape == ((4, 8, 3, 3) if squeeze == "none" else (4, 8, 1, 1))
        for fused in (True, False):
            set_fused_se(se, fused)
            for grad in (True, False):
                where = f"squeeze={squeeze} fused={fused} grad={grad}"
                with torch.set_grad_enabled(grad):
                    torch.testing.assert_close(se.excitation(x), s, msg=lambda m, where=where: f"{where}: {m}")
                    torch.testing.assert_close(se(x), x * s, msg=lambda m, where=where: f"{where}: {m}")
                    torch.testing.assert_close(se(x, residual), residual + x * s, msg=lambda m, where=where: f"{where}: {m}")


def test_squeeze_operators():
    x = _x(3, 5, 4, 6)
    torch.testing.assert_close(Squeeze("avg")(x), x.sum((2, 3), keepdim=True) / 24)
    torch.testing.assert_close(Squeeze("max")(x), x.flatten(2).max(-1).values[..., None, None])
    torch.testing.assert_close(Squeeze("avgmax")(x), 0.5 * (Squeeze("avg")(x) + Squeeze("max")(x)))
    assert Squeeze("none")(x) is x


@pytest.mark.parametrize("squeeze", ["avg", "max"])
def test_forward_is_eq_2_to_4(squeeze):
    """x_c * sigmoid(W2 relu(W1 z + b1) + b2)_c with z the pooled descriptor, written out with matmuls."""
    c, r = 48, 4
    se = SqueezeExcite(c, SEConfig(reduction=r, squeeze=squeeze))
    x = _x(2, c, 5, 5)
    z = x.mean((2, 3)) if squeeze == "avg" else x.amax((2, 3))
    w1, w2 = se.fc1.weight.flatten(1), se.fc2.weight.flatten(1)
    s = torch.sigmoid(F.linear(torch.relu(F.linear(z, w1, se.fc1.bias)), w2, se.fc2.bias))
    torch.testing.assert_close(se(x), x * s[:, :, None, None])


def test_no_squeeze_excites_every_position():
    se = SqueezeExcite(16, SEConfig(squeeze="none", reduction=4))
    x = _x(2, 16, 6, 6)
    x2 = x.clone()
    x2[:, :, 0, 0] += 5.0  # a change at one position changes the gate only there
    d = (se.excitation(x2) - se.excitation(x)).abs().sum(1)
    assert d[:, 0, 0].min() > 0 and d[:, 1:, :].max() == 0 and d[:, 0, 1:].max() == 0


def test_same_as_released_block():
    """Our default block computes what timm's port of the Caffe SE block computes, with the same weights: to
    float rounding (one ulp), its FCs running as matrix products; with set_fused_se(False), bit for bit."""
    ref = LegacySEModule(256, reduction=16)
    ours = SqueezeExcite(256, SEConfig())
    ours.load_state_dict({k: v for k, v in ref.state_dict().items()})
    x = _x(2, 256, 7, 7)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    set_fused_se(ours, False)  # the released arithmetic: bit for bit
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("squeeze", SQUEEZES)
def test_channels_last_is_preserved_and_gives_the_same_values(squeeze):
    se = SqueezeExcite(32, SEConfig(squeeze=squeeze, reduction=4))
    x = _x(2, 32, 6, 6)
    xc = x.to(memory_format=torch.channels_last)
    y, yc = se(x), se(xc)
    assert yc.is_contiguous(memory_format=torch.channels_last)
    assert y.is_contiguous()
    torch.testing.assert_close(yc, y)


def test_backward_reaches_input_and_both_fcs():
    se = SqueezeExcite(32, SEConfig(reduction=4))
    x = _x(2, 32, 4, 4).requires_grad_()
    se(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert se.fc1.weight.grad.abs().sum() > 0 and se.fc2.weight.grad.abs().sum() > 0


def test_zero_width_is_refused_with_the_bound():
    with pytest.raises(ValueError, match=r"se\.reduction=32 leaves 0 channels in SE_2_1 .*reduction <= 16"):
        SqueezeExcite(16, SEConfig(reduction=32), tag="SE_2_1")


def test_make_se_honours_stages_and_skip_blocks():
    cfg = SEConfig(stages=(3, 4), skip_blocks=((4, 2),))
    assert make_se(64, None, 3, 1) is None
    assert make_se(64, cfg, 2, 1) is None
    assert make_se(64, cfg, 4, 2) is None
    se = make_se(64, cfg, 4, 3)
    assert isinstance(se, SqueezeExcite) and se.tag == "SE_4_3" and se.channels == 64
    assert make_se(64, cfg, 4, 3, placement="post") is None  # asked for another placement


def test_se_modules_by_tag():
    net = torch.nn.Sequential(SqueezeExcite(8, SEConfig(reduction=2), "SE_a"), torch.nn.ReLU(),
                              SqueezeExcite(8, SEConfig(reduction=2), "SE_b"))
    assert list(se_modules(net)) == ["SE_a", "SE_b"]
