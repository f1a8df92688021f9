"""The Squeeze-and-Excitation block and its ablation variants (paper Sec. 3, Tables 10-12, 16).

Written by hand because no library has the paper's full knob set (max/none squeeze, every
gate, NoSqueeze at full resolution). The FCs are 1x1 convolutions, as in the released Caffe
models and their PyTorch ports, so one code path serves the pooled (N, C, 1, 1) descriptor and
NoSqueeze's full-resolution (N, C, H, W) input; both keep channels_last tensors channels_last.

Where the scaled output meets a residual sum, ``forward(x, residual)`` returns ``residual + x * s``.
How F_sq, the FCs and F_scale run fast (one ``addcmul``, hand-written backward passes) is ``senet.fused_se``.

``SqueezeExcite`` is one ``senet.recalibration.Recalibration``: SE's successors (``senet.attention``: ECA, ...)
are others, and ``make_se`` there builds whichever ``se.operator`` names, so every architecture and placement gets
each of them.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.config import SEConfig
from senet.fused_se import PointwiseFC, spatial_mean
from senet.recalibration import Recalibration

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


class Squeeze(nn.Module):
    """F_sq: global pooling to a (N, C, 1, 1) descriptor, or nothing for NoSqueeze."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return spatial_mean(self, x)
        if self.mode == "max":
            return x.amax((2, 3), keepdim=True)
        if self.mode == "avgmax":
            return 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))
        return x  # "none": Table 16's NoSqueeze keeps the spatial size

    def extra_repr(self) -> str:
        return self.mode


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
