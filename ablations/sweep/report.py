"""A study as the paper's tables and plots (docs/DESIGN.md, Sweeps; paper Tables 10-16 layout).

Reads the result rows that every trial keeps in its user attributes (``attrs``; never W&B files), aggregates
them over seeds with ``ablations.reporting.compare`` (arm, top-1/top-5 error mean ± std, params, GMACs, deltas
against the no-SE baseline with 95 % CIs, t-tests across seeds, Holm, verdicts and the seeds 80 % power
needs), says what they show and where they came from (``ablations.reporting.verdicts``), puts the measured cost
beside the GMACs (``ablations.reporting.cost_table``, as the quickstart does), labels each arm by the values of the ablated factors, and writes under
``results/<study>/``: ``report.md`` (one table per factor), ``runs.csv`` (one line per run),
``arms.png``, ``accuracy_vs_gmacs.png`` (one panel per factor, the Pareto front drawn) and Optuna's
own HTML plots (parameter importances, parallel coordinates, Pareto front or optimisation history).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ablations.reporting import compare, cost_table
from ablations.reporting.plot import plot
from ablations.reporting.stats import mean_ci
from ablations.reporting.tables import markdown_table
from ablations.reporting.verdicts import conclusion, provenance_line
from ablations.sweep.attrs import trial_rows
from ablations.sweep.spec import is_se_key
from senet.config import SEConfig
from senet.tree import flatten

# study.enqueue_grid's order, which is what keeps a sweep's measured times comparable between arms.
GRID_ORDER = ("A grid sweep runs every arm's first seed, then every arm's second, and so on, so a change of load "
              "during the sweep reaches all arms alike.")


def study_rows(study: optuna.Study) -> list[dict]:
    """Every run's result row, once: trials that reused another trial's result (``duplicate_of``) are skipped."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if "duplicate_of" in t.user_attrs:
            continue
        rows += trial_rows(t.user_attrs)
    return rows


def _short(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    return {"reduction": "r"}.get(leaf, leaf)


def _fmt(value: Any) -> str:
    if value is None:
        return "all"
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _flat(config: dict) -> dict[str, Any]:
    """``flatten(config)`` with the SE fields a config leaves out at their defaults (``senet.tree.late_field``)
    filled in, so SE's arm of an operator sweep reads ``operator=se``."""
    flat = flatten(config)
    if config["model"]["se"] is not None:
        for f in dataclasses.fields(SEConfig):
            flat.setdefault(f"model.se.{f.name}", f.default)
    return flat


def arm_label(config: dict, factors: list[str]) -> str:
    """``r=4``, ``placement=pre, r=8``, ``eca`` (an operator by its name) or ``no SE``: the arm by its factors' values."""
    flat = _flat(config)
    token = lambda k: _fmt(flat[k]) if k == "model.se.operator" else f"{_short(k)}={_fmt(flat.get(k))}"
    if config["model"]["se"] is None:
        others = [token(k) for k in factors if not is_se_key(k)]
        return "no SE" + (f", {', '.join(others)}" if others else "")
    return ", ".join(token(k) for k in factors) or "SE"


def summaries(rows: list[dict], factors: list[str], min_effect: float | None = None) -> list[compare.ArmSummary]:
    """``compare.aggregate`` with arms labelled by their factor values, the baseline first."""
    arms = compare.aggregate(rows, min_effect)
    first = {compare.arm_key(r["config"]): r["config"] for r in rows}
    out = [dataclasses.replace(a, label=arm_label(first[a.key], factors)) for a in arms]
    return sorted(out, key=lambda a: not a.is_baseline)


def factor_values(rows: list[dict], factor: str) -> dict[str, Any]:
    """arm key -> the arm's value of ``factor`` (``None`` for a baseline's SE factor)."""
    out = {}
    for r in rows:
        flat = _flat(r["config"])
        out[compare.arm_key(r["config"])] = None if r["config"]["model"]["se"] is None and is_se_key(factor) \
            else flat.get(factor)
    return out


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (top-1 error %, GMACs) points that no other point beats in one and matches in the other."""
    front = []
    # Accuracies arrive as float32: equal error counts differ by ~1e-6 %, so errors compare to 1e-4 %.
    points = [(round(e, 4), round(g, 9)) for e, g in points]
    for i, (e, g) in enumerate(points):
        if not any((e2 <= e and g2 <= g) and (e2 < e or g2 < g) for j, (e2, g2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][1])


def plot_accuracy_vs_gmacs(arms: list[compare.ArmSummary], rows: list[dict], factors: list[str],
                           path: Path, title: str = "") -> Path:
    """Top-1 error against GMACs, one panel per factor (colour = the factor's value; bars: 95 % CI of the mean over
    seeds), Pareto front dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in arms if a.seeds]
    points = [(a.top1_err_mean, a.gmacs) for a in arms]
    front = pareto(points)
    fig, axes = plt.subplots(1, len(factors), figsize=(5.2 * len(factors), 4.2), constrained_layout=True,
                             squeeze=False)
    for ax, factor in zip(axes[0], factors):
        values = factor_values(rows, factor)
        levels = list(dict.fromkeys(_fmt(values[a.key]) if not a.is_baseline or not is_se_key(factor) else "no SE"
                                    for a in arms))
        for a in arms:
            level = "no SE" if a.is_baseline and is_se_key(factor) else _fmt(values[a.key])
            color = "#4d4d4d" if level == "no SE" else f"C{levels.index(level) % 10}"
            low, high = mean_ci(a.top1_err)
            yerr = [[0.0], [0.0]] if math.isnan(low) else [[a.top1_err_mean - low], [high - a.top1_err_mean]]
            ax.errorbar(a.gmacs, a.top1_err_mean, yerr=yerr, fmt="s" if a.is_baseline else "o", color=color,
                        capsize=3, label=level)
        ax.plot([points[i][1] for i in front], [points[i][0] for i in front], "k--o", lw=1, alpha=0.6, ms=13,
                mfc="none", label="Pareto front")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, title=f"{_short(factor)} (bars: 95 % CI)",
                  title_fontsize=8)
        ax.set_xlabel("GMACs (multiply-accumulates, paper convention)")
        ax.set_ylabel("validation top-1 error (%)")
        ax.set_title(f"by {factor}", fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def optuna_plots(study: optuna.Study, out: Path, metrics: list[str]) -> list[Path]:
    """Optuna's own plots as HTML (plotly loaded from its CDN to keep the files small); skipped if too few trials."""
    import optuna.visualization as vis

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    plots = {"optuna_parallel_coordinate.html": lambda: vis.plot_parallel_coordinate(
        study, target=target, target_name=metrics[0])}
    if len({tuple(sorted(t.params.items())) for t in done}) > 1 and len(done) >= 2:
        # With an explicit target the evaluator assumes "lower is better": flip a maximised first objective.
        sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        importance_target = (lambda t: sign * t.values[0]) if multi else None
        plots["optuna_importance.html"] = lambda: vis.plot_param_importances(
            study, target=importance_target, target_name=metrics[0])
    if multi:
        plots["optuna_pareto_front.html"] = lambda: vis.plot_pareto_front(study, target_names=metrics)
    else:
        plots["optuna_history.html"] = lambda: vis.plot_optimization_history(study, target_name=metrics[0])
    written = []
    for name, make in plots.items():
        if not done:
            break
        try:
            fig = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. importances of a constant space
            print(f"report: skipped {name}: {exc}")
            continue
        fig.write_html(out / name, include_plotlyjs="cdn", full_html=True)
        written.append(out / name)
    return written


def _counts(study: optuna.Study) -> str:
    from ablations.sweep.study import progress

    return ", ".join(f"{v} {k}" for k, v in progress(study).items() if v)


def write_report(study: optuna.Study, out: Path, *, command: str = "", html: bool = True, plots: bool = True,
                 min_effect: float | None = None) -> Path:
    """Write the tables and plots of ``study`` under ``out``; returns the path of ``report.md``.

    Args:
        study: the study (its trials' user attributes hold the result rows).
        out: the folder (``results/<study>``).
        command: the command line that made the report, named in its first line.
        html: write Optuna's HTML plots.
        plots: write the PNG plots (off: tables only, e.g. to check a committed report).
        min_effect: the Δ top-1 error (pp) the seeds-needed column refers to; ``None``: each arm's own Δ.
    """
    spec = study.user_attrs.get("spec") or {}
    rows = study_rows(study)
    if not rows:
        raise ValueError(f"study {study.study_name!r} has no finished runs yet ({_counts(study)}); nothing to report")
    factors = list(spec.get("space") or sorted({k for t in study.trials for k in t.params} - {"se", "seed"}))
    out.mkdir(parents=True, exist_ok=True)
    arms = summaries(rows, factors, min_effect)
    compare.write_csv(rows, out / "runs.csv")
    if plots:
        plot(arms, out / "arms.png", title=study.study_name)
        plot_accuracy_vs_gmacs(arms, rows, factors, out / "accuracy_vs_gmacs.png", title=study.study_name)
    metrics = [o["metric"] for o in spec.get("objectives", [])] or ["objective"]
    written = optuna_plots(study, out, metrics) if html else []
    command = command or f"senet-ablate report {study.study_name} --storage URL"
    ran = [a for a in arms if a.seeds]  # arms with no complete run have no error to show
    data = str(flatten(rows[0]["config"]).get("data.name", ""))
    body = ["## All arms", "", compare.format_markdown(ran), "## What the numbers show", "",
            conclusion(ran, data, min_effect), "", compare.STATS_NOTE, "", provenance_line(rows), ""]
    if cost_table.has_cost(ran):
        body += ["## Cost", "", cost_table.format_markdown(ran), cost_table.NOTE + " " + GRID_ORDER, ""]
    body += _detail_sections(study, arms, rows, factors, metrics)
    files = ["runs.csv", "arms.png", "accuracy_vs_gmacs.png", *sorted(p.name for p in written)]
    body += ["## Files", "", *[f"- [{f}]({f})" for f in files], "", "![accuracy against GMACs](accuracy_vs_gmacs.png)",
             "", "![arms](arms.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(_head(study, spec, rows, command) + body))
    return path


def _head(study: optuna.Study, spec: dict, rows: list[dict], command: str) -> list[str]:
    """The report's title and provenance: the command, the trials, the spec and the code that ran."""
    from ablations.training.provenance import code_of

    commits = sorted({str(code_of(r) or "unknown") for r in rows})
    head = [f"<!-- generated by: {command} (do not edit) -->",
            f"# {study.study_name}: {spec.get('description', '')}".rstrip(": "), ""]
    if spec.get("paper"):
        head.append(f"The layout of the paper's {spec['paper']} (Hu et al., Squeeze-and-Excitation Networks).")
    head += [
        f"Made by `{command}` from the Optuna study "
        f"(trials: {_counts(study)}); spec `{spec.get('source', '?')}`"
        + (f" (variant `{spec['variant']}`)" if spec.get("variant") else "") + f"; code {', '.join(commits)}.",
        ("Errors are 1 - accuracy of the last epoch on the validation split, in %, mean ± sample std over seeds; "
         "GMACs are multiply-accumulates per image (the paper's \"GFLOPs\")."), "",
    ]
    return head


def _detail_sections(study: optuna.Study, arms: list[compare.ArmSummary], rows: list[dict], factors: list[str],
                     metrics: list[str]) -> list[str]:
    """Runs that did not complete, the per-factor tables and the Pareto fronts."""
    ran = [a for a in arms if a.seeds]
    body: list[str] = []
    unfinished = [r for r in rows if r["status"] != "complete"]
    if unfinished:
        cells = [[arm_label(r["config"], factors), str(r["seed"]), r["status"], str(r["epochs"]),
                  (r.get("reason") or "").replace("|", "/")] for r in unfinished]
        body += ["## Runs that did not complete", "",
                 markdown_table(["arm", "seed", "status", "epochs", "reason"], cells).rstrip("\n"), ""]
    if len(factors) > 1:
        for factor in factors:
            body += [f"## By {factor}", "", _factor_table(arms, rows, factor)]
    front = [ran[i] for i in pareto([(a.top1_err_mean, a.gmacs) for a in ran])]
    body += ["## Pareto front (top-1 error against GMACs)", "",
             ", ".join(f"{a.label} ({a.top1_err_mean:.2f} %, {a.gmacs:.4f} GMACs)" for a in front), ""]
    if len(study.directions) > 1:
        body += ["## Optuna's Pareto front (the study's objectives)", ""]
        body += [f"- trial {t.number}: " + ", ".join(f"{n} = {v:.4g}" for n, v in zip(metrics, t.values))
                 + f" ({', '.join(f'{k}={v}' for k, v in t.params.items())})" for t in study.best_trials]
        body.append("")
    return body


def _pm(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def _factor_table(arms: list[compare.ArmSummary], rows: list[dict], factor: str) -> str:
    """Arms pooled by one factor's value (over the other factors and the seeds): a marginal view."""
    values = factor_values(rows, factor)
    groups: dict[str, list[compare.ArmSummary]] = {}
    for a in arms:
        level = "no SE (baseline)" if a.is_baseline and is_se_key(factor) else _fmt(values[a.key])
        groups.setdefault(level, []).append(a)
    cells = []
    for level, group in groups.items():
        top1 = [e for a in group for e in a.top1_err]
        top5 = [e for a in group for e in a.top5_err]
        cells.append([level, str(len(group)), str(len(top1)), _pm(top1), _pm(top5),
                      f"{sum(a.params for a in group) / len(group):,.0f}", f"{sum(a.gmacs for a in group) / len(group):.4f}"])
    return markdown_table([_short(factor), "arms", "runs", "top-1 err (%)", "top-5 err (%)", "params (mean)",
                           "GMACs (mean)"], cells)
