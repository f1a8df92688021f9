"""VGG-16 with batch norm and SE-VGG-16 (paper Sec. 3.3 and Table 2: 15.47 -> 15.48 GFLOPs).

The layout is torchvision's ``vgg16_bn`` (13 3x3 convs with bias, each followed by BN and ReLU; five
max-pools; a 7x7 adaptive average pool and the 4096-4096-classes head with dropout), so the baseline
has torchvision's 138,365,992 parameters and 15.47 GMACs at 224x224. Stage ids are VGG's own conv
group numbers, conv1_x..conv5_x = 1..5, with (2, 2, 3, 3, 3) convs.

SE placement: the paper inserts SE "after the non-linearity following each convolution" (Sec. 3.3),
so the SE model has 13 SE blocks, ``SE_<stage>_<conv>``, each on the conv's C channels. VGG has no
residual branch, so only the ``standard`` placement applies. Under the paper convention these 13
blocks cost 27.1 M squeeze and scale ops (15.50 GMACs, printed 15.48); SE on fewer convs (for
example ``se.stages=[2,3,4,5]``: 15.48) would reproduce the printed value, but the paper's sentence
names every convolution, so that is the default and the miss is explained in Table 2.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet.blocks import init_weights
from senet.config import ModelConfig, SEConfig
from senet.recalibration import make_se
from senet.registry import arch_config, register_arch, register_model
from senet.surface import TimmSurface, stage_info

STAGES = (1, 2, 3, 4, 5)
WIDTHS = (64, 128, 256, 512, 512)
DEPTHS = (2, 2, 3, 3, 3)


class ConvBNReLU(nn.Sequential):
    """3x3 conv -> BN -> ReLU [-> SE]: one VGG layer, with the SE after the non-linearity."""

    def __init__(self, cin: int, cout: int, se: nn.Module | None) -> None:
        layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        super().__init__(*layers, *([se] if se is not None else []))


class VGG(TimmSurface):
    """VGG-16 (configuration D) with BN; ``cfg.se`` adds an SE block after each conv's ReLU.

    timm's surface: ``num_features`` is the trunk's 512 channels, ``head_hidden_size`` the 4096 features
    after the two hidden FCs (``forward_head(x, pre_logits=True)``), and ``model.drop_rate`` adds dropout
    after them, before ``classifier.6``; the hidden FCs keep their own dropout of 0.5.
    """

    classifier_path = "classifier.6"
    head_modules = ("avgpool", "classifier")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin, info = cfg.in_chans, []
        for stage, width, depth in zip(STAGES, WIDTHS, DEPTHS):
            for b in range(1, depth + 1):
                layers.append(ConvBNReLU(cin, width, make_se(width, cfg.se, stage, b)))
                cin = width
            # timm's VGG: each stage's output before its pool, at strides 1..16 ...
            info.append((stage, width, 2 ** (stage - 1), f"features.{len(layers) - 1}"))
            layers.append(nn.MaxPool2d(2, 2))
        # ... then the trunk's output at stride 32 (timm's is its conv pre_logits, which this VGG has not)
        info.append((STAGES[-1], cin, 2 ** STAGES[-1], f"features.{len(layers) - 1}"))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, cfg.num_classes),
        )
        self.num_features, self.head_hidden_size = 512, 4096
        self.num_classes, self.drop_rate = cfg.num_classes, cfg.drop_rate
        self.feature_info = stage_info(info)
        init_weights(self)
        for m in self.modules():  # torchvision's VGG init for the classifier
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        for layer in list(self.classifier)[:-1]:
            x = layer(x)
        return x


register_arch("vgg16_bn", stages=STAGES, depths=DEPTHS, placements=("standard",), family="vgg")(VGG)


# The public names: the architecture without SE under its own name, with SE as se_<name> (senet.registry).
@register_model
def vgg16_bn(**fields: Any) -> ModelConfig:
    """VGG-16 with batch norm, torchvision's ``vgg16_bn`` (Table 2)."""
    return arch_config("vgg16_bn", None, **fields)


@register_model
def se_vgg16_bn(**fields: Any) -> ModelConfig:
    """SE-VGG-16: an SE block after every convolution's ReLU (Table 2)."""
    return arch_config("vgg16_bn", SEConfig(), **fields)
