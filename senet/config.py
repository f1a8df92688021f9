"""Frozen configs for the SE block and the models (paper Sec. 3 and Sec. 6).

A frozen dataclass is the unit of an ablation: an arm differs from its baseline in
exactly the fields a sweep varies (``dataclasses.replace``), and ``se=None`` *is* the
baseline. Every field the reference implementations disagree on is explicit here.
The generic helpers (``to_dict``, ``from_dict``, ``apply_overrides``, ``config_hash``)
work for any tree of these dataclasses, so ``ablations`` reuses them for its own configs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

SQUEEZES = ("avg", "max", "avgmax", "none")
ACTIVATIONS = ("relu", "silu", "gelu", "leaky_relu", "tanh", "identity")
GATES = ("sigmoid", "hard_sigmoid", "tanh", "relu", "identity")
PLACEMENTS = ("standard", "pre", "post", "identity", "after_3x3")
WIDTH_ROUNDINGS = ("floor", "round", "divisor")
STRIDE_ON = ("1x1", "3x3")
STEM_POOLS = ("caffe", "torchvision")

# Field metadata of a field added after configs were hashed: ``to_dict`` (and so ``config_hash``) leaves it
# out while it holds its default, so every config made before the field existed keeps its dict and hash.
OMIT_AT_DEFAULT = "senet.omit_at_default"


def late_field(default: Any) -> Any:
    """A dataclass field that enters ``to_dict``/``config_hash`` only when set away from ``default``."""
    return field(default=default, metadata={OMIT_AT_DEFAULT: True})


# ---- The checks every config and command uses: one message form, naming the field, the value, what is allowed ---- #


def check_choice(where: str, value: Any, allowed: Sequence[Any]) -> None:
    """``ValueError`` unless ``value`` is one of ``allowed`` (``where``: the field as typed, ``se.gate``)."""
    if value not in allowed:
        raise ValueError(f"{where}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def check_int(where: str, value: Any, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}={value!r} is not allowed; it must be an integer >= {minimum}")


def check_number(where: str, value: Any, minimum: float = 1) -> None:
    """``ValueError`` unless ``value`` is a number (int or float, not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{where}={value!r} is not allowed; it must be a number >= {minimum}")


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

    def __post_init__(self) -> None:
        check_int("se.reduction", self.reduction)
        check_int("se.divisor", self.divisor)
        check_choice("se.width_rounding", self.width_rounding, WIDTH_ROUNDINGS)
        check_choice("se.squeeze", self.squeeze, SQUEEZES)
        check_choice("se.activation", self.activation, ACTIVATIONS)
        check_choice("se.gate", self.gate, GATES)
        check_choice("se.placement", self.placement, PLACEMENTS)
        if not isinstance(self.bias, bool):
            raise ValueError(f"se.bias={self.bias!r} is not allowed; choose one of: True, False")
        if self.stages is not None:
            stages = tuple(self.stages)
            if not stages or not all(isinstance(s, int) and not isinstance(s, bool) for s in stages):
                raise ValueError(f"se.stages={self.stages!r} is not allowed; give a non-empty list of stage ids, or null for all")
            object.__setattr__(self, "stages", stages)
        try:
            skips = tuple((int(s), int(b)) for s, b in self.skip_blocks)
        except (TypeError, ValueError):
            raise ValueError(f"se.skip_blocks={self.skip_blocks!r} is not allowed; give (stage, block) pairs, e.g. [[5, 2], [5, 3]]") from None
        if any(b < 1 for _, b in skips):
            raise ValueError(f"se.skip_blocks={self.skip_blocks!r} is not allowed; blocks count from 1 (SE_5_1 is the first)")
        object.__setattr__(self, "skip_blocks", skips)

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

    ``stem_pool`` and ``drop_rate`` came later: at their defaults they stay out of ``to_dict`` and
    ``config_hash`` (``late_field``), so older configs keep their hashes.
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


# ---- Generic helpers over trees of frozen dataclasses ---- #


def to_dict(cfg: Any) -> dict:
    """``asdict`` with tuples turned into lists, so it round-trips through YAML and JSON.

    A ``late_field`` at its default is left out (``from_dict`` restores it), so the dict and
    ``config_hash`` of a config made before that field existed do not change.
    """

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)
                    if not (f.metadata.get(OMIT_AT_DEFAULT) and getattr(v, f.name) == f.default)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``Optional[T]`` / ``T | None``, else ``(tp, False)``: the tree helpers' type reading."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


# What a field of each type accepts, for the message (a float field takes integers too).
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _is_kind(tp: type, value: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp) and (tp is bool or not isinstance(value, bool))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against the field type ``tp`` (lists become tuples); a wrong type is a ``ValueError``
    naming the key, so a typo never reaches a comparison deep inside a ``__post_init__`` as a ``TypeError``."""
    tp, optional = unwrap_optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}={value!r} is not allowed; expected a mapping of {tp.__name__} fields")
        return from_dict(tp, value, prefix=where)
    if tp in _KINDS:
        if not _is_kind(tp, value):
            hint = " (quote it to keep it as text: '...')" if tp is str and isinstance(value, (int, float)) else ""
            raise ValueError(f"{where}={value!r} is not allowed; it must be {_KINDS[tp]}{hint}")
        return value
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner in _KINDS and not (isinstance(value, (list, tuple)) and all(_is_kind(inner, v) for v in value)):
            raise ValueError(f"{where}={value!r} is not allowed; it must be a list of {_PLURALS[inner]}")
        if not isinstance(value, (list, tuple)):
            return value  # the class's own check names what it wants (se.skip_blocks: (stage, block) pairs)
        if inner is not None:
            return tuple(_coerce(inner, v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build a (nested) dataclass from a plain dict; unknown keys are an error naming the allowed ones."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ValueError(f"unknown key {where}{unknown[0]}; allowed keys: {', '.join(where + n for n in names)}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """Parse a command-line value with YAML rules (``8`` -> int, ``true`` -> bool, ``[2,3]`` -> list)."""
    import yaml

    return yaml.safe_load(text) if isinstance(text, str) else text


def apply_overrides(cfg: Any, overrides: dict[str, Any], prefix: str = "") -> Any:
    """Return ``cfg`` with dotted-key overrides applied (``{"model.se.reduction": 8}``).

    Setting a field under an optional sub-config that is ``None`` (``model.se.reduction`` on a
    baseline) starts from that sub-config's defaults; ``model.se=null`` turns SE off.
    """
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:  # prefix already ends with "." ("model.se.")
            raise ValueError(f"unknown key {prefix}{key}; allowed keys: {', '.join(prefix + n for n in names)}")
        if rest:
            grouped.setdefault(head, {})[rest] = value
        else:
            direct[head] = _coerce(hints[head], value, prefix + head)
    for head, sub in grouped.items():
        current = direct.get(head, getattr(cfg, head))
        tp, _ = unwrap_optional(hints[head])
        if current is None:
            if not dataclasses.is_dataclass(tp):
                raise ValueError(f"unknown key {prefix}{head}.{next(iter(sub))}: {prefix}{head} has no fields")
            current = tp()
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown key {prefix}{head}.{next(iter(sub))}: {prefix}{head} has no fields")
        direct[head] = apply_overrides(current, sub, prefix=f"{prefix}{head}.")
    return dataclasses.replace(cfg, **direct)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"se": {"reduction": 8}}}`` -> ``{"model.se.reduction": 8}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_hash(cfg: Any, length: int = 12) -> str:
    """A stable identifier of a config (independent of key order)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
