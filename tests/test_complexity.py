"""Tests for senet.complexity: golden Sec. 9 counts, SE attribution, conventions, strict mode, fvcore cross-check."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from senet import build_model, get_arch, list_models, model_config, se_modules
from senet.complexity import BREAKDOWN_KEYS, CONVENTIONS, complexity, count_ops, summarize


def meta(name: str, **overrides) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **overrides)


@pytest.fixture(scope="module")
def se_r50():
    return count_ops(meta("se_resnet50"))


def test_se_resnet50_matches_the_prototxt_counts_of_sec9(se_r50):
    """Counted from the released Caffe prototxt by an independent script."""
    base = count_ops(meta("resnet50"))
    assert base.params == 25_557_032 and se_r50.params == 28_088_024
    assert base.categories["conv"] + base.categories["linear"] == 3_857_973_248
    assert se_r50.se["conv"] == 2_514_944  # SE FC MACs
    assert se_r50.categories["se_squeeze"] == se_r50.categories["se_scale"] == 5_519_360
    assert se_r50.categories["add"] == 5_519_360 and se_r50.categories["bn"] == 10_587_136
    assert round(summarize(base).gmacs, 2) == 3.86 and round(summarize(se_r50).gmacs, 2) == 3.87


def test_nosqueeze_convs_run_at_full_resolution_and_count_as_conv():
    c = count_ops(meta("se_resnet50", **{"se.squeeze": "none", "se.bias": False}))
    assert c.categories["se_squeeze"] == 0
    assert c.se["conv"] == 411_041_792  # Table 16: 3.858 + 0.411 = 4.27
    assert summarize(c).breakdown["conv"] == c.categories["conv"]
    assert round(summarize(c).gmacs, 2) == 4.27


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_breakdown_partitions_macs_and_units_are_named(se_r50, convention):
    c = summarize(se_r50, convention)
    assert set(c.breakdown) == set(BREAKDOWN_KEYS)
    assert sum(c.breakdown.values()) == c.macs
    assert c.gmacs == c.macs / 1e9 and c.gflops == 2 * c.gmacs
    # nothing is silently zero: what the convention leaves out is reported
    assert sum(c.uncounted.values()) + c.macs == sum(se_r50.categories.values())


def test_conventions_differ_by_exactly_their_categories(se_r50):
    paper, bare = summarize(se_r50, "paper"), summarize(se_r50, "conv+fc")
    assert bare.macs == se_r50.categories["conv"] + se_r50.categories["linear"]
    assert paper.macs - bare.macs == 2 * 5_519_360
    assert summarize(se_r50, "paper+bn").macs - paper.macs == 10_587_136
    assert summarize(se_r50, "paper+add").macs - paper.macs == 5_519_360
    assert summarize(se_r50, "squeeze-only").macs - bare.macs == 5_519_360
    assert paper.se_macs == 2_514_944 + 2 * 5_519_360


@pytest.mark.parametrize("name, overrides, size", [
    ("se_resnet20_cifar", {}, (3, 32, 32)),
    ("se_resnet20_cifar", {"se.squeeze": "none"}, (3, 32, 32)),
    ("se_resnet20_cifar", {"se.placement": "pre"}, (3, 32, 32)),
    ("se_resnet20_cifar", {"se.placement": "identity"}, (3, 32, 32)),
    ("se_resnet20_cifar", {"se.placement": "after_3x3", "se.squeeze": "max"}, (3, 32, 32)),
    ("se_mobilenet_v1", {}, (3, 64, 64)),
    ("se_shufflenet_v1_g3", {"se.placement": "post"}, (3, 64, 64)),
])
def test_se_squeeze_and_scale_are_one_op_per_element_of_each_se_input(name, overrides, size):
    """Attribution checked against hooks that see what every SE block receives (real CPU forward)."""
    model = build_model(name, **overrides).eval()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0].numel()))) for m in se_modules(model).values()]
    with torch.no_grad():
        model(torch.zeros(1, *size))
    for h in hooks:
        h.remove()
    c = count_ops(model, size)
    elements = sum(n for _, n in seen)
    assert len(seen) == len(se_modules(model)) > 0
    assert c.categories["se_scale"] == elements
    squeeze_none = overrides.get("se.squeeze") == "none"
    assert c.categories["se_squeeze"] == (0 if squeeze_none else elements)
    fc_macs = sum(2 * m.channels * m.fc1.out_channels * (n // m.channels if squeeze_none else 1) for m, n in seen)
    assert c.se["conv"] == fc_macs


def test_meta_and_real_forward_agree_and_the_model_is_left_untouched():
    model = build_model("se_resnet20_cifar").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    on_meta = count_ops(model, (3, 32, 32))
    real = count_ops(model, (3, 32, 32), device=None)
    assert on_meta == real
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats not updated


class Erf(nn.Module):
    def forward(self, x):
        return torch.special.erf(x)


def test_strict_mode_names_unknown_ops_and_lenient_mode_reports_them():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Erf())
    with pytest.raises(ValueError, match="aten.erf"):
        complexity(model, (3, 8, 8), strict=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = complexity(model, (3, 8, 8))
    assert c.unknown_ops == ("aten.erf",) and any("aten.erf" in str(w.message) for w in caught)
    assert c.macs == 4 * 3 * 9 * 36


@pytest.mark.slow
def test_every_registered_model_is_known_to_strict_mode():
    for name in list_models():
        model = meta(name)
        count_ops(model, get_arch(model.cfg.arch).input_size, strict=True)


@pytest.mark.parametrize("bad, match", [({"convention": "caffe"}, "convention='caffe'.*paper"),
                                        ({"input_size": (224, 224)}, "input_size"),
                                        ({"device": "cuda"}, "device='cuda'.*meta")])
def test_bad_input_is_a_value_error_naming_it(bad, match):
    with pytest.raises(ValueError, match=match):
        complexity(meta("resnet18"), **bad)


@pytest.mark.parametrize("name, n_se", [("se_vgg16_bn", 13), ("se_mobilenet_v1", 13),
                                        ("se_shufflenet_v1_g3", 13), ("se_inception_resnet_v2", 40)])
def test_new_archs_se_count_and_closed_form_params(name, n_se):
    """Every SE block adds 2*C*s + s + C parameters, and nothing else changes."""
    se_model, base = meta(name), meta(name.removeprefix("se_"))
    blocks = se_modules(se_model).values()
    assert len(blocks) == n_se
    extra = sum(2 * m.channels * m.fc1.out_channels + m.fc1.out_channels + m.channels for m in blocks)
    assert count_ops(se_model, get_arch(se_model.cfg.arch).input_size).params - sum(
        p.numel() for p in base.parameters()) == extra


@pytest.mark.slow
def test_new_archs_match_the_reference_implementations():
    """Params and conv+FC MACs equal torchvision's vgg16_bn and timm's mobilenetv1_100 / inception_resnet_v2."""
    timm = pytest.importorskip("timm")
    import torchvision

    refs = {"vgg16_bn": lambda: torchvision.models.vgg16_bn(),
            "mobilenet_v1": lambda: timm.create_model("mobilenetv1_100"),
            "inception_resnet_v2": lambda: timm.create_model("inception_resnet_v2")}
    for name, ref in refs.items():
        with torch.device("meta"):
            theirs = ref()
        size = get_arch(name).input_size
        ours, other = count_ops(meta(name), size), count_ops(theirs, size)
        assert ours.params == other.params, name
        assert (ours.categories["conv"], ours.categories["linear"]) == (other.categories["conv"],
                                                                        other.categories["linear"]), name


def _fvcore_conv_linear(model: nn.Module, size) -> int:
    fvcore = pytest.importorskip("fvcore.nn")
    fa = fvcore.FlopCountAnalysis(model, torch.zeros(1, *size))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    by_op = fa.by_operator()  # fvcore counts one multiply-accumulate as one flop
    return sum(v for k, v in by_op.items() if k in ("conv", "linear", "addmm", "matmul", "bmm", "einsum"))


def _small_size(name: str):
    c, h, _ = get_arch(model_config(name).arch).input_size
    side = 32 if h <= 32 else (160 if h > 224 else 96)  # any size checks the formulas; small is fast
    return (c, side, side)


def test_conv_and_linear_macs_agree_with_fvcore():
    model = build_model("se_resnet20_cifar", **{"se.squeeze": "none"}).eval()
    size = (3, 32, 32)
    c = count_ops(model, size)
    assert c.categories["conv"] + c.categories["linear"] == _fvcore_conv_linear(model, size)


SE_MODELS = [n for n in list_models() if n.startswith("se_")]


def test_every_plain_model_is_the_network_of_an_se_model():
    """The fvcore cross-check traces the SE models only; each plain model is checked through its SE model."""
    assert {n.removeprefix("se_") for n in SE_MODELS} == set(list_models()) - set(SE_MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("name", SE_MODELS)
def test_conv_and_linear_macs_agree_with_fvcore_for_every_se_model_and_its_plain_network(name):
    """An SE model holds every conv and FC of its plain network plus the SE FCs (2*C*s MACs each on the 1x1
    descriptor): fvcore checks the SE model, and the plain network's count (on meta) is the SE model's less those."""
    model = build_model(name).eval()
    size = _small_size(name)
    c = count_ops(model, size)
    conv_fc = c.categories["conv"] + c.categories["linear"]
    assert conv_fc == _fvcore_conv_linear(model, size)
    se_fc = sum(2 * m.channels * m.fc1.out_channels for m in se_modules(model).values())
    assert se_fc > 0 and c.se["conv"] == se_fc
    plain = count_ops(meta(name.removeprefix("se_")), size)
    assert plain.categories["conv"] + plain.categories["linear"] == conv_fc - se_fc
