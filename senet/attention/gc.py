"""GC: the Global Context block (Cao et al., "GCNet", ICCVW 2019, arXiv 1904.11492).

A simplified non-local block fused with SE (Eq. 3): z_i = x_i + W_v2 ReLU(LN(W_v1 Σ_j α_j x_j)), where
α_j = exp(W_k x_j) / Σ_m exp(W_k x_m) is one attention map over positions shared by all channels (context
modeling: attention pooling), W_v1, W_v2 the bottleneck transform of ratio r (C // r channels, LayerNorm and
ReLU between them), and the fusion adds the result to every position (``gc_fusion: add``, the paper's default)
or, SE-like, gates by its sigmoid (``scale``, Table 5's "scaling").

Follows the paper's released code (xvjiarui/GCNet, ``ContextBlock``): int(C / r) channels, biases on every
convolution, ``nn.LayerNorm([C/r, 1, 1])`` (eps 1e-5), the attention 1x1 convolution initialised Kaiming
fan-in and the transform's last convolution zero (an add block starts as the identity). timm's ``GlobalContext``
uses eps 1e-6 and rounds C / r to the nearest integer; given its weights and its eps, ours computes what it does.

Counted: the attention pooling is the squeeze (its 1x1 convolution and weighted sum are MACs), the transform
MACs, the add or the multiply by the gate the scale. An add block is not ``x * s``: a residual unit adds.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.config import SEConfig
from senet.recalibration import Recalibration
from senet.se import PointwiseFC, bottleneck_width


class AttentionPool(nn.Module):
    """Σ_j α_j x_j with α = softmax over positions of a 1x1 convolution to one channel: (N, C, 1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.softmax = nn.Softmax(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        alpha = self.softmax(self.conv(x).reshape(n, 1, h * w))  # (N, 1, HW)
        return torch.bmm(x.reshape(n, c, h * w), alpha.transpose(1, 2)).reshape(n, c, 1, 1)


class GlobalContext(Recalibration):
    """x -> x + T(pool(x)) (``add``) or x * σ(T(pool(x))) (``scale``) (GCNet Eq. 3, Table 5)."""

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "GC") -> None:
        super().__init__()
        hidden = bottleneck_width(channels, cfg, tag)
        self.tag = tag
        self.channels = channels
        self.fusion = cfg.gc_fusion
        self.fuses_residual = cfg.gc_fusion == "scale"
        self.squeeze = AttentionPool(channels)
        self.transform = nn.Sequential(PointwiseFC(channels, hidden, 1), nn.LayerNorm([hidden, 1, 1]),
                                       nn.ReLU(inplace=True), PointwiseFC(hidden, channels, 1))
        self.gate = nn.Sigmoid() if self.fuses_residual else None
        self.no_channel_gate = "gc_fusion=add adds its context to every position: no gate; gc_fusion=scale has one"
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released initialisation; ``senet.blocks.init_weights`` runs it after the network's own."""
        nn.init.kaiming_normal_(self.squeeze.conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.squeeze.conv.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def channel_gate(self) -> nn.Module | None:
        """The module whose output is σ(T(pool(x))) (N, C, 1, 1) with ``scale`` fusion, which the excitation analysis
        hooks; None with ``add``, which has no gate (``no_channel_gate`` says so)."""
        return self.gate

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        t = self.transform(self.squeeze(x))
        if self.gate is not None:
            return self.scale(x, self.gate(t), residual)
        out = x + t  # broadcast over H, W
        return out if residual is None else out + residual

    def extra_repr(self) -> str:
        return f"tag={self.tag}, fusion={self.fusion}"
