"""``senet-ablate complexity``: the paper's params/GFLOPs tables, ours beside the printed values (Sec. 4, Tables 2-16).

``--table operators``: SE's successors (``se.operator``) on ResNet-50, their cost beside their papers' values.

Prints the chosen tables (markdown, CSV or JSON) and the score, and writes
``<out>/<table>.md`` and ``.csv`` (plus ``summary.md`` for ``--table all``), each headed by the command
that regenerates it. Every model is counted on meta tensors: one batch-1 forward over shapes only.
``--model NAME`` counts a single registered model instead.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ablations.paper import tables as T
from ablations.paper.render import generate, render_csv, score_line
from senet.complexity import CONVENTIONS

# Counts one model on meta tensors: seconds, no data, nothing written.
EXAMPLES = ("senet-ablate complexity --model se_resnet50 --set se.reduction=8",)


def add_arguments(parser) -> None:
    parser.add_argument("--table", default="all", choices=[*T.TABLES, "all"],
                        help="which table to regenerate (sec4: the Sec. 4 statements; operators: SE's successors "
                        "on ResNet-50 beside their papers' values; neither is scored)")
    parser.add_argument("--format", default="md", choices=("md", "csv", "json"), help="what to print")
    parser.add_argument("--out", default="results/complexity",
                        help="folder for the generated <table>.md/.csv files; '' writes nothing")
    parser.add_argument("--model", help="count one registered model instead of the tables, e.g. se_resnet50 "
                        "(default: none, the tables)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted ModelConfig override for --model, e.g. se.reduction=8 (repeatable)")
    parser.add_argument("--convention", default="paper", choices=tuple(CONVENTIONS),
                        help="counting convention for --model (the tables always use paper)")
    parser.add_argument("--strict", action="store_true", help="with --model: fail on any op without a known cost")


def _run_model(args) -> int:
    from ablations.overrides import parse_assignments
    from senet.complexity import complexity
    from senet.registry import build_model, get_arch

    overrides = parse_assignments(args.set, "--set", "se.reduction=8")
    import torch

    with torch.device("meta"):
        model = build_model(args.model, **overrides)
    c = complexity(model, get_arch(model.cfg.arch).input_size, args.convention, strict=args.strict)
    info = dataclasses.asdict(c)
    if args.format == "json":
        print(json.dumps({"model": args.model, "set": overrides, **info}, indent=2))
    else:
        print(f"{args.model} {' '.join(args.set)} ({args.convention}: {CONVENTIONS[args.convention].description})")
        for key in ("params", "macs", "gmacs", "gflops", "se_macs"):
            print(f"  {key:9s} {info[key]:,}" if isinstance(info[key], int) else f"  {key:9s} {info[key]:.4f}")
        for group in ("breakdown", "uncounted"):
            print(f"  {group}: " + ", ".join(f"{k} {v:,}" for k, v in info[group].items()))
    return 0


def run(args) -> int:
    if args.model:
        return _run_model(args)
    selection = list(T.TABLES) if args.table == "all" else [args.table]
    files, rows = generate(selection)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text)
    if args.format == "md":
        print("\n".join(text for name, text in files.items() if name.endswith(".md") and name != "summary.md"))
    elif args.format == "csv":
        print(render_csv(None, rows), end="")
    else:
        print(json.dumps({"rows": T.settings_json(rows), "score": dict(zip(("matched", "total"), T.score(rows)))},
                         indent=2))
    print(score_line(rows))
    return 0
