"""A comparison of arms in W&B: one run of job type ``compare`` beside the training runs of its group.

Δ, confidence interval, p-values, verdict and the seeds needed are properties of an arm against its
baseline, not of any one training run, so they go into a run of their own in the same group: a table
(``compare/table``) and flat summary keys ``compare/<arm>/<field>`` that a dashboard can pick up.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from ablations.config import ExperimentConfig
from ablations.reporting.compare import COLUMNS, ArmSummary, table_rows

JOB_TYPE = "compare"


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_")


def summary_metrics(summaries: Sequence[ArmSummary]) -> dict[str, float | str | int | None]:
    """``compare/<arm>/{d_top1_err, ci_low, ci_high, p, p_holm, verdict, test, seeds_needed, n}`` per tested arm."""
    out: dict[str, float | str | int | None] = {}
    for s in summaries:
        t = s.top1_test
        if t is None:
            continue
        key = f"compare/{_slug(s.label)}"
        nan = lambda v: None if isinstance(v, float) and math.isnan(v) else v
        out.update({f"{key}/d_top1_err": nan(t.delta), f"{key}/ci_low": nan(t.ci_low), f"{key}/ci_high": nan(t.ci_high),
                    f"{key}/p": nan(t.p), f"{key}/p_holm": nan(t.p_holm), f"{key}/verdict": s.verdict,
                    f"{key}/test": t.test, f"{key}/seeds_needed": t.seeds_needed, f"{key}/n": t.n})
    return out


def log_comparison(cfg: ExperimentConfig, summaries: Sequence[ArmSummary], directory: Path,
                   conclusion: str = "", provenance: str = "") -> str | None:
    """Log the table and the per-arm tests as a ``compare`` run in ``cfg``'s group; its id, or None if disabled.

    Args:
        cfg: the baseline's experiment config (project, entity, group, mode).
        summaries: ``compare.aggregate`` output.
        directory: where W&B writes its files (``<directory>/wandb``).
        conclusion, provenance: the plain-words lines (``ablations.reporting.verdicts``), kept in the summary.
    """
    from ablations.naming import group
    from ablations.training.wandb_logging import init_run

    run = init_run(cfg, directory, job_type=JOB_TYPE, name=f"{group(cfg)}-{JOB_TYPE}")
    if run is None:
        return None
    import wandb

    try:
        table = wandb.Table(columns=list(COLUMNS), data=table_rows(summaries))
        run.log({"compare/table": table})
        run.summary.update({**summary_metrics(summaries), "compare/conclusion": conclusion,
                            "compare/provenance": provenance})
        return run.id
    finally:
        run.finish()
