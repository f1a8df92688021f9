"""SimAM: a parameter-free attention (Yang et al., "SimAM", ICML 2021).

Each neuron t's weight comes from the minimal energy of a linear separation from the other neurons of its
channel (Eq. 1-4): e_t* = 4(σ̂² + λ) / ((t - μ̂)² + 2σ̂² + 2λ), with μ̂ and σ̂² its channel's spatial mean and
variance, and the output is x * sigmoid(1 / E) (Eq. 5). 1 / e_t* = (t - μ̂)² / (4(σ̂² + λ)) + 1/2, the form
the released code (ZjjConan/SimAM) computes; it takes σ̂² over H·W - 1 positions (the paper writes M = H·W
neurons and divides by M), and ours follows the code. No parameters; λ is ``se.simam_lambda`` (1e-4).

Counted: the channel statistics (μ̂, (t - μ̂)², σ̂²) are the squeeze, the energy and the gate element-wise ops,
the multiply by the full-size gate the scale. timm has no SimAM.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.config import SEConfig
from senet.recalibration import Recalibration


class SpatialMoments(nn.Module):
    """(t - μ̂)² per position and σ̂² = Σ (t - μ̂)² / (H·W - 1) per channel (the released code's divisor)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[2] * x.shape[3] - 1
        d2 = (x - x.mean((2, 3), keepdim=True)).pow(2)
        return d2, d2.sum((2, 3), keepdim=True) / n


class InverseEnergy(nn.Module):
    """1 / e_t* = (t - μ̂)² / (4(σ̂² + λ)) + 1/2 (SimAM Eq. 4 inverted)."""

    def __init__(self, lam: float) -> None:
        super().__init__()
        self.lam = lam

    def forward(self, d2: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return d2 / (4 * (var + self.lam)) + 0.5

    def extra_repr(self) -> str:
        return f"lambda={self.lam:g}"


class SimAM(Recalibration):
    """x -> x * sigmoid(1 / E) (SimAM Eq. 5), E the per-neuron minimal energies; no parameters."""

    #: Why the excitation analysis, which records one gate per channel, has none here.
    no_channel_gate = "its gate is one per position, (N, C, H, W)"

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "SimAM") -> None:
        super().__init__()
        self.tag = tag
        self.channels = channels
        self.squeeze = SpatialMoments()
        self.energy = InverseEnergy(cfg.simam_lambda)
        self.gate = nn.Sigmoid()

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values (N, C, H, W): one per neuron."""
        if x.shape[2] * x.shape[3] < 2:
            raise ValueError(f"SimAM ({self.tag}) needs at least 2 spatial positions (its variance divides by "
                             f"H*W - 1); it got {x.shape[2]}x{x.shape[3]}: use a larger input or model.se.stages")
        return self.gate(self.energy(*self.squeeze(x)))

    def channel_gate(self) -> None:
        """None: the gate is per position (``no_channel_gate``)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale(x, self.excitation(x), residual)
