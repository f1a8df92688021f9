"""Gather-Excite (Hu et al. 2018) against timm's ``GatherExcite`` (the only code covering every case; the
released GENet is Caffe prototxt), and in a network at an extent below global."""
from __future__ import annotations

import pytest
import torch
from attention_weights import randomize
from timm.layers import GatherExcite as TimmGatherExcite

from senet import build_model, se_modules
from senet.attention.ge import GatherExcite
from senet.blocks import set_fused_se
from senet.config import SEConfig
from senet.op_counts import count_ops

pytestmark = pytest.mark.usefixtures("one_thread_module")



class _TorchNN:
    """torch.nn, with a BatchNorm2d that ignores extra positional arguments (see ``_timm``)."""

    def __getattr__(self, name):
        return getattr(torch.nn, name)

    @staticmethod
    def BatchNorm2d(channels, *_):
        return torch.nn.BatchNorm2d(channels)


@pytest.fixture(autouse=True)
def _timm_gather_with_params(monkeypatch):
    """timm 1.0.31 builds θ/θ⁺'s gather (and θ⁺'s MLP) with ``*dd`` (the keys of its device/dtype dict) as positional arguments:
    ``create_conv2d`` refuses them and BatchNorm2d would take them as eps and momentum. Drop them, as ``**dd`` with
    no device or dtype would."""
    import timm.layers.gather_excite as ge

    create = ge.create_conv2d
    monkeypatch.setattr(ge, "create_conv2d", lambda cin, cout, *_, **kw: create(cin, cout, **kw))
    monkeypatch.setattr(ge, "nn", _TorchNN())
    mlp = ge.ConvMlp
    monkeypatch.setattr(ge, "ConvMlp", lambda cin, hidden, *_, **kw: mlp(cin, hidden, **kw))


def _timm(channels: int, variant: str, extent: int) -> TimmGatherExcite:
    reference = TimmGatherExcite(channels, extent=extent, extra_params=variant != "theta_minus",
                                 use_mlp=variant == "theta_plus", rd_ratio=1 / 16)
    randomize(reference)
    return reference.eval()


@pytest.mark.parametrize("variant, extent", [("theta_minus", 0), ("theta_minus", 2), ("theta_minus", 4),
                                             ("theta_minus", 8), ("theta", 2), ("theta", 4), ("theta_plus", 2),
                                             ("theta_plus", 8)])
@pytest.mark.parametrize("channels", [16, 64, 256])
def test_ge_matches_timm_given_its_weights(channels, variant, extent):
    reference = _timm(channels, variant, extent)
    ours = GatherExcite(channels, SEConfig(operator="ge", ge_variant=variant, ge_extent=extent)).eval()
    sd = {k.replace("mlp.fc1", "mlp.0").replace("mlp.fc2", "mlp.2"): v for k, v in reference.state_dict().items()}
    ours.load_state_dict(sd)
    x = torch.randn(2, channels, 9, 7, generator=torch.Generator().manual_seed(0))  # odd sizes: uneven windows
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, reference(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(y, x)
    assert (sum(p.numel() for p in ours.parameters()) == 0) == (variant == "theta_minus")


def test_ge_theta_minus_gathers_each_positions_neighbourhood():
    """θ⁻ at e = 2 written out: position (i, j) is gated by σ of the mean of the 3x3 window around (2⌊i/2⌋, 2⌊j/2⌋)."""
    ours = GatherExcite(1, SEConfig(operator="ge", ge_extent=2))
    x = torch.arange(36.0).reshape(1, 1, 6, 6) / 36
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=float("nan"))
    expected = torch.empty_like(x)
    for i in range(6):
        for j in range(6):
            ci, cj = 2 * (i // 2) + 1, 2 * (j // 2) + 1  # the window's centre in padded coordinates
            window = padded[0, 0, ci - 1:ci + 2, cj - 1:cj + 2]
            expected[0, 0, i, j] = x[0, 0, i, j] * torch.sigmoid(window[~window.isnan()].mean())
    torch.testing.assert_close(ours(x), expected)


@pytest.mark.parametrize("bad, match", [
    ({"ge_variant": "theta"}, r"^model\.se\.ge_variant='theta' cannot gather at global extent"),
    ({"ge_extent": 3}, r"^model\.se\.ge_extent=3 is not allowed; it must be 0 \(global\) or a power of two >= 2$"),
    ({"ge_extent": 2, "reduction": 8}, (r"^model\.se\.reduction=8 does not apply to model\.se\.ge_variant="
                                        r"'theta_minus', which has no bottleneck")),
])
def test_ge_refuses_what_it_cannot_build_in_one_line(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        SEConfig(operator="ge", **bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("variant", ["theta_minus", "theta_plus"])
def test_ge_at_extent_two_in_a_network_fuses_and_is_counted(variant):
    torch.manual_seed(0)
    model = build_model("se_resnet20_cifar", **{"se.operator": "ge", "se.ge_extent": 2, "se.ge_variant": variant})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        fused = model(x)
        set_fused_se(model, False)
        torch.testing.assert_close(model(x), fused, rtol=1e-4, atol=1e-5)
    counts = count_ops(model, (3, 32, 32), strict=True)
    assert counts.params == sum(p.numel() for p in model.parameters())
    blocks = se_modules(model).values()
    sizes = {16: 32, 32: 16, 64: 8}
    assert counts.se["se_scale"] == sum(m.channels * sizes[m.channels] ** 2 for m in blocks)
    if variant == "theta_plus":  # depthwise 3x3 at half resolution, then the bottleneck on the gathered map
        assert counts.se["conv"] == sum(m.channels * 9 * (sizes[m.channels] // 2) ** 2
                                        + 2 * m.channels * m.mlp[0].out_channels * (sizes[m.channels] // 2) ** 2
                                        for m in blocks)
