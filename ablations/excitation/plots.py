"""The paper's excitation figures (Sec. 7.2): Fig. 6 (per-class mean gates) and Fig. 7 (mean ± std in a class).

Fig. 6: one panel per selected SE block; the mean activation of N uniformly sampled channels for each
selected class, with the mean over all samples as a black dashed line. Fig. 7: one row per class
(the paper shows goldfish and plane), one panel per block, the mean gate with a ±1 std band.
Matplotlib with the Agg backend, so it renders on headless machines.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ablations.excitation.recorder import ExcitationStats
from senet.tree import check_int


def sample_channels(channels: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` channel indices drawn uniformly without replacement (all if ``channels <= n``), sorted."""
    check_int("--channels", n)
    if channels <= n:
        return np.arange(channels)
    return np.sort(np.random.default_rng(seed).choice(channels, size=n, replace=False))


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return (n + cols - 1) // cols, cols


def _channel_axis(ax, idx: np.ndarray) -> None:
    # Channels are plotted at positions 0..n-1 (as in the paper); a few ticks name the real channel ids.
    ticks = np.unique(np.linspace(0, len(idx) - 1, min(len(idx), 6)).round().astype(int))
    ax.set_xticks(ticks, [str(idx[t]) for t in ticks])
    ax.set_xlim(-0.5, len(idx) - 0.5)
    ax.grid(alpha=0.3)


def plot_fig6(stats: ExcitationStats, blocks: Sequence[str], classes: Sequence[int], *, channels: int = 50,
              seed: int = 0, title: str | None = None) -> Figure:
    """Fig. 6: per block, the mean gate of ``channels`` sampled channels per class, plus the all-sample mean."""
    rows, cols = _grid(len(blocks))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    colors = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, block in zip(axes.flat, blocks):
        mean = stats.mean[block]
        idx = sample_channels(mean.shape[1], channels, seed)
        x = np.arange(len(idx))
        for j, k in enumerate(classes):
            ax.plot(x, mean[k, idx], color=colors(j % colors.N), lw=1.2, label=stats.class_names[k])
        ax.plot(x, stats.pooled(block)[0][idx], color="black", ls="--", lw=1.6, label="all")
        ax.set_title(f"{block} ({mean.shape[1]} channels)")
        ax.set_xlabel("channel index (sampled)")
        ax.set_ylabel("mean activation")
        _channel_axis(ax, idx)
    for ax in axes.flat[len(blocks):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), frameon=False, title="class")
    fig.suptitle(title or f"Excitation per class ({stats.num_samples} samples)")
    fig.tight_layout(rect=(0, 0.1 if rows == 1 else 0.06, 1, 1))
    return fig


def plot_fig7(stats: ExcitationStats, blocks: Sequence[str], classes: Sequence[int], *, channels: int = 50,
              seed: int = 0, title: str | None = None) -> Figure:
    """Fig. 7: for each class (rows) and block (columns), the mean gate of sampled channels ± 1 std."""
    fig, axes = plt.subplots(len(classes), len(blocks), figsize=(3.4 * len(blocks), 2.8 * len(classes)),
                             squeeze=False, sharey=True)
    for r, k in enumerate(classes):
        for c, block in enumerate(blocks):
            ax = axes[r, c]
            idx = sample_channels(stats.mean[block].shape[1], channels, seed)
            x = np.arange(len(idx))
            mean, std = stats.mean[block][k, idx], stats.std(block)[k, idx]
            ax.fill_between(x, mean - std, mean + std, color="tab:blue", alpha=0.25, lw=0, label="± 1 std")
            ax.plot(x, mean, color="tab:blue", lw=1.2, label="mean")
            ax.set_title(f"{block}, class {stats.class_names[k]} (n={stats.count[k]})", fontsize=9)
            _channel_axis(ax, idx)
            if r == len(classes) - 1:
                ax.set_xlabel("channel index (sampled)")
            if c == 0:
                ax.set_ylabel("activation")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title or "Excitation within a class: mean ± std over samples")
    fig.tight_layout(rect=(0, 0.07 if len(classes) > 1 else 0.12, 1, 1))
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG and close it (figures are not kept alive in long sweeps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
