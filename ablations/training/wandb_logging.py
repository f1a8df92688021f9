"""Weights & Biases conventions for every run (docs/DESIGN.md, W&B dashboards): config keys, names, groups, offline default.

One W&B run per experiment, written inside its run folder (``<run_dir>/wandb/offline-run-*``), so nothing
litters the repository and ``wandb sync <run_dir>/wandb/offline-run-*`` uploads it later. The config is the
flattened ``ExperimentConfig`` (dotted keys such as ``model.se.reduction``, and ``model.se.operator`` with the
operator's own knobs on every SE run), so a dashboard groups by an ablated factor without hand work; the run
name, group and job type come from ``ablations.naming``.
"""
from __future__ import annotations

import netrc
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ablations.config import ExperimentConfig
from ablations.experiment import Experiment
from ablations.naming import group, job_type
from ablations.training import provenance
from senet.config import OPERATOR_KNOBS

_ID_FILE = "wandb_id.txt"


def wandb_config(exp: Experiment) -> dict[str, Any]:
    """The W&B config: the flattened experiment, plus ``model.se.operator`` and that operator's knobs on every SE
    run even at their defaults (which ``to_dict`` leaves out), so SE and its successors group and filter by them,
    and ``arm_hash``, the arm's identity in sweeps and reports (``Experiment.arm_hash``)."""
    flat = {**exp.fields, "arm_hash": exp.arm_hash}
    se = exp.config.model.se
    if se is not None:
        for knob in ("operator", *OPERATOR_KNOBS[se.operator]):
            flat.setdefault(f"model.se.{knob}", getattr(se, knob))
    return flat


def logged_in() -> bool:
    """Whether W&B credentials exist (``WANDB_API_KEY`` or a netrc entry), without prompting or going online.

    ``wandb login`` stores the key as a netrc entry for the API host; reading it with the standard library's
    ``netrc`` (honouring ``$NETRC``, as wandb does) avoids wandb's private modules, which move between releases.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):  # no file, unreadable or malformed: no login
        return False
    return bool(entry and entry[2])


def resolve_mode(cfg: ExperimentConfig) -> str:
    """``online`` only with a login; otherwise ``offline``; ``disabled`` stays disabled."""
    if cfg.wandb.mode == "online" and not logged_in():
        return "offline"
    return cfg.wandb.mode


def stored_run_id(run_dir: Path) -> str | None:
    """The W&B run id this run folder recorded (``None``: none yet), so a resumed run continues its W&B run."""
    path = run_dir / _ID_FILE
    return path.read_text().strip() if path.exists() else None


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def save_run_id(run_dir: Path, rid: str) -> None:
    """Keep ``rid`` in the run folder (global rank 0 only)."""
    (run_dir / _ID_FILE).write_text(rid + "\n")


def init_run(cfg: ExperimentConfig, directory: Path, **kwargs: Any) -> Any | None:
    """``wandb.init`` with the project's conventions: ``cfg``'s project, entity, group and mode (online only with
    a login), files under ``directory/wandb``, quiet. ``None`` when W&B is disabled. For the runs made beside
    training (the comparison, the excitation analysis); training's own run is Lightning's (``make_logger``)."""
    mode = resolve_mode(cfg)
    if mode == "disabled":
        return None
    import wandb

    Path(directory).mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, group=group(cfg), dir=str(directory),
                      mode=mode, settings=wandb.Settings(silent=True, console="off"), **kwargs)


def make_logger(exp: Experiment, run_dir: Path, rid: str) -> Any | None:
    """A Lightning ``WandbLogger`` for ``exp`` writing into ``run_dir``, or ``None`` if W&B is disabled.

    Args:
        exp: the resolved experiment; its dotted fields are the W&B config (``wandb_config``), its name the run's.
        run_dir: the run folder; W&B writes ``run_dir/wandb``.
        rid: the W&B run id (``stored_run_id(run_dir)``, else ``new_run_id()``).
    """
    cfg = exp.config
    mode = resolve_mode(cfg)
    if mode == "disabled":
        return None
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(
        name=exp.name,
        save_dir=str(run_dir),
        id=rid,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=group(cfg),
        job_type=job_type(cfg),
        # env.*: the software and hardware behind the digits (provenance.collect), beside the experiment's keys
        config={**wandb_config(exp), **{f"env.{k}": v for k, v in provenance.collect().items()}},
        mode=mode,  # passed to wandb.init; Lightning's offline=True would set WANDB_MODE for the whole process
        log_model=False,
        settings=wandb.Settings(silent=True, console="off"),
    )
    # Lightning passes anonymous=None, which wandb >= 0.22 answers with a deprecation warning on every run.
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def finish(logger: Any | None, summary: dict[str, Any], exit_code: int,
           env: dict[str, Any] | None = None) -> str | None:
    """Write ``summary`` into the W&B run and finish it with ``exit_code`` (non-zero: W&B shows the run as not
    finished; an interrupted run passes ``128 + signal``); returns its local folder. ``env`` is the run's
    ``result.json`` environment: it replaces the config's ``env.*``, collected before the Trainer existed (so
    without its devices, precision and deterministic mode)."""
    if logger is None or getattr(logger, "_experiment", None) is None:
        return None
    run = logger.experiment
    try:
        if env:
            run.config.update({f"env.{k}": v for k, v in env.items()}, allow_val_change=True)
        run.summary.update(summary)
        return str(Path(run.dir).parent) if getattr(run, "dir", None) else None
    finally:
        run.finish(exit_code=exit_code)
