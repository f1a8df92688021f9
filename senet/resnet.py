"""SE-ResNet and SE-ResNeXt for ImageNet (paper Sec. 3.3, Fig. 3, Table 2; released Caffe models).

The layout is the released models': 7x7 stem, Caffe's ceil-mode 3x3 max-pool, four stages named
conv2_x..conv5_x (stage ids 2..5), projection shortcuts as 1x1 conv + BN with the unit's stride.
``stride_on`` picks the 1x1 (paper/Caffe, SE-ResNet default) or 3x3 (torchvision v1.5,
SE-ResNeXt as released) stride, ``stem_pool`` Caffe's ceil-mode pool (default) or torchvision's padded
one (with ``stride_on="3x3"``: timm's modern ``seresnet*``). Module names follow torchvision
(``layer1``..``layer4``, ``fc``); ``feature_info`` lists the stem's ReLU at stride 2 and ``layer1``..``layer4`` at strides 4..32.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from senet.blocks import BasicBranch, BottleneckBranch, PooledClassifier, ResidualUnit, conv1x1, unit_se
from senet.config import ModelConfig, SEConfig
from senet.registry import arch_config, register_arch, register_model
from senet.surface import stage_info

STAGES = (2, 3, 4, 5)
PLANES = (64, 128, 256, 512)


class ResNet(PooledClassifier):
    """ResNet-18..152 and ResNeXt with an optional SE block in every residual unit.

    Args:
        cfg: the model config (``cfg.se=None`` is the no-SE baseline).
        depths: units per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        bottleneck: bottleneck (x4 expansion) units, else basic units.
        groups, base_width: ResNeXt cardinality and per-group width (32, 4 for "32x4d").
        default_stride_on: the layout used when ``cfg.stride_on`` is None.
    """

    def __init__(self, cfg: ModelConfig, depths: tuple[int, ...], bottleneck: bool, groups: int = 1,
                 base_width: int = 64, default_stride_on: str = "1x1") -> None:
        super().__init__()
        self.cfg = cfg
        stride_on = cfg.stride_on or default_stride_on
        expansion = 4 if bottleneck else 1
        self.conv1 = nn.Conv2d(cfg.in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        if (cfg.stem_pool or "caffe") == "caffe":
            self.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # Caffe pooling, as released
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # torchvision's and timm's
        cin, info = 64, [(1, 64, 2, "relu")]  # timm's index 0: the stem's output (its act1), stride 2
        for i, (stage, planes, depth) in enumerate(zip(STAGES, PLANES, depths)):
            units = []
            cout = planes * expansion
            width = int(planes * base_width / 64) * groups if bottleneck else cout
            for b in range(1, depth + 1):
                stride = 2 if (b == 1 and stage > 2) else 1
                shortcut = None
                if stride != 1 or cin != cout:
                    shortcut = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
                se, se3 = unit_se(cfg.se, stage, b, cin, width, cout)
                if bottleneck:
                    branch = BottleneckBranch(cin, width, cout, stride, groups, stride_on, se3)
                else:
                    branch = BasicBranch(cin, cout, stride, se3)
                units.append(ResidualUnit(branch, shortcut, se, cfg.se.placement if cfg.se else "none"))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))
            info.append((stage, cout, 2 ** stage, f"layer{i + 1}"))
        self.feature_info = stage_info(info)
        self.finish(cin, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# Each architecture's layout, stated once: units per stage, bottleneck units, ResNeXt cardinality and width per
# group, and the stride's place where cfg.stride_on is None (ResNeXt as released: the 3x3).
_RESNEXT_32X4D = {"groups": 32, "base_width": 4, "default_stride_on": "3x3"}
ARCHS = {
    "resnet18": {"depths": (2, 2, 2, 2), "bottleneck": False},
    "resnet34": {"depths": (3, 4, 6, 3), "bottleneck": False},
    "resnet50": {"depths": (3, 4, 6, 3), "bottleneck": True},
    "resnet101": {"depths": (3, 4, 23, 3), "bottleneck": True},
    "resnet152": {"depths": (3, 8, 36, 3), "bottleneck": True},
    "resnext50_32x4d": {"depths": (3, 4, 6, 3), "bottleneck": True, **_RESNEXT_32X4D},
    "resnext101_32x4d": {"depths": (3, 4, 23, 3), "bottleneck": True, **_RESNEXT_32X4D},
}
for _arch, _layout in ARCHS.items():
    register_arch(_arch, stages=STAGES, depths=_layout["depths"], family="resnet", stem_pool=True)(
        functools.partial(ResNet, **_layout))


# The public names: each architecture without SE under its own name, with SE as se_<name> (senet.registry).
@register_model
def resnet18(**fields: Any) -> ModelConfig:
    """ResNet-18 (basic units)."""
    return arch_config("resnet18", None, **fields)


@register_model
def se_resnet18(**fields: Any) -> ModelConfig:
    """SE-ResNet-18: ResNet-18 with the SE block, the paper's defaults."""
    return arch_config("resnet18", SEConfig(), **fields)


@register_model
def resnet34(**fields: Any) -> ModelConfig:
    """ResNet-34 (basic units)."""
    return arch_config("resnet34", None, **fields)


@register_model
def se_resnet34(**fields: Any) -> ModelConfig:
    """SE-ResNet-34: ResNet-34 with the SE block, the paper's defaults."""
    return arch_config("resnet34", SEConfig(), **fields)


@register_model
def resnet50(**fields: Any) -> ModelConfig:
    """ResNet-50, the paper's baseline (Table 2)."""
    return arch_config("resnet50", None, **fields)


@register_model
def se_resnet50(**fields: Any) -> ModelConfig:
    """SE-ResNet-50, the paper's (Table 2, Fig. 3)."""
    return arch_config("resnet50", SEConfig(), **fields)


@register_model
def resnet101(**fields: Any) -> ModelConfig:
    """ResNet-101 (Table 2)."""
    return arch_config("resnet101", None, **fields)


@register_model
def se_resnet101(**fields: Any) -> ModelConfig:
    """SE-ResNet-101 (Table 2)."""
    return arch_config("resnet101", SEConfig(), **fields)


@register_model
def resnet152(**fields: Any) -> ModelConfig:
    """ResNet-152 (Table 2)."""
    return arch_config("resnet152", None, **fields)


@register_model
def se_resnet152(**fields: Any) -> ModelConfig:
    """SE-ResNet-152 (Table 2)."""
    return arch_config("resnet152", SEConfig(), **fields)


@register_model
def resnext50_32x4d(**fields: Any) -> ModelConfig:
    """ResNeXt-50 32x4d (Table 2; stride on the 3x3)."""
    return arch_config("resnext50_32x4d", None, **fields)


@register_model
def se_resnext50_32x4d(**fields: Any) -> ModelConfig:
    """SE-ResNeXt-50 32x4d, the paper's (Table 2; stride on the 3x3)."""
    return arch_config("resnext50_32x4d", SEConfig(), **fields)


@register_model
def resnext101_32x4d(**fields: Any) -> ModelConfig:
    """ResNeXt-101 32x4d (Table 2; stride on the 3x3)."""
    return arch_config("resnext101_32x4d", None, **fields)


@register_model
def se_resnext101_32x4d(**fields: Any) -> ModelConfig:
    """SE-ResNeXt-101 32x4d (Table 2; stride on the 3x3)."""
    return arch_config("resnext101_32x4d", SEConfig(), **fields)
