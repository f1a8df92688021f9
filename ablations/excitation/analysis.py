"""The excitation analysis of trained runs, end to end (paper Sec. 7.2, Figs. 6-7).

One run: load ``<run>/checkpoints/last.ckpt``, rebuild its data from the checkpoint's config (with
``Options.data`` over it), record the per-channel gates of every SE block in one pass (an operator without
one, ``model.se.operator=simam`` say, is refused in one line before any data loads), and write
``<run>/excitation/{fig6.png, fig7.png, stats.npz, summary.csv}`` (also logged to W&B). A sweep: analyse
every run folder under a root that has a checkpoint and no statistics yet, then tabulate specificity and
saturation per block across runs. ``senet-ablate excitation`` parses its flags into ``Options`` and calls these.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ablations.excitation.summary import SUMMARY_FIELDS, arm_pivot, format_table, sweep_rows, write_csv

OUT = "excitation"


@dataclass(frozen=True)
class Options:
    """What to record and plot (the command's flags; see ``senet-ablate excitation --help``)."""

    split: str = "val"
    data: dict = field(default_factory=dict)  # dotted data.* overrides of the checkpoint's config
    classes: list[str] | None = None
    fig7_classes: list[str] | None = None
    blocks: list[str] | None = None
    channels: int = 50
    max_samples: int | None = None
    device: str = "cpu"
    wandb_mode: str | None = None
    out: str | None = None  # one run: the output folder; a sweep: the summary CSV


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint file, run folder) for a ``.ckpt`` path or a run folder."""
    path = Path(path)
    if path.is_dir():
        ckpt, run_dir = path / "checkpoints" / "last.ckpt", path
    else:
        ckpt = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found; give a .ckpt file or a run folder holding "
                                "checkpoints/last.ckpt (what `senet-ablate train` writes)")
    return ckpt, run_dir


def describe_checkpoint(ckpt: Path, run_dir: Path) -> str:
    """Which weights are analysed: the file, its epoch, and the run's status (an unfinished run says so)."""
    from ablations.training.checkpoints import resume_point

    text = f"{ckpt} (after epoch {resume_point(ckpt)['epoch'] + 1}"
    result = run_dir / "result.json"
    if result.is_file():
        row = json.loads(result.read_text())
        text += f" of {row['config']['train']['epochs']}; run {row['status']}"
    return text + ")"


def load_module(ckpt: Path):
    """The ``SEClassifier`` of a checkpoint; a truncated or foreign file is one line naming it, not a traceback."""
    from ablations.training.module import SEClassifier
    from senet import safe_load

    try:
        with safe_load.safe_loading():  # tensors and plain data only: a checkpoint never runs code
            return SEClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch.load and Lightning raise anything from EOFError to KeyError)
        refused = safe_load.refusal(ckpt, exc)
        if refused is not None:
            raise refused from None
        reason = (str(exc).splitlines() or [""])[0][:120]
        raise ValueError(f"checkpoint {ckpt} cannot be read ({type(exc).__name__}: {reason}); it is truncated or "
                         "not a checkpoint of senet-ablate train; give a complete .ckpt or its run folder") from None


def _classes(stats, classes: list[str] | None, fig7_classes: list[str] | None) -> tuple[list[int], list[int]]:
    """Class indices for Fig. 6 (default: the first four seen, as the paper's four) and Fig. 7 (first two)."""
    if classes and classes != ["all"]:
        chosen = [stats.class_index(c) for c in classes]
    else:
        seen = [i for i, n in enumerate(stats.count) if n > 0]
        chosen = seen if classes == ["all"] else seen[:4]
    fig7 = [stats.class_index(c) for c in fig7_classes] if fig7_classes else chosen[:2]
    return chosen, fig7


def _blocks(names: list[str], wanted: list[str] | None) -> list[str]:
    from ablations.excitation import default_blocks

    if not wanted:
        return default_blocks(names)
    if wanted == ["all"]:
        return names
    unknown = [b for b in wanted if b not in names]
    if unknown:
        raise ValueError(f"--blocks: unknown block {unknown[0]!r}; this model has: {', '.join(names)}")
    return [b for b in names if b in wanted]


def analyze(checkpoint: str | Path, opts: Options) -> tuple[Path, list[dict]]:
    """Record, plot and save one run's excitation; returns the output folder and the summary rows."""
    from ablations.data import build_datamodule
    from ablations.excitation import class_index, plots, record_excitation, se_blocks
    from ablations.excitation.blocks import channel_gates
    from ablations.excitation.summary import summarize

    ckpt, run_dir = resolve_checkpoint(checkpoint)
    module = load_module(ckpt)
    names = list(se_blocks(module.model))
    if not names:
        raise ValueError(f"{ckpt} is a no-SE baseline (model.se=null): there is no excitation to record")
    channel_gates(module.model, source=f"checkpoint {ckpt}")  # NoChannelGate, before any data loads
    print(f"checkpoint: {describe_checkpoint(ckpt, run_dir)}", file=sys.stderr)
    cfg = module.cfg.override(opts.data)
    blocks = _blocks(names, opts.blocks)  # plotted; every block is recorded for the summary table
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    dm.setup("fit" if opts.split == "train" else "validate")
    if dm.num_classes != cfg.model.num_classes:
        raise ValueError(f"data {cfg.data.name!r} has {dm.num_classes} classes but the model was trained for "
                         f"{cfg.model.num_classes}; check --set data.*")
    for c in [*(opts.classes or []), *(opts.fig7_classes or [])]:  # fail before the pass, not after it
        if c != "all":
            class_index(c, list(dm.class_names))
    loader = dm.train_dataloader() if opts.split == "train" else dm.val_dataloader()
    t0 = time.perf_counter()
    stats = record_excitation(
        module.model, loader, dm.num_classes, class_names=list(dm.class_names), device=opts.device,
        max_samples=opts.max_samples,
        meta={"checkpoint": str(ckpt), "split": opts.split, "data": cfg.data.name, "run": run_dir.name})
    record_s = time.perf_counter() - t0
    classes, fig7_classes = _classes(stats, opts.classes, opts.fig7_classes)
    out = Path(opts.out) if opts.out else run_dir / OUT
    title = f"{run_dir.name}: {opts.split} split, {stats.num_samples} samples"
    fig6 = plots.save(plots.plot_fig6(stats, blocks, classes, channels=opts.channels,
                                      title=f"Excitation per class (Fig. 6) - {title}"), out / "fig6.png")
    fig7 = plots.save(plots.plot_fig7(stats, blocks, fig7_classes, channels=opts.channels,
                                      title=f"Excitation within a class, mean ± std (Fig. 7) - {title}"),
                      out / "fig7.png")
    stats.save(out / "stats.npz")
    rows = summarize(stats)
    write_csv(rows, out / "summary.csv", SUMMARY_FIELDS)
    print(f"{run_dir.name}: recorded {len(stats.blocks)} SE blocks over {stats.num_samples} {opts.split} samples "
          f"in {record_s:.1f}s")
    print(format_table(rows, ("block", "channels", "mean_gate", "specificity", "eta2", "saturation_low",
                              "saturation_high")))
    from ablations.excitation.wandb_log import log_excitation

    log_excitation(cfg, run_dir, rows, {"fig6": fig6, "fig7": fig7}, mode=opts.wandb_mode)
    print(f"wrote {fig6}, {fig7}, {out / 'stats.npz'}, {out / 'summary.csv'}")
    return out, rows


def _is_baseline(run: Path) -> bool:
    result = run / "result.json"
    return result.is_file() and json.loads(result.read_text()).get("config", {}).get("model", {}).get("se") is None


def sweep(root: str | Path, opts: Options, recompute: bool = False) -> Path:
    """Analyse every run under ``root`` (skipping those already done unless ``recompute``) and tabulate them."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--sweep-dir {root} is not a folder; give the folder that holds the run folders")
    runs = sorted({c.parent.parent for c in root.rglob("checkpoints/last.ckpt")})
    if not runs:
        raise FileNotFoundError(f"no run folders under {root}: expected <run>/checkpoints/last.ckpt")
    from ablations.excitation.blocks import NoChannelGate

    per_run = replace(opts, out=None)  # opts.out names the sweep table here
    for run in runs:
        if _is_baseline(run):
            print(f"{run.name}: no SE blocks (the no-SE baseline); listed with its accuracy only")
        elif recompute or not (run / OUT / "stats.npz").is_file():
            try:
                analyze(run, per_run)
            except NoChannelGate as exc:  # an arm of an operator sweep (simam, coord): the others still compare
                print(f"{run.name}: {exc}; listed with its accuracy only")
    rows, factors = sweep_rows(runs)
    if not any(r["block"] for r in rows):
        raise ValueError(f"no run under {root} has SE blocks to analyse")
    out = Path(opts.out) if opts.out else root / "excitation_summary.csv"
    write_csv(rows, out, ["run", "arm", *factors, "val/top1_best", *SUMMARY_FIELDS])
    print(f"\nablated factors: {', '.join(factors) or 'none'}")
    for metric, what in (("eta2", "class-specificity (eta2: between-class share of the gate variance)"),
                         ("saturation", "saturation (share of gates < 0.05 or > 0.95)")):
        table, blocks = arm_pivot(rows, metric)
        print(f"\n{metric} per block, mean over seeds: {what}")
        print(format_table(table, ["arm", "seeds", "val/top1_best", *blocks]))
    print(f"\nwrote {out}")
    return out
