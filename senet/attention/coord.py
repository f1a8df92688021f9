"""Coordinate attention (Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
arXiv 2103.02907).

Channel attention factorised into two 1-D encodings that keep position along one axis (Sec. 3.2): average
pooling along W gives z^h (N, C, H, 1), along H gives z^w (N, C, 1, W) (Eq. 4-5); both, concatenated along the
spatial axis, go through one shared 1x1 convolution F_1 to C / r channels with a non-linearity δ,
f = δ(F_1([z^h, z^w])) (Eq. 6); f is split back into f^h, f^w, and two 1x1 convolutions with sigmoids give
g^h = σ(F_h(f^h)) (N, C, H, 1) and g^w = σ(F_w(f^w)) (N, C, 1, W) (Eq. 7-8); y = x * g^h * g^w (Eq. 9).

Follows the paper's released code (houqb/CoordAttention, ``coordatt.py``, ``CoordAtt``): mip = max(8, C // r)
channels with r = ``se.coord_reduction`` (32, as released), biases on all three convolutions, BN (eps 1e-5) then
h_swish (x * ReLU6(x + 3) / 6, which is ``nn.Hardswish``) after F_1, and the output ``x * g^w * g^h`` in that
order. timm's ``CoordAttn`` has the same structure and parameter names, but by default no biases and a width of
make_divisible(C / 16 * 2 / 3, 8); given ``bias=True``, ``rd_channels=mip`` and the same weights it computes
what ours does.

The output is x * s with a full-size s = g^h * g^w (N, C, H, W), so it fuses into a residual sum
(``residual + (x * g^w) * g^h``, the second multiply an ``addcmul``). Counted: the two strip poolings are the
squeeze, the three convolutions MACs (on H + W positions), BN, h_swish and the sigmoids element-wise, and the
two multiplies per element the scale, as released.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.config import SEConfig
from senet.recalibration import Recalibration


def coord_width(channels: int, reduction: int) -> int:
    """The released code's mip = max(8, C // r): never fewer than 8 channels."""
    return max(8, channels // reduction)


class StripPools(nn.Module):
    """[z^h; z^w]: the mean along W (N, C, H, 1) and along H, transposed (N, C, W, 1), concatenated (N, C, H + W, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], 2)


class CoordinateAttention(Recalibration):
    """x -> x * σ(F_w(f^w)) * σ(F_h(f^h)), [f^h; f^w] = h_swish(BN(F_1([z^h; z^w]))) (Eq. 4-9)."""

    #: Why the excitation analysis, which records one gate per channel, has none here.
    no_channel_gate = "its gates are per row and per column, (N, C, H, 1) and (N, C, 1, W)"

    def __init__(self, channels: int, cfg: SEConfig, tag: str = "CoordAtt") -> None:
        super().__init__()
        mip = coord_width(channels, cfg.coord_reduction)
        self.tag = tag
        self.channels = channels
        self.squeeze = StripPools()
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)
        self.gate = nn.Sigmoid()

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gates g^h (N, C, H, 1) and g^w (N, C, 1, W)."""
        h, w = x.shape[2:]
        f_h, f_w = torch.split(self.act(self.bn1(self.conv1(self.squeeze(x)))), [h, w], 2)
        return self.gate(self.conv_h(f_h)), self.gate(self.conv_w(f_w.transpose(2, 3)))

    def channel_gate(self) -> None:
        """None: the gates are per row and per column (``no_channel_gate``)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        a_h, a_w = self.attention(x)
        return self.scale(self.scale(x, a_w), a_h, residual)
