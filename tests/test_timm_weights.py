"""Weight import from timm's modern seresnet* / seresnext*: timm's logits (every tensor random, BN statistics too)
are the reference; key names and a refused layout."""
from __future__ import annotations

import pytest
import torch
from test_timm_surface import image, meta, timm_random

from senet import build_model

pytestmark = pytest.mark.usefixtures("one_thread_module")


def assert_timm_logits(name: str, tmp_path) -> float:
    from senet.weights import TIMM_LAYOUT, TIMM_MODELS, load_timm_weights

    ref = timm_random(name)
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    ours = load_timm_weights(build_model(TIMM_MODELS[name], **TIMM_LAYOUT), path).eval()
    x = image(64, batch=1)
    with torch.no_grad():
        a, b = ref(x), ours(x)
        assert [{k: f[k] for k in ("num_chs", "reduction")} for f in ref.feature_info] == [
            {k: f[k] for k in ("num_chs", "reduction")} for f in ours.feature_info]
        assert ref.feature_info[1:] == [{k: f[k] for k in ("num_chs", "reduction", "module")}
                                        for f in ours.feature_info[1:]]  # the stem: timm's act1, our relu
    delta = (a - b).abs().max().item()
    assert a.shape == b.shape and a.std() > 0.1 and delta <= 1e-5, delta
    return delta


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seresnet50", "seresnext50_32x4d"])
def test_timm_seresnet_weights_give_timms_logits(name, tmp_path):
    assert_timm_logits(name, tmp_path)


def test_timm_seresnet18_weights_give_timms_logits(tmp_path):
    assert_timm_logits("seresnet18", tmp_path)  # basic blocks; SE width 8 (timm's rounding), not 64 // 16


def test_timm_key_names():
    from senet.weights import timm_key

    assert timm_key("layer2.0.conv2.weight") == "layer2.0.branch.conv2.weight"
    assert timm_key("layer2.0.se.fc1.bias") == "layer2.0.se.fc1.bias"
    assert timm_key("layer2.0.downsample.1.running_var") == "layer2.0.shortcut.1.running_var"
    assert timm_key("bn1.num_batches_tracked") == "bn1.num_batches_tracked"
    assert timm_key("conv1.0.weight") is None  # seresnet50d's deep stem: not ours


@pytest.mark.parametrize("override, field", [({"stem_pool": None}, "stem_pool"), ({"stride_on": "1x1"}, "stride_on")])
def test_timm_weights_refuse_a_different_layout(override, field):
    from senet.weights import TIMM_LAYOUT, load_timm_weights

    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        sd = timm.create_model("seresnet50", pretrained=False).state_dict()
    model = meta("se_resnet50", **{**TIMM_LAYOUT, **override})
    with pytest.raises(ValueError, match=rf"model\.{field}=.*allowed for these weights"):
        load_timm_weights(model, sd)
