"""The model registry: architecture constructors and the paper's model names (Table 2 naming).

Two plain dicts, both refusing duplicates. ``register_arch`` records how to build an architecture
from a ``ModelConfig`` and what its SE knobs may address (stage ids, blocks per stage, allowed
placements). ``register_model`` records a public model name: a builder function in the family's
module, named as the model, that returns its ``ModelConfig`` (timm's ``@register_model``), so every
name, ``se_*`` included, has a definition to find; each architecture ``x`` has two, ``x`` (the no-SE
baseline) and ``se_x`` (SE with the paper's defaults). ``build_model`` is the one way to get an ``nn.Module``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from senet.config import PLACEMENTS, ModelConfig, SEConfig
from senet.surface import FeatureList
from senet.tree import apply_overrides, did_you_mean


@dataclass(frozen=True)
class ArchSpec:
    """What an architecture is and what its SE knobs may address."""

    name: str
    build: Callable[[ModelConfig], nn.Module]
    stages: tuple[int, ...]
    depths: Optional[tuple[int, ...]] = None  # blocks per stage, for skip_blocks validation
    placements: tuple[str, ...] = PLACEMENTS
    family: str = "resnet"
    num_classes: int = 1000
    input_size: tuple[int, int, int] = (3, 224, 224)
    stem_pool: bool = False  # honours model.stem_pool (the ImageNet ResNets)


_ARCHS: dict[str, ArchSpec] = {}
_MODELS: dict[str, Callable[..., ModelConfig]] = {}


def register_arch(name: str, *, stages: tuple[int, ...], **spec: Any):
    """Decorator: register ``fn(cfg) -> nn.Module`` as architecture ``name`` (its model names: ``register_model``)."""

    def deco(fn: Callable[[ModelConfig], nn.Module]):
        if name in _ARCHS:
            raise ValueError(f"architecture {name!r} is already registered")
        _ARCHS[name] = ArchSpec(name=name, build=fn, stages=tuple(stages), **spec)
        return fn

    return deco


def register(name: str):
    """Decorator: register a thin builder ``fn(**overrides) -> ModelConfig`` under a model name."""

    def deco(fn: Callable[..., ModelConfig]):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return deco


def register_model(fn: Callable[..., ModelConfig]) -> Callable[..., ModelConfig]:
    """Decorator: register ``fn(**overrides) -> ModelConfig`` under its own name (timm's ``@register_model``)."""
    return register(fn.__name__)(fn)


def arch_config(arch: str, se: SEConfig | None, **fields: Any) -> ModelConfig:
    """The ``ModelConfig`` of architecture ``arch`` with ``se`` (None: the baseline), at its native class count."""
    return ModelConfig(arch=arch, se=se, num_classes=get_arch(arch).num_classes, **fields)


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_MODELS)


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def get_arch(name: str) -> ArchSpec:
    if name not in _ARCHS:
        raise ValueError(f"model.arch={name!r} is not registered{did_you_mean(name, list_archs())}; "
                         f"choose one of: {', '.join(list_archs())}")
    return _ARCHS[name]


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The ``ModelConfig`` of a registered model name, with dotted-key overrides (``se.reduction=8``)."""
    if name not in _MODELS:
        close = did_you_mean(name, list_models())
        every = f"senet.list_models() names all {len(list_models())}" if close else f"choose one of: {', '.join(list_models())}"
        raise ValueError(f"model={name!r} is not registered{close}; {every}")
    cfg = _MODELS[name]()
    if overrides:
        cfg = apply_overrides(cfg, overrides, prefix="model.")
        check_model_config(cfg)
    return cfg


def check_model_config(cfg: ModelConfig) -> None:
    """Validate the parts of a ``ModelConfig`` that depend on its architecture."""
    arch = get_arch(cfg.arch)
    if cfg.stem_pool is not None and not arch.stem_pool:
        raise ValueError(f"model.stem_pool={cfg.stem_pool!r} does not apply to {arch.name}, whose stem is fixed; "
                         "only the ImageNet ResNets/ResNeXts take it; leave it null")
    se = cfg.se
    if se is None:
        return
    if se.placement not in arch.placements:
        raise ValueError(f"model.se.placement={se.placement!r} does not apply to {arch.name}; "
                         f"choose one of: {', '.join(arch.placements)}")
    for s in se.stages or ():
        if s not in arch.stages:
            raise ValueError(f"model.se.stages contains {s}, which {arch.name} does not have; "
                             f"its stages are: {', '.join(map(str, arch.stages))}")
    for s, b in se.skip_blocks:
        if s not in arch.stages:
            raise ValueError(f"model.se.skip_blocks names stage {s}, which {arch.name} does not have; "
                             f"its stages are: {', '.join(map(str, arch.stages))}")
        if arch.depths is not None:
            n = arch.depths[arch.stages.index(s)]
            if b > n:
                raise ValueError(f"model.se.skip_blocks names block {b} of stage {s}, but {arch.name} has "
                                 f"{n} blocks there; allowed: 1..{n}")


def build_model(cfg: ModelConfig | str, *, features_only: bool = False,
                out_indices: Sequence[int] | None = None, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build the network for ``cfg`` (a ``ModelConfig`` or a registered model name).

    Args:
        cfg: the config, or a registered model name (``list_models()``).
        features_only: return a ``senet.surface.FeatureList`` (timm's ``features_only``): the model
            without its head, whose forward gives the stage outputs listed in ``feature_info``.
        out_indices: with ``features_only``, which ``feature_info`` entries to return (default: all).
        pretrained: accepted for timm's ``create_model`` signature; only ``False``. Nothing is
            downloaded: load local weights with ``senet.weights`` (``load_legacy_weights``,
            ``load_timm_weights``).
        overrides: dotted-key config overrides (``{"se.reduction": 8}``, ``drop_rate=0.2``).
    """
    if pretrained:
        raise ValueError(f"pretrained={pretrained!r} is not allowed; allowed: False. senet downloads nothing: build "
                         "the model, then load a local weights file with senet.weights.load_legacy_weights "
                         "(released Caffe / timm legacy_se*) or load_timm_weights (timm seresnet*/seresnext*)")
    if out_indices is not None and not features_only:
        raise ValueError("out_indices is only used with features_only=True")
    if isinstance(cfg, str):
        cfg = model_config(cfg, **overrides)
    elif overrides:
        cfg = apply_overrides(cfg, overrides, prefix="model.")
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"build_model takes a ModelConfig or a model name, not {type(cfg).__name__}")
    check_model_config(cfg)
    model = get_arch(cfg.arch).build(cfg)
    if features_only:
        return FeatureList(model, out_indices)
    return model
