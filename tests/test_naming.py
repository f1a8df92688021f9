"""Run names from the config's diff to its baseline: readable, filesystem-safe, unique across a sweep's arms."""
from __future__ import annotations

import itertools
import re

import pytest

from ablations.config import ExperimentConfig
from ablations.naming import arm_name, default_baseline, group, job_type, run_name, se_tokens
from senet import model_config
from senet.config import SEConfig


def se_cfg(**se) -> ExperimentConfig:
    return ExperimentConfig(model=model_config("se_resnet20_cifar", **{f"se.{k}": v for k, v in se.items()}))


def test_names_read_as_the_diff_to_the_paper_defaults():
    assert run_name(se_cfg(reduction=8, placement="pre")) == "se_resnet20_cifar-r8-pre_digits_s0"
    assert run_name(ExperimentConfig()) == "resnet20_cifar_digits_s0"
    assert run_name(se_cfg()) == "se_resnet20_cifar_digits_s0"  # r = 16, standard: the registry's se_ model
    assert run_name(se_cfg(squeeze="max", gate="tanh").replace(seed=3)) == "se_resnet20_cifar-sq-max-gate-tanh_digits_s3"
    assert se_tokens(SEConfig(bias=False, stages=(3, 4), skip_blocks=((4, 2),))) == ["nobias", "st3.4", "skip4.2"]
    assert se_tokens(None) == []


def test_default_baseline_switches_se_off_and_nothing_else():
    cfg = se_cfg(reduction=4).override({"train.lr": 0.05})
    base = default_baseline(cfg)
    assert base.model.se is None and base.train == cfg.train and base.data == cfg.data
    # Relative to that baseline, only the SE block appears; relative to a sweep base, the lr too.
    assert "lr" not in run_name(cfg)
    assert run_name(cfg, baseline=ExperimentConfig()) == "se_resnet20_cifar-r4_digits-lr0.05_s0"


def test_fields_shared_by_two_groups_are_disambiguated():
    cfg = ExperimentConfig().override({"data.num_classes": 7, "train.epochs": 9})
    assert run_name(cfg, baseline=ExperimentConfig()) == "resnet20_cifar_digits-data.num_classes=7-e9_s0"


def test_names_are_unique_and_safe_across_a_sweep_grid():
    base = ExperimentConfig()
    grid = itertools.product((None, 2, 4, 8, 16, 32), ("standard", "pre", "post", "identity"), ("avg", "max"),
                             ("sigmoid", "tanh"), (None, (3,), (2, 3)), (0.1, 0.05), (0, 1))
    names, hashes = set(), set()
    for r, placement, squeeze, gate, stages, lr, seed in grid:
        changes = {"train.lr": lr, "seed": seed}
        if r is not None:
            changes.update({"model.se.reduction": r, "model.se.placement": placement, "model.se.squeeze": squeeze,
                            "model.se.gate": gate, "model.se.stages": stages})
        cfg = base.override(changes)
        if cfg.hash() in hashes:  # the no-SE arm repeats for every SE combination
            continue
        hashes.add(cfg.hash())
        name = run_name(cfg, baseline=base)
        assert re.fullmatch(r"[A-Za-z0-9._+=-]+", name), name
        names.add(name)
    assert len(names) == len(hashes) > 500


def test_arm_name_drops_only_the_seed():
    cfg = se_cfg(reduction=4).replace(seed=7)
    assert run_name(cfg) == arm_name(cfg) + "_s7"


def test_explicit_name_wins_and_must_be_safe():
    assert run_name(ExperimentConfig(name="my-run.1")) == "my-run.1"
    with pytest.raises(ValueError, match="name='a/b'"):
        run_name(ExperimentConfig(name="a/b"))


def test_group_and_job_type():
    cfg = se_cfg(reduction=8)
    assert group(cfg) == "resnet20_cifar_digits"  # baseline and its SE arms in one group
    assert group(default_baseline(cfg)) == group(cfg)
    assert job_type(cfg) == "train"
    custom = cfg.override({"wandb.group": "study-1", "wandb.job_type": "sweep"})
    assert (group(custom), job_type(custom)) == ("study-1", "sweep")


@pytest.mark.parametrize("op", ["eca", "simam", "cbam", "gc", "ge", "srm", "coord"])
def test_a_successor_operator_heads_the_name_in_ses_place(op):
    cfg = se_cfg(operator=op)
    assert run_name(cfg) == f"{op}_resnet20_cifar_digits_s0"
    assert run_name(se_cfg(operator=op, placement="pre").replace(seed=2)) == f"{op}_resnet20_cifar-pre_digits_s2"
    assert "se_" not in run_name(cfg) and op not in se_tokens(cfg.model.se)


def test_operator_knobs_follow_their_operator_and_se_keeps_its_names():
    assert run_name(se_cfg(operator="eca", eca_kernel=5)) == "eca_resnet20_cifar-k5_digits_s0"
    assert run_name(se_cfg(operator="cbam", reduction=8, cbam_kernel=3)) == "cbam_resnet20_cifar-r8-k3_digits_s0"
    assert run_name(se_cfg(operator="ge", ge_extent=2, ge_variant="theta")) == "ge_resnet20_cifar-e2-theta_digits_s0"
    # operator: se, spelled out or not, is today's SE arm: same name, same hash.
    assert run_name(se_cfg(operator="se", reduction=8)) == run_name(se_cfg(reduction=8)) == "se_resnet20_cifar-r8_digits_s0"
    assert se_cfg(operator="se").hash() == se_cfg().hash()
    names = {run_name(se_cfg(operator=op)) for op in ("se", "eca", "simam", "cbam", "gc", "ge", "srm", "coord")}
    assert len(names) == 8
