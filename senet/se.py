"""The Squeeze-and-Excitation block and its ablation variants (paper Sec. 3, Tables 10-12, 16).

Written by hand because no library has the paper's full knob set (max/none squeeze, every
gate, NoSqueeze at full resolution). The FCs are 1x1 convolutions, as in the released Caffe
models and their PyTorch ports, so one code path serves the pooled (N, C, 1, 1) descriptor and
NoSqueeze's full-resolution (N, C, H, W) input; both keep channels_last tensors channels_last.

Where the scaled output meets a residual sum, ``forward(x, residual)`` fuses F_scale into that sum,
``residual + x * s`` in one ``torch.addcmul`` (NVIDIA DeepLearningExamples' SE bottleneck; the Caffe
release's "Axpy" layer): one pass over the feature map instead of two, and no scaled intermediate.
The block is still called once per unit, so its forward hooks and its gate's hooks see what they saw.
"""
from __future__ import annotations

import torch
from torch import nn

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


class Squeeze(nn.Module):
    """F_sq: global pooling to a (N, C, 1, 1) descriptor, or nothing for NoSqueeze."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return x.mean((2, 3), keepdim=True)
        if self.mode == "max":
            return x.amax((2, 3), keepdim=True)
        if self.mode == "avgmax":
            return 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))
        return x  # "none": Table 16's NoSqueeze keeps the spatial size

    def extra_repr(self) -> str:
        return self.mode


class SqueezeExcite(nn.Module):
    """x -> x * σ(W2 δ(W1 F_sq(x))) (paper Eq. 2-4).

    Args:
        channels: C, the channels the block recalibrates.
        cfg: the SE knobs.
        tag: the paper's name for the block, e.g. ``SE_4_6`` (stage 4, block 6), used by the
            excitation analysis and in error messages.
    """

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "SE") -> None:
        super().__init__()
        hidden = se_width(channels, cfg)
        if hidden < 1:
            raise ValueError(
                f"se.reduction={cfg.reduction} leaves 0 channels in {tag} ({channels} channels // "
                f"{cfg.reduction}); allowed: reduction <= {channels} for this network"
            )
        self.tag = tag
        self.channels = channels
        self.squeeze = Squeeze(cfg.squeeze)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=cfg.bias)
        self.act = _ACTIVATIONS[cfg.activation]()
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=cfg.bias)
        self.gate = _GATES[cfg.gate]()

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values s (N, C, 1, 1), or (N, C, H, W) for NoSqueeze."""
        return self.gate(self.fc2(self.act(self.fc1(self.squeeze(x)))))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """F_scale ``x * s``; with ``residual``, the scale fused into the sum: ``residual + x * s``."""
        s = self.excitation(x)
        if residual is None:
            return x * s  # F_scale: broadcast over H, W
        return torch.addcmul(residual, x, s)

    def extra_repr(self) -> str:
        return f"tag={self.tag}"


def make_se(channels: int, cfg: SEConfig | None, stage: int, block: int, placement: str | None = None):
    """An SE block for ``(stage, block)`` if ``cfg`` asks for one there (and at ``placement``), else None."""
    if cfg is None or not cfg.applies_to(stage, block):
        return None
    if placement is not None and cfg.placement != placement:
        return None
    return SqueezeExcite(channels, cfg, tag=f"SE_{stage}_{block}")


def se_modules(model: nn.Module) -> dict[str, SqueezeExcite]:
    """Every SE block in ``model`` by its tag, in forward order of construction."""
    return {m.tag: m for m in model.modules() if isinstance(m, SqueezeExcite)}
