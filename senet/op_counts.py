"""One forward of a model, measured by op category, with the SE ops attributed (paper Sec. 4, Tables 2-3).

Built on ``torch.utils.flop_counter.FlopCounterMode``: its registered conv/matmul formulas give the
MACs, its module tracking attributes every op to a module, and ``custom_mapping`` adds formulas for
the element-wise ops it leaves at zero. What we add by hand, as no counter does it, is the SE
attribution: ops inside an SE block's ``squeeze`` child are the squeeze, ops in its own ``forward``
the scale. SE's successors (``senet.attention``) are counted by the same rule: every ``Recalibration``
names its squeeze children, and its own ``forward`` runs only the final combination. Which categories a
number counts is ``senet.complexity``'s conventions.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from senet.recalibration import Recalibration

aten = torch.ops.aten

#: Categories every convention counts (multiply-accumulates of convolutions and matrix products).
MAC_CATEGORIES = ("conv", "linear")
#: Element-wise categories a convention may count, one op per element.
OPTIONAL_CATEGORIES = ("se_squeeze", "se_scale", "bn", "add", "elementwise")

# ---- Op formulas: the element-wise ops FlopCounterMode leaves at zero ---- #

def _numel(shape) -> int:
    if isinstance(shape, (tuple, list)) and shape and not isinstance(shape[0], int):
        shape = shape[0]  # ops returning (values, indices): count the values
    return math.prod(shape)


def _per_output(*args, out_shape=None, **kwargs) -> int:
    return _numel(out_shape)


def _per_input(*args, out_shape=None, **kwargs) -> int:
    return _numel(args[0])


def _free(*args, out_shape=None, **kwargs) -> int:
    return 0


_POINTWISE = ("mul", "mul_", "div", "div_", "sub", "sub_", "relu", "relu_", "sigmoid", "sigmoid_", "tanh",
              "tanh_", "hardsigmoid", "hardsigmoid_", "hardtanh", "hardtanh_", "clamp", "clamp_", "clamp_min",
              "clamp_min_", "gelu", "silu", "silu_", "leaky_relu", "leaky_relu_", "hardswish", "hardswish_",
              "threshold", "where", "maximum", "minimum", "neg", "exp", "rsqrt", "pow")
_ADD = ("add", "add_")
# residual + x * s in one op: the SE scale fused into the residual sum (Recalibration.scale(x, s, residual));
# inside an SE block it counts as the scale and the sum it replaced, one op each per element.
_FUSED_SCALE_ADD = ("addcmul", "addcmul_")
_REDUCE = ("mean", "sum", "std", "var", "amax", "amin", "max", "avg_pool2d", "max_pool2d",
           "max_pool2d_with_indices", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "_softmax",
           "_log_softmax")
# Normalisations that are not an inference-time scale and shift (GC's LayerNorm): one op per input element.
_NORM = ("native_layer_norm",)
_BN = ("_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
       "native_batch_norm", "cudnn_batch_norm", "miopen_batch_norm")
# Shape and memory ops: known, and free under every convention.
_FREE = ("view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "transpose", "t", "expand", "squeeze",
         "unsqueeze", "cat", "stack", "split", "split_with_sizes", "slice", "select", "clone", "detach", "alias",
         "_to_copy", "copy_", "as_strided", "empty", "empty_strided", "empty_like", "new_empty", "zeros", "zeros_like", "fill_",
         "zero_", "lift_fresh", "native_dropout",
         "channel_shuffle", "native_channel_shuffle", "flatten", "contiguous",
         # nearest-neighbour resizing (GE) copies and computes nothing, whichever ops it decomposes into
         "upsample_nearest2d", "_upsample_nearest_exact2d", "_unsafe_index", "index", "arange")
_CONV = ("convolution", "_convolution", "cudnn_convolution", "convolution_overrideable", "_slow_conv2d_forward")
_LINEAR = ("mm", "addmm", "bmm", "baddbmm")


def _packets(names):
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


#: aten op packet -> measured category ("free" ops cost nothing in any convention).
OP_CATEGORY = {
    **{p: "conv" for p in _packets(_CONV)},
    **{p: "linear" for p in _packets(_LINEAR)},
    **{p: "bn" for p in _packets(_BN)},
    **{p: "add" for p in _packets(_ADD + _FUSED_SCALE_ADD)},
    **{p: "elementwise" for p in _packets(_POINTWISE + _REDUCE + _NORM)},
    **{p: "free" for p in _packets(_FREE)},
}
_CUSTOM = {
    **{p: _per_output for p in _packets(_POINTWISE + _ADD + _FUSED_SCALE_ADD)},
    **{p: _per_input for p in _packets(_REDUCE + _BN + _NORM)},
    **{p: _free for p in _packets(_FREE)},
}


class _OpRecorder(TorchDispatchMode):
    """Records every op that runs below FlopCounterMode, so strict mode can name the ones it does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


# ---- Measurement: one forward, every category ---- #


@dataclass(frozen=True)
class OpCounts:
    """What one forward measured: params and, per category, MACs (conv, linear) or elements (the rest).

    ``categories`` holds every category whether or not a convention counts it; ``se`` the part of
    each category that ran inside SE blocks. The SE squeeze and scale are categories of their own
    (any op in an SE's ``squeeze`` child, any op in its own forward), so they never also appear in
    ``bn``/``add``/``elementwise``; the SE FCs (1x1 convs, at full resolution for NoSqueeze) are conv.
    """

    params: int
    categories: dict
    se: dict
    unknown_ops: tuple = ()
    input_size: tuple = (3, 224, 224)


def _as_meta(model: nn.Module) -> dict:
    tensors = chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    return {name: torch.empty_like(t, device="meta") for name, t in tensors}


def count_ops(model: nn.Module, input_size=(3, 224, 224), strict: bool = False, device: str | None = "meta") -> OpCounts:
    """Run one batch-1 forward of ``model`` in eval mode and measure every op category.

    Args:
        model: any ``nn.Module``; it is not changed (train/eval flags are restored).
        input_size: (C, H, W) of the single input image.
        strict: raise ``ValueError`` naming any op without a known cost, instead of counting it as 0.
        device: ``"meta"`` (default) runs on shape-only meta copies of the weights, so nothing is
            computed and any model size is fast; ``None`` runs on the model's own device and weights.
    """
    if len(tuple(input_size)) != 3:
        raise ValueError(f"input_size={input_size!r} is not allowed; give (channels, height, width)")
    if device not in ("meta", None):
        raise ValueError(f"device={device!r} is not allowed; choose one of: 'meta', None (the model's own device)")
    root = type(model).__name__
    se_blocks = {f"{root}.{name}": m for name, m in model.named_modules() if isinstance(m, Recalibration)}
    counts, unknown = _record(model, input_size, device)
    if strict and unknown:
        raise ValueError(f"strict complexity: no cost is known for {', '.join(unknown)} in {root}; the "
                         f"{len(OP_CATEGORY)} known ops are senet.op_counts.OP_CATEGORY")
    if unknown:
        warnings.warn(f"complexity: {root} runs ops with no known cost, counted as 0: {', '.join(unknown)}",
                      stacklevel=2)
    total, se = _attribute(counts, se_blocks)
    keys = MAC_CATEGORIES + OPTIONAL_CATEGORIES
    params = sum(p.numel() for p in model.parameters())
    return OpCounts(params=params, categories={k: total.get(k, 0) for k in keys},
                    se={k: se.get(k, 0) for k in keys}, unknown_ops=unknown, input_size=tuple(input_size))


def _record(model: nn.Module, input_size, device: str | None) -> tuple[dict, tuple[str, ...]]:
    """FlopCounterMode's per-module counts of one eval forward, and the ops it has no formula for."""
    if device == "meta":  # inputs and weights made outside the counter, so their creation is not counted
        x, state = torch.empty(1, *input_size, device="meta"), _as_meta(model)
    else:
        p = next(chain(model.parameters(), model.buffers()), None)
        x, state = torch.zeros(1, *input_size, device=p.device if p is not None else "cpu"), None
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), _OpRecorder() as recorder, FlopCounterMode(display=False, custom_mapping=_CUSTOM) as fcm:
            if state is not None:
                torch.func.functional_call(model, state, (x,), tie_weights=True)
            else:
                model(x)
    finally:
        for m, training in modes.items():
            m.training = training
    unknown = tuple(sorted(str(p) for p in recorder.seen if p not in fcm.flop_registry))
    return fcm.get_flop_counts(), unknown


def _attribute(counts: dict, se_blocks: dict[str, Recalibration]) -> tuple[dict, dict]:
    """Per-category totals of the whole model and of its SE blocks, the SE ops moved to their own categories.

    In a block: its ``squeeze_children``' element-wise ops are the squeeze, its other children's ops keep their
    category (their MACs count as conv: the SE FCs are 1x1 convolutions, run as matrix products), and the ops of
    its own ``forward`` are the scale.
    """
    def add(into: dict, ops: dict, sign: int = 1, region: str | None = None, fc: bool = False) -> None:
        for packet, value in ops.items():
            cat = OP_CATEGORY.get(packet, "free")
            if cat in MAC_CATEGORIES:
                value //= 2  # FlopCounterMode counts 2 flops per multiply-accumulate
                cat = "conv" if fc else cat  # the SE FCs are 1x1 convolutions, run as a matrix product
            elif region is not None:
                cat = region
            if cat != "free":
                into[cat] = into.get(cat, 0) + sign * value

    total: dict = {}
    se: dict = {}
    add(total, counts.get("Global", {}))
    for name, block in se_blocks.items():
        inner = counts.get(name, {})
        add(total, inner, -1)  # re-added below by region
        children = []
        for child, _ in block.named_children():
            squeeze = child in block.squeeze_children
            children.append((counts.get(f"{name}.{child}", {}), "se_squeeze" if squeeze else None, not squeeze))
        for ops, region, fc in children:
            add(total, ops, 1, region, fc)
            add(se, ops, 1, region, fc)
        own = dict(inner)  # ops in the block's own forward: the scale x * s
        for ops, _, _ in children:
            for packet, value in ops.items():
                own[packet] = own.get(packet, 0) - value
        add(total, own, 1, "se_scale")
        add(se, own, 1, "se_scale")
        # A fused scale also did the unit's residual sum: an add outside the SE, as in the unfused form.
        fused = sum(own.get(p, 0) for p in _packets(_FUSED_SCALE_ADD))
        if fused:
            total["add"] = total.get("add", 0) + fused
    return total, se
