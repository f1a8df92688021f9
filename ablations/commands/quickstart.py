"""``senet-ablate quickstart``: the README's first job; no-SE baseline vs SE variants on the embedded digits.

Trains every arm and seed of ``ablations.quickstart`` (one single-threaded run per core at a time), prints the
comparison table and writes ``table.md``, ``runs.csv``, ``summary.json`` and ``plot.png`` to ``--results-dir``
(default ``<output-dir>/report``, i.e. ``runs/quickstart/report/``); each run keeps its folder, result row and W&B
offline run under ``--output-dir`` (``runs/quickstart/``). Both defaults lie under ``runs/``, which git ignores, so
the command changes no tracked file; the committed ``results/quickstart/`` is rewritten only when named
(``--results-dir results/quickstart``, ``make quickstart-results``).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import time

# Two seeds of two short epochs instead of three of six: the same table, sooner.
EXAMPLES = ("senet-ablate quickstart --seeds 0 1 --epochs 2",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ablations.quickstart import QuickstartConfig

    q = QuickstartConfig()  # the defaults live there; the flags only name them
    parser.add_argument("--seeds", type=int, nargs="+", default=list(q.seeds), metavar="SEED", help="seeds per arm")
    parser.add_argument("--epochs", type=int, default=q.epochs, help="epochs per run")
    parser.add_argument("--image-size", type=int, default=q.image_size, help="side of the upsampled digits")
    parser.add_argument("--output-dir", default=q.output_dir, help="run folders")
    parser.add_argument("--results-dir", "--out", dest="results_dir", default=None, metavar="DIR",
                        help="table, CSV, summary and plot (default: OUTPUT_DIR/report, ignored by git; the committed "
                             "ones: --results-dir results/quickstart)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="runs at a time, one process and one torch thread each; the results do not depend "
                             "on it (default: one per core)")
    parser.add_argument("--data", default=q.data, choices=("digits", "fashion_mnist"),
                        help="data set (digits: embedded; fashion_mnist: apt-get install dataset-fashion-mnist)")
    parser.add_argument("--arms", nargs="+", metavar="ARM", default=None,
                        help="the arms to run, by label (default: all: " + ", ".join(repr(a) for a, _ in _arms()) + ")")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a dotted key for every arm, e.g. train.limit_train_batches=0.25 (repeatable)")
    parser.add_argument("--min-effect", type=float, metavar="PP", default=None,
                        help="the Δ top-1 error (percentage points) that the seeds-for-80%%-power column refers to "
                             "(default: each arm's observed Δ)")
    parser.add_argument("--wandb", default=q.wandb_mode, choices=("offline", "online", "disabled"),
                        help="W&B mode (online needs a login)")


def _arms() -> tuple:
    from ablations.quickstart import ARMS

    return ARMS


def _pick_arms(labels: list[str] | None) -> tuple:
    """The named arms of ``ARMS`` in their order; the baseline always runs (every delta needs it)."""
    arms = _arms()
    if labels is None:
        return arms
    unknown = [lab for lab in labels if lab not in dict(arms)]
    if unknown:
        raise ValueError(f"--arms {unknown[0]!r} is not allowed; choose from " + ", ".join(repr(a) for a, _ in arms))
    return tuple(a for a in arms if a[0] in labels or not a[1])


def _overrides(items: list[str]) -> tuple:
    """``["train.limit_train_batches=0.25"]`` -> ``(("train.limit_train_batches", 0.25),)``; values are YAML."""
    from ablations.overrides import parse_assignments, text_fields

    return tuple(parse_assignments(items, "--set", "train.limit_train_batches=0.25", text_fields()).items())


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run: ``senet-ablate quickstart`` plus any non-default option."""
    defaults = vars(_defaults())
    parts = ["senet-ablate", "quickstart"]
    for key, value in vars(args).items():
        if key == "sets":  # --set is repeated, once per KEY=VALUE
            parts += [part for item in value for part in ("--set", item)]
        elif key in defaults and value != defaults[key]:
            values = value if isinstance(value, list) else [value]
            parts += [f"--{key.replace('_', '-')}", *map(str, values)]
    return " ".join(shlex.quote(p) for p in parts)


def _defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])


def run(args: argparse.Namespace) -> int:
    from ablations.quickstart import QuickstartConfig, quiet_lightning, relabel, run_quickstart, write_outputs
    from ablations.reporting import compare
    from ablations.training.run import git_commit
    from senet.tree import check_int

    q = QuickstartConfig(seeds=tuple(args.seeds), epochs=args.epochs, image_size=args.image_size,
                         output_dir=args.output_dir, results_dir=args.results_dir or f"{args.output_dir}/report",
                         wandb_mode=args.wandb,
                         data=args.data, arms=_pick_arms(args.arms), overrides=_overrides(args.sets))
    check_int("--workers", args.workers)
    quiet_lightning()  # eight short runs: Lightning's per-run banners would drown the progress lines

    def progress(i: int, total: int, label: str, row: dict) -> None:
        top1 = row["metrics"].get("val/top1")
        score = f"val top-1 {100 * top1:.2f} %" if top1 is not None else row.get("reason") or ""
        print(f"[{i}/{total}] {label:<12} seed {row['seed']}: {row['status']:<8} {score}  ({row['wall_time_s']:.1f} s)"
              f"  {row['run_dir']}", flush=True)

    started = time.perf_counter()
    print(f"quickstart: {len(q.arms)} arms x {len(q.seeds)} seeds, ResNet-20 on {q.data} {q.image_size}px, "
          f"{q.epochs} epochs each, {args.workers} at a time", flush=True)
    rows = run_quickstart(q, workers=args.workers, on_result=progress)
    wall = time.perf_counter() - started
    paths = write_outputs(q, rows, wall, _command(args), git_commit(), min_effect=args.min_effect)
    print()
    print(compare.format_text(relabel(compare.aggregate(rows, args.min_effect), rows)))
    print(json.loads(paths["summary"].read_text())["conclusion"] + "\n")
    print(f"wall time {wall:.0f} s; wrote " + ", ".join(str(p) for p in paths.values()))
    if args.results_dir is None:
        print(f"report in {q.results_dir}/ (the committed results/quickstart/ is left as it is; "
              "`make quickstart-results` rewrites it)")
    if q.wandb_mode != "disabled":
        print(f"W&B runs: {q.output_dir}/*/wandb/offline-run-*  (upload: wandb sync <folder>)")
    return 0 if all(r["status"] == "complete" for r in rows) else 1
