"""SE's successors as arms (``se.operator``, ``senet.attention``): config, dispatch, every placement, counting.

What every operator must do, checked for each registered one: build through ``make_se`` in every architecture
and placement, run (forward hooks: built blocks that never run were a peer's bug), train, fuse into the residual
sum exactly as it computes unfused, and be counted op for op. Each operator's reference checks (timm, the
paper's formula) are in test_attention_reference.py.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from ablations.config import ExperimentConfig
from ablations.naming import run_name
from senet import build_model, get_arch, list_archs, model_config, se_modules
from senet.attention import OPERATORS as REGISTERED
from senet.attention.cbam import CBAM
from senet.blocks import set_fused_se
from senet.config import OPERATOR_KNOBS, OPERATORS, PLACEMENTS, WHERE_KNOBS, ModelConfig, SEConfig
from senet.op_counts import count_ops
from senet.recalibration import Recalibration, make_se
from senet.se import SqueezeExcite
from senet.tree import config_hash, to_dict

pytestmark = pytest.mark.usefixtures("one_thread_module")

SUCCESSORS = [op for op in OPERATORS if op != "se"]
HEAVY = {"resnet101", "resnet152", "resnext101_32x4d", "vgg16_bn", "inception_resnet_v2", "resnet164_cifar"}


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- Config: one field picks the operator; SE configs keep their hashes and names ---- #


def test_se_configs_keep_the_hashes_and_run_names_they_had_before_operators():
    """Pinned before ``se.operator`` existed: new fields at their defaults stay out of the dict and the hash."""
    assert config_hash(SEConfig()) == "8bb1d7bafb44"
    assert config_hash(ModelConfig()) == config_hash(model_config("se_resnet50")) == "b734140acaec"
    cifar = model_config("se_resnet20_cifar", **{"se.reduction": 8, "se.placement": "pre", "se.squeeze": "max"})
    assert config_hash(cifar) == "bf79a5e7c9cd"
    base = ExperimentConfig()
    assert (base.hash(), run_name(base)) == ("ac400a015c05", "resnet20_cifar_digits_s0")
    arm = base.override({"model.se.reduction": 4, "model.se.gate": "tanh", "seed": 3})
    assert (arm.hash(), run_name(arm)) == ("dadb9a860b25", "se_resnet20_cifar-r4-gate-tanh_digits_s3")
    assert "operator" not in to_dict(SEConfig()) and to_dict(SEConfig(operator="se")) == to_dict(SEConfig())


@pytest.mark.parametrize("op", SUCCESSORS)
def test_an_operator_arm_has_its_own_hash_and_name(op):
    base = ExperimentConfig().override({"model.se.reduction": 16})
    arm = base.override({"model.se.operator": op})
    assert to_dict(arm.model.se)["operator"] == op
    assert arm.hash() != base.hash()
    assert run_name(arm) == f"{op}_resnet20_cifar_digits_s0"  # the operator heads the name in SE's place
    assert ExperimentConfig.from_dict(arm.to_dict()) == arm


def test_the_registry_and_the_config_name_the_same_operators():
    assert tuple(REGISTERED) == OPERATORS == tuple(OPERATOR_KNOBS)
    knobs = {f.name for f in dataclasses.fields(SEConfig)}
    assert {k for reads in OPERATOR_KNOBS.values() for k in reads} | set(WHERE_KNOBS) == knobs


def test_an_unknown_operator_is_one_line_naming_the_field_and_the_choices():
    with pytest.raises(ValueError, match=r"^model\.se\.operator='ecb' is not allowed \(did you mean eca\?\); "
                                         r"choose one of: se, eca") as e:
        SEConfig(operator="ecb")
    assert "\n" not in str(e.value)


# A non-default value of every knob, for the refusal test.
_OTHER_VALUE = {"reduction": 8, "width_rounding": "round", "divisor": 4, "squeeze": "max", "activation": "gelu",
                "gate": "tanh", "bias": False, "eca_kernel": 5, "cbam_kernel": 3, "ge_extent": 2,
                "ge_variant": "theta", "gc_fusion": "scale", "simam_lambda": 1e-3, "coord_reduction": 16}


# Where an operator reads a knob only in one setting of another (GE's bottleneck: theta_plus alone).
_READS_IN = {"ge": {"ge_variant": "theta_plus", "ge_extent": 2}}


@pytest.mark.parametrize("op", OPERATORS)
def test_knobs_an_operator_does_not_read_are_refused_away_from_their_default(op):
    reads = OPERATOR_KNOBS[op]
    for f in dataclasses.fields(SEConfig):
        if f.name in WHERE_KNOBS:
            continue
        setting = {**_READS_IN.get(op, {}), f.name: _OTHER_VALUE[f.name]}
        if f.name in reads:
            SEConfig(operator=op, **setting)  # read: accepted
            continue
        with pytest.raises(ValueError, match=rf"^model\.se\.{f.name}=.* does not apply to model\.se\.operator="
                                             rf"'{op}'.*leave {f.name} at its default") as e:
            SEConfig(operator=op, **setting)
        assert "\n" not in str(e.value)
        SEConfig(operator=op, **{f.name: f.default})  # at its default it is ignored


# ---- Dispatch: make_se builds the operator everywhere SE goes ---- #


@pytest.mark.parametrize("op", OPERATORS)
def test_make_se_builds_the_configured_operator_with_the_papers_tag(op):
    block = make_se(64, SEConfig(operator=op), 3, 2)
    assert isinstance(block, Recalibration) and block.tag == "SE_3_2" and block.channels == 64
    assert isinstance(block, SqueezeExcite) == (op == "se")
    assert make_se(64, SEConfig(operator=op, stages=(4,)), 3, 2) is None
    with torch.no_grad():  # random weights: an operator may start as the identity (GC's zero last convolution)
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = _x(2, 64, 6, 5)
    y = block.eval()(x)
    assert y.shape == x.shape and not torch.allclose(y, x)


def _calls(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """One training forward + backward; how often each block ran. Every parameter must get a finite gradient."""
    blocks = se_modules(model)
    assert len(blocks) == sum(isinstance(m, Recalibration) for m in model.modules()) > 0, "duplicate tags"
    calls = {tag: 0 for tag in blocks}
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.__setitem__(mod.tag, calls[mod.tag] + 1))
             for m in blocks.values()]
    try:
        y = model.train()(x)
        assert torch.isfinite(y).all()
        nn.functional.cross_entropy(y, torch.arange(x.shape[0]) % y.shape[1]).backward()
    finally:
        for h in hooks:
            h.remove()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} got no finite gradient"
    return calls


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("op", SUCCESSORS)
def test_every_operator_runs_once_per_unit_at_every_placement(op, placement):
    torch.manual_seed(0)
    model = build_model("se_resnet20_cifar", **{"se.operator": op, "se.placement": placement})
    blocks = se_modules(model)
    assert {type(m) for m in blocks.values()} == {type(make_se(16, SEConfig(operator=op), 2, 1))}
    assert len(blocks) == 9  # 3 stages x 3 units
    assert set(_calls(model, _x(2, 3, 32, 32)).values()) == {1}


@pytest.mark.parametrize("op", SUCCESSORS)
@pytest.mark.parametrize("arch", [a for a in list_archs() if a not in HEAVY])
def test_every_operator_builds_in_every_architecture_and_every_op_is_counted(arch, op):
    spec = get_arch(arch)
    with torch.device("meta"):
        model = build_model(f"se_{arch}", **{"se.operator": op})
    assert len(se_modules(model)) > 0
    counts = count_ops(model, spec.input_size, strict=True)
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert counts.se["se_scale"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("op", SUCCESSORS)
@pytest.mark.parametrize("arch", sorted(HEAVY))
def test_every_operator_builds_in_every_heavy_architecture(arch, op):
    test_every_operator_builds_in_every_architecture_and_every_op_is_counted(arch, op)


@pytest.mark.parametrize("op", SUCCESSORS)
@pytest.mark.parametrize("placement", ["standard", "identity"])
def test_the_fused_residual_sum_computes_what_the_unfused_one_does(op, placement):
    """In float64: ``addcmul`` and a multiply then an add may round differently in the last bit, and the training-mode
    BNs downstream amplify that in float32 past this test's tolerance (coord's broadcast gates at ``identity``: 4e-5
    on the stem's gradient in float32, 3e-14 in float64)."""
    torch.manual_seed(0)
    fused = build_model("se_resnet20_cifar", **{"se.operator": op, "se.placement": placement}).double()
    plain = build_model("se_resnet20_cifar", **{"se.operator": op, "se.placement": placement}).double()
    plain.load_state_dict(fused.state_dict())
    set_fused_se(plain, False)
    x = _x(2, 3, 32, 32).double()
    outs, grads = [], []
    for model in (fused, plain):
        y = model.train()(x)
        y.square().sum().backward()
        outs.append(y)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("op", SUCCESSORS)
def test_the_scale_is_one_op_per_element_of_each_block_input(op):
    """The counter's rule for every operator: its own forward is F_scale, one op per element it scales."""
    model = build_model("se_resnet20_cifar", **{"se.operator": op}).eval()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].numel())) for m in se_modules(model).values()]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    counts = count_ops(model, (3, 32, 32), strict=True)
    assert counts.se["se_scale"] == sum(seen) * _scale_ops_per_element(op)
    # the fused residual sum still counts as the unit's add, as in the unfused form
    set_fused_se(model, False)
    assert count_ops(model, (3, 32, 32)).categories["add"] == counts.categories["add"]


def _scale_ops_per_element(op: str) -> int:
    """Ops per element in the final combination: one multiply (x * s), or per gate multiplied in."""
    return {"cbam": 2, "coord": 2}.get(op, 1)


def test_cbam_starts_with_the_released_codes_uniform_spatial_gate():
    """Jongchan/attention-module's ResNet init zeroes every BN weight in a SpatialGate: M_s = σ(0) = 1/2 at init,
    for a CBAM built alone and for one inside a network, whose own init sets every other BN weight to 1."""
    alone = CBAM(16, SEConfig(operator="cbam"))
    model = build_model("se_resnet20_cifar", **{"se.operator": "cbam"})
    for cbam in [alone, *se_modules(model).values()]:
        bn = cbam.spatial[1]
        assert torch.equal(bn.weight, torch.zeros_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
        x = torch.randn(2, cbam.channels, 5, 4)
        for mode in (True, False):
            with torch.no_grad():
                m_s = cbam.train(mode).spatial_attention(x)
            assert m_s.shape == (2, 1, 5, 4) and torch.equal(m_s, torch.full_like(m_s, 0.5))
    assert all(m.weight.eq(1).all() for m in model.modules()
               if isinstance(m, nn.BatchNorm2d) and not any(m is c.spatial[1] for c in se_modules(model).values()))
