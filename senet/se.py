"""The Squeeze-and-Excitation block and its ablation variants (paper Sec. 3, Tables 10-12, 16).

Written by hand because no library has the paper's full knob set (max/none squeeze, every
gate, NoSqueeze at full resolution). The FCs are 1x1 convolutions, as in the released Caffe
models and their PyTorch ports, so one code path serves the pooled (N, C, 1, 1) descriptor and
NoSqueeze's full-resolution (N, C, H, W) input; both keep channels_last tensors channels_last.

Where the scaled output meets a residual sum, ``forward(x, residual)`` fuses F_scale into that sum,
``residual + x * s`` in one ``torch.addcmul`` (NVIDIA DeepLearningExamples' SE bottleneck; the Caffe
release's "Axpy" layer): one pass over the feature map instead of two, and no scaled intermediate.
The block is still called once per unit, so its forward hooks and its gate's hooks see what they saw.

``SqueezeExcite`` is one ``Recalibration``: SE's successors (``senet.attention``: ECA, ...) are others, and
``make_se`` builds whichever ``se.operator`` names, so every architecture and placement gets each of them.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.attention import operator_class
from senet.config import SEConfig

_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}
_GATES = {
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "identity": nn.Identity,
}


def se_width(channels: int, cfg: SEConfig) -> int:
    """Bottleneck width of the excitation for ``channels`` input channels (paper: C // r)."""
    if cfg.width_rounding == "floor":
        return channels // cfg.reduction
    if cfg.width_rounding == "round":
        return int(round(channels / cfg.reduction))
    # timm/mmpretrain make_divisible(v, d, round_limit=0): nearest multiple of d, never below d
    d = cfg.divisor
    return max(d, int(channels / cfg.reduction + d / 2) // d * d)


def bottleneck_width(channels: int, cfg: SEConfig, tag: str) -> int:
    """``se_width``, refused in one line where it leaves no channel (``tag``: the block, for the message)."""
    hidden = se_width(channels, cfg)
    if hidden < 1:
        raise ValueError(
            f"se.reduction={cfg.reduction} leaves 0 channels in {tag} ({channels} channels // "
            f"{cfg.reduction}); allowed: reduction <= {channels} for this network"
        )
    return hidden


def _plain(module: nn.Module) -> bool:
    """Plain ops instead of the hand-written Functions: while tracing, or where ``senet.blocks.set_fused_se(model,
    False)`` asked for the released arithmetic (1x1 convolutions, scale then add: bit-equal to the Caffe ports)."""
    # Without autograd (inference, the excitation analysis) the hand-written backward passes buy nothing.
    return _tracing() or _autocast() or not torch.is_grad_enabled() or not getattr(module, "fast", True)


def _autocast() -> bool:
    """Mixed precision (``train.precision=bf16-mixed``/``16-mixed``): autocast casts the inputs of plain convolutions
    and linears to half precision, weights included; the Functions below would get half activations beside fp32
    weights, which their matrix products refuse."""
    return torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu")


def _tracing() -> bool:
    """TorchScript tracing or scripting (``torch.jit``, ONNX export, fvcore's counter): plain ops, which they can
    record, instead of the hand-written autograd Functions below, which they see as opaque Python calls."""
    return torch.jit.is_tracing() or torch.jit.is_scripting()


class _PointwiseLinear(torch.autograd.Function):
    """A 1x1 convolution of a (N, C, 1, 1) input as one matrix product, with the weight's gradient in the
    weight's own strides (a channels_last conv weight keeps them, which DDP checks exactly)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = x.new_empty(x.shape[0], weight.shape[0], 1, 1)  # not a view: an in-place activation may follow
        w = weight.flatten(1).t()
        if bias is None:
            torch.mm(x.flatten(1), w, out=out.view(out.shape[:2]))
        else:
            torch.addmm(bias, x.flatten(1), w, out=out.view(out.shape[:2]))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        g = grad.flatten(1)
        grad_x = (g @ weight.flatten(1))[:, :, None, None] if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight).copy_((g.t() @ x.flatten(1)).view(weight.shape))
        grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class PointwiseFC(nn.Conv2d):
    """A 1x1 convolution that runs as a matrix product on a pooled (N, C, 1, 1) descriptor.

    Same parameters, state-dict keys and module hooks as ``nn.Conv2d`` (the released layout), but on a 1x1
    input the convolution machinery is pure overhead: on CPUs mkldnn's 1x1 convolution and its backward
    cost more than the whole SE scale (a profile of SE-ResNet-50 put 86 ms of a 307 ms SE overhead per
    training step there, batch 8, 2 cores). NoSqueeze's full-resolution input still convolves.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            return super().forward(x)
        if not getattr(self, "fast", True):
            return super().forward(x)
        if _tracing() or _autocast() or not torch.is_grad_enabled():
            return nn.functional.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
        return _PointwiseLinear.apply(x, self.weight, self.bias)


class _SpatialMean(torch.autograd.Function):
    """``x.mean((2, 3), keepdim=True)`` whose backward returns the gradient expanded, not materialised.

    Autograd's mean backward writes a full-size ``grad / (H * W)`` tensor, only for it to be added to the
    gradient that reaches ``x`` through the scale; an expanded (stride-0) view costs nothing and the sum
    is the one pass that remains.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return (grad / (ctx.shape[2] * ctx.shape[3])).expand(ctx.shape)


class _Scale(torch.autograd.Function):
    """F_scale ``x * s``, or fused into the residual sum ``residual + x * s`` (``torch.addcmul``).

    Backward: ``grad * s`` for ``x``, and for ``s`` the per-channel dot product of ``grad`` and ``x`` over
    H x W as one batched matrix product where both are NCHW-contiguous (autograd's form writes the full-size
    product ``grad * x`` and then sums it). Written by hand for that: no library op fuses the two.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, s)
        ctx.has_residual = residual is not None
        return x * s if residual is None else torch.addcmul(residual, x, s)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, s = ctx.saved_tensors
        grad_x = grad * s if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            n, c, h, w = x.shape
            if s.shape[2:] == (1, 1) and grad.is_contiguous() and x.is_contiguous():
                grad_s = torch.bmm(grad.view(n * c, 1, h * w), x.view(n * c, h * w, 1)).view(n, c, 1, 1)
            else:
                grad_s = (grad * x).sum((2, 3), keepdim=True) if s.shape[2:] == (1, 1) else grad * x
            grad_s = grad_s.sum(0, keepdim=True) if s.shape[0] == 1 and n > 1 else grad_s
        return grad_x, grad_s, grad if ctx.has_residual else None


class Squeeze(nn.Module):
    """F_sq: global pooling to a (N, C, 1, 1) descriptor, or nothing for NoSqueeze."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return x.mean((2, 3), keepdim=True) if _plain(self) else _SpatialMean.apply(x)
        if self.mode == "max":
            return x.amax((2, 3), keepdim=True)
        if self.mode == "avgmax":
            return 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))
        return x  # "none": Table 16's NoSqueeze keeps the spatial size

    def extra_repr(self) -> str:
        return self.mode


class Recalibration(nn.Module):
    """Base of every operator ``make_se`` builds: SE and its successors (``senet.attention``).

    One contract, which the blocks, the fast path and the complexity counter (``senet.op_counts``) rely on:

    - ``forward(x, residual=None)`` returns the recalibrated ``x``, plus ``residual`` when it is given;
    - the module's own ``forward`` runs only the final combination (F_scale, ``self.scale``); everything that
      computes the gate lives in child modules, so the counter attributes it;
    - the children named in ``squeeze_children`` aggregate context (F_sq): their element-wise ops count as the
      squeeze, their multiply-accumulates as MACs;
    - ``fuses_residual``: the output is ``x * s``, so a residual unit hands its sum in (``residual + x * s``,
      one ``addcmul``). An operator whose output is not ``x * s`` (GC's additive fusion) sets it False and the
      unit adds.

    Attributes: ``tag`` (``SE_4_6``: stage 4, block 6, whatever the operator) and ``channels``.
    """

    squeeze_children: tuple[str, ...] = ("squeeze",)
    fuses_residual: bool = True

    def scale(self, x: torch.Tensor, s: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """F_scale ``x * s``; with ``residual``, fused into the sum: ``residual + x * s``."""
        # The hand-written backward takes per-channel gates (N, C, 1, 1) and full-size ones; others (a spatial
        # gate (N, 1, H, W)) broadcast with plain ops.
        per_channel = s.shape[1] == x.shape[1] and (s.shape[2:] == (1, 1) or s.shape == x.shape)
        if _plain(self) or not per_channel:
            return x * s if residual is None else torch.addcmul(residual, x, s)
        return _Scale.apply(x, s, residual)

    def extra_repr(self) -> str:
        return f"tag={self.tag}"


class SqueezeExcite(Recalibration):
    """x -> x * σ(W2 δ(W1 F_sq(x))) (paper Eq. 2-4).

    Args:
        channels: C, the channels the block recalibrates.
        cfg: the SE knobs.
        tag: the paper's name for the block, e.g. ``SE_4_6`` (stage 4, block 6), used by the
            excitation analysis and in error messages.
    """

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "SE") -> None:
        super().__init__()
        hidden = bottleneck_width(channels, cfg, tag)
        self.tag = tag
        self.channels = channels
        self.squeeze = Squeeze(cfg.squeeze)
        self.fc1 = PointwiseFC(channels, hidden, 1, bias=cfg.bias)
        self.act = _ACTIVATIONS[cfg.activation]()
        self.fc2 = PointwiseFC(hidden, channels, 1, bias=cfg.bias)
        self.gate = _GATES[cfg.gate]()

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values s (N, C, 1, 1), or (N, C, H, W) for NoSqueeze."""
        return self.gate(self.fc2(self.act(self.fc1(self.squeeze(x)))))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """F_scale ``x * s``; with ``residual``, the scale fused into the sum: ``residual + x * s``."""
        return self.scale(x, self.excitation(x), residual)  # F_scale, broadcast over H, W


def make_se(channels: int, cfg: SEConfig | None, stage: int, block: int, placement: str | None = None,
            tag: str | None = None) -> Recalibration | None:
    """The ``cfg.operator`` block for ``(stage, block)`` if ``cfg`` asks for one there (and at ``placement``), else
    None. ``tag`` defaults to the paper's ``SE_{stage}_{block}``."""
    if cfg is None or not cfg.applies_to(stage, block):
        return None
    if placement is not None and cfg.placement != placement:
        return None
    return operator_class(cfg.operator)(channels, cfg, tag=tag or f"SE_{stage}_{block}")


def se_modules(model: nn.Module) -> dict[str, Recalibration]:
    """Every recalibration block (SE or a successor) in ``model`` by its tag, in order of construction."""
    return {m.tag: m for m in model.modules() if isinstance(m, Recalibration)}
