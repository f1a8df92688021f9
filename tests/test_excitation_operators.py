"""The excitation analysis (paper Sec. 7.2) for SE's successors: the per-channel gate of each, or a one-line refusal.

Operators whose output is x * s with one gate per channel (SE, ECA, SRM, CBAM's channel attention, GC with scale
fusion, GE at global extent) are recorded through their ``channel_gate()`` module; the recorded values must be the
gate the module computes for that input. Gates per position (SimAM, coordinate attention, GE at e > 0) and GC's
additive fusion are refused before any data loads, in one line naming the operator and why.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ablations.cli import main
from ablations.config import ExperimentConfig
from ablations.excitation import ExcitationRecorder, analysis, record_excitation, se_blocks
from ablations.excitation.blocks import CHANNEL_GATED, NoChannelGate
from senet import build_model, se_modules
from senet.attention import OPERATORS

pytestmark = pytest.mark.usefixtures("one_thread_module")

# operator (with the knobs that give it a per-channel gate) -> the gate computed from the block's input directly
GATED = {
    "se": ({}, lambda m, x: m.excitation(x)),
    "eca": ({}, lambda m, x: m.excitation(x)),
    "srm": ({}, lambda m, x: m.excitation(x)),
    "cbam": ({}, lambda m, x: m.channel_attention(x)),
    "gc": ({"se.gc_fusion": "scale"}, lambda m, x: torch.sigmoid(m.transform(m.squeeze(x)))),
    "ge": ({"se.ge_extent": 0}, lambda m, x: m.excitation(x)),
}
REFUSED = {  # operator, knobs -> what the line says about it
    "simam": ({}, "its gate is one per position"),
    "coord": ({}, "its gates are per row and per column"),
    "gc": ({"se.gc_fusion": "add"}, "gc_fusion=add adds its context"),
    "ge": ({"se.ge_extent": 2}, "ge_extent=2: its gate is per position"),
}


def tiny(op: str, knobs: dict) -> torch.nn.Module:
    """SE-ResNet-20 (CIFAR layout) with ``op``, its attention weights random (not a released init's constant gate)."""
    model = build_model("se_resnet20_cifar", **{"se.operator": op, **knobs}).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in se_modules(model).values():
            for t in (*block.parameters(), *block.buffers()):
                if t.is_floating_point():
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5 if t.ndim <= 1 else
                            0.3 * torch.randn(t.shape, generator=g))
    return model


@pytest.mark.parametrize("op", list(GATED))
def test_each_channel_gate_is_recorded_as_the_module_computes_it(op):
    knobs, direct = GATED[op]
    model = tiny(op, knobs)
    inputs = {}
    hooks = [b.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0].clone()))
             for name, b in se_blocks(model).items()]
    n = 6  # one class per sample: each class mean is that sample's gate
    x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    stats = record_excitation(model, [(x, torch.arange(n))], n)
    for h in hooks:
        h.remove()
    blocks = se_blocks(model)
    assert stats.blocks == list(blocks) and len(blocks) == 9
    for name, block in blocks.items():
        mean = stats.mean[name]
        assert mean.shape == (n, block.channels)  # blocks x C: one value per class and channel
        assert ((mean > 0) & (mean < 1)).all(), name  # sigmoid gates
        assert mean.std() > 1e-3, name  # random weights: not the constant 1/2 of a released init
        with torch.no_grad():
            gate = direct(block, inputs[name])
        assert gate.shape == (n, block.channels, 1, 1)
        torch.testing.assert_close(torch.from_numpy(mean), gate.flatten(1).double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("op, knobs, why", [(op, *case) for op, case in REFUSED.items()])
def test_operators_without_a_channel_gate_are_refused_in_one_line(op, knobs, why):
    model = build_model("se_resnet20_cifar", **{"se.operator": op, **knobs})
    with pytest.raises(NoChannelGate) as refused:
        ExcitationRecorder(model, 10)
    line = str(refused.value)
    assert "\n" not in line
    assert f"model.se.operator={op!r}, which has no channel gate ({why}" in line
    assert line.endswith(f"the excitation analysis needs one per channel: {CHANNEL_GATED}")


def test_the_listed_operators_are_those_whose_modules_have_a_channel_gate():
    """CHANNEL_GATED, the refusal's list, against what each module's channel_gate() says at its default knobs."""
    gated = set()
    for op in OPERATORS:
        try:
            ExcitationRecorder(build_model("se_resnet20_cifar", **{"se.operator": op}), 10)
            gated.add(op)
        except NoChannelGate:
            pass
    assert gated == {"se", "eca", "srm", "cbam", "ge"}  # gc's default fusion is add
    assert all(op in CHANNEL_GATED for op in gated) and "gc with gc_fusion=scale" in CHANNEL_GATED


@pytest.fixture
def simam_run(tmp_path, monkeypatch) -> Path:
    """A run folder whose checkpoint holds a SimAM model; loading data would fail the test."""
    run = tmp_path / "simam_s0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    model = build_model("se_resnet20_cifar", **{"se.operator": "simam"})
    monkeypatch.setattr(analysis, "load_module", lambda ckpt: SimpleNamespace(model=model, cfg=ExperimentConfig()))

    def no_data(*args, **kwargs):
        raise AssertionError("the refusal must come before any data loads")

    monkeypatch.setattr("ablations.data.build_datamodule", no_data)
    return run


def test_the_command_refuses_before_loading_data_in_one_line(simam_run, capsys):
    assert main(["excitation", str(simam_run), "--wandb-mode", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"checkpoint {simam_run / 'checkpoints' / 'last.ckpt'} uses model.se.operator='simam', which has no " \
           "channel gate (its gate is one per position" in err[0]


def test_a_sweep_lists_a_run_without_a_channel_gate_and_goes_on(simam_run, capsys):
    with pytest.raises(ValueError, match="no run under .* has SE blocks to analyse"):
        analysis.sweep(simam_run.parent, analysis.Options(wandb_mode="disabled"))
    out = capsys.readouterr().out
    assert "simam_s0: checkpoint" in out and "which has no channel gate" in out
    assert "listed with its accuracy only" in out
