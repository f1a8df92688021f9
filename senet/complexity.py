"""Parameters and multiply-accumulates of a built model, with the SE ops counted (paper Sec. 4, Tables 2-3, 10-16).

Built on ``torch.utils.flop_counter.FlopCounterMode``: its registered conv/matmul formulas give the
MACs, its module tracking attributes every op to a module, and ``custom_mapping`` adds formulas for
the element-wise ops it leaves at zero. What we add is the SE attribution (ops inside a
``SqueezeExcite``'s ``squeeze`` child are the squeeze, ops in its own ``forward`` the scale) and the
conventions that say which of the measured categories count. One traced forward serves every
convention. Units are named: ``macs``/``gmacs`` are multiply-accumulates (the paper's "GFLOPs"),
``gflops`` is 2 x MACs (``FlopCounterMode``'s unit); the convention's element-wise ops count one each.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import chain

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from senet.se import SqueezeExcite

aten = torch.ops.aten

#: Categories every convention counts (multiply-accumulates of convolutions and matrix products).
MAC_CATEGORIES = ("conv", "linear")
#: Element-wise categories a convention may count, one op per element.
OPTIONAL_CATEGORIES = ("se_squeeze", "se_scale", "bn", "add", "elementwise")
#: Keys of ``Complexity.breakdown``; they partition ``macs``.
BREAKDOWN_KEYS = ("conv", "linear", "se_squeeze", "se_scale", "other")


@dataclass(frozen=True)
class Convention:
    """Which measured categories a complexity number counts (conv and linear MACs always count)."""

    name: str
    counts: frozenset
    description: str


CONVENTIONS = {c.name: c for c in (
    Convention("paper", frozenset({"se_squeeze", "se_scale"}),
               "conv + FC multiply-accumulates, plus one op per element for the SE squeeze (pooling) and for the "
               "SE scale; reproduces ResNet-50 3.86 -> SE-ResNet-50 3.87 (senet-paper.md Sec. 9)"),
    Convention("conv+fc", frozenset(),
               "conv + FC multiply-accumulates only: what fvcore and FlopCounterMode/2 report; SE shows only "
               "through its FC layers"),
    Convention("squeeze-only", frozenset({"se_squeeze"}),
               "conv + FC MACs plus the SE squeeze: what module-hook counters (thop, ptflops) see of an SE "
               "block whose pooling is a module and whose scale is a functional multiply"),
    Convention("paper+add", frozenset({"se_squeeze", "se_scale", "add"}),
               "paper, plus one op per element of every tensor sum (residual additions, Caffe Eltwise layers)"),
    Convention("paper+bn", frozenset({"se_squeeze", "se_scale", "bn"}),
               "paper, plus one op per element for every batch norm (an inference-time scale and shift)"),
    Convention("all-elementwise", frozenset(OPTIONAL_CATEGORIES),
               "paper, plus batch norm, sums, activations, gates and pooling, one op per element "
               "(reductions and pooling: per input element)"),
)}


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
              "threshold", "where", "maximum", "minimum", "neg", "exp", "rsqrt")
_ADD = ("add", "add_")
# residual + x * s in one op: the SE scale fused into the residual sum (SqueezeExcite.forward(x, residual));
# inside an SE block it counts as the scale and the sum it replaced, one op each per element.
_FUSED_SCALE_ADD = ("addcmul", "addcmul_")
_REDUCE = ("mean", "sum", "amax", "amin", "max", "avg_pool2d", "max_pool2d", "max_pool2d_with_indices",
           "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "_softmax", "_log_softmax")
_BN = ("_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
       "native_batch_norm", "cudnn_batch_norm", "miopen_batch_norm")
# Shape and memory ops: known, and free under every convention.
_FREE = ("view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "transpose", "t", "expand", "squeeze",
         "unsqueeze", "cat", "stack", "split", "split_with_sizes", "slice", "select", "clone", "detach", "alias",
         "_to_copy", "copy_", "as_strided", "empty", "empty_strided", "empty_like", "new_empty", "zeros", "zeros_like", "fill_",
         "zero_", "lift_fresh", "native_dropout",
         "channel_shuffle", "native_channel_shuffle", "flatten", "contiguous")
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
    **{p: "elementwise" for p in _packets(_POINTWISE + _REDUCE)},
    **{p: "free" for p in _packets(_FREE)},
}
_CUSTOM = {
    **{p: _per_output for p in _packets(_POINTWISE + _ADD + _FUSED_SCALE_ADD)},
    **{p: _per_input for p in _packets(_REDUCE + _BN)},
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
    se_names = {f"{root}.{name}" for name, m in model.named_modules() if isinstance(m, SqueezeExcite)}
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
    counts = fcm.get_flop_counts()
    unknown = tuple(sorted(str(p) for p in recorder.seen if p not in fcm.flop_registry))
    if strict and unknown:
        raise ValueError(f"strict complexity: no cost is known for {', '.join(unknown)} in {root}; the "
                         f"{len(OP_CATEGORY)} known ops are senet.complexity.OP_CATEGORY")
    if unknown:
        warnings.warn(f"complexity: {root} runs ops with no known cost, counted as 0: {', '.join(unknown)}",
                      stacklevel=2)

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
    for name in se_names:
        inner = counts.get(name, {})
        add(total, inner, -1)  # re-added below by region
        squeeze = counts.get(f"{name}.squeeze", {})
        children = [counts.get(f"{name}.{c}", {}) for c in ("fc1", "act", "fc2", "gate")]
        for ops, region, fc in ((squeeze, "se_squeeze", False), *((c, None, True) for c in children)):
            add(total, ops, 1, region, fc)
            add(se, ops, 1, region, fc)
        own = dict(inner)  # ops in SqueezeExcite.forward itself: the scale x * s
        for ops in (squeeze, *children):
            for packet, value in ops.items():
                own[packet] = own.get(packet, 0) - value
        add(total, own, 1, "se_scale")
        add(se, own, 1, "se_scale")
        # A fused scale also did the unit's residual sum: an add outside the SE, as in the unfused form.
        fused = sum(own.get(p, 0) for p in _packets(_FUSED_SCALE_ADD))
        if fused:
            total["add"] = total.get("add", 0) + fused
    keys = MAC_CATEGORIES + OPTIONAL_CATEGORIES
    params = sum(p.numel() for p in model.parameters())
    return OpCounts(params=params, categories={k: total.get(k, 0) for k in keys},
                    se={k: se.get(k, 0) for k in keys}, unknown_ops=unknown, input_size=tuple(input_size))


# ---- Conventions: what a number counts ---- #


@dataclass(frozen=True)
class Complexity:
    """Params and multiply-accumulates of a model under one counting convention.

    Attributes:
        params: learnable parameters (``sum(p.numel() for p in model.parameters())``).
        macs: multiply-accumulates (the paper's "FLOPs"), plus one per element for the element-wise
            categories the convention counts.
        gmacs: ``macs / 1e9``, the unit of the paper's "GFLOPs" columns.
        gflops: ``2 * gmacs``, what ``torch.utils.flop_counter`` reports.
        breakdown: the counted part of ``macs`` by kind; keys ``conv`` (including the SE FCs),
            ``linear``, ``se_squeeze``, ``se_scale``, ``other`` (bn, sums, activations ... when the
            convention counts them). Sums to ``macs``.
        se_macs: the part of ``macs`` that runs inside SE blocks (FCs, squeeze, scale, ...).
        uncounted: measured categories this convention leaves out (``bn``, ``add``, ``elementwise``...),
            so nothing is silently zero.
        convention: the ``CONVENTIONS`` key.
        unknown_ops: ops with no known cost (counted as 0; ``strict=True`` refuses them).
    """

    params: int
    macs: int
    breakdown: dict
    convention: str
    se_macs: int = 0
    uncounted: dict = field(default_factory=dict)
    unknown_ops: tuple = ()
    input_size: tuple = (3, 224, 224)
    gmacs: float = field(init=False)
    gflops: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gmacs", self.macs / 1e9)
        object.__setattr__(self, "gflops", 2 * self.macs / 1e9)


def check_convention(convention: str) -> Convention:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not allowed; choose one of: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[convention]


def summarize(counts: OpCounts, convention: str = "paper") -> Complexity:
    """Apply a counting convention to a measurement (cheap: no forward)."""
    conv = check_convention(convention)
    counted = set(MAC_CATEGORIES) | conv.counts
    cats = counts.categories
    breakdown = {k: cats[k] if k in counted else 0 for k in BREAKDOWN_KEYS[:-1]}
    breakdown["other"] = sum(cats[k] for k in ("bn", "add", "elementwise") if k in counted)
    return Complexity(
        params=counts.params,
        macs=sum(breakdown.values()),
        breakdown=breakdown,
        convention=convention,
        se_macs=sum(v for k, v in counts.se.items() if k in counted),
        uncounted={k: v for k, v in cats.items() if k not in counted},
        unknown_ops=counts.unknown_ops,
        input_size=counts.input_size,
    )


def complexity(model: nn.Module, input_size=(3, 224, 224), convention: str = "paper", strict: bool = False,
               device: str | None = "meta") -> Complexity:
    """Params and MACs of ``model`` for one ``input_size`` image under ``convention``.

    A pure function of the built model: one batch-1 forward in eval mode on meta tensors (see
    ``count_ops``), then ``summarize``. ``convention`` is a key of ``CONVENTIONS`` (``paper``,
    ``conv+fc``, ``squeeze-only``, ``paper+add``, ``paper+bn``, ``all-elementwise``).
    """
    check_convention(convention)
    return summarize(count_ops(model, input_size, strict=strict, device=device), convention)
