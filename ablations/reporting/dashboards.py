"""The W&B workspace for SE ablations (docs/DESIGN.md, W&B dashboards): accuracy vs cost, SE knobs, excitation (Sec. 7.2).

``workspace_spec`` describes the panels as plain data over the logging conventions (flattened dotted
config keys, ``group`` = ``<arch>_<data>``, summary metrics ``val/top1_best``, ``params``, ``gmacs``,
``excitation/...``), so the layout is readable and testable without W&B. ``to_workspace`` turns it into
a ``wandb_workspaces`` object; ``python -m ablations.reporting.dashboards --entity E --project P --create`` saves it
(needs the optional ``wandb-workspaces`` package and a W&B login; without them it prints the spec).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ablations.training.metrics import GMACS, PARAMS, TRAIN_LOSS, VAL_LOSS, VAL_TOP1, VAL_TOP1_BEST, VAL_TOP5

#: SE knobs shown on the parallel-coordinates panel (flattened ``ExperimentConfig`` keys); the operator first.
SE_KNOBS = ("model.se.operator", "model.se.reduction", "model.se.squeeze", "model.se.activation", "model.se.gate",
            "model.se.bias", "model.se.placement", "model.se.stages", "model.se.skip_blocks")
#: The successors' own knobs (``senet.config.OPERATOR_KNOBS``), on a panel of their own; W&B logs the operator and its
#: knobs on every SE run (``wandb_logging.wandb_config``).
OPERATOR_KNOBS = ("model.se.eca_kernel", "model.se.simam_lambda", "model.se.cbam_kernel", "model.se.gc_fusion",
                  "model.se.ge_extent", "model.se.ge_variant", "model.se.coord_reduction")
PANEL_TYPES = ("scatter", "line", "parallel", "importance", "media", "bar", "markdown")


def _ref(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def workspace_spec(entity: str | None, project: str, factor: str = "model.se.reduction",
                   name: str = "SE ablations") -> dict:
    """The workspace as plain data: sections of panels whose metrics are ``summary:``, ``config:`` or ``history:`` refs.

    Args:
        entity, project: where the runs live (``wandb.entity``, ``wandb.project`` of the experiments).
        factor: the ablated config key that colours the accuracy-vs-GMACs scatter and groups the runs.
        name: the saved view's name.
    """
    if not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", factor):
        raise ValueError(f"--factor={factor!r} is not allowed; give a dotted config key such as model.se.reduction")
    top1, gmacs = _ref("summary", VAL_TOP1_BEST), _ref("summary", GMACS)
    return {
        "entity": entity, "project": project, "name": name,
        "groupby": [_ref("config", factor)],
        "sections": [
            {"name": "Accuracy vs cost", "panels": [
                {"type": "scatter", "title": f"top-1 vs GMACs, colour = {factor}", "x": gmacs, "y": top1,
                 "z": _ref("config", factor)},
                {"type": "scatter", "title": "top-1 vs params", "x": _ref("summary", PARAMS), "y": top1,
                 "z": _ref("config", factor)},
                {"type": "bar", "title": f"best top-1 per {factor} (mean ± std over seeds)", "metrics": [top1],
                 "groupby": _ref("config", factor)},
            ]},
            {"name": "Training curves", "panels": [
                {"type": "line", "title": t, "y": [_ref("history", m)], "groupby": _ref("config", factor)}
                for t, m in (("validation top-1", VAL_TOP1), ("validation top-5", VAL_TOP5),
                             ("validation loss", VAL_LOSS), ("training loss", TRAIN_LOSS))
            ]},
            {"name": "SE knobs", "panels": [
                {"type": "parallel", "title": "SE knobs -> accuracy and cost",
                 "columns": [_ref("config", k) for k in SE_KNOBS] + [gmacs, top1]},
                {"type": "parallel", "title": "operator and its own knobs -> accuracy and cost",
                 "columns": [_ref("config", k) for k in ("model.se.operator", *OPERATOR_KNOBS)] + [gmacs, top1]},
                {"type": "importance", "title": f"what drives {VAL_TOP1_BEST}", "with_respect_to": VAL_TOP1_BEST},
            ]},
            {"name": "Excitation (paper Sec. 7.2)", "panels": [
                {"type": "media", "title": "Fig. 6 / Fig. 7 per run",
                 "keys": ["excitation/fig6", "excitation/fig7"]},
                {"type": "scatter", "title": "last-stage gate saturation vs top-1",
                 "x": _ref("summary", "excitation/last_stage/saturation"), "y": top1, "z": _ref("config", factor)},
                {"type": "bar", "title": "class-specificity (eta2): first vs last stage",
                 "metrics": [_ref("summary", "excitation/first_stage/eta2"),
                             _ref("summary", "excitation/last_stage/eta2")], "groupby": _ref("config", factor)},
                {"type": "markdown", "text": (
                    "Fig. 6: mean gate per class over sampled channels; Fig. 7: mean ± std within a class. "
                    "Paper: class-agnostic early (SE_2_3), class-specific later (SE_4_6, SE_5_1), SE_5_2 "
                    "saturated. `senet-ablate excitation RUN` adds these to a run.")},
            ]},
        ],
    }


def describe(spec: dict) -> str:
    """A short human-readable outline of the spec (one line per panel)."""
    lines = [f"workspace {spec['name']!r} for {spec['entity'] or '<default entity>'}/{spec['project']}, "
             f"runs grouped by {', '.join(spec['groupby'])}"]
    for section in spec["sections"]:
        lines.append(f"  [{section['name']}]")
        for p in section["panels"]:
            what = {k: v for k, v in p.items() if k not in ("type", "title", "text")}
            lines.append(f"    {p['type']}: {p.get('title', '')} {json.dumps(what) if what else ''}".rstrip())
    return "\n".join(lines)


# ---- Conversion to wandb_workspaces (optional dependency) ---- #

# The library assumes nested configs (``config:model.value.se.reduction``, group-by ``model.value.se.reduction``);
# our keys are flat dotted keys, which W&B stores as ``{"model.se.reduction": {"value": 8}}``, so ``.value``
# belongs at the end. The top-level groups are the ExperimentConfig sections.
_NESTED = re.compile(r'"(config[:.])?(model|data|train|wandb)\.value\.([A-Za-z0-9_.]+)"')


def _flat_config_keys(text: str) -> str:
    return _NESTED.sub(lambda m: f'"{m.group(1) or ""}{m.group(2)}.{m.group(3)}.value"', text)


def to_workspace(spec: dict) -> Any:
    """The spec as a ``wandb_workspaces.workspaces.Workspace`` (ImportError names the package to install)."""
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as exc:
        raise ImportError("creating a W&B workspace needs the wandb-workspaces package: "
                          "pip install wandb-workspaces") from exc

    def ref(r: str) -> Any:
        kind, _, name = r.partition(":")
        return {"summary": wr.SummaryMetric, "config": wr.Config, "history": wr.Metric}[kind](name)

    def panel(p: dict) -> Any:
        t = p["type"]
        if t == "scatter":
            return wr.ScatterPlot(title=p["title"], x=ref(p["x"]), y=ref(p["y"]), z=ref(p["z"]))
        if t == "line":
            return wr.LinePlot(title=p["title"], y=[ref(y) for y in p["y"]], groupby=ref(p["groupby"]),
                               groupby_aggfunc="mean", groupby_rangefunc="stddev")
        if t == "bar":
            return wr.BarPlot(title=p["title"], metrics=[ref(m) for m in p["metrics"]], groupby=ref(p["groupby"]),
                              groupby_aggfunc="mean", groupby_rangefunc="stddev")
        if t == "parallel":
            return wr.ParallelCoordinatesPlot(title=p["title"], columns=[
                wr.ParallelCoordinatesPlotColumn(metric=ref(c)) for c in p["columns"]])
        if t == "importance":
            return wr.ParameterImportancePlot(with_respect_to=p["with_respect_to"])
        if t == "media":
            return wr.MediaBrowser(title=p["title"], media_keys=list(p["keys"]))
        if t == "markdown":
            return wr.MarkdownPanel(markdown=p["text"])
        raise ValueError(f"panel type {t!r} is not allowed; choose one of: {', '.join(PANEL_TYPES)}")

    class FlatKeyWorkspace(ws.Workspace):
        def _to_model(self):  # rewrite config accessors for flat dotted keys just before saving
            model = super()._to_model()
            return type(model).model_validate_json(_flat_config_keys(model.model_dump_json(by_alias=True)))

    return FlatKeyWorkspace(
        entity=spec["entity"], project=spec["project"], name=spec["name"],
        sections=[ws.Section(name=s["name"], panels=[panel(p) for p in s["panels"]], is_open=True)
                  for s in spec["sections"]],
        runset_settings=ws.RunsetSettings(groupby=[ws.Config(r.partition(":")[2]) for r in spec["groupby"]]),
    )


# Prints the outline only: no login, no network (--create saves it).
EXAMPLES = ("senet-ablate dashboard --factor model.se.reduction",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--entity", help="W&B entity (default: your default entity)")
    p.add_argument("--project", default="senet-ablations", help="W&B project")
    p.add_argument("--factor", default="model.se.reduction",
                   help="ablated config key that colours and groups runs (model.se.operator: SE against its successors)")
    p.add_argument("--name", default="SE ablations", help="name of the saved workspace view")
    p.add_argument("--json", action="store_true", help="print the spec as JSON instead of the outline")
    p.add_argument("--create", action="store_true", help="save the workspace in W&B (needs a login)")


def run(args: argparse.Namespace) -> int:
    """Print the workspace spec; with ``--create``, save it in W&B (a clear error without package or login)."""
    from ablations.training.wandb_logging import logged_in

    spec = workspace_spec(args.entity, args.project, args.factor, args.name)
    print(json.dumps(spec, indent=2) if args.json else describe(spec))
    if not args.create:
        return 0
    if not logged_in():
        raise ValueError("creating the workspace needs a W&B login (`wandb login` or WANDB_API_KEY); "
                         "the spec above is what it would create")
    if not args.entity:
        raise ValueError("--entity is required with --create (the W&B user or team that owns the project)")
    workspace = to_workspace(spec)
    workspace.save()
    print(f"created {workspace.url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablations.reporting.dashboards", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except (ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
