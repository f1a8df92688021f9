"""MobileNet v1 (1.0, 224) and SE-MobileNet (paper Table 3: 569 -> 572 MFLOPs, 4.2 -> 4.7 M params).

The layout is Howard et al.'s: a 3x3 stride-2 stem of 32 channels, then 13 depthwise-separable
blocks (3x3 depthwise conv -> BN -> ReLU -> 1x1 pointwise conv -> BN -> ReLU), global average
pooling and a 1024 -> classes FC; 4,231,976 parameters and 568.7 M multiply-accumulates at 224x224,
the same network as timm's ``mobilenetv1_100``. Stage ids are the output stride's exponent, as in
the ResNets (conv2_x is stride 4 = stage 2): 112x112 is stage 1, 56 stage 2, 28 stage 3, 14 stage 4
and 7x7 stage 5, with (1, 2, 2, 6, 2) blocks.

SE placement (the paper does not state it): one SE block, r = 16, on the
output of every depthwise-separable block, as SE-BN-Inception puts one after every module. That is
the reading that reproduces the printed 4.7 M (+479,744 FC weights). It costs 5.9 M MACs under the
paper convention, 575 M against the printed 572; no placement on whole blocks gives both 4.7 M and
572 except dropping the first two blocks (``se.skip_blocks=[[1,1],[2,1]]``), which the paper never
suggests, so the miss is explained in Table 3. The network has no residual path: only ``standard``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet.blocks import PooledClassifier
from senet.config import ModelConfig, SEConfig
from senet.recalibration import make_se
from senet.registry import arch_config, register_arch, register_model
from senet.surface import stage_info

STAGES = (1, 2, 3, 4, 5)
# (output channels, stride) of the 13 depthwise-separable blocks, grouped by stage.
BLOCKS = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)),
    ((1024, 2), (1024, 1)),
)
DEPTHS = tuple(len(b) for b in BLOCKS)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise -> BN -> ReLU -> 1x1 pointwise -> BN -> ReLU [-> SE on the block output]."""

    def __init__(self, cin: int, cout: int, stride: int, se: nn.Module | None) -> None:
        layers = conv_bn_relu(cin, cin, 3, stride, groups=cin) + conv_bn_relu(cin, cout, 1)
        super().__init__(*layers, *([se] if se is not None else []))


class MobileNetV1(PooledClassifier):
    """MobileNet v1 at width multiplier 1.0; ``cfg.se`` adds SE after every depthwise-separable block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(*conv_bn_relu(cfg.in_chans, 32, 3, 2))
        cin = 32
        for stage, blocks in zip(STAGES, BLOCKS):
            units = []
            for b, (cout, stride) in enumerate(blocks, start=1):
                units.append(DepthwiseSeparable(cin, cout, stride, make_se(cout, cfg.se, stage, b)))
                cin = cout
            self.add_module(f"stage{stage}", nn.Sequential(*units))
        self.feature_info = stage_info((s, b[-1][0], 2 ** s, f"stage{s}") for s, b in zip(STAGES, BLOCKS))
        self.finish(cin, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in STAGES:
            x = getattr(self, f"stage{stage}")(x)
        return x


register_arch("mobilenet_v1", stages=STAGES, depths=DEPTHS, placements=("standard",), family="mobilenet")(MobileNetV1)


# The public names: the architecture without SE under its own name, with SE as se_<name> (senet.registry).
@register_model
def mobilenet_v1(**fields: Any) -> ModelConfig:
    """MobileNet v1 1.0 at 224x224 (Table 3)."""
    return arch_config("mobilenet_v1", None, **fields)


@register_model
def se_mobilenet_v1(**fields: Any) -> ModelConfig:
    """SE-MobileNet: an SE block after every depthwise-separable block (Table 3)."""
    return arch_config("mobilenet_v1", SEConfig(), **fields)
