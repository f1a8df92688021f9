"""The quickstart ablation: a no-SE baseline against three SE variants on the embedded digits (paper Sec. 6 in small).

Arms of pre-activation ResNet-20 (the CIFAR net of paper Table 4): no SE, standard SE with r = 16,
r = 4 (Table 10's direction) and the SE-PRE placement (Fig. 5, Table 14). Digits are served at 16 x 16
(they are 8 x 8 originals) so that every arm trains in seconds on two CPU cores; the result is a
table of top-1 error, params and GMACs with deltas to the baseline and mean ± std over seeds.
Every run uses one torch thread (``train.threads=1``: float results change with the thread count), so
the numbers do not depend on how many runs go at a time; speed comes from one process per core.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ablations.config import ExperimentConfig
from ablations.experiment import resolve_base
from ablations.reporting import compare, cost_table
from ablations.training import provenance
from senet.tree import check_int, layer

#: The arms: (label, dotted overrides on top of the baseline). ``model.se`` set = the registry's SE defaults.
ARMS: tuple[tuple[str, dict], ...] = (
    ("no SE", {}),
    ("SE r=16", {"model.se.reduction": 16}),
    ("SE r=4", {"model.se.reduction": 4}),
    ("SE-PRE r=16", {"model.se.placement": "pre"}),
)


#: How each data set is served, for the table's header (the validation split is what the errors are measured on).
DATA_NOTES = {
    "digits": ("scikit-learn's digits", "each seed its own stratified 80/20 split"),
    "fashion_mnist": ("Fashion-MNIST", ("60 000 training images; the official 10 000 test images as validation, "
                                        "the same for every seed")),
}


#: torch threads per run, whatever ``--workers`` is (small nets gain little from more, and results would change).
THREADS = 1


@dataclass(frozen=True)
class QuickstartConfig:
    """What the quickstart runs and where it writes.

    Attributes:
        seeds: seeds per arm (each seed also draws its own stratified train/val split of the digits).
        epochs: epochs per run (cosine schedule of the ``quick`` recipe).
        image_size: side of the upsampled digits.
        output_dir: run folders (checkpoints, result.json, W&B offline runs).
        results_dir: the table, the per-run CSV, the summary JSON and the plot. Under ``runs/`` by default, which git
            ignores, so a quickstart changes no tracked file; the committed ``results/quickstart/`` is written only
            when named (``make quickstart-results``).
        wandb_mode: ``offline`` (default), ``online`` (with a login) or ``disabled``.
        data: the data set (``digits``, embedded; ``fashion_mnist`` for a real benchmark, see ``DATA_NOTES``).
        overrides: dotted keys applied to every arm (``{"train.limit_train_batches": 0.25}``).
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 6
    image_size: int = 16
    output_dir: str = "runs/quickstart"
    results_dir: str = "runs/quickstart/report"
    wandb_mode: str = "offline"
    arms: tuple[tuple[str, dict], ...] = field(default=ARMS)
    data: str = "digits"
    overrides: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds={self.seeds!r} is not allowed; give distinct seeds, e.g. 0 1")
        check_int("epochs", self.epochs)


def explicit_keys(q: QuickstartConfig) -> dict:
    """The baseline arm as the dotted keys ``senet-ablate train`` would take: ResNet-20 without SE on ``q.data``,
    the ``quick`` recipe, ``q.epochs`` epochs, then ``q.overrides`` (resolved as train resolves them)."""
    return layer({"model": "resnet20_cifar", "data.name": q.data, "data.image_size": q.image_size,
                  "output_dir": q.output_dir, "train.recipe": "quick", "train.epochs": q.epochs,
                  "train.threads": THREADS, "wandb.mode": q.wandb_mode,
                  "wandb.group": f"quickstart_resnet20_cifar_{q.data}", "wandb.job_type": "quickstart"},
                 dict(q.overrides))


def experiments(q: QuickstartConfig) -> list[tuple[str, ExperimentConfig]]:
    """Every (arm label, config) pair, seeds outer, arms inner; configs are validated here.

    Seed-major, as a sweep's grid: a load change on the machine, or a worker process's first run, then
    reaches every arm alike, so the measured costs (medians over seeds) stay comparable between arms.
    """
    explicit = explicit_keys(q)
    return [(label, resolve_base(layer(explicit, changes, {"seed": seed})))
            for seed in q.seeds for label, changes in q.arms]


def run_quickstart(q: QuickstartConfig, runner: Callable | None = None, workers: int = 1,
                   on_result: Callable[[int, int, str, dict], None] | None = None) -> list[dict]:
    """Run every arm and seed; returns the result rows (``Result.to_dict()``) in ``experiments`` order.

    Args:
        q: what to run.
        runner: ``run_config`` by default (injectable for tests; runs in this process).
        workers: runs at a time, each in its own process with ``THREADS`` torch threads: small nets scale badly
            over threads (OpenMP barriers per op), and threads that spin at barriers collapse on a shared
            machine, while one process per core does neither. The results do not depend on it.
        on_result: called after each run with ``(index, total, label, row)`` (progress lines).
    """
    todo = experiments(q)
    rows: list[dict | None] = [None] * len(todo)

    def done(i: int, row: dict) -> None:
        row["arm_label"] = todo[i][0]
        rows[i] = row
        if on_result is not None:
            on_result(sum(r is not None for r in rows), len(todo), todo[i][0], row)

    if runner is not None or workers <= 1:
        run = runner or _run_one
        for i, (_, cfg) in enumerate(todo):
            done(i, _as_row(run(cfg, progress_bar=False, quiet=True)))
        return rows
    # spawn, not fork: a forked child inherits the parent's OpenMP state, which can deadlock.
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=quiet_lightning) as pool:
        futures = {pool.submit(_run_one, cfg): i for i, (_, cfg) in enumerate(todo)}
        for future in as_completed(futures):
            done(futures[future], future.result())
    return rows


def _run_one(cfg: ExperimentConfig, **kw) -> dict:
    from ablations.training.run import run_config

    return run_config(cfg, progress_bar=False, quiet=True).to_dict()


def _as_row(result) -> dict:
    return result if isinstance(result, dict) else result.to_dict()


def quiet_lightning() -> None:
    """Silence Lightning's per-run banners and version-compatibility warnings (many short runs)."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (first: importing it resets its loggers' levels)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def write_outputs(q: QuickstartConfig, rows: Sequence[dict], wall_time_s: float, command: str,
                  commit: str | None, min_effect: float | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``runs.csv``, ``summary.json`` and ``plot.png`` into ``q.results_dir``.

    ``min_effect`` (pp of top-1 error) is the Δ the seeds-needed column refers to; ``None``: each arm's own Δ.
    The verdict and provenance lines under the table are computed (``ablations.reporting.verdicts``); W&B gets the
    comparison as a run of job type ``compare`` (``ablations.reporting.wandb_log``) unless W&B is disabled.
    """
    from ablations.reporting.plot import plot
    from ablations.reporting.verdicts import conclusion, provenance_line
    from ablations.reporting.wandb_log import log_comparison

    out = Path(q.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = relabel(compare.aggregate(rows, min_effect), rows)
    n_cfg = rows[0]["config"] if rows else {}
    data, split = DATA_NOTES.get(q.data, (q.data, "its own split"))
    verdict, origin = conclusion(summaries, data, min_effect), provenance_line(rows)
    run_time = sum(r.get("wall_time_s") or 0.0 for r in rows)
    code = f"commit {commit}" if commit else f"senet-ablations {provenance.package_version() or 'unknown'}, no commit"
    made = f"generated by: {command} ({code}, {time.strftime('%Y-%m-%d')}; do not edit)"
    header = (f"<!-- {made} -->\n# Quickstart: SE variants against the no-SE baseline on {data}\n\n"
              f"Made by `{command}`. Pre-activation ResNet-20 on {data} at {q.image_size}x{q.image_size}, "
              f"{q.epochs} epochs of the `quick` recipe (SGD, lr {n_cfg.get('train', {}).get('lr')}, cosine), "
              f"seeds {', '.join(map(str, q.seeds))} ({split})"
              + "".join(f", {k}={v}" for k, v in q.overrides) + ". "
              f"Top-1/top-5 error of the final epoch on the validation split, mean ± sample std over seeds; "
              f"params and GMACs (multiply-accumulates, paper convention) at {q.image_size}x{q.image_size}. "
              f"Training took {run_time:.0f} s summed over runs; this command {wall_time_s:.0f} s.\n\n")
    words = f"\n## What the numbers show\n\n{verdict}\n\n{compare.STATS_NOTE}\n\n{origin}\n"
    if cost_table.has_cost(summaries):
        words += f"\n## Cost\n\n{cost_table.format_markdown(summaries)}\n{cost_table.NOTE}\n"
    paths = {
        "table": out / "table.md",
        "csv": compare.write_csv(rows, out / "runs.csv", comment=made),
        "summary": out / "summary.json",
        "plot": plot(summaries, out / "plot.png", title=f"SE ablation quickstart: ResNet-20 on {q.data} "
                     f"{q.image_size}px, {q.epochs} epochs, {len(q.seeds)} seeds", footer=made),
    }
    paths["table"].write_text(header + compare.format_markdown(summaries) + words)
    paths["summary"].write_text(json.dumps({
        "generated_by": command, "git_commit": commit, "wall_time_s": round(wall_time_s, 1),
        "conclusion": verdict, "provenance": origin, "min_effect": min_effect,
        "env": next((r["env"] for r in rows if r.get("env")), None),
        "arms": [{"label": s.label, "seeds": list(s.seeds), "top1_err": list(s.top1_err),
                  "top1_err_mean": s.top1_err_mean, "top1_err_std": s.top1_err_std, "d_top1_err": s.d_top1_err,
                  "params": s.params, "d_params": s.d_params, "gmacs": s.gmacs, "d_gmacs": s.d_gmacs,
                  "failed": s.failed, "verdict": s.verdict, "img_per_s": s.img_per_s,
                  "step_time_ms": s.step_time_ms, "peak_mem_mb": s.peak_mem_mb,
                  "top1_test": dataclasses.asdict(s.top1_test) if s.top1_test else None,
                  "top5_test": dataclasses.asdict(s.top5_test) if s.top5_test else None} for s in summaries],
    }, indent=2) + "\n")
    base = next((r["config"] for r in rows if r["config"]["model"]["se"] is None), n_cfg)
    if rows:
        log_comparison(ExperimentConfig.from_dict(base), summaries, Path(q.output_dir), verdict, origin)
    return paths


def relabel(summaries: list[compare.ArmSummary], rows: Sequence[dict]) -> list[compare.ArmSummary]:
    """Prefix the mechanical arm labels with the quickstart's readable ones (``SE r=4: se_resnet20_cifar-r4``)."""
    readable = {compare.arm_key(r["config"]): r.get("arm_label") for r in rows}
    return [dataclasses.replace(s, label=f"{readable[s.key]}: {s.label}" if readable.get(s.key) else s.label)
            for s in summaries]
