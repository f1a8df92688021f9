"""Arms against their no-SE baseline: aggregate result rows over seeds, test the deltas, tables (paper Tables 10-16 layout).

Pure functions over ``Result.to_dict()`` rows (the ``result.json`` files), so the quickstart, sweep reports
and notebooks build the same table. An arm is a config up to its seed; its baseline is the same config with
``model.se=None`` (docs/DESIGN.md, Configuration), found among the rows.
Errors are ``1 - accuracy`` of the final epoch, in percent; ± is the sample standard deviation over seeds.
Each Δ carries a 95 % CI, a t-test across seeds (paired by seed where possible), Holm's correction over the
arms of one baseline, a verdict, and the seeds 80 % power would need (``ablations.reporting.stats``).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ablations.config import ExperimentConfig
from ablations.naming import arm_name, default_baseline, model_name, se_tokens
from ablations.reporting import stats
from ablations.reporting.stats import NONE, Test, verdict, with_holm
from ablations.reporting.tables import markdown_table, text_table
from ablations.training import provenance
from ablations.training.metrics import VAL_TOP1, VAL_TOP5


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
    # Measured cost (``Result.cost``, median over the arm's complete runs; None where no run measured it).
    img_per_s: float | None = None
    step_time_ms: float | None = None
    peak_mem_mb: float | None = None
    d_top1_err: float | None = None  # percentage points (arm mean - baseline mean)
    d_params: int | None = None
    d_gmacs: float | None = None
    top1_test: Test | None = None  # against the baseline; None for a baseline or an arm without one
    top5_test: Test | None = None

    @property
    def verdict(self) -> str:
        """``better``/``worse`` (top-1 error, Holm-adjusted p < 0.05), ``n.s.``, or ``–`` with nothing to test."""
        return "–" if self.top1_test is None or self.top1_test.test == NONE else verdict(self.top1_test)

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


def _err(accuracy: float) -> float:
    """Error in %, to 1e-4 pp: accuracies arrive as float32, so equal error counts differ by ~1e-6 pp, and a
    paired test would read that float noise as a (tiny, certain) spread."""
    return round(100.0 * (1.0 - accuracy), 4)


_COST_FIELDS = (("img_per_s", "train_img_per_s"), ("step_time_ms", "step_time_ms"), ("peak_mem_mb", "peak_mem_mb"))


def _median_cost(rows: Sequence[dict], key: str) -> float | None:
    """The median of ``cost[key]`` over ``rows`` (medians: one run slowed by a busy machine does not move it)."""
    values = [r["cost"][key] for r in rows if (r.get("cost") or {}).get(key) is not None]
    return statistics.median(values) if values else None


def arm_key(config: dict) -> str:
    """Identity of an arm (``ExperimentConfig.arm_hash``), from a result row's config."""
    return ExperimentConfig.from_dict(config).arm_hash()


def baseline_key(config: dict) -> str:
    """The arm key of this config's no-SE baseline."""
    return default_baseline(ExperimentConfig.from_dict(config)).arm_hash()


def short_label(config: dict) -> str:
    """``se_resnet20_cifar-r4``: the model and its SE tokens (``naming``), without data and seed."""
    cfg = ExperimentConfig.from_dict(config)
    return "-".join([model_name(cfg), *se_tokens(cfg.model.se)])


def arm_labels(configs: Iterable[dict]) -> dict[str, str]:
    """arm key -> label, for the arms of ``configs`` (result rows' configs, any seeds, in report order): the
    ``short_label``, unless two arms share one; those differ elsewhere and are named ``naming.arm_name`` against
    the first arm's baseline."""
    first: dict[str, dict] = {}
    for config in configs:
        first.setdefault(arm_key(config), config)
    labels = {k: short_label(c) for k, c in first.items()}
    clash = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
    reference = default_baseline(ExperimentConfig.from_dict(next(iter(first.values())))) if first else None
    return {k: lab if lab not in clash else arm_name(ExperimentConfig.from_dict(first[k]), reference)
            for k, lab in labels.items()}


def aggregate(rows: Iterable[dict], min_effect: float | None = None) -> list[ArmSummary]:
    """Group result rows by arm (in first-seen order), average over seeds, add deltas to each arm's baseline.

    ``min_effect`` (percentage points) is the Δ the seeds-needed count refers to; ``None``: each arm's own Δ.

    Only ``complete`` rows enter the means; the others are counted in ``failed``. Labels are
    ``short_label`` unless two arms share one, then ``naming.arm_name`` against the first arm's baseline.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(arm_key(row["config"]), []).append(row)
    labels = arm_labels(rs[0]["config"] for rs in groups.values())
    summaries = []
    for key, rs in groups.items():
        done = sorted((r for r in rs if r["status"] == "complete"), key=lambda r: r["seed"])
        config = rs[0]["config"]
        summaries.append(ArmSummary(
            label=labels[key], key=key, baseline_key=baseline_key(config), is_baseline=config["model"]["se"] is None,
            seeds=tuple(r["seed"] for r in done),
            top1_err=tuple(_err(r["metrics"][VAL_TOP1]) for r in done),
            top5_err=tuple(_err(r["metrics"][VAL_TOP5]) for r in done if VAL_TOP5 in r["metrics"]),
            params=int(rs[0]["params"]), gmacs=float(rs[0]["gmacs"]),
            wall_time_s=_mean([r["wall_time_s"] for r in done]), failed=len(rs) - len(done),
            **{field: _median_cost(done, key) for field, key in _COST_FIELDS},
        ))
    return with_deltas(summaries, min_effect)


def with_deltas(summaries: Sequence[ArmSummary], min_effect: float | None = None) -> list[ArmSummary]:
    """Fill the deltas and tests from each arm's baseline, where the baseline was run.

    Holm's correction runs over the arms of one baseline: those are the comparisons a reader makes at once.
    """
    by_key = {s.key: s for s in summaries}
    tests: dict[str, tuple[Test, Test | None]] = {}
    for s in summaries:
        base = by_key.get(s.baseline_key)
        if base is not None and base.seeds and not s.is_baseline:
            top5 = stats.compare(s.top5_err, base.top5_err, s.seeds, base.seeds) \
                if len(s.top5_err) == s.n and len(base.top5_err) == base.n else None
            tests[s.key] = (stats.compare(s.top1_err, base.top1_err, s.seeds, base.seeds), top5)
    for baseline in {s.baseline_key for s in summaries}:  # Holm within each baseline's family of arms
        keys = [s.key for s in summaries if s.key in tests and s.baseline_key == baseline]
        top1 = with_holm([tests[k][0] for k in keys], min_effect)
        five = [k for k in keys if tests[k][1] is not None]
        top5 = dict(zip(five, with_holm([tests[k][1] for k in five])))  # min_effect is a top-1 Δ
        tests.update({k: (t1, top5.get(k)) for k, t1 in zip(keys, top1)})
    out = []
    for s in summaries:
        base = by_key.get(s.baseline_key)
        if base is None or not base.seeds:
            out.append(s)
            continue
        t1, t5 = tests.get(s.key, (None, None))
        out.append(dataclasses.replace(s, d_top1_err=s.top1_err_mean - base.top1_err_mean, d_params=s.params - base.params,
                                       d_gmacs=s.gmacs - base.gmacs, top1_test=t1, top5_test=t5))
    return out


# ---- presentation ---- #

COLUMNS = ("arm", "seeds", "top-1 err (%)", "Δ top-1 (pp) [95 % CI]", "test", "p", "p Holm", "verdict",
           "seeds for 80 % power", "top-5 err (%)", "Δ top-5 (pp) [95 % CI], p Holm", "params", "Δ params",
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


def _p(p: float) -> str:
    return "–" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}")


def _signed(x: float) -> str:
    return f"{round(x, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00" for a float32 difference of -1e-6


def _ci(t: Test | None) -> str:
    """``-0.46 [-1.21, +0.29]``: Δ and its 95 % CI; the Δ alone when no test was possible."""
    if t is None:
        return "–"
    return _signed(t.delta) + ("" if math.isnan(t.ci_low) else f" [{_signed(t.ci_low)}, {_signed(t.ci_high)}]")


def _needed(t: Test | None) -> str:
    """``34 (for 0.30 pp)``: seeds per arm for 80 % power at the effect named in parentheses."""
    if t is None or t.test == NONE or math.isnan(t.effect):
        return "–"
    n = "> 10,000" if t.seeds_needed is None else f"{t.seeds_needed:,}"
    return f"{n} (for {t.effect:.2f} pp)" if t.effect >= 0.005 else "– (Δ ≈ 0)"


def table_rows(summaries: Sequence[ArmSummary]) -> list[list[str]]:
    """The table as strings, one list per arm, in ``COLUMNS`` order."""
    rows = []
    for s in summaries:
        seeds = f"{s.n}" + (f" (+{s.failed} failed)" if s.failed else "")
        t1, t5 = s.top1_test, s.top5_test
        rows.append([
            s.label + (" (baseline)" if s.is_baseline else ""), seeds, _pm(s.top1_err_mean, s.top1_err_std),
            "–" if s.is_baseline else _ci(t1) if t1 else ("–" if s.d_top1_err is None else f"{s.d_top1_err:+.2f}"),
            t1.test if t1 else "–", _p(t1.p) if t1 else "–", _p(t1.p_holm) if t1 else "–", s.verdict, _needed(t1),
            _pm(s.top5_err_mean, s.top5_err_std), "–" if t5 is None else f"{_ci(t5)}, {_p(t5.p_holm)}",
            f"{s.params:,}", "–" if s.is_baseline else _delta(s.params, s.d_params, ","),
            f"{s.gmacs:.4f}", "–" if s.is_baseline else _delta(s.gmacs, s.d_gmacs, ".5f"),
            f"{s.wall_time_s:.1f}",
        ])
    return rows


def format_markdown(summaries: Sequence[ArmSummary]) -> str:
    """A GitHub-markdown table of ``summaries``."""
    return markdown_table(COLUMNS, table_rows(summaries))


def format_text(summaries: Sequence[ArmSummary]) -> str:
    """A fixed-width table for the terminal."""
    return text_table(COLUMNS, table_rows(summaries))


STATS_NOTE = ("Δ: arm mean - baseline mean in percentage points, with its 95 % confidence interval; test: a paired "
              "t-test on the per-seed differences when both arms ran the same seeds, Welch's t-test otherwise "
              "(scipy.stats); p Holm: Holm-adjusted over the arms compared with one baseline; verdict: `better` / "
              "`worse` where p Holm < 0.05, else `n.s.` (not distinguishable from seed noise); seeds for 80 % "
              "power: seeds per arm a two-sided test at 0.05 needs to detect the Δ in parentheses, from the "
              "observed spread of the per-seed differences (of the two arms, for Welch; noncentral t).")


def write_csv(rows: Iterable[dict], path: str | Path, comment: str | None = None) -> Path:
    """One line per run (not per arm): arm (labelled as ``aggregate`` labels it), seed, status, errors, params,
    GMACs, wall time, config hash, commit, env.

    ``comment`` becomes a first ``# ...`` line (provenance: the command that made the file).
    """
    path, rows = Path(path), list(rows)
    labels = arm_labels(r["config"] for r in rows)
    fields = ["arm", "name", "seed", "status", "top1_err", "top5_err", "params", "gmacs", "epochs", "wall_time_s",
              "config_hash", "git_commit", "reason", "env"]
    with path.open("w", newline="") as fh:
        if comment:
            fh.write(f"# {comment}\n")
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            m = r.get("metrics", {})
            writer.writerow({
                "arm": labels[arm_key(r["config"])], "name": r.get("name", ""), "seed": r["seed"],
                "status": r["status"],
                "top1_err": f"{100 * (1 - m[VAL_TOP1]):.3f}" if VAL_TOP1 in m else "",
                "top5_err": f"{100 * (1 - m[VAL_TOP5]):.3f}" if VAL_TOP5 in m else "",
                "params": r["params"], "gmacs": f"{r['gmacs']:.6f}", "epochs": r["epochs"],
                "wall_time_s": r["wall_time_s"], "config_hash": r["config_hash"], "git_commit": r["git_commit"],
                "reason": r.get("reason") or "", "env": provenance.describe(r["env"]) if r.get("env") else "",
            })
    return path
