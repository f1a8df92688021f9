"""Tracing the fused SE (the default, with autograd on) records plain ops, and the trace computes the eager model.

The hand-written autograd Functions of ``senet.fused_se`` would appear in a TorchScript graph as ``prim::PythonOp``
nodes, which neither a saved trace, ONNX nor fvcore's counter can run or count; under tracing the SE takes the
plain ops (``senet.fused_se.tracing``).
"""
from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from senet import SEConfig, build_model
from senet.blocks import ResidualUnit

pytestmark = pytest.mark.usefixtures("one_thread_module")


def trace(model: nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), torch.enable_grad():  # grad on: the case where the Functions would run
        warnings.simplefilter("ignore")  # trace's deprecation and shape-check warnings
        return torch.jit.trace(model, x)


def node_kinds(traced: torch.jit.ScriptModule) -> set[str]:
    return {n.kind() for n in traced.inlined_graph.nodes()}


@pytest.mark.parametrize("name, placement, size, fused", [
    ("se_resnet20_cifar", "standard", 32, True),  # the scale fused into the residual sum
    ("se_resnet20_cifar", "identity", 32, True),
    ("se_resnet20_cifar", "pre", 32, False),  # SE alone: the scale without a sum
    ("se_mobilenet_v1", "standard", 64, False),  # no residual units
])
def test_a_trace_of_the_fused_se_has_only_plain_ops_and_computes_the_eager_model(name, placement, size, fused):
    torch.manual_seed(0)
    model = build_model(name, se=SEConfig(placement=placement)).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    traced = trace(model, x)
    kinds = node_kinds(traced)
    assert not [k for k in kinds if "PythonOp" in k], sorted(kinds)
    assert all(k.startswith(("aten::", "prim::")) for k in kinds), sorted(kinds)
    units = [u for u in model.modules() if isinstance(u, ResidualUnit)]
    assert all(u.fused_se for u in units) and bool(units) == (name != "se_mobilenet_v1")
    assert ("aten::addcmul" in kinds) == fused  # the fused form was traced, as plain addcmul
    y = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))  # not the input traced with
    with torch.enable_grad():
        eager = model(y)  # the hand-written Functions
    torch.testing.assert_close(traced(y), eager, rtol=1e-5, atol=1e-5)


def test_a_trace_of_the_se_model_saves_and_loads(tmp_path):
    """A PythonOp cannot be serialised: saving fails on a trace that recorded a Function."""
    model = build_model("se_resnet20_cifar").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "se.pt"
    trace(model, x).save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_onnx_export_of_the_fused_se_has_only_standard_onnx_ops():
    onnx = pytest.importorskip("onnx", reason="ONNX export check needs the onnx package (not installed)")
    model = build_model("se_resnet20_cifar").eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), buffer, dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue()).graph
    ops = {n.op_type for n in graph.node}
    assert "PythonOp" not in ops and {n.domain for n in graph.node} <= {"", "ai.onnx"}, sorted(ops)
    assert {"Conv", "GlobalAveragePool", "Sigmoid"} <= ops or {"Conv", "ReduceMean", "Sigmoid"} <= ops, sorted(ops)
