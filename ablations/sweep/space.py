"""The search space as Optuna suggestions (docs/DESIGN.md, Sweeps): the only place that calls ``trial.suggest_*``.

Optuna's categorical distributions hold only None, bool, int, float and str, so list values
(``model.se.stages: [[2], [3]]``) travel through the study as their YAML text and are decoded here.
Two params are not config keys: ``se`` (False = the no-SE baseline arm, present when the spec has
``baseline: true``) and ``seed`` (grid sweeps run one seed per trial; other samplers loop over the
seeds inside a trial so that the sampler sees the mean).
"""
from __future__ import annotations

from typing import Any

import optuna
import yaml

from ablations.sweep.fields import PRIMITIVES, Param
from ablations.sweep.spec import SweepSpec, is_se_key


def encode(value: Any) -> Any:
    """A categorical value as Optuna stores it (lists become their YAML flow text)."""
    if isinstance(value, PRIMITIVES):
        return value
    return yaml.safe_dump(list(value), default_flow_style=True).strip()


def decode(param: Param, stored: Any) -> Any:
    """The config value of a stored categorical choice."""
    for v in param.values:
        if encode(v) == stored:
            return v
    raise ValueError(f"space.{param.key}: stored value {stored!r} is not one of the spec's values "
                     f"{list(param.values)}; the spec changed after the study was created?")


def encode_params(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Config-valued params (a grid cell) -> the values ``study.enqueue_trial`` takes."""
    by_key = {p.key: p for p in spec.space}
    return {k: encode(v) if k in by_key and by_key[k].type == "categorical" else v for k, v in params.items()}


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Ask the trial for one point of the spec's space; returns config-valued params (``se``/``seed`` included)."""
    params: dict[str, Any] = {}
    if spec.baseline:
        params["se"] = trial.suggest_categorical("se", [True, False])
    for p in spec.space:
        if params.get("se") is False and is_se_key(p.key):
            continue  # the baseline has no SE knobs (a conditional parameter, in Optuna's terms)
        if p.type == "categorical":
            params[p.key] = decode(p, trial.suggest_categorical(p.key, [encode(v) for v in p.values]))
        elif p.type == "int":
            params[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            params[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    if spec.is_grid:
        params["seed"] = trial_seed(trial, spec)
    return params


def queued(spec: SweepSpec, cell: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A grid cell -> ``study.enqueue_trial``'s ``(params, user_attrs)``: the seed is an attribute, not a parameter.

    A seed is not a factor of the ablation, so it must not be one of the study's parameters: optuna-dashboard's
    and Optuna's importance would rank it among the factors (first, in the digits studies).
    """
    params = {k: v for k, v in cell.items() if k != "seed"}
    return encode_params(spec, params), {"seed": cell["seed"]}


def trial_seed(trial: optuna.Trial, spec: SweepSpec) -> int:
    """The seed of a grid trial: its ``seed`` attribute (``queued``); a trial queued before that has it as a param."""
    if "seed" in trial.user_attrs:
        return int(trial.user_attrs["seed"])
    return trial.suggest_categorical("seed", list(spec.seeds))
