"""timm's model surface on every zoo network: forward_head, reset_classifier, feature_info, features_only,
model.drop_rate (and the config hashes it must not move). Weight import from timm: tests/test_timm_weights.py.

Shape checks run on the meta device (no memory, no weights), so every registered model is covered in
seconds; the numeric checks use small real models.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from torch import nn

from senet import (
    ModelConfig,
    build_model,
    config_hash,
    from_dict,
    get_arch,
    list_archs,
    list_models,
    model_config,
    to_dict,
)
from senet.surface import FeatureInfo, FeatureList

pytestmark = pytest.mark.usefixtures("one_thread_module")

SMALL = ["se_resnet20_cifar", "se_resnet18", "se_mobilenet_v1", "se_shufflenet_v1_g3"]


def meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **kw)


def side(name: str) -> int:
    """A small input the model accepts: 32 for CIFAR, 64 for ImageNet (Inception-ResNet-v2's 'valid' stem: 299)."""
    arch = get_arch(model_config(name).arch)
    return arch.input_size[-1] if arch.name == "inception_resnet_v2" else min(64, arch.input_size[-1])


def image(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


# ---- config: drop_rate and stem_pool are late fields that leave old hashes alone ---- #


def test_old_config_hashes_are_unchanged():
    # Hashes computed before model.drop_rate / model.stem_pool existed (commit 1bd6996).
    assert config_hash(model_config("se_resnet50")) == "b734140acaec"
    assert config_hash(model_config("se_resnext50_32x4d", stride_on="3x3")) == "33c44b443416"
    from ablations.config import ExperimentConfig

    assert ExperimentConfig().hash() == "ac400a015c05"
    d = to_dict(model_config("se_resnet50"))
    assert "drop_rate" not in d and "stem_pool" not in d
    assert from_dict(ModelConfig, d) == model_config("se_resnet50")


def test_drop_rate_round_trips_and_enters_the_hash_when_set():
    base = model_config("se_resnet50")
    cfg = model_config("se_resnet50", drop_rate=0.2, stem_pool="torchvision")
    d = to_dict(cfg)
    assert d["drop_rate"] == 0.2 and d["stem_pool"] == "torchvision"
    assert from_dict(ModelConfig, yaml.safe_load(yaml.safe_dump(d))) == cfg
    assert config_hash(cfg) != config_hash(base)
    assert config_hash(dataclasses.replace(cfg, drop_rate=0.0, stem_pool=None)) == config_hash(base)
    from ablations.config import ExperimentConfig

    exp = ExperimentConfig()
    assert exp.override({"model.drop_rate": 0.0}).hash() == exp.hash()
    assert exp.override({"model.drop_rate": 0.1}).hash() != exp.hash()


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "0.5"])
def test_bad_drop_rate_names_the_field(bad):
    with pytest.raises(ValueError, match=r"model\.drop_rate"):
        model_config("resnet18", drop_rate=bad)


def test_stem_pool_is_validated_and_only_for_imagenet_resnets():
    with pytest.raises(ValueError, match=r"model\.stem_pool='ceil'.*caffe, torchvision"):
        model_config("resnet50", stem_pool="ceil")
    with pytest.raises(ValueError, match=r"model\.stem_pool='torchvision' does not apply to mobilenet_v1"):
        model_config("mobilenet_v1", stem_pool="torchvision")


def test_pretrained_is_refused_with_the_local_loaders_named():
    assert isinstance(meta("resnet18", pretrained=False), nn.Module)
    with pytest.raises(ValueError, match=r"pretrained=True is not allowed.*load_timm_weights"):
        build_model("se_resnet50", pretrained=True)
    with pytest.raises(ValueError, match="out_indices is only used with features_only"):
        build_model("se_resnet50", out_indices=(1,))


# ---- head: forward_head, get_classifier, reset_classifier, drop_rate ---- #


@pytest.mark.parametrize("name", SMALL)
def test_forward_is_forward_head_of_forward_features(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = image(side(name))
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
        assert feats.shape[1] == model.num_features
        assert torch.equal(model.forward_head(feats), logits)
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.num_features) and torch.equal(model.get_classifier()(pooled), logits)


@pytest.mark.parametrize("name", [f"se_{a}" for a in list_archs()])
def test_head_surface_shapes(name):
    model = meta(name)
    feats = torch.empty(2, model.num_features, 3, 3, device="meta")  # the trunk's output (features test: its shape)
    n = get_arch(model_config(name).arch).num_classes
    assert model.num_classes == n and model.forward_head(feats).shape == (2, n)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    assert isinstance(model.get_classifier(), nn.Linear)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0
    assert model.forward_head(feats).shape == (2, model.head_hidden_size)
    model.reset_classifier(7)
    assert model.get_classifier().weight.device.type == "meta" and model.forward_head(feats).shape == (2, 7)


def test_vgg_head_keeps_its_hidden_layers():
    model = meta("se_vgg16_bn")
    assert (model.num_features, model.head_hidden_size) == (512, 4096)
    model.reset_classifier(5)
    assert model.get_classifier() is model.classifier[6]
    assert "classifier.6.weight" in model.state_dict() and "classifier.3.weight" in model.state_dict()


@pytest.mark.slow
def test_vgg_forward_is_unchanged_by_the_split():
    torch.manual_seed(0)
    model = build_model("vgg16_bn").eval()
    x = image(64, batch=1)
    with torch.no_grad():
        want = model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
        assert torch.equal(model(x), want)


def test_reset_classifier_refuses_bad_arguments():
    model = meta("resnet18")
    with pytest.raises(ValueError, match="num_classes=-1"):
        model.reset_classifier(-1)
    with pytest.raises(ValueError, match="global_pool='max'"):
        model.reset_classifier(10, global_pool="max")


def test_drop_rate_is_dropout_before_the_classifier():
    torch.manual_seed(0)
    plain = build_model("se_resnet20_cifar")
    dropped = build_model("se_resnet20_cifar", drop_rate=0.5)
    dropped.load_state_dict(plain.state_dict())
    assert plain.drop_rate == 0.0 and dropped.drop_rate == 0.5
    x = image(32)
    with torch.no_grad():
        assert torch.equal(dropped.eval()(x), plain.eval()(x))  # eval: no dropout
        feats = dropped.forward_features(x)
        dropped.train()
        torch.manual_seed(1)
        pooled = dropped.forward_head(feats, pre_logits=True)
    zeros = (pooled == 0).float().mean().item()
    assert 0.3 < zeros < 0.7  # about half the 64 pooled features dropped, the rest scaled by 2


# ---- features_only and feature_info ---- #


@pytest.mark.parametrize("name", list_models())
def test_features_only_gives_every_stage_with_its_channels_and_reduction(name):
    feats = meta(name, features_only=True)
    model = feats._network
    assert isinstance(feats, FeatureList) and feats.feature_info == model.feature_info
    # timm's list: index 0 the stem (stage 1), then the last module at each stride, every SE stage among them
    stages, reductions = [f["stage"] for f in feats.feature_info], feats.feature_info.reduction()
    assert stages[0] == 1 and stages == sorted(stages) and set(get_arch(model.cfg.arch).stages) <= set(stages)
    assert reductions[0] <= 2 and reductions == sorted(reductions) and reductions[-1] == max(reductions)
    size = side(name)
    outs = feats(torch.empty(1, 3, size, size, device="meta"))
    assert len(outs) == len(feats.feature_info)
    assert [o.shape[1] for o in outs] == feats.feature_info.channels()
    for out, red in zip(outs, feats.feature_info.reduction()):
        if model.cfg.arch == "inception_resnet_v2":  # 'valid' convs: 71/35/17/8 at 299, not 75/37/18/9
            assert 0 <= size / red - out.shape[-1] < 4
        else:
            assert out.shape[-2:] == (-(-size // red),) * 2
    assert outs[-1].shape[1] == model.num_features
    head = set(model.head_modules)
    assert set(feats.state_dict()) == {k for k in model.state_dict() if k.split(".")[0] not in head}


def test_features_only_out_indices_and_values():
    torch.manual_seed(0)
    feats = build_model("se_resnet18", features_only=True, out_indices=(1, -1)).eval()
    assert feats.out_indices == (1, 4) and feats.feature_info.module_name() == ["layer1", "layer4"]
    x = image(64)
    with torch.no_grad():
        mid, last = feats(x)
        assert mid.shape == (2, 64, 16, 16) and torch.equal(last, feats._network.forward_features(x))
        copy = __import__("copy").deepcopy(feats)
        assert torch.equal(copy(x)[1], last)
    with pytest.raises(ValueError, match=r"out_indices=\(5,\) is not allowed.*0\.\.4"):
        build_model("se_resnet18", features_only=True, out_indices=(5,))


def test_feature_info_accessors():
    info = meta("se_resnet50").feature_info
    assert isinstance(info, FeatureInfo) and isinstance(info, list)
    assert info.channels() == [64, 256, 512, 1024, 2048] and info.reduction() == [2, 4, 8, 16, 32]
    assert info.channels(-1) == 2048 and info[0] == {"num_chs": 64, "reduction": 2, "module": "relu", "stage": 1}


def test_out_indices_pick_timms_maps_for_every_index(tmp_path):
    """Ours with timm's weights against timm's seresnet50, features_only, at each index alone and all at once:
    the same channels, reductions and maps (index 0 the stem's output, as timm's)."""
    timm = pytest.importorskip("timm")
    from senet.weights import TIMM_LAYOUT, TIMM_MODELS, load_timm_weights

    ref = timm_random("seresnet50")
    path = tmp_path / "seresnet50.pth"
    torch.save(ref.state_dict(), path)
    ours = load_timm_weights(build_model(TIMM_MODELS["seresnet50"], **TIMM_LAYOUT), path).eval()
    trunk = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    n = len(ref.feature_info)
    assert len(ours.feature_info) == n == 5
    x = image(64, batch=1)
    for indices in [(i,) for i in range(n)] + [(-1,), (1, 2, 3), tuple(range(n))]:
        theirs = timm.create_model("seresnet50", pretrained=False, features_only=True, out_indices=indices)
        theirs.load_state_dict({k: trunk[k] for k in theirs.state_dict()})  # timm's stops at its last index
        mine = FeatureList(ours, indices)
        assert mine.feature_info.channels() == theirs.feature_info.channels(), indices
        assert mine.feature_info.reduction() == theirs.feature_info.reduction(), indices
        with torch.no_grad():
            a, b = theirs.eval()(x), mine(x)
        assert len(a) == len(b) == len(indices)
        for t, o in zip(a, b):
            assert t.shape == o.shape and (t - o).abs().max().item() <= 1e-4, indices


def timm_random(name: str, seed: int = 0) -> nn.Module:
    """A timm model with every tensor random (BN statistics too, so a misrouted tensor shows), in eval mode:
    the legacy import tests' helper, for timm's modern models."""
    pytest.importorskip("timm")
    from test_weights import legacy

    return legacy(name, seed)
