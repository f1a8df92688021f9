"""Field checks of the sweep spec (docs/DESIGN.md, Errors and bad input): parameters, objectives, sampler, pruner, seeds,
heartbeat.

Each mistake is a ``ValueError`` that names the field, the bad value and what is allowed; every value
of the space is applied to the base config, and every network of the sweep is built on the meta
device, so an arm that cannot exist fails while the spec is read, not in a worker hours later.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ablations.training.metrics import GMACS, PARAMS, RESULT_METRICS

if TYPE_CHECKING:  # the config pulls in torch
    from ablations.config import ExperimentConfig

METRICS = RESULT_METRICS + (PARAMS, GMACS)
DIRECTIONS = {"maximize": "maximize", "maximise": "maximize", "max": "maximize",
              "minimize": "minimize", "minimise": "minimize", "min": "minimize"}
SAMPLERS = ("grid", "random", "tpe", "nsga2")
PRUNERS = ("none", "median", "hyperband")
PARAM_TYPES = ("categorical", "int", "float", "log")
PRIMITIVES = (type(None), bool, int, float, str)


def fail(where: str, value: Any, allowed: str) -> ValueError:
    """The one error form: ``where=value is not allowed; allowed``."""
    return ValueError(f"{where}={value!r} is not allowed; {allowed}")


def keys(where: str, data: Any, allowed: tuple[str, ...]) -> dict:
    """``data`` if it is a mapping with only ``allowed`` keys; else an error naming the first unknown key."""
    if not isinstance(data, dict):
        raise fail(where, data, f"expected a mapping with keys: {', '.join(allowed)}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown key {prefix}{unknown[0]}; allowed keys: {', '.join(prefix + k for k in allowed)}")
    return data


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a dotted ``ExperimentConfig`` key and its distribution."""

    key: str
    type: str
    values: tuple = ()  # categorical choices, as the config takes them
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def grid_values(self) -> tuple | range:
        """The values a grid sweep enumerates (categorical choices, or an int range with its step).

        A range stays lazy: its ``len`` is known without listing it (``SweepSpec.grid_size``).
        """
        if self.type == "categorical":
            return self.values
        if self.type == "int" and not self.log:
            return range(int(self.low), int(self.high) + 1, int(self.step or 1))
        raise ValueError(f"space.{self.key}: a grid sweep needs categorical values or an int range; "
                         f"type {self.type!r} is continuous (use sampler: random, tpe or nsga2)")


@dataclass(frozen=True)
class Objective:
    """A metric of the result row and whether the study maximizes or minimizes it."""

    metric: str
    direction: str


def parse_param(key: str, raw: Any, base: ExperimentConfig) -> Param:
    where = f"space.{key}"
    if key in ("se", "seed", "name", "output_dir") or key.startswith("wandb."):
        raise ValueError(f"{where} cannot be searched: seeds go under seeds:, the no-SE arm under baseline: true, "
                         "and name, output_dir and wandb.* do not define an arm")
    if isinstance(raw, list):
        raw = {"type": "categorical", "values": raw}
    raw = keys(where, raw, ("type", "values", "low", "high", "step", "log"))
    kind = raw.get("type", "categorical" if "values" in raw else None)
    if kind not in PARAM_TYPES:
        raise fail(f"{where}.type", kind, f"choose one of: {', '.join(PARAM_TYPES)}")
    if kind == "categorical":
        values = raw.get("values")
        if not isinstance(values, list) or not values:
            raise fail(f"{where}.values", values, "give a non-empty list of values")
        extra = sorted(set(raw) - {"type", "values"})
        if extra:
            raise ValueError(f"{where}.{extra[0]} does not apply to a categorical parameter; give only values")
        values = tuple(tuple(v) if isinstance(v, list) else v for v in values)
        if len(set(map(repr, values))) != len(values):
            raise fail(f"{where}.values", list(values), "values must be distinct")
        for v in values:
            _check_value(base, key, v)
        return Param(key, kind, values=values)
    if "values" in raw:
        raise ValueError(f"{where}.values does not apply to type {kind!r}; give low and high")
    low, high, step = raw.get("low"), raw.get("high"), raw.get("step")
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise fail(f"{where}.{name}", v, "it must be a number")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise fail(where, [low, high], "an int parameter needs integer low and high")
    log = bool(raw.get("log", kind == "log"))
    if low >= high:
        raise fail(f"{where}.low", low, f"it must be below high={high}")
    if log and low <= 0:
        raise fail(f"{where}.low", low, "a log distribution needs low > 0")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or log):
        raise fail(f"{where}.step", step, "it must be a positive number, and not combined with log")
    kind = "float" if kind == "log" else kind
    if kind == "int":
        low, high, step = int(low), int(high), None if step is None else int(step)
    for v in (low, high):
        _check_value(base, key, v)
    return Param(key, kind, low=low, high=high, step=step, log=log)


def _check_value(base: ExperimentConfig, key: str, value: Any) -> None:
    if not isinstance(value, PRIMITIVES + (tuple,)):
        raise fail(f"space.{key}", value, "values must be numbers, strings, booleans, null or lists")
    try:
        base.override({key: list(value) if isinstance(value, tuple) else value})
    except ValueError as exc:
        raise ValueError(f"space.{key}: value {value!r} gives no valid config: {exc}") from None


def parse_objectives(raw: Any) -> tuple[Objective, ...]:
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise fail("objectives", raw, f"give a list like [{{val/top1_best: maximize}}]; metrics: {', '.join(METRICS)}")
    out = []
    for i, item in enumerate(raw):
        where = f"objectives[{i}]"
        if isinstance(item, str):
            item = {"metric": item, "direction": "maximize" if item.startswith("val/top") else "minimize"}
        if isinstance(item, dict) and set(item) - {"metric", "direction"} and len(item) == 1:
            (metric, direction), = item.items()
            item = {"metric": metric, "direction": direction}
        item = keys(where, item, ("metric", "direction"))
        if item.get("metric") not in METRICS:
            raise fail(f"{where}.metric", item.get("metric"), f"choose one of: {', '.join(METRICS)}")
        if item.get("direction") not in DIRECTIONS:
            raise fail(f"{where}.direction", item.get("direction"), "choose one of: maximize, minimize")
        out.append(Objective(item["metric"], DIRECTIONS[item["direction"]]))
    if len({o.metric for o in out}) != len(out):
        raise fail("objectives", [o.metric for o in out], "each metric may appear once")
    return tuple(out)


def named(where: str, raw: Any, allowed: tuple[str, ...], default: str) -> dict:
    """``sampler: tpe`` or ``sampler: {type: tpe, seed: 1}`` -> ``{"type": "tpe", ...}``."""
    if raw is None:
        return {"type": default}
    if isinstance(raw, str):
        if raw not in allowed:
            raise fail(where, raw, f"choose one of: {', '.join(allowed)}")
        return {"type": raw}
    if not isinstance(raw, dict) or raw.get("type") not in allowed:
        got = raw.get("type") if isinstance(raw, dict) else raw
        raise fail(f"{where}.type", got, f"choose one of: {', '.join(allowed)}")
    return dict(raw)


def parse_seeds(seeds: Any) -> tuple[int, ...]:
    """``seeds: 3`` -> (0, 1, 2); ``seeds: [0, 7]`` -> (0, 7)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        return tuple(range(seeds))
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        return tuple(seeds)
    raise fail("seeds", seeds, "give a count >= 1 or a list of integer seeds")


def parse_heartbeat(raw: Any) -> tuple[int, int, int]:
    """(interval, grace period, max retry) of the spec's ``heartbeat``; the grace defaults to 3 intervals."""
    hb = keys("heartbeat", raw, ("interval", "grace_period", "max_retry"))
    interval, grace, retry = hb.get("interval", 60), hb.get("grace_period"), hb.get("max_retry", 3)
    grace = 3 * interval if grace is None else grace
    if not (isinstance(interval, int) and interval >= 1 and isinstance(grace, int) and grace > interval):
        raise fail("heartbeat", hb, "interval must be an integer >= 1 s and grace_period an integer above it")
    if not isinstance(retry, int) or retry < 0:
        raise fail("heartbeat.max_retry", retry, "it must be an integer >= 0")
    return interval, grace, retry


def check_buildable(configs: list) -> None:
    """Check every arm as a run's resolve step would (``ablations.experiment``: ``check_training``, and each distinct
    network built on the meta device and run on one image of its data's size), so an arm that cannot exist (an r that
    leaves zero channels) or cannot run (SimAM in a 1x1 stage) fails now instead of in a worker hours later."""
    from ablations.data import check_network
    from ablations.experiment import check_training, image_size
    from senet.tree import config_hash

    seen = set()
    for cfg in configs:
        try:
            check_training(cfg)
        except ValueError as exc:
            raise ValueError(f"space: an arm cannot run: {exc}") from None
        key = (config_hash(cfg.model), image_size(cfg))
        if key in seen:
            continue
        seen.add(key)
        try:
            check_network(cfg.model, image_size(cfg))
        except ValueError as exc:
            raise ValueError(f"space: an arm of {cfg.model.arch} cannot be built: {exc}") from None