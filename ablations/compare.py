"""Arms against their no-SE baseline: aggregate result rows over seeds, deltas, table and plot (paper Tables 10-16 layout).

Pure functions over ``Result.to_dict()`` rows (the ``result.json`` files), so the quickstart, sweep reports
and notebooks build the same table. An arm is a config up to its seed; its baseline is the same config with
``model.se=None`` (DESIGN: "the baseline is the same model code with SE off"), found among the rows.
Errors are ``1 - accuracy`` of the final epoch, in percent; ± is the sample standard deviation over seeds.
"""
from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ablations.config import ExperimentConfig
from ablations.metrics import VAL_TOP1, VAL_TOP5
from ablations.naming import arm_name, default_baseline, model_name, se_tokens
from senet.config import config_hash


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its seeds. Errors in %, deltas against the arm's baseline (``None`` without one)."""

    label: str
    key: str
    baseline_key: str
    is_baseline: bool
    seeds: tuple[int, ...]
    top1_err: tuple[float, ...]  # per seed, %
    top5_err: tuple[float, ...]
    params: int
    gmacs: float
    wall_time_s: float  # mean per run
    failed: int = 0
    d_top1_err: float | None = None  # percentage points (arm mean - baseline mean)
    d_params: int | None = None
    d_gmacs: float | None = None

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def top1_err_mean(self) -> float:
        return _mean(self.top1_err)

    @property
    def top1_err_std(self) -> float:
        return _std(self.top1_err)

    @property
    def top5_err_mean(self) -> float:
        return _mean(self.top5_err)

    @property
    def top5_err_std(self) -> float:
        return _std(self.top5_err)


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _std(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else math.nan


def _unseeded_hash(cfg: ExperimentConfig) -> str:
    semantic = cfg.semantic()
    semantic.pop("seed")
    return config_hash(semantic)


def arm_key(config: dict) -> str:
    """Identity of an arm: the hash of its semantic config without the seed."""
    return _unseeded_hash(ExperimentConfig.from_dict(config))


def baseline_key(config: dict) -> str:
    """The arm key of this config's no-SE baseline."""
    return _unseeded_hash(default_baseline(ExperimentConfig.from_dict(config)))


def short_label(config: dict) -> str:
    """``se_resnet20_cifar-r4``: the model and its SE tokens (``naming``), without data and seed."""
    cfg = ExperimentConfig.from_dict(config)
    return "-".join([model_name(cfg), *se_tokens(cfg.model.se)])


def aggregate(rows: Iterable[dict]) -> list[ArmSummary]:
    """Group result rows by arm (in first-seen order), average over seeds, add deltas to each arm's baseline.

    Only ``complete`` rows enter the means; the others are counted in ``failed``. Labels are
    ``short_label`` unless two arms share one, then ``naming.arm_name`` against the first arm's baseline.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(arm_key(row["config"]), []).append(row)
    labels = {k: short_label(rs[0]["config"]) for k, rs in groups.items()}
    clash = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    # Arms that share a model differ elsewhere: name them by their diff to the first arm's baseline.
    reference = default_baseline(ExperimentConfig.from_dict(next(iter(groups.values()))[0]["config"])) if groups else None
    summaries = []
    for key, rs in groups.items():
        done = sorted((r for r in rs if r["status"] == "complete"), key=lambda r: r["seed"])
        config = rs[0]["config"]
        label = labels[key] if labels[key] not in clash else arm_name(ExperimentConfig.from_dict(config), reference)
        summaries.append(ArmSummary(
            label=label, key=key, baseline_key=baseline_key(config), is_baseline=config["model"]["se"] is None,
            seeds=tuple(r["seed"] for r in done),
            top1_err=tuple(100.0 * (1.0 - r["metrics"][VAL_TOP1]) for r in done),
            top5_err=tuple(100.0 * (1.0 - r["metrics"][VAL_TOP5]) for r in done if VAL_TOP5 in r["metrics"]),
            params=int(rs[0]["params"]), gmacs=float(rs[0]["gmacs"]),
            wall_time_s=_mean([r["wall_time_s"] for r in done]), failed=len(rs) - len(done),
        ))
    return with_deltas(summaries)


def with_deltas(summaries: Sequence[ArmSummary]) -> list[ArmSummary]:
    """Fill ``d_top1_err``, ``d_params``, ``d_gmacs`` from each arm's baseline, where the baseline was run."""
    by_key = {s.key: s for s in summaries}
    out = []
    for s in summaries:
        base = by_key.get(s.baseline_key)
        if base is None or not base.seeds:
            out.append(s)
            continue
        values = asdict(s)
        values.update(d_top1_err=s.top1_err_mean - base.top1_err_mean, d_params=s.params - base.params,
                      d_gmacs=s.gmacs - base.gmacs)
        values["seeds"], values["top1_err"], values["top5_err"] = s.seeds, s.top1_err, s.top5_err
        out.append(ArmSummary(**values))
    return out


# ---- presentation ---- #

COLUMNS = ("arm", "seeds", "top-1 err (%)", "Δ top-1 (pp)", "top-5 err (%)", "params", "Δ params",
           "GMACs", "Δ GMACs", "s / run")


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if not math.isnan(std) else f"{mean:.2f}"


def _delta(value: float, delta: float | None, fmt: str) -> str:
    """``+1,234 (+0.5 %)``: the change against the baseline, absolute and relative to the baseline's value."""
    if delta is None:
        return "–"
    base = value - delta
    return f"{delta:+{fmt}} ({100.0 * delta / base if base else 0.0:+.1f} %)"


def table_rows(summaries: Sequence[ArmSummary]) -> list[list[str]]:
    """The table as strings, one list per arm, in ``COLUMNS`` order."""
    rows = []
    for s in summaries:
        seeds = f"{s.n}" + (f" (+{s.failed} failed)" if s.failed else "")
        rows.append([
            s.label + (" (baseline)" if s.is_baseline else ""), seeds, _pm(s.top1_err_mean, s.top1_err_std),
            "–" if s.d_top1_err is None or s.is_baseline else f"{s.d_top1_err:+.2f}",
            _pm(s.top5_err_mean, s.top5_err_std), f"{s.params:,}",
            "–" if s.is_baseline else _delta(s.params, s.d_params, ","),
            f"{s.gmacs:.4f}", "–" if s.is_baseline else _delta(s.gmacs, s.d_gmacs, ".5f"),
            f"{s.wall_time_s:.1f}",
        ])
    return rows


def format_markdown(summaries: Sequence[ArmSummary]) -> str:
    """A GitHub-markdown table of ``summaries``."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(summaries)]
    return "\n".join(lines) + "\n"


def format_text(summaries: Sequence[ArmSummary]) -> str:
    """A fixed-width table for the terminal."""
    rows = [list(COLUMNS)] + table_rows(summaries)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def write_csv(rows: Iterable[dict], path: str | Path, comment: str | None = None) -> Path:
    """One line per run (not per arm): arm, seed, status, errors, params, GMACs, wall time, config hash, commit.

    ``comment`` becomes a first ``# ...`` line (provenance: the command that made the file).
    """
    path = Path(path)
    fields = ["arm", "name", "seed", "status", "top1_err", "top5_err", "params", "gmacs", "epochs", "wall_time_s",
              "config_hash", "git_commit", "reason"]
    with path.open("w", newline="") as fh:
        if comment:
            fh.write(f"# {comment}\n")
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            m = r.get("metrics", {})
            writer.writerow({
                "arm": short_label(r["config"]), "name": r.get("name", ""), "seed": r["seed"], "status": r["status"],
                "top1_err": f"{100 * (1 - m[VAL_TOP1]):.3f}" if VAL_TOP1 in m else "",
                "top5_err": f"{100 * (1 - m[VAL_TOP5]):.3f}" if VAL_TOP5 in m else "",
                "params": r["params"], "gmacs": f"{r['gmacs']:.6f}", "epochs": r["epochs"],
                "wall_time_s": r["wall_time_s"], "config_hash": r["config_hash"], "git_commit": r["git_commit"],
                "reason": r.get("reason") or "",
            })
    return path


def _wrap(label: str) -> str:
    """Tick labels of at most ~20 characters a line: ``SE r=4\nse_resnet20_cifar\n-r4``."""
    head, _, tail = label.rpartition(": ")
    lines = [head] if head else []
    lines += tail.replace("-", "\n-", 1).splitlines() if len(tail) > 20 else [tail]
    return "\n".join(lines)


def plot(summaries: Sequence[ArmSummary], path: str | Path, title: str = "", footer: str = "") -> Path:
    """Two panels: top-1 error per arm (mean ± std, seeds as dots) and top-1 error against parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [s for s in summaries if s.seeds]
    colors = ["#4d4d4d" if s.is_baseline else f"C{i}" for i, s in enumerate(arms)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    x = range(len(arms))
    ax1.bar(x, [s.top1_err_mean for s in arms], color=colors, alpha=0.35,
            yerr=[0 if math.isnan(s.top1_err_std) else s.top1_err_std for s in arms], capsize=4)
    for i, s in enumerate(arms):
        ax1.scatter([i] * s.n, s.top1_err, color=colors[i], zorder=3, s=18, label=None)
    ax1.set_xticks(list(x), [_wrap(s.label) for s in arms], fontsize=7.5)
    for s in arms:
        if s.is_baseline:
            ax1.axhline(s.top1_err_mean, color="#4d4d4d", ls="--", lw=1, label=f"{s.label} (mean)")
    if any(s.is_baseline for s in arms):
        ax1.legend(fontsize=8, loc="upper left")
    ax1.set_ylabel("validation top-1 error (%)")
    ax1.set_title("top-1 error per arm (bar: mean ± std; dots: seeds)", fontsize=10)
    for s, c in zip(arms, colors):
        ax2.errorbar(s.params / 1e6, s.top1_err_mean, yerr=0 if math.isnan(s.top1_err_std) else s.top1_err_std,
                     fmt="s" if s.is_baseline else "o", color=c, capsize=4, label=s.label)
    ax2.set_xlabel("parameters (millions)")
    ax2.set_ylabel("validation top-1 error (%)")
    ax2.set_title("error against model size", fontsize=10)
    ax2.legend(fontsize=8, loc="best")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    if footer:  # a figure-level x label, so that constrained layout makes room for it
        fig.supxlabel(footer, x=0.995, ha="right", fontsize=7, color="#666666")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
