"""Released-weight import: timm's legacy_se* ports (= Cadene's = the Caffe models) give our logits exactly.

The proof that our SE-ResNet/SE-ResNeXt is the released architecture: random timm weights (random BN
statistics too, so swapped or misrouted tensors show), saved to a file, loaded through
``senet.weights`` into our model, give the same logits in eval mode. Nothing is downloaded.
"""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from senet import build_model
from senet.blocks import set_fused_se
from senet.weights import LEGACY_MODELS, convert_legacy_state_dict, legacy_key, load_legacy_weights, read_state_dict

pytestmark = pytest.mark.usefixtures("one_thread_module")


def legacy(name: str, seed: int = 0) -> nn.Module:
    """A timm legacy model with every tensor random, BN running statistics included, in eval mode."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    ref = legacy("legacy_seresnet50")
    path = tmp_path_factory.mktemp("w") / "se_resnet50.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def _image(size: int = 224, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def meta(name: str, **overrides) -> nn.Module:
    """The model on the meta device: enough for the checks that refuse before any tensor is copied."""
    with torch.device("meta"):
        return build_model(name, **overrides)


def assert_same_logits(ref: nn.Module, ours: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        a, b = ref.eval()(x), ours.eval()(x)
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= 1e-5, (a - b).abs().max().item()
    assert a.std() > 0.1  # not a degenerate all-equal output


def test_se_resnet50_is_the_released_architecture(resnet50_file):
    ref, path = resnet50_file
    ours = load_legacy_weights(build_model("se_resnet50"), path)
    assert_same_logits(ref, ours, _image(batch=1))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_se_resnext50_is_the_released_architecture(tmp_path, suffix):
    ref = legacy("legacy_seresnext50_32x4d", seed=1)
    path = tmp_path / f"se_resnext50_32x4d{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(ref.state_dict(), str(path))
    else:
        torch.save(ref.state_dict(), path)
    ours = load_legacy_weights(build_model("se_resnext50_32x4d"), path)
    assert_same_logits(ref, ours, _image(size=224 if suffix == ".pth" else 64, batch=1))


@pytest.mark.slow
@pytest.mark.parametrize("legacy_name", ["legacy_seresnet101", "legacy_seresnet152", "legacy_seresnext101_32x4d"])
def test_deeper_released_models(legacy_name):
    ref = legacy(legacy_name)
    ours = load_legacy_weights(build_model(LEGACY_MODELS[legacy_name]), ref.state_dict())
    # The released layout scales, then adds: its arithmetic is our unfused form (the fused addcmul rounds once,
    # not twice, which 100+ layers at random init grow to ~3e-3; tests/test_fused_se.py compares the two forms).
    set_fused_se(ours, False)
    assert_same_logits(ref, ours, _image(size=96))


def test_every_legacy_key_has_a_home():
    """The renaming covers the whole timm/Cadene state dict of each importable model, both directions."""
    for legacy_name, ours in [("legacy_seresnet50", "se_resnet50"), ("legacy_seresnext50_32x4d", "se_resnext50_32x4d")]:
        with torch.device("meta"):
            ref_keys = timm.create_model(legacy_name).state_dict().keys()
            our_keys = build_model(ours).state_dict().keys()
        assert {legacy_key(k) for k in ref_keys} == set(our_keys)
    assert legacy_key("layer0.conv1.weight") == "conv1.weight"
    assert legacy_key("layer3.5.se_module.fc2.bias") == "layer3.5.se.fc2.bias"
    assert legacy_key("layer2.0.downsample.1.running_var") == "layer2.0.shortcut.1.running_var"
    assert legacy_key("layer4.2.bn3.num_batches_tracked") == "layer4.2.branch.bn3.num_batches_tracked"
    assert legacy_key("last_linear.weight") == "fc.weight"


def test_cadene_style_checkpoint_without_bn_counters_and_wrapped(resnet50_file, tmp_path):
    """Caffe-era ports have no num_batches_tracked; training scripts wrap with state_dict/module."""
    ref, _ = resnet50_file
    sd = {f"module.{k}": v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "cadene.pth"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    assert set(read_state_dict(path)) == {k.removeprefix("module.") for k in sd}
    ours = load_legacy_weights(build_model("se_resnet50"), path)
    assert_same_logits(ref, ours, _image(size=64))


def test_baseline_takes_the_backbone_only_when_asked(resnet50_file):
    ref, path = resnet50_file
    with pytest.raises(ValueError) as err:
        load_legacy_weights(meta("resnet50"), path)
    msg = str(err.value)
    assert "unexpected in the checkpoint (64)" in msg and "layer1.0.se.fc1.weight" in msg  # 16 blocks x 4
    assert "drop_unused_se=True" in msg
    ours = load_legacy_weights(build_model("resnet50"), path, drop_unused_se=True)
    torch.testing.assert_close(ours.conv1.weight, ref.layer0.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.layer4[2].branch.bn3.running_var, ref.layer4[2].bn3.running_var, rtol=0, atol=0)


def test_dropping_the_last_stage_se_of_the_released_model(resnet50_file):
    """The paper's "remove SE from the last stage" on released weights: se.stages=[2,3,4] equals the
    timm model with its layer4 SE modules replaced by the identity."""
    ref, path = resnet50_file
    ours = load_legacy_weights(build_model("se_resnet50", **{"se.stages": [2, 3, 4]}), path, drop_unused_se=True)
    cut = legacy("legacy_seresnet50")  # same seed, same tensors
    for block in cut.layer4:
        block.se_module = nn.Identity()
    assert_same_logits(cut, ours, _image(size=64))
    with torch.no_grad():
        assert (ref(_image(size=64)) - ours(_image(size=64))).abs().max() > 1e-3  # the SE blocks mattered


def test_new_head_for_fine_tuning(resnet50_file):
    _, path = resnet50_file
    with pytest.raises(ValueError, match=r"fc\.weight: model \(10, 2048\) vs checkpoint \(1000, 2048\)"):
        load_legacy_weights(meta("se_resnet50", num_classes=10), path)
    model = build_model("se_resnet50", num_classes=10)
    head = model.fc.weight.clone()
    load_legacy_weights(model, path, drop_head=True)
    torch.testing.assert_close(model.fc.weight, head)


@pytest.mark.parametrize("overrides, expected", [
    ({"se.reduction": 8}, ["shape mismatch (48)",
                           "layer1.0.se.fc1.weight: model (32, 256, 1, 1) vs checkpoint (16, 256, 1, 1)",
                           "se.reduction=16"]),
    ({"se.bias": False}, ["unexpected in the checkpoint (32)", "layer1.0.se.fc1.bias", "se.bias=true"]),
    ({"se.width_rounding": "divisor", "se.reduction": 32}, ["layer1.0.se.fc1.weight: model (8, 256, 1, 1)"]),
    ({"stride_on": "3x3"}, ["model.stride_on='3x3'", "released SE-ResNet", "stride_on='1x1'"]),
    ({"se.gate": "tanh"}, ["model.se.gate='tanh' differs from the released models", "'sigmoid'"]),
    ({"se.squeeze": "max"}, ["model.se.squeeze='max'", "'avg'"]),
    ({"se.placement": "post"}, ["model.se.placement='post'", "'standard'"]),
])
def test_mismatches_are_refused_naming_the_keys(resnet50_file, overrides, expected):
    _, path = resnet50_file
    with pytest.raises(ValueError) as err:
        load_legacy_weights(meta("se_resnet50", **overrides), path)
    for text in expected:
        assert text in str(err.value)


def test_wrong_architecture_is_refused(resnet50_file):
    _, path = resnet50_file
    with pytest.raises(ValueError) as err:
        load_legacy_weights(meta("se_resnext50_32x4d"), path)
    assert "shape mismatch" in str(err.value)
    assert "layer1.0.branch.conv1.weight: model (128, 64, 1, 1) vs checkpoint (64, 64, 1, 1)" in str(err.value)
    with pytest.raises(ValueError, match=r"missing from the checkpoint \(\d+\): layer3\.6\.branch\.conv1\.weight"):
        load_legacy_weights(meta("se_resnet101"), path)


def test_missing_keys_are_listed(resnet50_file):
    ref, _ = resnet50_file
    sd = dict(ref.state_dict())
    del sd["layer4.2.bn3.weight"], sd["layer2.0.se_module.fc2.bias"]
    with pytest.raises(ValueError) as err:
        load_legacy_weights(meta("se_resnet50"), sd)
    assert "missing from the checkpoint (2): layer2.0.se.fc2.bias, layer4.2.branch.bn3.weight" in str(err.value)


def test_foreign_checkpoints_are_refused():
    with torch.device("meta"):
        senet154 = timm.create_model("legacy_senet154").state_dict()
        basic = timm.create_model("legacy_seresnet18").state_dict()
    with pytest.raises(ValueError, match=r"match no layer of our .*layer0\.conv2\.weight"):
        convert_legacy_state_dict(senet154)
    with pytest.raises(ValueError, match=r"legacy_seresnet18/34.*ReLU after bn2"):
        convert_legacy_state_dict(basic)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown format '\.onnx'; allowed: \.pth"):
        read_state_dict(tmp_path / "w.onnx")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds no state dict"):
        read_state_dict(tmp_path / "list.pth")
