"""``senet-ablate excitation``: what the excitation of a trained model learns (paper Sec. 7.2, Figs. 6-7).

Parses the flags into ``ablations.excitation.analysis.Options`` and runs one checkpoint or a sweep folder
(``--sweep-dir``); the analysis itself is ``ablations.excitation.analysis``.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ablations.excitation.analysis import Options


# A run folder of the quickstart (senet-ablate quickstart), whose default arms train on the embedded digits.
EXAMPLES = ("senet-ablate excitation runs/quickstart/se_resnet20_cifar_digits_s0 --classes 0 3 7 --wandb disabled",)
# The data keys take --set, the spelling of train and every other subcommand (train's --data is a dataset name);
# --data KEY=VALUE is accepted with one line naming --set.
DEPRECATED_DATA = "excitation: --data KEY=VALUE is deprecated; use --set data.KEY=VALUE"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a run's checkpoint (.ckpt) or run folder (uses checkpoints/last.ckpt)")
    p.add_argument("--sweep-dir", metavar="DIR", help="analyse every run under DIR and write DIR/excitation_summary.csv "
                   "(default: none, analyse CHECKPOINT)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a data.* key of the checkpoint's config, e.g. --set data.root=/data/digits "
                        "(repeatable; the model and training keys are the checkpoint's)")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--split", default="val", choices=("val", "train"),
                   help="which split to run over (train goes through the training loader, augmentation included)")
    p.add_argument("--classes", nargs="+", metavar="C",
                   help="classes for the figures, by name or index, or 'all' (default: the first four)")
    p.add_argument("--fig7-classes", nargs="+", metavar="C", help="classes of Fig. 7 (default: the first two of --classes)")
    p.add_argument("--blocks", nargs="+", metavar="B",
                   help="SE blocks to plot (SE_4_6 ...), or 'all' (default: the last block of each stage and every "
                        "block of the last stage, as the paper's Fig. 6); every block is recorded")
    p.add_argument("--channels", type=int, default=50, help="channels sampled uniformly per block")
    p.add_argument("--max-samples", type=int, help="stop after this many samples (default: the whole split)")
    p.add_argument("--batch-size", type=int,
                   help="override data.batch_size for the pass (default: the checkpoint's data.batch_size)")
    p.add_argument("--device", default="cpu", help="torch device for the pass")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is faster on a busy machine)")
    p.add_argument("--out", help="output folder (default: <run>/excitation; with --sweep-dir, the summary CSV path)")
    p.add_argument("--wandb", "--wandb-mode", dest="wandb_mode", choices=("offline", "online", "disabled"),
                   help="W&B mode (default: the run's wandb.mode, i.e. offline unless it was trained online)")
    p.add_argument("--recompute", action="store_true", help="with --sweep-dir: redo runs that already have statistics")


def _data_overrides(sets: list[str], data: list[str], batch_size: int | None) -> dict:
    """The dotted data.* overrides of ``--set`` (and of the deprecated ``--data``, whose keys may omit ``data.``)."""
    from ablations.overrides import parse_assignments

    out = {}
    if data:
        print(DEPRECATED_DATA, file=sys.stderr)
        given = parse_assignments(data, "--data", "root=/data/cifar10")
        out = {"data." + k.removeprefix("data."): v for k, v in given.items()}
    for key, value in parse_assignments(sets, "--set", "data.root=/data/cifar10").items():
        if not key.startswith("data.") or key == "data.":
            raise ValueError(f"--set {key!r} is not allowed; only data.* keys can change (the model and "
                             "training are the checkpoint's), e.g. --set data.root=/data/cifar10")
        out[key] = value
    if batch_size is not None:
        out["data.batch_size"] = batch_size
    return out


def options(args: argparse.Namespace) -> Options:
    """The analysis options of the parsed flags, checked before any checkpoint loads."""
    from ablations.excitation.analysis import Options
    from senet.tree import check_int

    check_int("--channels", args.channels)
    if args.max_samples is not None:
        check_int("--max-samples", args.max_samples)
    if args.threads is not None:
        check_int("--threads", args.threads)
        import torch

        torch.set_num_threads(args.threads)
    return Options(split=args.split, data=_data_overrides(args.sets, args.data, args.batch_size), classes=args.classes,
                   fig7_classes=args.fig7_classes, blocks=args.blocks, channels=args.channels,
                   max_samples=args.max_samples, device=args.device, wandb_mode=args.wandb_mode, out=args.out)


def run(args: argparse.Namespace) -> int:
    from ablations.excitation import analysis

    if bool(args.checkpoint) == bool(args.sweep_dir):
        raise ValueError("give either a CHECKPOINT (or run folder) or --sweep-dir DIR, not both or neither")
    if args.sweep_dir:
        analysis.sweep(args.sweep_dir, options(args), recompute=args.recompute)
    else:
        analysis.analyze(args.checkpoint, options(args))
    return 0
