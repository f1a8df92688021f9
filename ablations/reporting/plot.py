"""The comparison of arms as a figure: error per arm, Δ against the baseline, error against size (paper Tables 10-16).

Error bars are 95 % confidence intervals (t distribution over seeds), never standard deviations, so a bar
that crosses the baseline's line (or zero, in the Δ panel) reads as "not told apart from seed noise".
Seeds are drawn as dots.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ablations.reporting.compare import ArmSummary
from ablations.reporting.stats import mean_ci


def _wrap(label: str) -> str:
    """Tick labels of at most ~16 characters a line (three panels side by side): ``SE r=4\nse_resnet20_cifar\n-r4``."""
    head, _, tail = label.rpartition(": ")
    lines = [head] if head else []
    lines += tail.replace("-", "\n-", 1).splitlines() if len(tail) > 16 else [tail]
    return "\n".join(lines)


def _yerr(mean: float, ci: tuple[float, float]) -> list[list[float]]:
    """matplotlib's asymmetric error bars from an interval; zero without one (a single seed)."""
    if math.isnan(ci[0]):
        return [[0.0], [0.0]]
    return [[mean - ci[0]], [ci[1] - mean]]


def plot(summaries: Sequence[ArmSummary], path: str | Path, title: str = "", footer: str = "") -> Path:
    """Three panels: top-1 error per arm (mean, 95 % CI, seeds as dots), Δ against the baseline (95 % CI,
    verdict), and top-1 error against parameters (mean, 95 % CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [s for s in summaries if s.seeds]
    colors = ["#4d4d4d" if s.is_baseline else f"C{i}" for i, s in enumerate(arms)]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    ticks = [_wrap(s.label) for s in arms]
    for i, (s, c) in enumerate(zip(arms, colors)):
        ax1.bar(i, s.top1_err_mean, color=c, alpha=0.35)
        ax1.errorbar(i, s.top1_err_mean, yerr=_yerr(s.top1_err_mean, mean_ci(s.top1_err)), color="k", capsize=4,
                     label="mean, 95 % CI" if i == 0 else None)
        ax1.scatter([i] * s.n, s.top1_err, color=c, zorder=3, s=18, label="seeds" if i == 0 else None)
    for s in arms:
        if s.is_baseline:
            ax1.axhline(s.top1_err_mean, color="#4d4d4d", ls="--", lw=1, label=f"{s.label} (mean)")
    ax1.set_xticks(range(len(arms)), ticks, fontsize=7.5)
    ax1.legend(fontsize=8, loc="upper left")
    ax1.set_ylabel("validation top-1 error (%)")
    ax1.set_title("top-1 error per arm (bar: mean; error bar: 95 % CI; dots: seeds)", fontsize=9.5)

    tested = [(i, s) for i, s in enumerate(arms) if s.top1_test is not None]
    for i, s in tested:
        t = s.top1_test
        ax2.errorbar(i, t.delta, yerr=_yerr(t.delta, (t.ci_low, t.ci_high)), fmt="o", color=colors[i], capsize=4)
        ax2.annotate(s.verdict, (i, t.delta), textcoords="offset points", xytext=(8, 0), fontsize=8, va="center")
    ax2.errorbar([], [], yerr=[], fmt="o", color="k", capsize=4, label="Δ (arm - baseline), 95 % CI")  # legend only
    ax2.axhline(0, color="#4d4d4d", ls="--", lw=1, label="baseline")
    ax2.set_xticks(range(len(arms)), ticks, fontsize=7.5)
    ax2.set_ylabel("Δ top-1 error vs baseline (pp)")
    ax2.set_title("Δ against the baseline (95 % CI; verdict after Holm)", fontsize=9.5)
    ax2.legend(fontsize=8, loc="best")
    ax2.grid(alpha=0.3, axis="y")

    for s, c in zip(arms, colors):
        ax3.errorbar(s.params / 1e6, s.top1_err_mean, yerr=_yerr(s.top1_err_mean, mean_ci(s.top1_err)),
                     fmt="s" if s.is_baseline else "o", color=c, capsize=4, label=s.label)
    ax3.set_xlabel("parameters (millions)")
    ax3.set_ylabel("validation top-1 error (%)")
    ax3.set_title("error against model size (mean, 95 % CI)", fontsize=9.5)
    ax3.legend(fontsize=7.5, loc="best")
    ax3.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    if footer:  # a figure-level x label, so that constrained layout makes room for it
        fig.supxlabel(footer, x=0.995, ha="right", fontsize=7, color="#666666")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
