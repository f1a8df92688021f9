"""GE: Gather-Excite (Hu et al., "Gather-Excite", NeurIPS 2018, arXiv 1810.12348).

A gather operator ξ_G aggregates each channel over a spatial extent e (Sec. 3): every output position sees
an e-times downsampled neighbourhood, or the whole map (global extent, ``ge_extent: 0``); the excite operator
ξ_E(x, x̂) = x ⊙ σ(interp(x̂)) resizes the gathered map back by nearest-neighbour interpolation and gates x.
Three parameterisations (Sec. 3-4): θ⁻ (``theta_minus``) gathers by average pooling (kernel 2e - 1, stride e,
no parameters); θ (``theta``) by log2(e) depthwise 3x3 stride-2 convolutions, each with BN, ReLU between them;
θ⁺ (``theta_plus``) adds SE's 1x1 bottleneck (C // r, ReLU, biases) between gather and excite.

The released GENet code is Caffe prototxt only (hujie-frank/GENet); ours follows timm's ``GatherExcite``, which
covers every case, weight for weight (same names). It refuses, as timm asserts, θ and θ⁺ at global extent: their
depthwise kernel is the feature map's size, which ``make_se`` does not know. Sigmoid before the nearest-
neighbour resizing (timm: after): the same values, computed on the small map.

Counted: the gather is the squeeze (its convolutions are MACs), the bottleneck MACs, the multiply the scale.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from senet.config import SEConfig
from senet.recalibration import Recalibration
from senet.se import PointwiseFC, bottleneck_width


class AvgGather(nn.Module):
    """θ⁻'s gather: average pooling with kernel 2e - 1, stride e (padding not counted); global mean at e = 0."""

    def __init__(self, extent: int) -> None:
        super().__init__()
        self.extent = extent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.extent
        if e == 0:
            return x.mean((2, 3), keepdim=True)
        return F.avg_pool2d(x, 2 * e - 1, stride=e, padding=e - 1, count_include_pad=False)

    def extra_repr(self) -> str:
        return f"extent={self.extent or 'global'}"


def conv_gather(channels: int, extent: int) -> nn.Sequential:
    """θ's gather: log2(e) depthwise 3x3 stride-2 convolutions, each with BN, ReLU between them."""
    layers = nn.Sequential()
    steps = int(math.log2(extent))
    for i in range(1, steps + 1):
        layers.add_module(f"conv{i}", nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False))
        layers.add_module(f"norm{i}", nn.BatchNorm2d(channels))
        if i < steps:
            layers.add_module(f"act{i}", nn.ReLU(inplace=True))
    return layers


def nearest(s: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resizing of ``s`` to ``size`` (``F.interpolate(mode="nearest")``: source row ⌊i·h/H⌋) as
    two index gathers, so it is the same few copies on every device (the meta device decomposes ``interpolate``
    into index arithmetic that the counter would take for the scale)."""
    (h, w), (big_h, big_w) = s.shape[-2:], size
    rows = torch.tensor([i * h // big_h for i in range(big_h)], device=s.device)
    cols = torch.tensor([j * w // big_w for j in range(big_w)], device=s.device)
    return s[:, :, rows][:, :, :, cols]


class GatherExcite(Recalibration):
    """x -> x ⊙ σ(interp(ξ_G(x))) (GE Sec. 3), with SE's bottleneck between them for θ⁺."""

    squeeze_children = ("gather",)

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "GE") -> None:
        super().__init__()
        self.tag = tag
        self.channels = channels
        self.variant = cfg.ge_variant
        self.extent = cfg.ge_extent
        self.no_channel_gate = (f"ge_extent={cfg.ge_extent}: its gate is per position of the gathered map, "
                                "(N, C, H/e, W/e); ge_extent=0 has one per channel")
        self.gather = AvgGather(cfg.ge_extent) if cfg.ge_variant == "theta_minus" else conv_gather(channels, cfg.ge_extent)
        self.mlp = None
        if cfg.ge_variant == "theta_plus":
            hidden = bottleneck_width(channels, cfg, tag)
            self.mlp = nn.Sequential(PointwiseFC(channels, hidden, 1), nn.ReLU(inplace=True), PointwiseFC(hidden, channels, 1))
        self.gate = nn.Sigmoid()

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values on the gathered map: (N, C, 1, 1) at global extent, else (N, C, ⌈H/e⌉, ⌈W/e⌉)."""
        g = self.gather(x)
        return self.gate(g if self.mlp is None else self.mlp(g))

    def channel_gate(self) -> nn.Module | None:
        """At global extent the module whose output is the (N, C, 1, 1) gate (the excitation analysis hooks it); at
        e > 0 None: the gate is per position of the gathered map (``no_channel_gate`` says so)."""
        return self.gate if self.extent == 0 else None

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        s = self.excitation(x)
        if s.shape[-2:] != (1, 1):
            s = nearest(s, x.shape[-2:])
        return self.scale(x, s, residual)

    def extra_repr(self) -> str:
        return f"tag={self.tag}, variant={self.variant}"
