"""Fused SE (scale and residual sum in one ``addcmul``) against the unfused form it replaces.

The same outputs (fp32, to float rounding) and the same outputs and gradients (float64) for every residual
network and placement, every SE block still called once, the same gate values recorded by the excitation analysis, the same
complexity counts, and channels_last kept through the gate and the fused sum.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ablations.excitation import ExcitationRecorder
from senet import SEConfig, SqueezeExcite, build_model, get_arch, list_archs, se_modules
from senet.blocks import ResidualUnit, set_fused_se
from senet.complexity import count_ops

pytestmark = pytest.mark.usefixtures("one_thread_module")

# Every architecture built from ResidualUnit: the ResNets and ResNeXts, plus the two other residual nets.
RESIDUAL = [a for a in list_archs() if get_arch(a).family == "resnet"] + ["inception_resnet_v2", "shufflenet_v1_g3"]
# Deep nets: the slow tier (the fast tier keeps basic, bottleneck, ResNeXt, CIFAR and ShuffleNet units).
SLOW = {"resnet34", "resnet101", "resnet152", "resnext101_32x4d", "resnet56_cifar", "resnet110_cifar",
        "resnet164_cifar", "inception_resnet_v2"}


def _input(arch: str) -> torch.Tensor:
    """Small inputs: 64 pixels for ImageNet nets, 32 for CIFAR nets and the deep ImageNet ResNets (float64 there
    is the cost; every unit still sees a map of at least 1x1), 75 for the 299-pixel nets (their minimum)."""
    c, h, _ = get_arch(arch).input_size
    side = 75 if h > 224 else 32 if h <= 32 or arch in SLOW else 64
    return torch.randn(2, c, side, side, generator=torch.Generator().manual_seed(0))


def _step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
    """Logits, every parameter's gradient, and how often each SE block ran, for one forward and backward."""
    calls = {tag: 0 for tag in se_modules(model)}
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.__setitem__(mod.tag, calls[mod.tag] + 1))
             for m in se_modules(model).values()]
    try:
        model.zero_grad(set_to_none=True)
        y = model(x)
        nn.functional.cross_entropy(y, torch.arange(x.shape[0]) % y.shape[1]).backward()
    finally:
        for h in hooks:
            h.remove()
    return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, calls


def _params(placements=("standard", "identity", "pre", "post", "after_3x3")):
    for arch in RESIDUAL:
        for p in placements:
            if arch == "inception_resnet_v2" and p == "after_3x3":
                continue  # its units have no single 3x3 width to put SE after (the registry refuses it)
            yield pytest.param(arch, p, marks=pytest.mark.slow if arch in SLOW else (), id=f"{arch}-{p}")


def _assert_same(fused: tuple, plain: tuple, tol: float) -> None:
    """Outputs and gradients equal to ``tol`` of each tensor's scale (the two forms round differently).

    A tensor's scale is its largest entry, floored at 1e-3 of the largest gradient anywhere: some
    gradients are analytically zero (ShuffleNet's ``bn2.bias``, cancelled by the next BN) and hold noise.
    """
    pairs = [("logits", fused[0], plain[0])] + [(n, fused[1][n], g) for n, g in plain[1].items()]
    floor = 1e-3 * max((g.abs().max().item() for g in plain[1].values()), default=0.0)
    for name, a, b in pairs:
        scale = max(b.abs().max().item(), 0.0 if name == "logits" else floor)
        atol = tol * scale + 1e-30
        if not ((a - b).abs() <= atol + tol * b.abs()).all():  # assert_close's test; it runs to say what differs
            torch.testing.assert_close(a, b, rtol=tol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("arch, placement", _params())
def test_fused_and_unfused_se_give_the_same_outputs_and_gradients(arch, placement):
    """fp32 outputs to float tolerance (BN on running statistics); outputs and every gradient in float64
    to 1e-5 (BN on batch statistics, as in training).

    fp32 gradients cannot be compared element-wise between any two float forms of a ReLU network: a
    ReLU input within rounding of 0 takes the other branch and changes its gradient by O(1) (seen here:
    ``resnet32_cifar-identity``, one layer2.4 ReLU input of 2.6e-7). Train-mode BN at this test's batch
    of 2 (2x2 maps in the last stage) also amplifies rounding about 10^4-fold, in either form equally.
    The deep nets (``SLOW``) are compared in float64 only, in eval mode: at init their fp32 logits reach
    ~700 and both fp32 forms drift from float64 alike (resnet152: 0.9 and 4.6; float64 forms: 8e-9).
    """
    torch.manual_seed(0)
    model = build_model(arch, se=SEConfig(placement=placement)).eval()
    x = _input(arch)
    assert (set_fused_se(model, True) > 0) == (placement in ("standard", "identity"))
    # Placements without a sum to fuse still switch between the fast SE and the released arithmetic (FCs as
    # matrix products vs 1x1 convolutions): the same function to float rounding, checked alike.
    if arch not in SLOW:  # deep nets at init (eval BN) grow activations ~1e3-fold: both fp32 forms drift alike
        fused = _step(model, x)
        set_fused_se(model, False)
        plain = _step(model, x)
        _assert_called_once(fused, plain)
        _assert_same((fused[0], {}), (plain[0], {}), 1e-5)
    # Deep nets stay in eval mode: batch-2 train BN on their 1x1 last-stage maps is a sign function.
    set_fused_se(model, False)
    model, x = model.double().train(arch not in SLOW), x.double()
    plain = _step(model, x)
    set_fused_se(model, True)
    fused = _step(model, x)
    _assert_called_once(fused, plain)
    # A wrong fused form differs at O(1); float64 rounding, amplified by batch-2 BN through the 30+
    # identity-scaled units of the 101-layer nets, reaches ~3e-6, and through the 50 pre-placed SE blocks of
    # resnet152 ~3e-5 (shallow nets: ~1e-12).
    _assert_same(fused, plain, 1e-4 if arch in SLOW else 1e-5)


def _assert_called_once(fused: tuple, plain: tuple) -> None:
    assert fused[2] and set(fused[2].values()) == {1} and plain[2] == fused[2], "SE blocks not called exactly once"


def test_the_fused_form_is_the_default_and_is_the_scale_into_the_sum():
    model = build_model("se_resnet20_cifar")
    assert all(u.fused_se for u in model.modules() if isinstance(u, ResidualUnit))
    se = SqueezeExcite(16, SEConfig(reduction=4))
    x, r = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(se(x, residual=r), r + se(x))


@pytest.mark.parametrize("placement", ["standard", "identity"])
def test_excitation_records_the_same_gates_fused_and_unfused(placement):
    torch.manual_seed(0)
    model = build_model("se_resnet20_cifar", **{"se.placement": placement}).eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8) % 3
    stats = []
    for fused in (True, False):
        set_fused_se(model, fused)
        with ExcitationRecorder(model, num_classes=3) as rec:
            rec.record(x, labels)
        stats.append(rec.stats())
    assert stats[0].blocks == stats[1].blocks and len(stats[0].blocks) == 9
    for b in stats[0].blocks:
        # The gate is computed before the fused op, so it is the same tensor, bit for bit, up to that block;
        # later blocks see inputs that differ by rounding only.
        torch.testing.assert_close(torch.from_numpy(stats[0].mean[b]), torch.from_numpy(stats[1].mean[b]),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, placement, size", [
    ("se_resnet50", "standard", (3, 224, 224)),
    ("se_resnet50", "identity", (3, 224, 224)),
    ("se_resnet20_cifar", "identity", (3, 32, 32)),
])
def test_complexity_counts_are_those_of_the_unfused_form(name, placement, size):
    """The fused op counts as the SE scale plus the residual sum it absorbed, so no number moves."""
    model = build_model(name, **{"se.placement": placement})
    fused = count_ops(model, size)
    set_fused_se(model, False)
    assert count_ops(model, size) == fused
    assert fused.categories["se_scale"] > 0 and fused.categories["add"] > 0 and not fused.unknown_ops


@pytest.mark.parametrize("name, placement, squeeze", [
    ("se_resnet50", "standard", "avg"),
    ("se_resnet20_cifar", "identity", "avg"),
    ("se_resnet20_cifar", "standard", "none"),
    ("se_resnet20_cifar", "identity", "none"),
])
def test_channels_last_stays_channels_last_through_the_gate_and_the_fused_sum(name, placement, squeeze):
    model = build_model(name, se=SEConfig(placement=placement, squeeze=squeeze), num_classes=10)
    model = model.to(memory_format=torch.channels_last).train()
    seen = []
    for se in se_modules(model).values():
        se.gate.register_forward_hook(lambda m, i, o: seen.append(("gate", o)))
    for unit in model.modules():
        if isinstance(unit, ResidualUnit):
            unit.register_forward_hook(lambda m, i, o: seen.append(("unit", o)))
    side = 32 if "cifar" in name else 64
    x = torch.randn(2, 3, side, side).contiguous(memory_format=torch.channels_last)
    model(x).sum().backward()
    assert seen
    for kind, t in seen:  # a (N, C, 1, 1) gate is both layouts; NoSqueeze's full-resolution gate is not
        assert t.is_contiguous(memory_format=torch.channels_last), f"{kind} output {tuple(t.shape)} {t.stride()}"
    # DDP's own check (reducer: "Grad strides do not match bucket view strides"): exact strides, size-1 dims
    # included, which is where the 1x1 SE weights could differ.
    for pname, p in model.named_parameters():
        assert p.grad.stride() == p.stride(), f"{pname}: grad strides {p.grad.stride()} != {p.stride()}"


@pytest.mark.parametrize("placement", ["standard", "identity"])
def test_mixed_precision_trains_through_the_fused_se(placement):
    """Under autocast (``train.precision=bf16-mixed``; the CPU's autocast here) half activations meet the SE's fp32
    weights: the plain ops cast both, the hand-written Functions' matrix products refuse them, so autocast takes
    the plain ops, and the fused and unfused forms agree to bf16 rounding."""
    torch.manual_seed(0)
    model = build_model("se_resnet20_cifar", se=SEConfig(placement=placement)).train()
    x = _input("resnet20_cifar")
    logits = []
    for fused in (True, False):
        set_fused_se(model, fused)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
        nn.functional.cross_entropy(y.float(), torch.arange(x.shape[0])).backward()
        assert y.dtype == torch.bfloat16
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        logits.append(y.float().detach())
    torch.testing.assert_close(logits[0], logits[1], rtol=0.05, atol=0.05 * logits[1].abs().max().item())
