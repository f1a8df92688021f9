"""Inception-ResNet-v2 and SE-Inception-ResNet-v2 at 299x299 (paper Sec. 3.3 and Table 2: 11.75 -> 11.76 GFLOPs).

The layout is the released TF-slim network (Szegedy et al. 2016, as ported by Cadene and timm's
``inception_resnet_v2``): the 'valid'-padded stem to 35x35 and Mixed_5b, 10 Inception-ResNet-A
blocks (320 channels, residual scale 0.17), Mixed_6a, 20 B blocks (1088, scale 0.10), Mixed_7a,
10 C blocks (2080, scale 0.20; the last without ReLU, scale 1), a 1x1 conv to 1536, average pooling
and the classifier: 55,843,464 parameters and 13.16 GMACs at 299x299. The paper prints 11.75 G for
its re-implementation, whose layout is not published; the Inception-v4 paper's own 5/10/5-block
schema (its Figs. 3, 7, 15-19, counted the same way) gives 9.26 G, so neither known layout
reproduces it and Table 2 explains the miss.

Stage ids are the output stride's exponent as in the ResNets: the A blocks run at stride 8 (35x35,
stage 3), B at 16 (17x17, stage 4), C at 32 (8x8, stage 5), with (10, 20, 10) blocks. SE placement
(the paper says no more than "similar schemes"): each A/B/C block is a residual
unit (``senet.blocks.ResidualUnit``), so SE sits on its residual branch before the sum, as in
SE-ResNet (``standard``: x + SE(s * F(x))), and ``pre``, ``post`` and ``identity`` apply too. The
stem and the reduction modules Mixed_5b/6a/7a get no SE (they have no residual to recalibrate against).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet.blocks import PooledClassifier, ResidualUnit, unit_se
from senet.config import ModelConfig, SEConfig
from senet.registry import arch_config, register_arch, register_model
from senet.surface import stage_info

STAGES = (3, 4, 5)
DEPTHS = (10, 20, 10)
PLACEMENTS = ("standard", "pre", "post", "identity")


def conv(cin: int, cout: int, kernel=1, stride: int = 1, padding=0) -> nn.Sequential:
    """conv (no bias) -> BN (TF's eps 1e-3) -> ReLU: TF-slim's conv2d with batch norm."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU(inplace=True))


class Concat(nn.Module):
    """Parallel branches concatenated on channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class ResBranch(nn.Module):
    """s * Conv1x1(concat(branches)): the residual branch of an Inception-ResNet block."""

    def __init__(self, mixed: Concat, width: int, cout: int, scale: float) -> None:
        super().__init__()
        self.mixed = mixed
        self.conv = nn.Conv2d(width, cout, 1)  # linear up-projection, with bias, no BN
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.mixed(x)) * self.scale


def block35() -> tuple[Concat, int, int]:
    return Concat(conv(320, 32), nn.Sequential(conv(320, 32), conv(32, 32, 3, padding=1)),
                  nn.Sequential(conv(320, 32), conv(32, 48, 3, padding=1), conv(48, 64, 3, padding=1))), 128, 320


def block17() -> tuple[Concat, int, int]:
    return Concat(conv(1088, 192), nn.Sequential(conv(1088, 128), conv(128, 160, (1, 7), padding=(0, 3)),
                                                 conv(160, 192, (7, 1), padding=(3, 0)))), 384, 1088


def block8() -> tuple[Concat, int, int]:
    return Concat(conv(2080, 192), nn.Sequential(conv(2080, 192), conv(192, 224, (1, 3), padding=(0, 1)),
                                                 conv(224, 256, (3, 1), padding=(1, 0)))), 448, 2080


class InceptionResNetV2(PooledClassifier):
    """Inception-ResNet-v2; ``cfg.se`` adds SE to every Inception-ResNet-A/B/C block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(
            conv(cfg.in_chans, 32, 3, 2), conv(32, 32, 3), conv(32, 64, 3, padding=1), nn.MaxPool2d(3, 2),
            conv(64, 80), conv(80, 192, 3), nn.MaxPool2d(3, 2),
            Concat(conv(192, 96), nn.Sequential(conv(192, 48), conv(48, 64, 5, padding=2)),  # Mixed_5b
                   nn.Sequential(conv(192, 64), conv(64, 96, 3, padding=1), conv(96, 96, 3, padding=1)),
                   nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv(192, 64))),
        )
        self.stage3 = self._stage(cfg, 3, block35, 0.17)
        self.mixed_6a = Concat(conv(320, 384, 3, 2),
                               nn.Sequential(conv(320, 256), conv(256, 256, 3, padding=1), conv(256, 384, 3, 2)),
                               nn.MaxPool2d(3, 2))
        self.stage4 = self._stage(cfg, 4, block17, 0.10)
        self.mixed_7a = Concat(nn.Sequential(conv(1088, 256), conv(256, 384, 3, 2)),
                               nn.Sequential(conv(1088, 256), conv(256, 288, 3, 2)),
                               nn.Sequential(conv(1088, 256), conv(256, 288, 3, padding=1), conv(288, 320, 3, 2)),
                               nn.MaxPool2d(3, 2))
        self.stage5 = self._stage(cfg, 5, block8, 0.20)
        self.conv_7b = conv(2080, 1536)
        # nominal reductions: the 'valid' convs of the stem leave 35/17/8 (not 37/18/9) at 299x299
        # entries as timm's inception_resnet_v2: conv2d_2b (stem.2) and conv2d_4a (stem.5) head the list
        self.feature_info = stage_info([(1, 64, 2, "stem.2"), (2, 192, 4, "stem.5"), (3, 320, 8, "stage3"),
                                        (4, 1088, 16, "stage4"), (5, 1536, 32, "conv_7b")])
        self.finish(1536, cfg.num_classes)

    @staticmethod
    def _stage(cfg: ModelConfig, stage: int, make, scale: float) -> nn.Sequential:
        depth = DEPTHS[STAGES.index(stage)]
        placement = cfg.se.placement if cfg.se else "none"
        units = []
        for b in range(1, depth + 1):
            last = stage == 5 and b == depth  # TF-slim's final Block8: scale 1, no ReLU
            mixed, width, cout = make()
            se, _ = unit_se(cfg.se, stage, b, cout, width, cout)
            units.append(ResidualUnit(ResBranch(mixed, width, cout, 1.0 if last else scale), None, se, placement,
                                      post_act=not last))
        return nn.Sequential(*units)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stem(x))
        x = self.stage4(self.mixed_6a(x))
        return self.conv_7b(self.stage5(self.mixed_7a(x)))


register_arch("inception_resnet_v2", stages=STAGES, depths=DEPTHS, placements=PLACEMENTS, family="inception",
              input_size=(3, 299, 299))(InceptionResNetV2)


# The public names: the architecture without SE under its own name, with SE as se_<name> (senet.registry).
@register_model
def inception_resnet_v2(**fields: Any) -> ModelConfig:
    """Inception-ResNet-v2 at 299x299 (Table 2)."""
    return arch_config("inception_resnet_v2", None, **fields)


@register_model
def se_inception_resnet_v2(**fields: Any) -> ModelConfig:
    """SE-Inception-ResNet-v2: an SE block in every Inception-ResNet-A/B/C block (Table 2)."""
    return arch_config("inception_resnet_v2", SEConfig(), **fields)
