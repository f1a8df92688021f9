"""``senet-ablate wandb-sweep SPEC``: write the W&B sweep equivalent of a spec (and, with ``--create``, register it).

The YAML runs the same arms through the same entry point (``senet-ablate train``, which takes the
arguments ``wandb agent`` passes unchanged); it is checked with W&B's ``sweeps`` schema before it is
written. ``--create`` needs a W&B login and a reachable server; Optuna (``senet-ablate sweep``) needs neither.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Writes the YAML to stdout; registering it (--create) needs a W&B login.
EXAMPLES = ("senet-ablate wandb-sweep reduction --variant digits --out -",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ablations.sweep.grid_size import MAX_ARMS

    parser.add_argument("spec", metavar="SPEC", help="a sweep YAML's path, or a shipped spec's name: reduction, "
                        "paper/reduction, examples/tpe (senet-ablate sweep --list names them)")
    parser.add_argument("--variant", help="a dataset override named in the spec's variants: (e.g. digits, cifar; "
                        "default: none, the spec's base)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base-experiment key (repeatable)")
    parser.add_argument("-o", "--out", "--output", dest="output", help="where to write the YAML ('-' for stdout; default "
                        "runs/<study>/wandb-sweep.yaml)")
    parser.add_argument("--max-arms", type=int, default=None, metavar="N", help="the most arm x seed cells a grid "
                        f"may have (default: {MAX_ARMS})")
    parser.add_argument("--project", help="W&B project (default: the spec's wandb.project)")
    parser.add_argument("--entity", help="W&B entity (default: the spec's, else your default entity)")
    parser.add_argument("--create", action="store_true", help="register the sweep with W&B (needs a login) and "
                        "print the wandb agent command")


def run(args: argparse.Namespace) -> int:
    from ablations.commands.sweep import _cap, _sets
    from ablations.sweep import spec_files
    from ablations.sweep.spec import load_spec
    from ablations.sweep.wandb_export import sweep_config, to_yaml, validate

    path, _ = spec_files.resolve(args.spec)  # a path, or a shipped spec's name as sweep takes it
    spec = load_spec(path, variant=args.variant, overrides=_sets(args.sets), **_cap(args))
    config = sweep_config(spec)
    if args.project:
        config["project"] = args.project
    if args.entity:
        config["entity"] = args.entity
    validate(config)
    header = f"W&B sweep written by: senet-ablate wandb-sweep {args.spec}" + \
        (f" --variant {args.variant}" if args.variant else "") + "; run it with: wandb agent <entity>/<project>/<id>"
    text = to_yaml(config, header)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        path = Path(args.output or Path(spec.base.output_dir) / spec.name / "wandb-sweep.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    if args.create:
        from ablations.training.wandb_logging import logged_in

        if not logged_in():
            raise ValueError("--create needs a W&B login (wandb login, or WANDB_API_KEY); the YAML was written, "
                             "so `wandb sweep FILE` can register it later")
        import wandb

        sweep_id = wandb.sweep(config, project=config["project"], entity=config.get("entity"))
        print(f"created sweep {sweep_id}; start agents with: wandb agent "
              f"{(config.get('entity') + '/') if config.get('entity') else ''}{config['project']}/{sweep_id}")
    return 0
