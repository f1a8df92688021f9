"""Residual units with a pluggable SE block at any of the paper's placements (Sec. 6.5, Fig. 5).

One ``ResidualUnit`` serves every residual network: the baseline is the same unit with no SE
block, and an arm differs from it only in where ``se`` sits, so no unit class is forked per
placement. The branches (basic, bottleneck, and their pre-activation twins for the CIFAR nets)
carry the ``after_3x3`` SE themselves because it acts inside the branch on the bottleneck width.
"""
from __future__ import annotations

import torch
from torch import nn

from senet.config import SEConfig
from senet.fused_se import PointwiseFC
from senet.recalibration import Recalibration, make_se
from senet.se import Squeeze
from senet.surface import TimmSurface


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


class BasicBranch(nn.Module):
    """conv3x3-BN-ReLU-[SE]-conv3x3-BN (ResNet-18/34). ``after_3x3`` SE follows the first 3x3."""

    def __init__(self, cin: int, cout: int, stride: int, se: nn.Module | None) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.se = se
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.se is not None:
            x = self.se(x)
        return self.bn2(self.conv2(x))


class BottleneckBranch(nn.Module):
    """1x1-BN-ReLU-3x3(groups)-BN-ReLU-[SE]-1x1-BN (ResNet-50+, ResNeXt).

    ``stride_on="1x1"`` puts the stride on the first 1x1 conv (the paper's Caffe models: 3.86 GMACs
    for ResNet-50), ``"3x3"`` on the 3x3 conv (torchvision v1.5, ResNeXt as released: 4.09 GMACs).
    """

    def __init__(self, cin: int, width: int, cout: int, stride: int, groups: int, stride_on: str,
                 se: nn.Module | None) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        self.conv1, self.bn1 = conv1x1(cin, width, s1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, s3, groups), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.se = se
        self.conv3, self.bn3 = conv1x1(width, cout), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        if self.se is not None:
            x = self.se(x)
        return self.bn3(self.conv3(x))


class PreActBasicBranch(nn.Module):
    """BN-ReLU-conv3x3-[SE]-BN-ReLU-conv3x3 (He et al. 2016, "Identity Mappings"; CIFAR ResNet-20..110)."""

    def __init__(self, cin: int, cout: int, stride: int, se: nn.Module | None) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout, stride)
        self.se = se
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3x3(cout, cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu(self.bn1(x)))
        if self.se is not None:
            x = self.se(x)
        return self.conv2(self.relu(self.bn2(x)))


class PreActBottleneckBranch(nn.Module):
    """BN-ReLU-1x1-BN-ReLU-3x3-[SE]-BN-ReLU-1x1 (pre-activation ResNet-164)."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, se: nn.Module | None) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv1x1(cin, width)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), conv3x3(width, width, stride)
        self.se = se
        self.bn3, self.conv3 = nn.BatchNorm2d(width), conv1x1(width, cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu(self.bn1(x)))
        x = self.conv2(self.relu(self.bn2(x)))
        if self.se is not None:
            x = self.se(x)
        return self.conv3(self.relu(self.bn3(x)))


class ResidualUnit(nn.Module):
    """y = act(branch(x) + shortcut(x)) with the SE block at its placement.

    - ``standard``: on the branch output, before the sum (Fig. 5b);
    - ``pre``: on the unit input at the head of the residual branch; the identity path still
      carries the raw input (Fig. 5c). Scaling both paths would make SE-PRE the SE-POST of the
      previous unit, yet Table 14 finds them 0.55 top-1 apart, and Sec. 6.5 ties the good
      placements to SE acting "prior to branch aggregation";
    - ``post``: after the sum and its ReLU (Fig. 5d);
    - ``identity``: on the shortcut path, after a projection if there is one (Fig. 5e);
    - ``after_3x3``: inside the branch (Table 15), so ``se`` here is None.

    At ``standard`` and ``identity`` the SE output meets the sum, so the scale is fused into it
    (``SqueezeExcite.forward(x, residual)``, one ``addcmul``) unless ``fused_se`` is False
    (``set_fused_se``): the unfused form is kept to test the fused one against and to measure it. An
    operator whose output is not ``x * s`` (``fuses_residual`` False) is never handed the sum.
    """

    #: Fuse the SE scale into the residual sum; an instance attribute overrides it (``set_fused_se``).
    fused_se: bool = True

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None, se: nn.Module | None,
                 placement: str, post_act: bool = True) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.se = se
        self.placement = placement if se is not None else "none"
        self.act = nn.ReLU(inplace=True) if post_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(self.se(x) if self.placement == "pre" else x)
        sc = x if self.shortcut is None else self.shortcut(x)
        fused = self.fused_se and self.se is not None and self.se.fuses_residual
        if fused and self.placement == "standard":
            out = self.se(out, residual=sc)  # sc + out * s
        elif fused and self.placement == "identity":
            out = self.se(sc, residual=out)  # out + sc * s
        else:
            if self.placement == "standard":
                out = self.se(out)
            elif self.placement == "identity":
                sc = self.se(sc)
            out = out + sc
        out = self.act(out)
        if self.placement == "post":
            out = self.se(out)
        return out


def set_fused_se(model: nn.Module, fused: bool) -> int:
    """The fast SE (default) or the released arithmetic, in every SE block (any operator) and ``ResidualUnit``.

    Fast: the scale fused into the residual sum, the FCs as matrix products, hand-written backward passes
    (``senet.fused_se``). Released: scale then add, 1x1 convolutions, autograd's own backward, bit-equal to the Caffe
    ports. The two compute the same function (to float rounding) with the same parameters; the switch exists
    to check that, to compare with released models bit for bit, and to time them. Returns the number of
    units whose SE meets a sum.
    """
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    for unit in units:
        unit.fused_se = fused
    for m in model.modules():
        if isinstance(m, (Recalibration, Squeeze, PointwiseFC)):
            m.fast = fused
    return sum(unit.placement in ("standard", "identity") for unit in units)


def se_channels(placement: str, cin: int, cout: int, width: int) -> int:
    """Channels an SE block sees at ``placement`` in a unit cin -> (width) -> cout."""
    return {"pre": cin, "after_3x3": width}.get(placement, cout)


def unit_se(cfg: SEConfig | None, stage: int, block: int, cin: int, width: int, cout: int):
    """The (unit-level SE, branch-level SE) pair for one residual unit; at most one is not None."""
    if cfg is None:
        return None, None
    se = make_se(se_channels(cfg.placement, cin, cout, width), cfg, stage, block)
    return (None, se) if cfg.placement == "after_3x3" else (se, None)


class PooledClassifier(TimmSurface):
    """Base of the zoo's networks: ``forward_features``, global average pooling, one linear classifier."""

    def finish(self, num_features: int, num_classes: int) -> None:
        """Add the head (``avgpool``, ``fc``) after the trunk, then initialise every layer."""
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_features, num_classes)
        self.num_features = self.head_hidden_size = num_features
        self.num_classes = num_classes
        self.drop_rate = self.cfg.drop_rate
        init_weights(self)

    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(x), 1)


def init_weights(model: nn.Module) -> None:
    """He init for convs (paper Sec. 5.1, ref. [66]), unit BN, as torchvision's ResNets; then each operator's own
    released initialisation where it has one (``reset_parameters``: GC's zero last convolution)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, Recalibration) and hasattr(m, "reset_parameters"):
            m.reset_parameters()
