"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018, arXiv 1807.06521).

Channel attention, then spatial attention, each a gate multiplied in (Eq. 1):
M_c(F) = σ(MLP(AvgPool(F)) + MLP(MaxPool(F))), one MLP shared by both pooled descriptors (Eq. 2), F' = M_c(F) ⊗ F;
M_s(F') = σ(f^{k×k}([AvgPool_c(F'); MaxPool_c(F')])) over the channel axis (Eq. 3), F'' = M_s(F') ⊗ F'.

Follows the paper's released code (Jongchan/attention-module, ``MODELS/cbam.py``): MLP width C // r with biases
(``se.reduction``, ``se.bias``), the spatial convolution without bias followed by BN (momentum 0.01), and its two
input maps in the code's order, channel max first, then channel mean. timm's ``CbamModule`` stacks them mean
first and drops the MLP biases (``mlp_bias=False``) and rounds C / r to the nearest integer; given timm's weights,
ours computes what timm's does once the spatial kernel's two input channels are swapped.

Initialisation follows the released code (``MODELS/model_resnet.py``, ``ResNet.__init__``): every BN weight inside a
``SpatialGate`` is set to 0 (bias 0), so M_s starts at σ(0) = 1/2 everywhere and the spatial branch starts uniform,
``reset_parameters``. timm's ``CbamModule`` leaves that BN weight at 1; loading its weights overwrites ours.

Counted: both poolings are the squeeze, the MLP and the k×k convolution are MACs, the two multiplies the scale.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.config import SEConfig
from senet.recalibration import Recalibration
from senet.se import _ACTIVATIONS, PointwiseFC, bottleneck_width


class GlobalPools(nn.Module):
    """AvgPool and MaxPool over H x W: two (N, C, 1, 1) descriptors."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)


class SharedMLP(nn.Module):
    """MLP(avg) + MLP(max) with one MLP (CBAM Eq. 2), both descriptors in one batch."""

    def __init__(self, channels: int, hidden: int, cfg: SEConfig) -> None:
        super().__init__()
        self.fc1 = PointwiseFC(channels, hidden, 1, bias=cfg.bias)
        self.act = _ACTIVATIONS[cfg.activation]()
        self.fc2 = PointwiseFC(hidden, channels, 1, bias=cfg.bias)

    def forward(self, avg: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act(self.fc1(torch.cat([avg, mx]))))
        return y[: avg.shape[0]] + y[avg.shape[0]:]


class ChannelPools(nn.Module):
    """[MaxPool_c; AvgPool_c] over the channel axis: (N, 2, H, W), max first as in the released code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)


class CBAM(Recalibration):
    """x -> F'' = M_s(F') ⊗ F', F' = M_c(x) ⊗ x (CBAM Eq. 1-3)."""

    squeeze_children = ("squeeze", "compress")

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "CBAM") -> None:
        super().__init__()
        k = cfg.cbam_kernel
        self.tag = tag
        self.channels = channels
        self.squeeze = GlobalPools()
        self.mlp = SharedMLP(channels, bottleneck_width(channels, cfg, tag), cfg)
        self.gate = nn.Sigmoid()
        self.compress = ChannelPools()
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, k, padding=(k - 1) // 2, bias=False),
                                     nn.BatchNorm2d(1, eps=1e-5, momentum=0.01))
        self.spatial_gate = nn.Sigmoid()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released initialisation (spatial BN weight and bias zero: M_s = 1/2 at init);
        ``senet.blocks.init_weights`` runs it after the network's own, which sets every BN weight to 1."""
        nn.init.zeros_(self.spatial[1].weight)
        nn.init.zeros_(self.spatial[1].bias)

    def channel_gate(self) -> nn.Module:
        """The module whose output is M_c (N, C, 1, 1), the channel half (the excitation analysis hooks it)."""
        return self.gate

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """M_c (N, C, 1, 1)."""
        return self.gate(self.mlp(*self.squeeze(x)))

    def spatial_attention(self, x: torch.Tensor) -> torch.Tensor:
        """M_s (N, 1, H, W) of the channel-refined F'."""
        return self.spatial_gate(self.spatial(self.compress(x)))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = self.scale(x, self.channel_attention(x))
        return self.scale(x, self.spatial_attention(x), residual)
