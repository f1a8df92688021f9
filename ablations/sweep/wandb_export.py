"""The W&B sweep equivalent of a spec (docs/DESIGN.md, Sweeps): same arms, same entry point.

W&B's controller needs its server (offline sweeps are unsupported, wandb/wandb#6234), so Optuna stays
the coordinator and this export is for teams that want W&B to drive. Every base-config field that
differs from the defaults becomes a constant parameter and every space key a searched one, all under
their dotted names; the command is ``python -m ablations.cli train ${args_no_hyphens}``, whose parser
takes the ``model.se.reduction=8`` form the agent writes unchanged. With a no-SE baseline the SE knobs travel
as one ``model.se`` parameter (``None`` or a mapping), because the baseline has none of them.
The YAML is checked with W&B's own ``sweeps`` package schema before it is written.
"""
from __future__ import annotations

import itertools
import sys
from typing import Any

from ablations.sweep.spec import SweepSpec, is_se_key

METHODS = {"grid": "grid", "random": "random", "tpe": "bayes", "nsga2": "random"}
# KEY=VALUE arguments (``model.se.reduction=8``): the train command takes every dotted key in this form,
# including ``model.se=None`` / ``model.se={...}``, which have no ``--flag`` of their own.
COMMAND = ["${env}", "${interpreter}", "-m", "ablations.cli", "train", "${args_no_hyphens}"]


def _constants(spec: SweepSpec) -> dict[str, Any]:
    """The base as ``train`` flags: every flattened field that differs from what the flags' recipe alone gives.

    Measured against ``resolve_experiment`` of the recipe, the devices and the batch (always passed: they decide
    the per-device share and the lr scaling), not against bare defaults: a base field equal to a default but
    not to the recipe's value (``data.batch_size: 64`` under a recipe of another batch) must travel too.
    """
    from ablations.experiment import resolve_experiment
    from senet.tree import flatten

    base = flatten(spec.base.to_dict())
    fixed = {k: base[k] for k in ("train.recipe", "train.devices", "train.num_nodes", "data.batch_size")}
    reference = flatten(resolve_experiment(None, None, fixed).to_dict())
    out = {**fixed, **{k: v for k, v in base.items() if k not in reference or reference[k] != v}}
    out["wandb.mode"] = "online"  # an agent's runs report to the sweep
    for k in ("output_dir", "name"):
        out.pop(k, None)
    if spec.base.model.se is None:
        out["model.se"] = None
    return out


def _se_dict(spec: SweepSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """The base's SE config with ``overrides`` (``model.se.*`` keys): the fields that differ from ``SEConfig()`` and
    the searched ones, at their defaults too, so each arm's mapping names its value (``{operator: se}``).

    ``None`` fields are left out too: the agent would pass the text ``None``, which YAML reads as a string.
    """
    import dataclasses

    from senet.config import SEConfig
    from senet.tree import to_dict

    # to_dict leaves the late fields (operator and its knobs) out at their defaults: those come from the dataclass
    default = {**{f.name: f.default for f in dataclasses.fields(SEConfig)}, **to_dict(SEConfig())}
    se = to_dict(spec.base.model.se or SEConfig())
    searched = {k[len("model.se."):] for k in overrides}
    for k, v in overrides.items():
        se[k[len("model.se."):]] = list(v) if isinstance(v, tuple) else v
    return {k: v for k, v in se.items() if v is not None and (k in searched or v != default[k])}


def _param(p) -> dict[str, Any]:
    if p.type == "categorical":
        return {"values": [list(v) if isinstance(v, tuple) else v for v in p.values]}
    if p.type == "int":
        return {"distribution": "q_log_uniform_values" if p.log else "int_uniform", "min": p.low, "max": p.high,
                **({"q": p.step} if p.step and not p.log else {})}
    if p.log:
        return {"distribution": "log_uniform_values", "min": p.low, "max": p.high}
    return {"distribution": "q_uniform", "min": p.low, "max": p.high, "q": p.step} if p.step else \
        {"distribution": "uniform", "min": p.low, "max": p.high}


def sweep_config(spec: SweepSpec, command_source: str = "") -> dict[str, Any]:
    """The W&B sweep configuration (a dict ready for YAML or ``wandb.sweep``)."""
    objective = spec.objectives[0]
    params: dict[str, dict] = {k: {"value": v} for k, v in _constants(spec).items()}
    se_params = [p for p in spec.space if is_se_key(p.key)]
    if spec.baseline and se_params:
        if any(p.type != "categorical" for p in se_params):
            raise ValueError("wandb-sweep: with baseline: true the SE keys must be categorical (they travel as one "
                             "model.se value per arm)")
        for k in list(params):
            if is_se_key(k):
                del params[k]
        combos = itertools.product(*(p.values for p in se_params))
        params["model.se"] = {"values": [None] + [_se_dict(spec, dict(zip([p.key for p in se_params], c)))
                                                   for c in combos]}
        searched = [p for p in spec.space if not is_se_key(p.key)]
    else:
        if spec.baseline:  # no SE keys searched: the baseline is one more value of model.se
            params["model.se"] = {"values": [None, _se_dict(spec, {})]}
            params = {k: v for k, v in params.items() if not k.startswith("model.se.")}
        searched = list(spec.space)
    for p in searched:
        params[p.key] = _param(p)
    params["seed"] = {"values": list(spec.seeds)}
    config: dict[str, Any] = {
        "name": spec.name,
        "description": (spec.description + (f" ({spec.paper})" if spec.paper else "")).strip() or spec.name,
        "project": spec.base.wandb.project,
        "method": METHODS[spec.sampler["type"]],
        "metric": {"name": objective.metric, "goal": objective.direction},
        "command": list(COMMAND),
        "parameters": params,
    }
    if spec.base.wandb.entity:
        config["entity"] = spec.base.wandb.entity
    if spec.pruner["type"] != "none":  # W&B's only early-termination rule
        config["early_terminate"] = {"type": "hyperband", "min_iter": 1, "eta": 3}
    if spec.sampler["type"] != "grid" and spec.n_trials:
        config["run_cap"] = spec.n_trials * len(spec.seeds)
    if spec.multi_objective:
        print(f"wandb-sweep: W&B sweeps optimise one metric; this sweep optimises {objective.metric} "
              f"(the others are logged): {', '.join(o.metric for o in spec.objectives[1:])}", file=sys.stderr)
    return config


def validate(config: dict[str, Any]) -> None:
    """Raise ``ValueError`` listing every violation W&B's ``sweeps`` schema finds."""
    import warnings

    try:
        with warnings.catch_warnings():  # its pydantic models use v1 option names
            warnings.simplefilter("ignore")
            import sweeps
    except ImportError:
        raise ValueError("wandb-sweep needs W&B's sweeps package to check the YAML: pip install sweeps") from None
    violations = sweeps.schema_violations_from_proposed_config(config)
    if violations:
        raise ValueError("the W&B sweep config breaks the sweeps schema: " + "; ".join(violations))


def to_yaml(config: dict[str, Any], header: str = "") -> str:
    """The sweep as YAML, with a comment saying which command wrote it."""
    import yaml

    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=120)
    return (f"# {header}\n" if header else "") + body
