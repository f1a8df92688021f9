"""Excitation recorder (paper Sec. 7.2): exact per-class statistics, constant memory, block naming, summaries."""
from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import torch
from torch import nn

from ablations.excitation import ExcitationRecorder, ExcitationStats, default_blocks, record_excitation, se_blocks
from ablations.excitation.plots import plot_fig6, plot_fig7, sample_channels, save
from ablations.excitation.summary import (
    VAR_FLOOR,
    arm_pivot,
    block_summary,
    class_specificity,
    saturation,
    summarize,
    sweep_rows,
)
from senet import SEConfig, SqueezeExcite, build_model


def fixed_se(channels: int, gate: str = "identity", squeeze: str = "avg", tag: str = "SE_2_1") -> SqueezeExcite:
    """An SE block whose excitation is gate(squeeze(x)) exactly: identity FCs, zero biases, no δ."""
    se = SqueezeExcite(channels, SEConfig(reduction=1, activation="identity", gate=gate, squeeze=squeeze), tag=tag)
    with torch.no_grad():
        for fc in (se.fc1, se.fc2):
            fc.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            fc.bias.zero_()
    return se


class GateNet(nn.Module):
    """Two SE blocks in a row; the first's gates are x's spatial means, the second's sigmoid(x * s1)."""

    def __init__(self, channels: int, squeeze: str = "avg") -> None:
        super().__init__()
        self.a = fixed_se(channels, "identity", squeeze, tag="SE_2_1")
        self.b = fixed_se(channels, "sigmoid", "avg", tag="SE_3_1")

    def forward(self, x):
        return self.b(self.a(x))


def reference(values: np.ndarray, labels: np.ndarray, k: int):
    """Per-class mean and population std of per-sample gate values, straight from numpy."""
    mean = np.stack([values[labels == c].mean(0) for c in range(k)])
    std = np.stack([values[labels == c].std(0) for c in range(k)])
    return mean, std


def dyadic(n: int, c: int, seed: int, hw: int = 1) -> torch.Tensor:
    """Inputs that are multiples of 1/8 in [0, 1], so float32 sums and means are exact."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 9, (n, c, hw, hw), generator=g).float() / 8


def batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


def test_known_gates_give_exact_class_means_and_stds():
    k, c = 3, 4
    x, y = dyadic(90, c, seed=1), torch.arange(90) % k
    stats = record_excitation(GateNet(c), batches(x, y, 16), k)
    # Block a: the gate is x itself; block b: sigmoid(x * x) (the second block sees a's output).
    vals_a = x.view(90, c).double().numpy()
    vals_b = torch.sigmoid(x * x).view(90, c).double().numpy()
    for block, vals in (("SE_2_1", vals_a), ("SE_3_1", vals_b)):
        mean, std = reference(vals, y.numpy(), k)
        np.testing.assert_allclose(stats.mean[block], mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(stats.std(block), std, rtol=0, atol=1e-12)
        pooled_mean, pooled_std = stats.pooled(block)
        np.testing.assert_allclose(pooled_mean, vals.mean(0), atol=1e-12)
        np.testing.assert_allclose(pooled_std, vals.std(0), atol=1e-12)
    assert stats.count.tolist() == [30, 30, 30]


def test_batch_boundaries_do_not_change_the_statistics():
    x, y = dyadic(50, 3, seed=2), torch.tensor([0, 1, 1, 2, 0] * 10)
    runs = [record_excitation(GateNet(3), batches(x, y, b), 3) for b in (1, 7, 50)]
    for s in runs[1:]:
        for block in s.blocks:
            np.testing.assert_allclose(s.mean[block], runs[0].mean[block], atol=1e-12)
            np.testing.assert_allclose(s.m2[block], runs[0].m2[block], atol=1e-12)


def test_nosqueeze_gate_is_recorded_as_its_spatial_mean():
    # NoSqueeze gates are (N, C, H, W); the recorded per-sample value is their mean over H x W.
    x, y = dyadic(40, 2, seed=3, hw=2), torch.arange(40) % 2
    stats = record_excitation(GateNet(2, squeeze="none"), batches(x, y, 8), 2)
    vals = x.mean((2, 3)).double().numpy()
    mean, std = reference(vals, y.numpy(), 2)
    np.testing.assert_allclose(stats.mean["SE_2_1"], mean, atol=1e-12)
    np.testing.assert_allclose(stats.std("SE_2_1"), std, atol=1e-12)


def test_unseen_class_is_nan_and_excluded_from_pooled_stats():
    x, y = dyadic(12, 2, seed=4), torch.tensor([0, 2] * 6)
    stats = record_excitation(GateNet(2), batches(x, y, 5), 3, class_names=["a", "b", "c"])
    assert stats.count.tolist() == [6, 0, 6]
    assert np.isnan(stats.mean["SE_2_1"][1]).all()
    np.testing.assert_allclose(stats.pooled("SE_2_1")[0], x.view(12, 2).double().mean(0).numpy(), atol=1e-12)
    assert block_summary(stats, "SE_2_1")["classes"] == 2


def test_recording_memory_does_not_grow_with_samples():
    # 100k synthetic samples in batches of 1000: the accumulators and the set of live tensors stay the same.
    torch.manual_seed(0)
    model = GateNet(16).eval()
    live = lambda: sum(o.numel() for o in gc.get_objects() if torch.is_tensor(o))
    with ExcitationRecorder(model, num_classes=10) as rec:
        for i in range(100):
            rec.record(torch.rand(1000, 16, 1, 1), torch.randint(0, 10, (1000,)))
            if i == 4:
                gc.collect()
                after_5k, state_5k = live(), rec.state_nbytes()
        gc.collect()
        after_100k, state_100k = live(), rec.state_nbytes()
    assert state_100k == state_5k == 2 * (10 * 8 + 4 * 10 * 16 * 8)  # 2 blocks x (counts + 4 (K, C) float64)
    # Live tensors: a per-batch leak would add 95 batches x 16,000 elements; the bound allows the few
    # thousand elements that other threads of a long test session (loaders, loggers) come and go with.
    assert after_100k - after_5k < 30 * 1000 * 16, (after_5k, after_100k)
    assert rec.stats().num_samples == 100_000


def test_blocks_are_named_as_the_paper_names_them():
    model = build_model("se_resnet50")
    names = list(se_blocks(model))
    assert names[:4] == ["SE_2_1", "SE_2_2", "SE_2_3", "SE_3_1"] and names[-1] == "SE_5_3" and len(names) == 16
    assert default_blocks(names) == ["SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1", "SE_5_2", "SE_5_3"]  # Fig. 6 panels
    dropped = build_model("se_resnet50", **{"se.skip_blocks": [[5, 2], [5, 3]]})
    assert default_blocks(list(se_blocks(dropped))) == ["SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1"]


def test_blocks_without_paper_tags_are_named_by_module():
    net = nn.Sequential(nn.Conv2d(3, 8, 1), fixed_se(8, tag="SE"), nn.Conv2d(8, 8, 1), fixed_se(8, tag="SE"))
    assert list(se_blocks(net)) == ["1", "3"]
    assert default_blocks(["a", "b"]) == ["a", "b"]
    inception = ["SE_3a", "SE_3b", "SE_3c", "SE_4a", "SE_4b", "SE_4c", "SE_4d", "SE_4e", "SE_5a", "SE_5b"]
    assert default_blocks(inception) == ["SE_3c", "SE_4e", "SE_5a", "SE_5b"]  # named by Inception module
    long_last = [f"SE_4_{b}" for b in range(1, 5)] + [f"SE_5_{b}" for b in range(1, 11)]  # Inception-ResNet-v2-like
    assert default_blocks(long_last) == ["SE_4_4", "SE_5_1", "SE_5_5", "SE_5_10"]
    assert default_blocks([str(i) for i in range(12)]) == ["0", "2", "4", "7", "9", "11"]


def test_bad_input_is_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="SE_2_1, SE_3_1"):
        ExcitationRecorder(GateNet(2), 2, blocks=["SE_9_9"])
    with pytest.raises(ValueError, match="no SE blocks"):
        ExcitationRecorder(build_model("resnet20_cifar"), 10)
    with ExcitationRecorder(GateNet(2), 2) as rec, pytest.raises(ValueError, match="0..1"):
        rec.record(torch.rand(3, 2, 1, 1), torch.tensor([0, 1, 2]))
    stats = record_excitation(GateNet(2), [(torch.rand(4, 2, 1, 1), torch.tensor([0, 1, 0, 1]))], 2,
                              class_names=["cat", "dog"])
    assert stats.class_index("dog") == 1 and stats.class_index("0") == 0
    with pytest.raises(ValueError, match="cat, dog"):
        stats.class_index("emu")


def test_specificity_separates_class_driven_from_class_agnostic_gates():
    k, n, c = 4, 400, 8
    y = torch.arange(n) % k
    by_class = (y.float()[:, None] / 8 + 0.25).expand(n, c)  # each class one constant gate value
    shared = dyadic(n, c, seed=5).view(n, c)  # the same distribution for every class
    x = torch.cat([by_class, shared], 1).view(n, 2 * c, 1, 1)
    stats = record_excitation(GateNet(2 * c), batches(x, y, 64), k)
    vals, labels = x.view(n, 2 * c).double().numpy(), y.numpy()
    mean, _ = reference(vals, labels, k)
    between = ((mean - vals.mean(0)) ** 2).mean(0)  # equal class sizes: plain mean over classes
    within = np.stack([vals[labels == j].var(0) for j in range(k)]).mean(0)
    ratio = between / np.maximum(within, VAR_FLOOR)  # class-driven channels: within-class variance 0
    spec, eta2 = class_specificity(stats, "SE_2_1")
    assert spec == pytest.approx(ratio.mean(), rel=1e-9)
    assert eta2 == pytest.approx((between / (between + within)).mean(), rel=1e-9)
    assert (between / (between + within))[:c] == pytest.approx(1.0)  # class-driven half
    assert (between / (between + within))[c:].max() < 0.1  # class-agnostic half
    const = record_excitation(GateNet(2), [(torch.full((8, 2, 1, 1), 0.5), torch.arange(8) % 2)], 2)
    assert class_specificity(const, "SE_2_1") == (0.0, 0.0)  # gates that never move are class-agnostic


def test_saturation_counts_gates_beyond_the_thresholds():
    x = torch.tensor([0.0, 0.04, 0.5, 0.96, 1.0, 0.95, 0.05, 0.2]).view(8, 1, 1, 1)
    stats = record_excitation(GateNet(1), [(x, torch.zeros(8, dtype=torch.long))], 1)
    assert saturation(stats, "SE_2_1") == (2 / 8, 2 / 8)  # 0.05 and 0.95 themselves are not saturated
    row = summarize(stats, ["SE_2_1"])[0]
    assert row["saturation"] == pytest.approx(0.5) and row["mean_gate"] == pytest.approx(x.mean().item())


def test_stats_roundtrip_through_npz(tmp_path):
    x, y = dyadic(30, 3, seed=6), torch.arange(30) % 3
    stats = record_excitation(GateNet(3), batches(x, y, 10), 3, class_names=["a", "b", "c"],
                              meta={"checkpoint": "x.ckpt"})
    back = ExcitationStats.load(stats.save(tmp_path / "stats.npz"))
    assert back.blocks == stats.blocks and back.class_names == ["a", "b", "c"] and back.meta == {"checkpoint": "x.ckpt"}
    for b in stats.blocks:
        np.testing.assert_array_equal(back.mean[b], stats.mean[b])
        np.testing.assert_array_equal(back.std(b), stats.std(b))
        np.testing.assert_array_equal(back.high[b], stats.high[b])
    with np.load(tmp_path / "stats.npz") as z:  # readable without this package
        assert set(z.files) >= {"count", "mean/SE_2_1", "std/SE_3_1"}


def test_figures_have_one_panel_per_block_and_a_legend_per_class(tmp_path):
    x, y = dyadic(60, 64, seed=7), torch.arange(60) % 3
    stats = record_excitation(GateNet(64), batches(x, y, 20), 3, class_names=["zero", "one", "two"])
    fig6 = plot_fig6(stats, ["SE_2_1", "SE_3_1"], [0, 2], channels=50)
    panels = [a for a in fig6.axes if a.get_visible()]
    assert [a.get_title() for a in panels] == ["SE_2_1 (64 channels)", "SE_3_1 (64 channels)"]
    assert len(panels[0].lines) == 3 and all(len(line.get_xdata()) == 50 for line in panels[0].lines)
    assert [t.get_text() for t in fig6.legends[0].get_texts()] == ["zero", "two", "all"]
    fig7 = plot_fig7(stats, ["SE_2_1", "SE_3_1"], [0, 2], channels=10)
    assert len(fig7.axes) == 4 and "class two" in fig7.axes[2].get_title()
    assert save(fig6, tmp_path / "f6.png").stat().st_size > 10_000
    assert sample_channels(10, 50).tolist() == list(range(10))
    assert len(set(sample_channels(2048, 50).tolist())) == 50


def test_sweep_rows_name_the_ablated_factor_and_average_arms_over_seeds(tmp_path):
    def run(name, se, seed, top1, shift):
        d = tmp_path / name
        d.mkdir()
        config = {"model": {"arch": "x", "se": se}, "seed": seed, "output_dir": str(tmp_path), "name": None}
        (d / "result.json").write_text(json.dumps({"config": config, "metrics": {"val/top1_best": top1}}))
        if se is not None:
            x, y = dyadic(20, 2, seed=seed) * 0 + shift, torch.arange(20) % 2
            record_excitation(GateNet(2), [(x, y)], 2).save(d / "excitation" / "stats.npz")
        return d

    dirs = [run("a_s0", {"reduction": 16}, 0, 0.5, 0.0), run("a_s1", {"reduction": 16}, 1, 0.7, 0.5),
            run("b_s0", {"reduction": 8}, 0, 0.9, 1.0), run("base_s0", None, 0, 0.4, 0.0)]
    rows, factors = sweep_rows(dirs)
    assert factors == ["model.se.reduction", "seed"]  # output_dir / name never count as factors
    assert len(rows) == 3 * 2 + 1 and rows[-1]["block"] == "" and rows[-1]["val/top1_best"] == 0.4
    table, blocks = arm_pivot(rows, "saturation")
    assert blocks == ["SE_2_1", "SE_3_1"]
    by_arm = {r["arm"]: r for r in table}
    # SE_2_1's gate is the input: all 0 (saturated) in seed 0, all 0.5 (not saturated) in seed 1, all 1 in arm b
    assert by_arm["a"]["seeds"] == 2 and by_arm["a"]["val/top1_best"] == pytest.approx(0.6)
    assert by_arm["a"]["SE_2_1"] == pytest.approx(0.5) and by_arm["b"]["SE_2_1"] == 1.0
    assert by_arm["base"]["SE_2_1"] is None and by_arm["base"]["seeds"] == 1
