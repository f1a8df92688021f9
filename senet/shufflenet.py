"""ShuffleNet v1 1x (g = 3) and SE-ShuffleNet (paper Table 3: 140 -> 142 MFLOPs, 1.8 -> 2.4 M params).

The layout is Zhang et al.'s Table 1 for g = 3, as in the authors' released code: a 3x3 stride-2 stem
of 24 channels and a 3x3 stride-2 max-pool, then Stage2/3/4 (ids 2, 3, 4, the paper's names) of 4, 8
and 4 units with 240, 480 and 960 channels and a bottleneck of a quarter of the output. A unit is
1x1 group conv -> BN -> ReLU -> channel shuffle -> 3x3 depthwise -> BN -> 1x1 group conv -> BN; the
first unit of a stage has stride 2, a 3x3 average-pooled shortcut and a concat (its branch makes
C_out - C_in channels), the others add the identity; ReLU follows. The first 1x1 of Stage2 is not
grouped (24 input channels). 1.87 M parameters and 137.5 M MACs at 224x224.

SE placement (the paper does not state it): the stride-1 units are residual
units (``senet.blocks.ResidualUnit``) and take every residual placement, ``standard`` (on the
branch, before the sum) by default; ``after_3x3`` acts on the depthwise output. The stride-2 concat
units get no SE block: SE on the 13 residual units adds 568,800 FC weights (2.44 M with the FC
biases, printed 2.4), SE also on the branch of the 3 stride-2 units would add 610,632 (2.48 M).
Block ids count every unit, so a stage's residual units are blocks 2.. (``SE_3_2`` is the first
SE of Stage3).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet.blocks import PooledClassifier, ResidualUnit, unit_se
from senet.config import ModelConfig, SEConfig
from senet.registry import arch_config, register_arch, register_model
from senet.surface import stage_info

STAGES = (2, 3, 4)
WIDTHS = (240, 480, 960)
DEPTHS = (4, 8, 4)
GROUPS = 3


class ChannelShuffle(nn.Module):
    """(N, g*c, H, W) -> (N, c*g, H, W): interleave the groups so the next group conv mixes them."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBranch(nn.Module):
    """GConv1x1-BN-ReLU-shuffle-DWConv3x3-BN-[SE]-GConv1x1-BN: the residual branch of a ShuffleNet unit."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, groups: int, first_groups: int,
                 se: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.shuffle = ChannelShuffle(groups)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=width, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.se = se
        self.conv3 = nn.Conv2d(width, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shuffle(self.relu(self.bn1(self.conv1(x))))
        x = self.bn2(self.conv2(x))  # no ReLU after the depthwise conv (ShuffleNet Sec. 3.2)
        if self.se is not None:
            x = self.se(x)
        return self.bn3(self.conv3(x))


class ConcatUnit(nn.Module):
    """Stride-2 unit: ReLU(concat(avgpool3x3/2(x), branch(x))); it widens C_in -> C_out."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cat([self.shortcut(x), self.branch(x)], dim=1))


class ShuffleNetV1(PooledClassifier):
    """ShuffleNet v1 1x, g = 3; ``cfg.se`` adds SE to the residual (stride-1) units."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(cfg.in_chans, 24, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 24
        placement = cfg.se.placement if cfg.se else "none"
        for i, (stage, cout, depth) in enumerate(zip(STAGES, WIDTHS, DEPTHS)):
            width = cout // 4
            units: list[nn.Module] = []
            for b in range(1, depth + 1):
                first_groups = 1 if cin == 24 else GROUPS
                if b == 1:
                    units.append(ConcatUnit(ShuffleBranch(cin, width, cout - cin, 2, GROUPS, first_groups, None)))
                else:
                    se, se3 = unit_se(cfg.se, stage, b, cin, width, cout)
                    branch = ShuffleBranch(cin, width, cout, 1, GROUPS, first_groups, se3)
                    units.append(ResidualUnit(branch, None, se, placement))
                cin = cout
            self.add_module(f"stage{stage}", nn.Sequential(*units))
        # as timm's ResNet: the stem's ReLU (stride 2) first, then the last module at each stride (the pool at 4)
        self.feature_info = stage_info([(1, 24, 2, "relu"), (1, 24, 4, "maxpool")]
                                       + [(s, c, 2 ** (s + 1), f"stage{s}") for s, c in zip(STAGES, WIDTHS)])
        self.finish(cin, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.stage4(self.stage3(self.stage2(x)))


register_arch("shufflenet_v1_g3", stages=STAGES, depths=DEPTHS, family="shufflenet")(ShuffleNetV1)


# The public names: the architecture without SE under its own name, with SE as se_<name> (senet.registry).
@register_model
def shufflenet_v1_g3(**fields: Any) -> ModelConfig:
    """ShuffleNet v1 1x, g = 3 (Table 3)."""
    return arch_config("shufflenet_v1_g3", None, **fields)


@register_model
def se_shufflenet_v1_g3(**fields: Any) -> ModelConfig:
    """SE-ShuffleNet: an SE block in every stride-1 unit (Table 3)."""
    return arch_config("shufflenet_v1_g3", SEConfig(), **fields)
