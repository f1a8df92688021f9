"""SE against its successors (issue 25): ``sweeps/paper/operators.yaml``, and the operator in names, report labels,
the W&B config and the W&B sweep export."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ablations.config import ExperimentConfig
from ablations.experiment import Experiment
from ablations.naming import run_name
from ablations.sweep.report import arm_label, factor_values
from ablations.sweep.spec import load_spec, make_config
from ablations.sweep.wandb_export import sweep_config
from ablations.training.wandb_logging import wandb_config
from senet.config import OPERATORS
from senet.tree import flatten

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "paper" / "operators.yaml"
FACTOR = "model.se.operator"


def _experiment(cfg: ExperimentConfig) -> Experiment:
    """A resolved experiment of ``cfg`` as far as W&B reads one (no data needed)."""
    return Experiment(config=cfg, datamodule=None, name="run", config_hash=cfg.hash(), arm_hash=cfg.arm_hash(),
                      fields=flatten(cfg.to_dict()))


@pytest.mark.parametrize("variant", [None, *yaml.safe_load(SPEC.read_text())["variants"]])
def test_every_variant_runs_no_se_se_and_every_successor_at_the_same_places(variant):
    spec = load_spec(SPEC, variant=variant)  # builds every arm's network
    assert spec.baseline and [p.key for p in spec.space] == [FACTOR] and spec.space[0].values == OPERATORS
    cells = spec.grid()
    assert len(cells) == (1 + len(OPERATORS)) * len(spec.seeds)
    configs = [make_config(spec, c) for c in cells if c["seed"] == spec.seeds[0]]
    arch = spec.base.model.arch
    heads = [run_name(c, spec.base).split("_" + spec.base.data.name)[0] for c in configs]
    assert heads == [arch] + [f"{op}_{arch}" for op in OPERATORS]
    se = [c.model.se for c in configs[1:]]
    assert {(s.placement, s.stages, s.skip_blocks) for s in se} == {("standard", None, ())}


def test_the_digits_variant_is_the_cpu_protocol_of_the_committed_digits_results():
    spec = load_spec(SPEC, variant="digits")
    base = spec.base
    assert (base.model.arch, base.data.name, base.data.image_size) == ("resnet20_cifar", "digits", 16)
    assert (base.train.recipe, base.train.epochs, spec.seeds) == ("quick", 6, (0, 1, 2))


def _config(op: str | None) -> dict:
    cfg = ExperimentConfig() if op is None else ExperimentConfig().override({FACTOR: op})
    return cfg.to_dict()


def test_report_labels_name_the_operator_and_se_reads_se():
    assert arm_label(_config("se"), [FACTOR]) == "se"  # to_dict leaves operator se out: filled in
    assert arm_label(_config("eca"), [FACTOR]) == "eca"
    assert arm_label(_config("cbam"), ["model.se.reduction", FACTOR]) == "r=16, cbam"
    assert arm_label(_config(None), [FACTOR]) == "no SE"
    # SE sweeps that never name the operator keep their labels
    assert arm_label(ExperimentConfig().override({"model.se.reduction": 4}).to_dict(), ["model.se.reduction"]) == "r=4"
    rows = [{"config": _config(op)} for op in ("se", "gc")]
    assert sorted(map(str, factor_values(rows, FACTOR).values())) == ["gc", "se"]


def test_the_wandb_config_carries_the_operator_and_its_knobs_on_every_se_run():
    se = wandb_config(_experiment(ExperimentConfig().override({"model.se.reduction": 8})))
    assert se["model.se.operator"] == "se" and se["model.se.reduction"] == 8 and "model.se.eca_kernel" not in se
    eca = wandb_config(_experiment(ExperimentConfig().override({FACTOR: "eca"})))
    assert (eca["model.se.operator"], eca["model.se.eca_kernel"]) == ("eca", "adaptive")
    ge = wandb_config(_experiment(ExperimentConfig().override({FACTOR: "ge", "model.se.ge_extent": 2, "model.se.ge_variant": "theta"})))
    assert (ge["model.se.ge_extent"], ge["model.se.ge_variant"]) == (2, "theta")
    assert {k: v for k, v in wandb_config(_experiment(ExperimentConfig())).items() if k.startswith("model.se")} == {"model.se": None}


def test_the_wandb_sweep_names_each_operator_arm():
    values = sweep_config(load_spec(SPEC, variant="digits"))["parameters"]["model.se"]["values"]
    assert values == [None] + [{"operator": op} for op in OPERATORS]
