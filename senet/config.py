"""Frozen configs for the SE block and the models (paper Sec. 3 and Sec. 6).

A frozen dataclass is the unit of an ablation: an arm differs from its baseline in
exactly the fields a sweep varies (``dataclasses.replace``), and ``se=None`` *is* the
baseline. Every field the reference implementations disagree on is explicit here.
The generic tree helpers (``to_dict``, ``from_dict``, ``apply_overrides``, ``config_hash``, the checks) are
``senet.tree``; ``ablations`` uses them for its own configs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from senet.tree import check_choice, check_int, late_field

SQUEEZES = ("avg", "max", "avgmax", "none")
ACTIVATIONS = ("relu", "silu", "gelu", "leaky_relu", "tanh", "identity")
GATES = ("sigmoid", "hard_sigmoid", "tanh", "relu", "identity")
PLACEMENTS = ("standard", "pre", "post", "identity", "after_3x3")
WIDTH_ROUNDINGS = ("floor", "round", "divisor")
STRIDE_ON = ("1x1", "3x3")
STEM_POOLS = ("caffe", "torchvision")
#: The recalibration operator a block gets (``senet.attention``): SE, then its successors.
OPERATORS = ("se", "eca", "simam", "cbam", "gc", "ge", "srm", "coord")
GE_VARIANTS = ("theta_minus", "theta", "theta_plus")
GC_FUSIONS = ("add", "scale")
#: Knobs every operator reads: where it goes.
WHERE_KNOBS = ("operator", "placement", "stages", "skip_blocks")
#: The knobs each operator reads besides ``WHERE_KNOBS``; any other knob set away from its default is refused,
#: so an arm never carries a setting that changes nothing (``reduction`` means nothing to ECA).
OPERATOR_KNOBS = {
    "se": ("reduction", "width_rounding", "divisor", "squeeze", "activation", "gate", "bias"),
    "eca": ("eca_kernel",),
    "simam": ("simam_lambda",),
    "cbam": ("reduction", "width_rounding", "divisor", "activation", "bias", "cbam_kernel"),
    "gc": ("reduction", "width_rounding", "divisor", "gc_fusion"),
    "ge": ("ge_extent", "ge_variant", "reduction", "width_rounding", "divisor"),  # the bottleneck: theta_plus only
    "srm": (),
    "coord": ("coord_reduction",),
}


@dataclass(frozen=True)
class SEConfig:
    """The Squeeze-and-Excitation block (paper Eq. 2-4, Fig. 2-3).

    Attributes:
        reduction: the reduction ratio r; the bottleneck has ``C // r`` channels (paper default 16,
            Table 10 sweeps 2..32).
        width_rounding: how C/r becomes an integer: ``floor`` (paper, Caffe, ClassyVision),
            ``round`` (pycls), ``divisor`` (timm/mmpretrain: nearest multiple of ``divisor``, never
            below it).
        divisor: the multiple used by ``width_rounding="divisor"`` (timm uses 8).
        squeeze: F_sq. ``avg`` (paper), ``max`` (Table 11), ``avgmax`` (0.5·avg + 0.5·max, timm's
            ``add_maxpool``), ``none`` (Table 16 NoSqueeze: the FCs become 1x1 convs at full resolution).
        activation: δ, the non-linearity between the two FCs (paper: ReLU).
        gate: σ, the gate that replaces the sigmoid in Table 12 (sigmoid, tanh, relu).
        bias: FC biases. On in the released Caffe models, off in the paper's ablations (Sec. 6.1).
        placement: where the block sits in a residual unit (Fig. 5, Table 14-15): ``standard``
            (residual branch, before the sum), ``pre`` (unit input), ``post`` (after sum and ReLU),
            ``identity`` (shortcut path), ``after_3x3`` (inside the branch after the 3x3 conv).
        stages: which stages get SE, by the architecture's stage ids (conv2_x..conv5_x are 2..5 for
            ImageNet ResNets, Table 13); ``None`` means every stage.
        skip_blocks: (stage, block) pairs, block counted from 1 as in the paper's ``SE_5_2``, that get
            no SE (the "drop SE from the last stage" discussion of Sec. 7.2).
        operator: the recalibration operator at those places: ``se`` (this paper, the default) or a
            successor from ``senet.attention``: ``eca`` (ECA-Net), ``simam`` (SimAM), ``cbam`` (CBAM),
            ``gc`` (GCNet's global context block), ``ge`` (Gather-Excite), ``srm`` (SRM: no knobs of its own),
            ``coord`` (coordinate attention).
            ``OPERATOR_KNOBS`` says which of the knobs above and below each one reads; the others must
            stay at their defaults.
        eca_kernel: ECA's 1-D convolution size: ``adaptive`` (ECA-Net Eq. 12 from the channel count,
            gamma = 2, b = 1, nearest odd) or an odd integer.
        simam_lambda: SimAM's λ, the regulariser of its energy function (Eq. 4; the paper's 1e-4).
        cbam_kernel: the size of CBAM's spatial-attention convolution, odd (the paper's 7; 3 in its Table 4).
        gc_fusion: how GC merges its context into every position: ``add`` (the paper's default) or ``scale``
            (a sigmoid gate, SE-like; GCNet Table 5).
        ge_extent: GE's gather extent e, a power of two (2, 4, 8: each output sees an e-times downsampled
            neighbourhood), or 0 for the whole map (global).
        ge_variant: GE's parameterisation: ``theta_minus`` (average pooling, no parameters), ``theta``
            (depthwise convolutions; needs e >= 2), ``theta_plus`` (theta plus SE's bottleneck, which reads
            ``reduction``).
        coord_reduction: coordinate attention's reduction r: its shared 1x1 convolution has max(8, C // r)
            channels (the released code's rule and default, 32).

    ``operator`` and the knobs after it are late fields: at their defaults they stay out of ``to_dict`` and
    ``config_hash`` (``late_field``), so a config that does not set them keeps its hash and run name.
    """

    reduction: int = 16
    width_rounding: str = "floor"
    divisor: int = 8
    squeeze: str = "avg"
    activation: str = "relu"
    gate: str = "sigmoid"
    bias: bool = True
    placement: str = "standard"
    stages: Optional[tuple[int, ...]] = None
    skip_blocks: tuple[tuple[int, int], ...] = ()
    operator: str = late_field("se")
    eca_kernel: int | str = late_field("adaptive")
    simam_lambda: float = late_field(1e-4)
    cbam_kernel: int = late_field(7)
    gc_fusion: str = late_field("add")
    ge_extent: int = late_field(0)
    ge_variant: str = late_field("theta_minus")
    coord_reduction: int = late_field(32)

    def __post_init__(self) -> None:
        check_choice("model.se.operator", self.operator, OPERATORS)
        check_int("model.se.reduction", self.reduction)
        check_int("model.se.divisor", self.divisor)
        check_choice("model.se.width_rounding", self.width_rounding, WIDTH_ROUNDINGS)
        check_choice("model.se.squeeze", self.squeeze, SQUEEZES)
        check_choice("model.se.activation", self.activation, ACTIVATIONS)
        check_choice("model.se.gate", self.gate, GATES)
        check_choice("model.se.placement", self.placement, PLACEMENTS)
        if not isinstance(self.bias, bool):
            raise ValueError(f"model.se.bias={self.bias!r} is not allowed; choose one of: True, False")
        if self.stages is not None:
            stages = tuple(self.stages)
            if not stages or not all(isinstance(s, int) and not isinstance(s, bool) for s in stages):
                raise ValueError(f"model.se.stages={self.stages!r} is not allowed; give a non-empty list of stage ids, or null for all")
            object.__setattr__(self, "stages", stages)
        try:
            skips = tuple((int(s), int(b)) for s, b in self.skip_blocks)
        except (TypeError, ValueError):
            raise ValueError(f"model.se.skip_blocks={self.skip_blocks!r} is not allowed; give (stage, block) pairs, e.g. [[5, 2], [5, 3]]") from None
        if any(b < 1 for _, b in skips):
            raise ValueError(f"model.se.skip_blocks={self.skip_blocks!r} is not allowed; blocks count from 1 (SE_5_1 is the first)")
        object.__setattr__(self, "skip_blocks", skips)
        k = self.eca_kernel
        if k != "adaptive" and (isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0):
            raise ValueError(f"model.se.eca_kernel={k!r} is not allowed; it must be 'adaptive' or an odd integer >= 1")
        check_choice("model.se.gc_fusion", self.gc_fusion, GC_FUSIONS)
        check_choice("model.se.ge_variant", self.ge_variant, GE_VARIANTS)
        check_int("model.se.ge_extent", self.ge_extent, minimum=0)
        check_int("model.se.cbam_kernel", self.cbam_kernel)
        check_int("model.se.coord_reduction", self.coord_reduction)
        if self.cbam_kernel % 2 == 0:
            raise ValueError(f"model.se.cbam_kernel={self.cbam_kernel!r} is not allowed; it must be an odd integer >= 1")
        lam = self.simam_lambda
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0:
            raise ValueError(f"model.se.simam_lambda={lam!r} is not allowed; it must be a number > 0")
        self._check_knobs_apply()
        self._check_ge()

    def _check_ge(self) -> None:
        """GE's extent and parameterisation together (after ``_check_knobs_apply``: only GE sets them)."""
        e = self.ge_extent
        if e == 1 or e & (e - 1):
            raise ValueError(f"model.se.ge_extent={e!r} is not allowed; it must be 0 (global) or a power of two >= 2")
        if e == 0 and self.ge_variant != "theta_minus":
            raise ValueError(f"model.se.ge_variant={self.ge_variant!r} cannot gather at global extent "
                             "(model.se.ge_extent=0): its depthwise kernel is the feature map's size, which the "
                             "block is not given; set ge_extent to 2, 4, 8, ... or use theta_minus")
        if self.operator == "ge" and self.ge_variant != "theta_plus":
            for name in ("reduction", "width_rounding", "divisor"):
                f = next(f for f in dataclasses.fields(self) if f.name == name)
                if getattr(self, name) != f.default:
                    raise ValueError(f"model.se.{name}={getattr(self, name)!r} does not apply to "
                                     f"model.se.ge_variant={self.ge_variant!r}, which has no bottleneck (only "
                                     f"theta_plus does); leave {name} at its default ({f.default!r})")

    def _check_knobs_apply(self) -> None:
        """Refuse a knob the chosen operator does not read, set away from its default (one line naming both)."""
        reads = OPERATOR_KNOBS[self.operator]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in WHERE_KNOBS or f.name in reads or value == f.default:
                continue
            raise ValueError(f"model.se.{f.name}={value!r} does not apply to model.se.operator={self.operator!r}, "
                             f"which reads: {', '.join(reads) or 'no knobs but where it goes'}; "
                             f"leave {f.name} at its default ({f.default!r})")

    def applies_to(self, stage: int, block: int) -> bool:
        """Whether block ``block`` (1-based) of stage ``stage`` gets an SE block."""
        if self.stages is not None and stage not in self.stages:
            return False
        return (stage, block) not in self.skip_blocks


@dataclass(frozen=True)
class ModelConfig:
    """One buildable network: an architecture, its SE config (``None`` = baseline) and its head.

    Attributes:
        arch: a registered architecture (``senet.registry.list_archs()``), e.g. ``resnet50``.
        se: the SE block, or ``None`` for the no-SE baseline (same code, ``se`` unset).
        num_classes: classifier outputs.
        in_chans: input channels.
        stride_on: where a down-sampling bottleneck puts its stride: ``1x1`` (the paper's Caffe layout,
            used for every complexity number; with Caffe's ceil-mode stem pool) or ``3x3``
            (torchvision "v1.5"). ``None`` takes the architecture's default (ResNeXt: 3x3, as released).
        stem_pool: the ImageNet ResNets' stem max-pool: ``caffe`` (3x3/2, ceil mode, no padding; the
            released models, the default) or ``torchvision`` (3x3/2, padding 1; torchvision and timm's
            modern ``seresnet*``). Same output size at even inputs, different windows.
        drop_rate: dropout on the pooled features before the classifier (timm's ``drop_rate``; 0 = none).

    Checks here need no registry. What depends on the architecture (is ``arch`` registered, do the SE
    stages/placement/skipped blocks exist in it) is ``senet.registry.check_model_config``, run by
    ``build_model``, ``model_config`` and ``ExperimentConfig``: this module stays a leaf.

    ``stem_pool`` and ``drop_rate`` are late fields: at their defaults they stay out of ``to_dict`` and
    ``config_hash`` (``late_field``), so a config that does not set them keeps its hash.
    """

    arch: str = "resnet50"
    se: Optional[SEConfig] = field(default_factory=SEConfig)
    num_classes: int = 1000
    in_chans: int = 3
    stride_on: Optional[str] = None
    stem_pool: str | None = late_field(None)
    drop_rate: float = late_field(0.0)

    def __post_init__(self) -> None:
        if self.stride_on is not None:
            check_choice("model.stride_on", self.stride_on, STRIDE_ON)
        if self.stem_pool is not None:
            check_choice("model.stem_pool", self.stem_pool, STEM_POOLS)
        rate = self.drop_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"model.drop_rate={rate!r} is not allowed; it must be a number in [0, 1)")
        for name in ("num_classes", "in_chans"):
            check_int(f"model.{name}", getattr(self, name))
