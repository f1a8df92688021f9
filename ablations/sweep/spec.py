"""The sweep spec: one YAML that describes an ablation (docs/DESIGN.md, Sweeps; paper Sec. 6 Tables 10-16).

A spec names a base ``ExperimentConfig``, a search space over its dotted keys, the objectives, the
sampler and pruner, the budget, the seeds per arm and where the study lives. ``load_spec`` validates
all of it before any work starts: every mistake is a ``ValueError`` naming the field, the bad value
and what is allowed, and every categorical value of the space is built into a config once, so an
arm that cannot exist (r that leaves zero channels, a stage the network lacks) fails here.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablations.sweep.fields import (
    PRUNERS,
    SAMPLERS,
    Objective,
    Param,
    check_buildable,
    fail,
    keys,
    named,
    parse_heartbeat,
    parse_objectives,
    parse_param,
    parse_seeds,
)
from ablations.sweep.grid_size import MAX_ARMS, check_cap, count_cells, listed_counts, seed_count
from ablations.sweep.preflight import Checked, preflight
from ablations.sweep.ticker import ticking

if TYPE_CHECKING:  # the config pulls in torch; imported lazily so a bad spec or storage fails in a second
    from ablations.config import ExperimentConfig

#: torch threads per run when the spec's base leaves ``train.threads`` unset: one per worker process.
SWEEP_THREADS = 1


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep (see ``sweeps/paper/*.yaml`` for the format)."""

    name: str
    base: ExperimentConfig
    space: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    baseline: bool = False
    sampler: dict = field(default_factory=lambda: {"type": "grid"})
    pruner: dict = field(default_factory=lambda: {"type": "none"})
    n_trials: int | None = None
    seeds: tuple[int, ...] = (0,)
    storage: str | None = None
    heartbeat_interval: int = 60
    grace_period: int = 180
    max_retry: int = 3
    description: str = ""
    paper: str = ""
    variant: str | None = None
    source: str | None = None
    # The base as given (base, wandb, budget.epochs, --set, --gpus-per-trial); make_config resolves arms over it.
    explicit: dict = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def is_grid(self) -> bool:
        return self.sampler["type"] == "grid"

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def grid(self) -> list[dict[str, Any]]:
        """Every arm x seed cell of a grid sweep, as Optuna params (``se`` and ``seed`` included), in the order the
        workers run them (``--dry-run`` lists them so). The no-SE baseline (``baseline: true``) has no SE knobs, so
        it is crossed with the other keys only. Seed-major (every arm's first seed, then every arm's second, ...):
        arms run interleaved, so a change in the machine's load reaches every arm alike and measured times compare.
        """
        def product(params: list[Param]) -> list[dict[str, Any]]:
            keys = [p.key for p in params]
            return [dict(zip(keys, combo)) for combo in itertools.product(*(p.grid_values for p in params))]

        arms = product(list(self.space))
        if self.baseline:
            others = [p for p in self.space if not is_se_key(p.key)]
            arms = [{**a, "se": False} for a in product(others)] + [{**a, "se": True} for a in arms]
        return [{**a, "seed": s} for s in self.seeds for a in arms]

    def grid_size(self) -> int:
        """``len(self.grid())``, counted without listing the cells."""
        counts = {p.key: len(p.grid_values) for p in self.space}
        return count_cells(counts, self.baseline, len(self.seeds), is_se_key)


def is_se_key(key: str) -> bool:
    """Whether a dotted key configures the SE block (absent from the no-SE baseline)."""
    return key == "model.se" or key.startswith("model.se.")


def arm_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna params -> dotted overrides of the base config (``se=False`` is the no-SE baseline)."""
    params = {k: v for k, v in params.items() if k != "seed"}
    if params.pop("se", True) is False:
        # SE knobs do not exist on the baseline; setting them would switch SE back on.
        params = {k: v for k, v in params.items() if not is_se_key(k)}
        params["model.se"] = None
    return params


def make_config(spec: SweepSpec, params: dict[str, Any], seed: int | None = None) -> ExperimentConfig:
    """The ``ExperimentConfig`` of one trial: the arm's keys and the seed over the spec's explicit keys, resolved as
    train resolves flags (an arm's ``data.batch_size`` rescales the recipe's lr there too), and the data's classes
    and channels settled (``experiment.settle_data_fields``) before anything hashes it."""
    from ablations.experiment import resolve_base, settle_data_fields  # deferred: torch
    from senet.tree import layer

    seed = params.get("seed", spec.seeds[0]) if seed is None else seed
    return settle_data_fields(resolve_base(layer(spec.explicit, arm_overrides(params), {"seed": seed})))


def baseline_config(spec: SweepSpec) -> ExperimentConfig:
    """What the sweep's run names are relative to (``naming.run_name``): the base without SE, its data fields settled
    as every arm's are, so a name shows the arm's factors, not the data's classes."""
    from ablations.experiment import settle_data_fields  # deferred: torch

    return settle_data_fields(spec.base.override({"model.se": None}))


def with_overrides(spec: SweepSpec, overrides: dict[str, Any]) -> SweepSpec:
    """``spec`` with more explicit base keys, resolved with the rest (a device count re-shares the recipe's batch)."""
    import dataclasses

    from ablations.experiment import resolve_base  # deferred: torch
    from senet.tree import layer

    explicit = layer(spec.explicit, overrides)
    return dataclasses.replace(spec, explicit=explicit, base=resolve_base(explicit))


def read_yaml(path: str | Path) -> dict:
    """The raw spec mapping of a YAML file, with file, encoding and syntax errors as one-line messages."""
    from ablations.yaml_bounds import read_yaml as read

    return read(path, "sweep spec")


def parse_spec(raw: dict, *, variant: str | None = None, source: str | None = None,
               overrides: dict[str, Any] | None = None, max_arms: int = MAX_ARMS) -> SweepSpec:
    """Validate a spec mapping (a loaded YAML) and return the ``SweepSpec``.

    Args:
        raw: the loaded YAML.
        variant: a dataset override from the spec's ``variants:`` (merged into the spec; the study is
            named ``<variant>-<name>``).
        source: where the spec came from (for messages and the study's records).
        overrides: dotted base-config overrides from the command line (``--set train.epochs=2``).
        max_arms: the most arm x seed cells a grid may have (``--max-arms``; ``ablations.sweep.grid_size``).
    """
    return build_spec(preflight(raw, variant), source=source, overrides=overrides, max_arms=max_arms)


def build_spec(checked: Checked, *, source: str | None = None, overrides: dict[str, Any] | None = None,
               max_arms: int = MAX_ARMS) -> SweepSpec:
    """The ``SweepSpec`` of a preflighted mapping (see ``parse_spec``): every field checked, every arm built.

    A grid's size is checked against ``max_arms`` twice before any arm is built: from the lengths of the lists
    as written, before each value is applied to the base, and exactly once the space is parsed.
    """
    raw = checked.raw
    explicit, base = _explicit_base(raw, overrides or {})
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise fail("space", space_raw, "give a mapping of dotted config keys to values, e.g. {model.se.reduction: [4, 16]}")
    objectives = parse_objectives(raw.get("objectives", ["val/top1_best"]))
    sampler = named("sampler", raw.get("sampler"), SAMPLERS, "grid")
    pruner = named("pruner", raw.get("pruner"), PRUNERS, "none")
    if len(objectives) > 1 and pruner["type"] != "none":
        raise fail("pruner.type", pruner["type"], "a multi-objective study cannot prune (Optuna's Trial.report "
                    "is single-objective); use pruner: none")
    n_trials = (raw.get("budget") or {}).get("n_trials")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise fail("budget.n_trials", n_trials, "it must be an integer >= 1")
    if sampler["type"] != "grid" and n_trials is None:
        raise ValueError(f"budget.n_trials is required with sampler {sampler['type']!r} (only a grid knows its size)")
    interval, grace, retry = parse_heartbeat(raw.get("heartbeat") or {})
    baseline = raw.get("baseline", False)
    if not isinstance(baseline, bool):
        raise fail("baseline", baseline, "choose true (add the no-SE arm) or false")
    if sampler["type"] == "grid":
        listed = listed_counts(space_raw)
        cells = count_cells(listed, baseline, seed_count(raw.get("seeds", 1)), is_se_key)
        check_cap(cells, max_arms, at_least=len(listed) < len(space_raw))
    spec = SweepSpec(name=checked.study, base=base, space=tuple(parse_param(k, v, base) for k, v in space_raw.items()),
                     objectives=objectives, baseline=baseline, sampler=sampler, pruner=pruner, n_trials=n_trials,
                     seeds=parse_seeds(raw.get("seeds", 1)), storage=raw.get("storage"), heartbeat_interval=interval,
                     grace_period=grace, max_retry=retry, description=str(raw.get("description", "")),
                     paper=str(raw.get("paper", "")), variant=checked.variant, source=source, explicit=explicit)
    if spec.is_grid:
        check_cap(spec.grid_size(), max_arms)  # raises first for a continuous parameter, as grid() would
    _check_arms(spec)
    return spec


def _explicit_base(raw: dict, overrides: dict[str, Any]) -> tuple[dict, ExperimentConfig]:
    """The base's explicit keys and the config they resolve to.

    The spec's ``wandb`` and ``budget.epochs``, then ``--set``, are explicit keys over ``base``, resolved with
    it in one pass: ``--set train.devices=4`` shares the recipe's global batch as train's flag does.
    """
    base_raw = raw.get("base") or {}
    if not isinstance(base_raw, dict):
        raise fail("base", base_raw, "give the base experiment as a mapping (model, data, train, ...)")
    wandb = keys("wandb", raw.get("wandb") or {}, ("project", "mode", "entity"))
    budget = keys("budget", raw.get("budget") or {}, ("n_trials", "epochs"))
    extra = {f"wandb.{k}": v for k, v in wandb.items()}
    if budget.get("epochs") is not None:
        extra["train.epochs"] = budget["epochs"]
    from ablations.experiment import resolve_base  # deferred: the config and senet load torch
    from senet.tree import layer

    explicit = layer(base_raw, extra)
    try:
        base = resolve_base(explicit)
    except ValueError as exc:
        raise ValueError(f"base: {exc}") from None
    if overrides:
        explicit = layer(explicit, overrides)
        try:
            base = resolve_base(explicit)
        except ValueError as exc:
            raise ValueError(f"--set: {exc}") from None
    if base.train.threads is None:  # pinned (float results change with it), so --workers never changes a number
        explicit["train.threads"] = SWEEP_THREADS
        base = base.override({"train.threads": SWEEP_THREADS})
    return explicit, base


def _check_arms(spec: SweepSpec) -> None:
    """Build and run every arm's network once, on its data's image size (a grid: every cell; otherwise each
    categorical value and range end of the model's and train's keys and the image size)."""
    if spec.is_grid:
        cells = spec.grid()
        configs = [make_config(spec, c) for c in ticking(cells, "checking")]
        if len({c.hash() for c in configs}) != len(configs):
            raise ValueError("space: two grid cells give the same config; every arm must differ")
    else:
        configs = [spec.base] + [spec.base.override({p.key: v}) for p in spec.space
                                 if p.key.startswith(("model.", "train.")) or p.key == "data.image_size"
                                 for v in (p.values if p.type == "categorical" else (p.low, p.high))]
    check_buildable(configs)


def load_spec(path: str | Path, *, variant: str | None = None, overrides: dict[str, Any] | None = None,
              max_arms: int = MAX_ARMS) -> SweepSpec:
    """Read and validate a sweep YAML (see ``parse_spec``)."""
    try:
        return parse_spec(read_yaml(path), variant=variant, source=str(path), overrides=overrides, max_arms=max_arms)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
