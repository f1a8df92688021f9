"""SRM: the Style-based Recalibration Module (Lee et al., "SRM", ICCV 2019, arXiv 1903.10829).

Style pooling (Sec. 3.1): each channel's spatial mean μ and standard deviation σ, the style feature t = [μ, σ]
(N, C, 2); style integration (Sec. 3.2): a channel-wise fully connected layer (CFC) z_c = w_c · t_c, two weights
per channel and no bias, then BN and a sigmoid, g = σ(BN(z)); the output is x * g, one gate per channel.

Follows the paper's released code (hyunjaelee410/style-based-recalibration-module, ``SRMLayer``): σ is
``torch.std``, the unbiased estimate (divisor H·W - 1) with no epsilon, so a block needs at least 2 positions
(refused in one line otherwise; a constant channel has σ = 0 and, by torch's convention, a zero gradient
there); BN over (N, C, 1, 1) (``BatchNorm2d``, eps 1e-5, momentum 0.1); the CFC weights start at zero (the
gate at σ(BN(0)) = 1/2), ``reset_parameters``. The released CFC is a (C, 2) parameter multiplied and summed;
ours is the same arithmetic as a grouped ``Conv1d(C, C, 2, groups=C, bias=False)`` (weight (C, 1, 2)), as
the common PyTorch ports write it. No knobs beyond where it goes. timm has no SRM.

Counted: the style pooling is the squeeze, the CFC 2·C MACs, BN, the multiply the scale.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.config import SEConfig
from senet.recalibration import Recalibration


class StylePool(nn.Module):
    """t = [μ, σ] per channel (N, C, 2): spatial mean and unbiased standard deviation (divisor H·W - 1, no eps)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return torch.stack([flat.mean(-1), flat.std(-1)], -1)


class SRM(Recalibration):
    """x -> x * σ(BN(CFC([μ, σ]))) (SRM Eq. 1-5)."""

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "SRM") -> None:
        super().__init__()
        self.tag = tag
        self.channels = channels
        self.squeeze = StylePool()
        self.cfc = nn.Conv1d(channels, channels, 2, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.gate = nn.Sigmoid()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released initialisation (CFC zero); ``senet.blocks.init_weights`` runs it after the network's own."""
        nn.init.zeros_(self.cfc.weight)

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values g (N, C, 1, 1)."""
        if x.shape[2] * x.shape[3] < 2:
            raise ValueError(f"SRM ({self.tag}) needs at least 2 spatial positions (its standard deviation divides "
                             f"by H*W - 1); it got {x.shape[2]}x{x.shape[3]}: use a larger input or model.se.stages")
        return self.gate(self.bn(self.cfc(self.squeeze(x)).unsqueeze(-1)))

    def channel_gate(self) -> nn.Module:
        """The module whose output is g (N, C, 1, 1) (the excitation analysis hooks it)."""
        return self.gate

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale(x, self.excitation(x), residual)
