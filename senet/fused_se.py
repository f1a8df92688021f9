"""The fast path of the SE block: the same function as ``senet.se`` with fewer passes over the feature map.

``senet.se`` states the block as the paper does; this module holds how it runs fast. Three hand-written autograd
Functions and one convolution subclass:

- ``fused_scale``: F_scale ``x * s``, fused into the residual sum where a unit hands one in, ``residual + x * s``
  in one ``torch.addcmul`` (NVIDIA DeepLearningExamples' SE bottleneck; the Caffe release's "Axpy" layer): one
  pass over the feature map instead of two, and no scaled intermediate. The block is still called once per unit,
  so its forward hooks and its gate's hooks see what they see unfused;
- ``spatial_mean``: F_sq's global average pooling, whose backward expands the gradient instead of writing it;
- ``PointwiseFC``: the excitation's 1x1 convolutions, run as matrix products on the pooled descriptor.

Each module reads its ``fast`` attribute (default True; ``senet.blocks.set_fused_se`` sets it). Where it is False,
and while tracing, under autocast or without autograd, the plain ops run instead: 1x1 convolutions, scale then add,
bit-equal to the Caffe ports. Both forms compute the same function (to float rounding) with the same parameters.
"""
from __future__ import annotations

import torch
from torch import nn


def plain_ops(module: nn.Module) -> bool:
    """Plain ops instead of the hand-written Functions: while tracing, under autocast, without autograd, or where
    ``senet.blocks.set_fused_se(model, False)`` asked for the released arithmetic."""
    # Without autograd (inference, the excitation analysis) the hand-written backward passes buy nothing.
    return tracing() or autocast() or not torch.is_grad_enabled() or not getattr(module, "fast", True)


def autocast() -> bool:
    """Mixed precision (``train.precision=bf16-mixed``/``16-mixed``): autocast casts the inputs of plain convolutions
    and linears to half precision, weights included; the Functions below would get half activations beside fp32
    weights, which their matrix products refuse."""
    return torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu")


def tracing() -> bool:
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
        if tracing() or autocast() or not torch.is_grad_enabled():
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


def spatial_mean(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Global average pooling to (N, C, 1, 1) for ``module`` (a ``Squeeze``): ``_SpatialMean`` unless plain ops."""
    return x.mean((2, 3), keepdim=True) if plain_ops(module) else _SpatialMean.apply(x)


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


def fused_scale(module: nn.Module, x: torch.Tensor, s: torch.Tensor,
                residual: torch.Tensor | None = None) -> torch.Tensor:
    """F_scale ``x * s`` for ``module`` (a ``Recalibration``); with ``residual``, ``residual + x * s`` in one op."""
    # The hand-written backward takes per-channel gates (N, C, 1, 1) and full-size ones; others (a spatial
    # gate (N, 1, H, W)) broadcast with plain ops.
    per_channel = s.shape[1] == x.shape[1] and (s.shape[2:] == (1, 1) or s.shape == x.shape)
    if plain_ops(module) or not per_channel:
        return x * s if residual is None else torch.addcmul(residual, x, s)
    return _Scale.apply(x, s, residual)
