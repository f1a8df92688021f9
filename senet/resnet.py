"""SE-ResNet and SE-ResNeXt for ImageNet (paper Sec. 3.3, Fig. 3, Table 2; released Caffe models).

The layout is the released models': 7x7 stem, Caffe's ceil-mode 3x3 max-pool, four stages named
conv2_x..conv5_x (stage ids 2..5), projection shortcuts as 1x1 conv + BN with the unit's stride.
``stride_on`` picks the 1x1 (paper/Caffe, SE-ResNet default) or 3x3 (torchvision v1.5,
SE-ResNeXt as released) stride, ``stem_pool`` Caffe's ceil-mode pool (default) or torchvision's padded
one (with ``stride_on="3x3"``: timm's modern ``seresnet*``). Module names follow torchvision
(``layer1``..``layer4``, ``fc``); ``feature_info`` lists the stem's ReLU at stride 2 and ``layer1``..``layer4`` at strides 4..32.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.blocks import BasicBranch, BottleneckBranch, PooledClassifier, ResidualUnit, conv1x1, unit_se
from senet.config import ModelConfig
from senet.registry import register_arch
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


_RESNET = {"stages": STAGES, "family": "resnet", "stem_pool": True}


# One builder per architecture, so each public name has a definition to find (as timm's). Each registers
# the no-SE model under its own name and the SE model as se_<name> (senet.registry.register_arch).
@register_arch("resnet18", depths=(2, 2, 2, 2), **_RESNET)
def resnet18(cfg: ModelConfig) -> ResNet:
    """ResNet-18 (basic units); ``se_resnet18`` with the SE block."""
    return ResNet(cfg, (2, 2, 2, 2), bottleneck=False)


@register_arch("resnet34", depths=(3, 4, 6, 3), **_RESNET)
def resnet34(cfg: ModelConfig) -> ResNet:
    """ResNet-34 (basic units); ``se_resnet34`` with the SE block."""
    return ResNet(cfg, (3, 4, 6, 3), bottleneck=False)


@register_arch("resnet50", depths=(3, 4, 6, 3), **_RESNET)
def resnet50(cfg: ModelConfig) -> ResNet:
    """ResNet-50; ``se_resnet50`` is the paper's SE-ResNet-50 (Table 2, Fig. 3)."""
    return ResNet(cfg, (3, 4, 6, 3), bottleneck=True)


@register_arch("resnet101", depths=(3, 4, 23, 3), **_RESNET)
def resnet101(cfg: ModelConfig) -> ResNet:
    """ResNet-101; ``se_resnet101`` with the SE block (Table 2)."""
    return ResNet(cfg, (3, 4, 23, 3), bottleneck=True)


@register_arch("resnet152", depths=(3, 8, 36, 3), **_RESNET)
def resnet152(cfg: ModelConfig) -> ResNet:
    """ResNet-152; ``se_resnet152`` with the SE block (Table 2)."""
    return ResNet(cfg, (3, 8, 36, 3), bottleneck=True)


@register_arch("resnext50_32x4d", depths=(3, 4, 6, 3), **_RESNET)
def resnext50_32x4d(cfg: ModelConfig) -> ResNet:
    """ResNeXt-50 32x4d; ``se_resnext50_32x4d`` is the paper's SE-ResNeXt-50 (Table 2; stride on the 3x3)."""
    return ResNet(cfg, (3, 4, 6, 3), bottleneck=True, groups=32, base_width=4, default_stride_on="3x3")


@register_arch("resnext101_32x4d", depths=(3, 4, 23, 3), **_RESNET)
def resnext101_32x4d(cfg: ModelConfig) -> ResNet:
    """ResNeXt-101 32x4d; ``se_resnext101_32x4d`` with the SE block (Table 2; stride on the 3x3)."""
    return ResNet(cfg, (3, 4, 23, 3), bottleneck=True, groups=32, base_width=4, default_stride_on="3x3")
