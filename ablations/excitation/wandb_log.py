"""Excitation results in W&B, next to the run's accuracy curves (paper Sec. 7.2; docs/DESIGN.md, W&B dashboards).

The figures go in as images (``excitation/fig6``, ``excitation/fig7``), the per-block summary as a table
(``excitation/summary``) and as flat summary metrics (``excitation/<block>/eta2`` ...), plus block-free
aggregates (``excitation/last_stage/saturation`` ...) that a sweep-wide scatter or parallel-coordinates
panel can use whatever the network. The W&B run is the training run itself when its folder recorded an
id (``wandb_id.txt``): the figures land beside its curves. Otherwise a new run of job type
``excitation`` joins the same group.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ablations.config import ExperimentConfig
from ablations.excitation.blocks import stage_of

JOB_TYPE = "excitation"
PER_BLOCK = ("eta2", "specificity", "saturation", "saturation_low", "saturation_high", "mean_gate")


def summary_metrics(rows: list[dict]) -> dict[str, float]:
    """Flat W&B summary keys for per-block summary rows (``ablations.excitation.summary.summarize``).

    Per block: ``excitation/<block>/<field>`` for ``PER_BLOCK``. Over blocks: ``excitation/eta2_mean`` and
    ``excitation/saturation_mean``; for blocks named by stage (``SE_4_6``, ``SE_4e``) also ``excitation/first_stage/*`` and
    ``excitation/last_stage/*`` (means over the recorded blocks of the first and the last stage).
    """
    out: dict[str, float] = {}
    for r in rows:
        out.update({f"excitation/{r['block']}/{k}": float(r[k]) for k in PER_BLOCK})
    if not rows:
        return out
    mean = lambda rs, k: float(sum(r[k] for r in rs) / len(rs))
    out["excitation/eta2_mean"] = mean(rows, "eta2")
    out["excitation/saturation_mean"] = mean(rows, "saturation")
    stages = [stage_of(r["block"]) for r in rows]
    if all(s is not None for s in stages):
        for label, stage in (("first_stage", min(stages)), ("last_stage", max(stages))):
            rs = [r for r, s in zip(rows, stages) if s == stage]
            out[f"excitation/{label}/eta2"] = mean(rs, "eta2")
            out[f"excitation/{label}/saturation"] = mean(rs, "saturation")
    return out


def init_kwargs(cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """``wandb.init``'s config, name, job type (and id) for the excitation of the run in ``run_dir``: the training
    run's own id, name and job type when its folder recorded an id, else a new run named after it. A run's W&B
    name is its folder's name (``training.run``), whatever baseline or hash suffix named that folder."""
    from ablations.naming import job_type
    from senet.tree import flatten

    id_file = Path(run_dir) / "wandb_id.txt"
    name = Path(run_dir).name
    kwargs: dict[str, Any] = {"config": flatten(cfg.to_dict())}
    if id_file.is_file():  # resume the training run: same id, name, group and job type
        kwargs.update(id=id_file.read_text().strip(), resume="allow", name=name, job_type=job_type(cfg))
    else:
        kwargs.update(name=f"{name}-{JOB_TYPE}", job_type=JOB_TYPE)
    return kwargs


def log_excitation(cfg: ExperimentConfig, run_dir: Path, rows: list[dict], images: dict[str, Path],
                   mode: str | None = None) -> str | None:
    """Log figures, table and summary metrics to W&B; returns the W&B run id, or None when disabled.

    Args:
        cfg: the run's experiment config (project, entity, group, name).
        run_dir: the run folder; W&B writes ``run_dir/wandb`` and reads ``run_dir/wandb_id.txt``.
        rows: per-block summary rows.
        images: name -> PNG path, logged as ``excitation/<name>``.
        mode: ``offline`` / ``online`` / ``disabled``; ``None`` takes ``cfg.wandb.mode``. Online without a
            login falls back to offline, as training does.
    """
    from ablations.training.wandb_logging import init_run

    cfg = cfg.override({"wandb.mode": mode}) if mode else cfg
    run = init_run(cfg, Path(run_dir), **init_kwargs(cfg, Path(run_dir)))
    if run is None:
        return None
    import wandb

    try:
        columns = list(rows[0]) if rows else []
        media = {f"excitation/{k}": wandb.Image(str(p), caption=Path(p).stem) for k, p in images.items()}
        run.log({**media, "excitation/summary": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
        # Also in the summary: an offline resume does not know the training run's last step, so `wandb sync`
        # may drop these history rows as "step went backwards"; summary values always survive.
        run.summary.update({**summary_metrics(rows), **media})
        return run.id
    finally:
        run.finish()
