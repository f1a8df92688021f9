"""BN-Inception and SE-BN-Inception (paper Sec. 3.3 and Fig. 2; Table 2; released SE-BN-Inception).

The layout is the released Caffe prototxt's: Ioffe & Szegedy's BN-Inception with a bias-free conv,
BN and ReLU everywhere, ten Inception modules 3a..5b (3c and 4e reduce with stride 2), and SE after
each module's concat, including 3c and 4e: the SE block recalibrates the whole module output
(F_tr = the module), with SE tags ``SE_3a`` .. ``SE_5b``. Stages are the module groups 3, 4, 5.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet.blocks import PooledClassifier
from senet.config import ModelConfig, SEConfig
from senet.recalibration import Recalibration, make_se
from senet.registry import arch_config, register_arch, register_model
from senet.surface import stage_info

STAGES = (3, 4, 5)

# name, stage, 1x1, 3x3 reduce, 3x3, double-3x3 reduce, double 3x3, pool, pool proj, stride.
# A stride-2 module has no 1x1 branch and passes its max-pool through unprojected (proj 0).
MODULES = (
    ("3a", 3, 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 3, 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 3, 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 4, 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 4, 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 4, 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 4, 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 4, 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 5, 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 5, 352, 192, 320, 192, 224, "max", 128, 1),
)
# feature_info: the last module at each output stride (8, 16, 32), so 3b and 4d: 3c and 4e already reduce.
FEATURE_MODULES = ("3b", "4d", "5b")
DEPTHS = tuple(sum(1 for m in MODULES if m[1] == s) for s in STAGES)  # (3, 5, 2)


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    """conv (no bias) -> BN -> ReLU, as every convolution of the Caffe prototxt."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3-3x3; pool[-1x1]) concatenated on channels."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, cdr: int, cd: int, pool: str, proj: int,
                 stride: int) -> None:
        super().__init__()
        self.branch1x1 = conv_bn(cin, c1) if c1 else None
        self.branch3x3 = nn.Sequential(conv_bn(cin, c3r), conv_bn(c3r, c3, 3, stride))
        self.branch3x3dbl = nn.Sequential(conv_bn(cin, cdr), conv_bn(cdr, cd, 3), conv_bn(cd, cd, 3, stride))
        if stride > 1:  # Caffe pools with ceil rounding and no padding: 28 -> 14 and 14 -> 7 at 224
            pool_layer = nn.MaxPool2d(3, stride=stride, ceil_mode=True)
        elif pool == "max":
            pool_layer = nn.MaxPool2d(3, stride=1, padding=1)
        else:  # Caffe AVE pooling divides by the full 3x3 window, padding included
            pool_layer = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
        self.branch_pool = nn.Sequential(pool_layer, conv_bn(cin, proj)) if proj else pool_layer
        self.out_channels = c1 + c3 + cd + (proj or cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)]
        if self.branch1x1 is not None:
            outs.insert(0, self.branch1x1(x))
        return torch.cat(outs, 1)


class SEInceptionModule(nn.Module):
    """An Inception module followed by its SE block (paper Fig. 2), or the bare module for the baseline."""

    def __init__(self, module: InceptionModule, se: Recalibration | None) -> None:
        super().__init__()
        self.module = module
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.module(x)
        return x if self.se is None else self.se(x)


class BNInception(PooledClassifier):
    """BN-Inception (Ioffe & Szegedy 2015, Caffe layout) with an optional SE block after every module.

    Args:
        cfg: the model config; ``cfg.se=None`` is the baseline. SE knobs address modules by
            ``(stage, block)``: stage 3 = 3a, 3b, 3c; stage 4 = 4a..4e; stage 5 = 5a, 5b
            (``skip_blocks=[[4, 5]]`` drops ``SE_4e``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv1 = conv_bn(cfg.in_chans, 64, 7, 2)
        self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2_reduce = conv_bn(64, 64)
        self.conv2 = conv_bn(64, 192, 3)
        self.pool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # timm's first entries (its inception_v3's Conv2d_2b/4a): the stem's output at strides 2 and 4
        cin, index, info = 192, {s: 0 for s in STAGES}, [(1, 64, 2, "conv1"), (2, 192, 4, "conv2")]
        for name, stage, *widths in MODULES:
            index[stage] += 1
            module = InceptionModule(cin, *widths)
            cin = module.out_channels
            se = make_se(cin, cfg.se, stage, index[stage], tag=f"SE_{name}")
            self.add_module(f"inception_{name}", SEInceptionModule(module, se))
            if name in FEATURE_MODULES:
                info.append((stage, cin, 2 ** stage, f"inception_{name}"))
        self.feature_info = stage_info(info)
        self.finish(cin, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(self.conv2_reduce(x)))
        for name, *_ in MODULES:
            x = getattr(self, f"inception_{name}")(x)
        return x


register_arch("bn_inception", stages=STAGES, depths=DEPTHS, placements=("standard",), family="inception")(BNInception)


# The public names: the architecture without SE under its own name, with SE as se_<name> (senet.registry).
@register_model
def bn_inception(**fields: Any) -> ModelConfig:
    """BN-Inception (Table 2)."""
    return arch_config("bn_inception", None, **fields)


@register_model
def se_bn_inception(**fields: Any) -> ModelConfig:
    """SE-BN-Inception: an SE block on every Inception module's output (Table 2)."""
    return arch_config("bn_inception", SEConfig(), **fields)
