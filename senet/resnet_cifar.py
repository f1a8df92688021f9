"""SE-ResNets for CIFAR (paper Sec. 6.2, Tables 4-5): pre-activation ResNet-20/32/56/110/164.

The paper's CIFAR baselines (ResNet-110 6.37 %, ResNet-164 5.46 % on CIFAR-10) are the numbers of
He et al.'s pre-activation ResNets ("Identity Mappings in Deep Residual Networks"), so these nets
are pre-activation: 3x3 stem with 16 channels, three stages of 32x32, 16x16 and 8x8 with widths
16/32/64 (x4 for the bottleneck ResNet-164), 1x1 projection shortcuts where the shape changes.
Stages are numbered 2, 3, 4 (the stem is stage 1, as conv1 in the ImageNet nets); r and the SE
placement are not stated for CIFAR, so the defaults are the paper's ImageNet ones.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from senet.blocks import (
    PooledClassifier,
    PreActBasicBranch,
    PreActBottleneckBranch,
    ResidualUnit,
    conv1x1,
    conv3x3,
    unit_se,
)
from senet.config import ModelConfig, SEConfig
from senet.registry import arch_config, register_arch, register_model
from senet.surface import stage_info

STAGES = (2, 3, 4)
WIDTHS = (16, 32, 64)


def units_per_stage(depth: int, bottleneck: bool) -> int:
    """n of a depth 6n + 2 (basic units) or 9n + 2 (bottleneck units) network."""
    return (depth - 2) // (9 if bottleneck else 6)


class CifarResNet(PooledClassifier):
    """Pre-activation ResNet of depth 6n+2 (basic units) or 9n+2 (bottleneck units)."""

    def __init__(self, cfg: ModelConfig, depth: int, bottleneck: bool) -> None:
        super().__init__()
        self.cfg = cfg
        n = units_per_stage(depth, bottleneck)
        expansion = 4 if bottleneck else 1
        self.conv1 = conv3x3(cfg.in_chans, 16)
        cin = 16
        for i, (stage, width) in enumerate(zip(STAGES, WIDTHS)):
            cout = width * expansion
            units = []
            for b in range(1, n + 1):
                stride = 2 if (b == 1 and stage > 2) else 1
                shortcut = conv1x1(cin, cout, stride) if (stride != 1 or cin != cout) else None
                se, se3 = unit_se(cfg.se, stage, b, cin, width, cout)
                if bottleneck:
                    branch = PreActBottleneckBranch(cin, width, cout, stride, se3)
                else:
                    branch = PreActBasicBranch(cin, cout, stride, se3)
                placement = cfg.se.placement if cfg.se else "none"
                units.append(ResidualUnit(branch, shortcut, se, placement, post_act=False))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        # the last stage's features are taken after the final BN-ReLU, as timm does for pre-activation nets
        # the stem's conv (stride 1) is timm's index 0; the last stage's features are taken after the final
        # BN-ReLU, as timm does for pre-activation nets
        self.feature_info = stage_info([(1, 16, 1, "conv1")] + [
            (s, w * expansion, 2 ** (s - 2), m) for s, w, m in zip(STAGES, WIDTHS, ("layer1", "layer2", "relu"))])
        self.finish(cin, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.relu(self.bn(x))


# Each architecture stated once, by its depth (6n + 2 basic units, 9n + 2 bottleneck units); n units per stage.
ARCHS = {
    "resnet20_cifar": {"depth": 20, "bottleneck": False},
    "resnet32_cifar": {"depth": 32, "bottleneck": False},
    "resnet56_cifar": {"depth": 56, "bottleneck": False},
    "resnet110_cifar": {"depth": 110, "bottleneck": False},
    "resnet164_cifar": {"depth": 164, "bottleneck": True},
}
for _arch, _layout in ARCHS.items():
    register_arch(_arch, stages=STAGES, depths=(units_per_stage(**_layout),) * len(STAGES), family="resnet",
                  num_classes=10, input_size=(3, 32, 32))(functools.partial(CifarResNet, **_layout))


# The public names: each architecture without SE under its own name, with SE as se_<name> (senet.registry).
@register_model
def resnet20_cifar(**fields: Any) -> ModelConfig:
    """Pre-activation ResNet-20 (n = 3)."""
    return arch_config("resnet20_cifar", None, **fields)


@register_model
def se_resnet20_cifar(**fields: Any) -> ModelConfig:
    """SE-ResNet-20: pre-activation ResNet-20 with the SE block, the paper's ImageNet defaults."""
    return arch_config("resnet20_cifar", SEConfig(), **fields)


@register_model
def resnet32_cifar(**fields: Any) -> ModelConfig:
    """Pre-activation ResNet-32 (n = 5)."""
    return arch_config("resnet32_cifar", None, **fields)


@register_model
def se_resnet32_cifar(**fields: Any) -> ModelConfig:
    """SE-ResNet-32: pre-activation ResNet-32 with the SE block, the paper's ImageNet defaults."""
    return arch_config("resnet32_cifar", SEConfig(), **fields)


@register_model
def resnet56_cifar(**fields: Any) -> ModelConfig:
    """Pre-activation ResNet-56 (n = 9)."""
    return arch_config("resnet56_cifar", None, **fields)


@register_model
def se_resnet56_cifar(**fields: Any) -> ModelConfig:
    """SE-ResNet-56: pre-activation ResNet-56 with the SE block, the paper's ImageNet defaults."""
    return arch_config("resnet56_cifar", SEConfig(), **fields)


@register_model
def resnet110_cifar(**fields: Any) -> ModelConfig:
    """Pre-activation ResNet-110 (n = 18), the paper's CIFAR baseline (Table 4)."""
    return arch_config("resnet110_cifar", None, **fields)


@register_model
def se_resnet110_cifar(**fields: Any) -> ModelConfig:
    """SE-ResNet-110, the paper's (Table 4)."""
    return arch_config("resnet110_cifar", SEConfig(), **fields)


@register_model
def resnet164_cifar(**fields: Any) -> ModelConfig:
    """Pre-activation ResNet-164 (bottleneck units, n = 18), the paper's CIFAR baseline (Table 4)."""
    return arch_config("resnet164_cifar", None, **fields)


@register_model
def se_resnet164_cifar(**fields: Any) -> ModelConfig:
    """SE-ResNet-164, the paper's (Table 4)."""
    return arch_config("resnet164_cifar", SEConfig(), **fields)
