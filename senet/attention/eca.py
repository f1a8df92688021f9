"""ECA: Efficient Channel Attention (Wang et al., "ECA-Net", CVPR 2020, arXiv 1910.03151).

SE without its bottleneck: the pooled descriptor y (Eq. 1's global average pooling) goes through one 1-D
convolution of size k across channels, shared by all of them, then a sigmoid: ω = σ(C1D_k(y)) (Eq. 10), and
the output is x * ω. k follows the channel count (Eq. 12): k = |log2(C) / γ + b / γ|_odd with γ = 2, b = 1.

Follows the paper's released code (BangguWu/ECANet): the rule as written there, t = int(|(log2 C + b) / γ|),
t if odd else t + 1, so small layers may get k = 1. timm's ``EcaModule`` adds ``max(k, 3)`` (it differs for
C < 8); the weights and the arithmetic are otherwise the same (``conv.weight``, no bias).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from senet.config import SEConfig
from senet.recalibration import Recalibration
from senet.se import Squeeze


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA-Net Eq. 12: the odd kernel size for ``channels`` channels, as the released code computes it."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(Recalibration):
    """x -> x * σ(C1D_k(GAP(x))) (ECA-Net Eq. 10), k from ``cfg.eca_kernel``."""

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "ECA") -> None:
        super().__init__()
        k = eca_kernel_size(channels) if cfg.eca_kernel == "adaptive" else cfg.eca_kernel
        self.tag = tag
        self.channels = channels
        self.squeeze = Squeeze("avg")
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values ω (N, C, 1, 1)."""
        n, c = x.shape[:2]
        y = self.conv(self.squeeze(x).reshape(n, 1, c))  # channels as the 1-D axis
        return self.gate(y.reshape(n, c, 1, 1))  # on the (N, C, 1, 1) view: the gate module outputs s as multiplied in

    def channel_gate(self) -> nn.Module:
        """The module whose output is ω (N, C, 1, 1) (the excitation analysis hooks it)."""
        return self.gate

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale(x, self.excitation(x), residual)
