"""W&B workspace spec (docs/DESIGN.md, W&B dashboards): panels over the logging conventions; creation guarded by a login."""
from __future__ import annotations

import json

import pytest

from ablations.excitation.wandb_log import summary_metrics
from ablations.reporting import dashboards
from ablations.reporting.dashboards import _flat_config_keys, describe, workspace_spec
from ablations.training.metrics import GMACS, VAL_TOP1_BEST


def panels(spec, type_):
    return [p for s in spec["sections"] for p in s["panels"] if p["type"] == type_]


def test_spec_plots_accuracy_against_gmacs_coloured_by_the_factor():
    spec = workspace_spec("me", "proj", factor="model.se.placement")
    scatter = panels(spec, "scatter")[0]
    assert (scatter["x"], scatter["y"], scatter["z"]) == (f"summary:{GMACS}", f"summary:{VAL_TOP1_BEST}",
                                                          "config:model.se.placement")
    assert spec["groupby"] == ["config:model.se.placement"]
    columns = panels(spec, "parallel")[0]["columns"]
    assert "config:model.se.reduction" in columns and columns[-1] == f"summary:{VAL_TOP1_BEST}"
    assert panels(spec, "media")[0]["keys"] == ["excitation/fig6", "excitation/fig7"]
    assert "top-1 vs GMACs" in describe(spec)
    with pytest.raises(ValueError, match="dotted config key"):
        workspace_spec(None, "proj", factor="model se")


def test_excitation_panels_use_keys_that_the_excitation_command_logs():
    rows = [{"block": b, "eta2": e, "specificity": 0.0, "saturation": s, "saturation_low": 0.0,
             "saturation_high": s, "mean_gate": 0.5} for b, e, s in
            (("SE_2_3", 0.1, 0.0), ("SE_4_1", 0.3, 0.2), ("SE_4_2", 0.5, 0.6))]
    logged = summary_metrics(rows)
    assert logged["excitation/last_stage/saturation"] == pytest.approx(0.4)
    assert logged["excitation/first_stage/eta2"] == pytest.approx(0.1)
    assert logged["excitation/SE_4_2/eta2"] == 0.5
    spec = workspace_spec(None, "proj")
    wanted = {r.partition(":")[2] for p in panels(spec, "scatter") + panels(spec, "bar")
              for r in [p.get("x", ""), *p.get("metrics", [])] if r.startswith("summary:excitation/")}
    assert wanted and wanted <= set(logged)
    assert "excitation/first_stage/eta2" not in summary_metrics([{**rows[0], "block": "features.3.se"}])


def test_flat_dotted_config_keys_keep_value_at_the_end():
    text = json.dumps({"z": "config:model.value.se.reduction", "g": "model.value.se.gate", "s": "summary:gmacs"})
    fixed = json.loads(_flat_config_keys(text))
    assert fixed == {"z": "config:model.se.reduction.value", "g": "model.se.gate.value", "s": "summary:gmacs"}


def test_create_without_login_prints_the_spec_and_says_why(capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.setattr("ablations.training.wandb_logging.logged_in", lambda: False)
    assert dashboards.main(["--project", "p", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["project"] == "p"
    assert dashboards.main(["--project", "p", "--create"]) == 2
    out = capsys.readouterr()
    assert "needs a W&B login" in out.err and "Accuracy vs cost" in out.out


def test_spec_converts_to_a_wandb_workspace():
    pytest.importorskip("wandb_workspaces", reason="optional: pip install wandb-workspaces")
    workspace = dashboards.to_workspace(workspace_spec("me", "proj", factor="model.se.gate"))
    dumped = workspace._to_model().model_dump_json(by_alias=True)
    assert '"config:model.se.gate.value"' in dumped and "model.value.se" not in dumped
    assert [s.name for s in workspace.sections][0] == "Accuracy vs cost"


def test_parallel_panels_show_the_operator_and_every_operators_own_knobs():
    from senet.config import OPERATOR_KNOBS

    spec = workspace_spec(None, "proj", factor="model.se.operator")
    knobs, own = (p["columns"] for p in panels(spec, "parallel"))
    assert knobs[0] == own[0] == "config:model.se.operator" and spec["groupby"] == ["config:model.se.operator"]
    se_only = set(OPERATOR_KNOBS["se"]) | {"reduction", "width_rounding", "divisor"}
    expected = {f"config:model.se.{k}" for ks in OPERATOR_KNOBS.values() for k in ks if k not in se_only}
    assert set(own[1:-2]) == expected == {f"config:{k}" for k in dashboards.OPERATOR_KNOBS}
