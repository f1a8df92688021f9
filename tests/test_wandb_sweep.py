"""W&B sweep export (ablations.sweep.wandb_export): schema-valid YAML, and the train entry point takes the agent's args."""
from __future__ import annotations

import argparse
import copy
import dataclasses
import warnings
from pathlib import Path

import pytest
import yaml

from ablations.sweep.spec import is_se_key, load_spec, make_config, parse_spec
from ablations.sweep.wandb_export import sweep_config, to_yaml, validate

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "sweeps").glob("*/*.yaml"))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import sweeps
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

# No train.lr: the recipe's lr scaled to the global batch (256 x 2 devices) must come out the same on the
# Optuna path (the spec) and the agent's (train's flags); a pinned lr hid that they once differed (0.1 vs 0.8).
BASE = {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16, "bias": False}},
        "data": {"name": "digits", "image_size": 16, "batch_size": 256}, "train": {"recipe": "quick", "devices": 2},
        "wandb": {"mode": "disabled"}}


def variants(path: Path) -> list:
    return [None] + list(yaml.safe_load(path.read_text()).get("variants") or {})


@pytest.mark.parametrize("path, variant", [(p, v) for p in SPECS for v in variants(p)],
                         ids=lambda x: x.name if isinstance(x, Path) else str(x))
def test_every_shipped_spec_exports_a_schema_valid_sweep(path, variant):
    config = sweep_config(load_spec(path, variant=variant))
    assert sweeps.schema_violations_from_proposed_config(config) == []
    assert yaml.safe_load(to_yaml(config, "header")) == config


def test_schema_violations_are_reported():
    config = sweep_config(parse_spec({"name": "x", "base": BASE, "space": {"model.se.reduction": [4, 8]}}))
    config["method"] = "anneal"
    with pytest.raises(ValueError, match="breaks the sweeps schema"):
        validate(config)


def agent_configs(config: dict, form: str = "args_no_hyphens") -> list:
    """Every run W&B's own engine proposes for a grid sweep, turned into configs by ``senet-ablate train``'s parser."""
    from ablations.commands.train import _parse_overrides, add_arguments
    from ablations.experiment import resolve_experiment

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    runs, out = [], []
    while (run := sweeps.next_run(config, runs)) is not None:
        run.state = sweeps.RunState.finished
        runs.append(run)
        argv = create_sweep_command_args({"args": run.config})[form]  # what ${args_no_hyphens} expands to
        args = parser.parse_args(argv)
        out.append(resolve_experiment(args.config, args.model, _parse_overrides(args)))
    return out


@pytest.mark.parametrize("raw", [
    {"baseline": True, "space": {"model.se.reduction": [4, 8], "model.se.stages": [[2], [3, 4]]}, "seeds": 2},
    {"baseline": False, "space": {"model.se.gate": ["sigmoid", "tanh"], "train.lr": [0.1, 0.01]}},
    {"baseline": True, "space": {"model.se.squeeze": ["avg", "max"], "data.batch_size": [32, 64]}},
], ids=["baseline-se-keys", "no-baseline-mixed", "baseline-crossed"])
def test_agent_arguments_rebuild_exactly_the_optuna_arms(raw):
    spec = parse_spec({"name": "x", "base": copy.deepcopy(BASE), **raw})
    config = sweep_config(spec)
    validate(config)
    expected = sorted(make_config(spec, cell).hash() for cell in spec.grid())
    got = sorted(c.hash() for c in agent_configs(config))
    assert got == expected


def optuna_params(spec, run_config: dict) -> dict:
    """The Optuna params of the arm a W&B run carries (``model.se`` None / a mapping is the baseline switch)."""
    from senet.config import SEConfig
    from senet.tree import to_dict

    values = {k: v["value"] for k, v in run_config.items()}
    params = {p.key: values[p.key] for p in spec.space if p.key in values}
    if "model.se" in values and values["model.se"] is None:
        params = {k: v for k, v in params.items() if not is_se_key(k)}
        params["se"] = False
    elif "model.se" in values:  # SE knobs travel as one mapping; what it omits is the SEConfig default
        late = {f.name: f.default for f in dataclasses.fields(SEConfig)}  # to_dict omits operator & co. at default
        se, default = values["model.se"], {**late, **to_dict(SEConfig())}
        params.update({p.key: se.get(p.key[len("model.se."):], default[p.key[len("model.se."):]])
                       for p in spec.space if is_se_key(p.key)})
        params["se"] = True
    return {**params, "seed": values["seed"]}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # W&B's bayes engine, on fake runs
@pytest.mark.parametrize("path, variant", [(p, v) for p in SPECS for v in variants(p)],
                         ids=lambda x: x.name if isinstance(x, Path) else str(x))
def test_every_shipped_spec_gives_the_agent_and_optuna_one_experiment_on_four_devices(path, variant):
    """Issue 10: for every spec and variant in ``sweeps/``, with the lr left to the recipe and 4 devices, each
    arm W&B's engine proposes resolves through ``senet-ablate train``'s flags (then the data fields)
    to the config and hash the Optuna worker builds from the same arm (``make_config``)."""
    from ablations.commands.train import _parse_overrides, add_arguments
    from ablations.experiment import resolve_experiment, settle_data_fields

    spec = load_spec(path, variant=variant, overrides={"train.devices": 4})
    assert spec.base.train.devices == 4
    config = sweep_config(spec)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    runs = []
    while len(runs) < 12 and (run := sweeps.next_run(config, runs)) is not None:
        run.state = sweeps.RunState.finished
        runs.append(run)
        args = parser.parse_args(create_sweep_command_args({"args": run.config})["args_no_hyphens"])
        agent = settle_data_fields(resolve_experiment(args.config, args.model, _parse_overrides(args)))
        optuna = make_config(spec, optuna_params(spec, run.config))
        assert agent.semantic() == optuna.semantic() and agent.hash() == optuna.hash()  # wandb.mode: online
    assert runs, "W&B's engine proposed no run"
    if config["method"] == "grid" and len(runs) < 12:  # the whole grid: the same arms, no more, no fewer
        assert len(runs) == len(spec.grid())


def test_the_hyphenated_form_works_too_where_no_model_se_value_is_passed():
    spec = parse_spec({"name": "x", "base": copy.deepcopy(BASE), "space": {"model.se.reduction": [4, 8]}, "seeds": 2})
    config = sweep_config(spec)
    assert config["command"][-1] == "${args_no_hyphens}"
    expected = sorted(make_config(spec, cell).hash() for cell in spec.grid())
    assert sorted(c.hash() for c in agent_configs(config, "args")) == expected


def test_command_writes_valid_yaml_and_create_without_login_says_what_to_do(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "netrc"), PYTHONPATH=str(ROOT))
    out = tmp_path / "sweep.yaml"
    proc = subprocess.run([sys.executable, "-m", "ablations.cli", "wandb-sweep", "sweeps/paper/integration.yaml",
                           "--variant", "digits", "-o", str(out), "--create"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "--create needs a W&B login" in proc.stderr.strip().splitlines()[-1]
    config = yaml.safe_load(out.read_text())
    assert out.read_text().startswith("# W&B sweep written by: senet-ablate wandb-sweep sweeps/paper/integration.yaml")
    validate(config)
    assert config["name"] == "digits-integration" and config["method"] == "grid"
    assert config["parameters"]["model.se"]["values"][0] is None  # the no-SE baseline arm
