"""Import the released SENet weights (paper Sec. 5; hujie-frank/SENet) and timm's SE-ResNets into our models.

The Caffe models reach PyTorch through Cadene's ``pretrainedmodels`` (``se_resnet50`` ...) and timm's
``legacy_se*`` ports, which share one state-dict layout. timm's modern ``seresnet*``/``seresnext*`` are
another network (stride on the 3x3, torchvision's padded stem pool, SE width rounded to a multiple of 8)
with its own key names. This module renames either layout to ours and refuses, with the offending keys
named, anything that would load silently wrong: a missing or extra tensor, a shape mismatch, or a model
whose SE knobs, stride placement or stem pool differ from the checkpoint's network.
Only local files are read; nothing is downloaded.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from senet import safe_load
from senet.blocks import BottleneckBranch
from senet.config import SEConfig

# timm legacy name -> our registered model (each also loads into its no-SE twin with drop_unused_se=True)
LEGACY_MODELS = {
    "legacy_seresnet50": "se_resnet50",
    "legacy_seresnet101": "se_resnet101",
    "legacy_seresnet152": "se_resnet152",
    "legacy_seresnext50_32x4d": "se_resnext50_32x4d",
    "legacy_seresnext101_32x4d": "se_resnext101_32x4d",
}

# timm's modern name -> our registered model, built with TIMM_LAYOUT: build_model(ours, **TIMM_LAYOUT)
TIMM_MODELS = {
    "seresnet18": "se_resnet18",
    "seresnet34": "se_resnet34",
    "seresnet50": "se_resnet50",
    "seresnet101": "se_resnet101",
    "seresnet152": "se_resnet152",
    "seresnext50_32x4d": "se_resnext50_32x4d",
    "seresnext101_32x4d": "se_resnext101_32x4d",
}
# What makes our SE-ResNet timm's modern one (the SE rounding matters for 18/34 only: 64 // 16 = 4, timm 8).
TIMM_LAYOUT = {"stride_on": "3x3", "stem_pool": "torchvision", "se.width_rounding": "divisor", "se.divisor": 8}

# The released SE block: what tensor shapes cannot reveal must match exactly (paper Sec. 8 facts).
RELEASED_SE = SEConfig(reduction=16, bias=True, squeeze="avg", activation="relu", gate="sigmoid", placement="standard")

_RULES = (
    (re.compile(r"^layer0\.(conv1|bn1)\.(.+)$"), r"\1.\2"),
    (re.compile(r"^(layer\d+\.\d+)\.(conv\d|bn\d)\.(.+)$"), r"\1.branch.\2.\3"),
    (re.compile(r"^(layer\d+\.\d+)\.se_module\.(fc\d)\.(.+)$"), r"\1.se.\2.\3"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.(\d)\.(.+)$"), r"\1.shortcut.\2.\3"),
    (re.compile(r"^last_linear\.(.+)$"), r"fc.\1"),
)
_TIMM_RULES = (
    (re.compile(r"^((conv1|bn1|fc)\.(weight|bias|running_mean|running_var|num_batches_tracked))$"), r"\1"),
    (re.compile(r"^(layer\d+\.\d+)\.(conv\d|bn\d)\.(.+)$"), r"\1.branch.\2.\3"),
    (re.compile(r"^(layer\d+\.\d+)\.se\.(fc\d)\.(.+)$"), r"\1.se.\2.\3"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.(\d)\.(.+)$"), r"\1.shortcut.\2.\3"),
)
_LIST = 8  # keys named per category in an error message


def legacy_key(key: str) -> str | None:
    """Our name for one Cadene/timm-legacy state-dict key, or None when no rule matches it."""
    return _rename(key, _RULES)


def timm_key(key: str) -> str | None:
    """Our name for one key of timm's modern ``seresnet*``/``seresnext*``, or None when no rule matches it."""
    return _rename(key, _TIMM_RULES)


def _rename(key: str, rules) -> str | None:
    for pattern, repl in rules:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt``/``.bin`` (torch.save) or ``.safetensors`` file, without running code.

    A checkpoint dict holding ``state_dict``/``model`` is unwrapped and a DataParallel ``module.``
    prefix is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    elif path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        sd = safe_load.load(path, map_location="cpu")
    else:
        raise ValueError(f"weights file {str(path)!r}: unknown format {path.suffix!r}; "
                         "allowed: .pth, .pt, .bin, .ckpt (torch.save) or .safetensors")
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"weights file {str(path)!r} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def convert_legacy_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Cadene/timm-legacy SE-ResNet/SE-ResNeXt state dict to our module names.

    Raises:
        ValueError: for keys that belong to no layer of ours (e.g. SENet-154's 3x3 stem), and for the
            basic-block ``legacy_seresnet18/34``, whose units apply a ReLU before the SE block, so
            that neither the paper's unit nor ours computes the same function.
    """
    if any(k.endswith("conv1.weight") for k in state_dict if k.startswith("layer1.")) and not any(
            ".conv3." in k for k in state_dict):
        raise ValueError("basic-block checkpoint (timm legacy_seresnet18/34): its units apply ReLU after bn2 "
                         "before the SE block, unlike the paper's residual unit and ours; not importable. "
                         f"Importable: {', '.join(LEGACY_MODELS)}")
    return _convert(state_dict, legacy_key, "released SE-ResNet-50/101/152, SE-ResNeXt-50/101 only")


def convert_timm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``seresnet*``/``seresnext*`` state dict (``TIMM_MODELS``) to our module names.

    Raises:
        ValueError: for keys that belong to no layer of ours, e.g. the deep stem of ``seresnet50d``
            (``conv1.0``) or the anti-aliasing of ``seresnetaa50d``.
    """
    return _convert(state_dict, timm_key, f"timm {', '.join(TIMM_MODELS)} only")


def _convert(state_dict: Mapping[str, torch.Tensor], rename, which: str) -> dict[str, torch.Tensor]:
    out, unknown = {}, []
    for key, value in state_dict.items():
        ours = rename(key)
        if ours is None:
            unknown.append(key)
        else:
            out[ours] = value
    if unknown:
        raise ValueError(f"{len(unknown)} checkpoint keys match no layer of our SE-ResNet/SE-ResNeXt "
                         f"({which}): {_names(unknown)}")
    return out


def check_se_knobs(model: nn.Module) -> None:
    """Refuse a model whose SE block computes something else than the released one with the same tensors."""
    se = getattr(getattr(model, "cfg", None), "se", None)
    if se is None:
        return
    for name in ("squeeze", "activation", "gate", "placement"):
        if getattr(se, name) != getattr(RELEASED_SE, name):
            raise ValueError(f"model.se.{name}={getattr(se, name)!r} differs from the released models; "
                             f"allowed for imported weights: {getattr(RELEASED_SE, name)!r}")


def check_stride_layout(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse a model that strides where the checkpoint's network does not (shapes cannot tell).

    SE-ResNet (ungrouped 3x3) puts the stride on the first 1x1 conv, SE-ResNeXt on the grouped 3x3.
    """
    w = state_dict.get("layer2.0.branch.conv2.weight")
    first = next((m for m in model.modules() if isinstance(m, BottleneckBranch) and
                  max(m.conv1.stride + m.conv2.stride) > 1), None)
    if w is None or first is None:
        return
    want = "3x3" if w.shape[0] != w.shape[1] else "1x1"
    have = "1x1" if first.conv1.stride[0] > 1 else "3x3"
    if want != have:
        kind = "SE-ResNeXt" if want == "3x3" else "SE-ResNet"
        raise ValueError(f"model.stride_on={have!r} does not match the released {kind}, which strides on the "
                         f"{want} conv; allowed for these weights: stride_on={want!r}")


def load_legacy_weights(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], *,
                        drop_unused_se: bool = False, drop_head: bool = False) -> nn.Module:
    """Load released SE-ResNet/SE-ResNeXt weights (Cadene / timm ``legacy_se*`` layout) into ``model``.

    Build the model as released: ``build_model("se_resnet50")`` (stride on the 1x1, FC biases on, r=16)
    or ``build_model("se_resnext50_32x4d")`` (stride on the grouped 3x3). The ports expect RGB input in
    [0, 1] normalised with the ImageNet mean and std.

    Args:
        model: one of our SE-ResNet/ResNeXt models (or its no-SE twin, with ``drop_unused_se``).
        source: a weights file (see ``read_state_dict``) or an already loaded state dict.
        drop_unused_se: discard checkpoint SE weights that have no SE block in ``model`` (baseline,
            ``se.stages`` or ``se.skip_blocks``), e.g. to evaluate the released net without its last-stage SE.
        drop_head: skip the 1000-way classifier, for fine-tuning with another ``num_classes``.

    Returns:
        ``model``, with every tensor that it and the checkpoint share loaded.

    Raises:
        ValueError: naming the missing keys, the unexpected keys and each shape mismatch (ours vs
            checkpoint), or the SE/stride setting that differs from the released model.
    """
    sd = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    sd = convert_legacy_state_dict(sd)
    check_se_knobs(model)
    return _load_checked(model, sd, drop_unused_se, drop_head, lambda sd: check_stride_layout(model, sd),
                         "Build the model as released (se.reduction=16, se.bias=true) or fix the checkpoint.")


def check_timm_layout(model: nn.Module) -> None:
    """Refuse a model that is not laid out as timm's modern SE-ResNets (shapes cannot tell)."""
    cfg = getattr(model, "cfg", None)
    pool = getattr(model, "maxpool", None)
    if isinstance(pool, nn.MaxPool2d) and pool.ceil_mode:
        raise ValueError(f"model.stem_pool={getattr(cfg, 'stem_pool', None)!r} (Caffe's ceil-mode pool) does not "
                         "match timm's seresnet*/seresnext*; allowed for these weights: stem_pool='torchvision'")
    first = next((m for m in model.modules() if isinstance(m, BottleneckBranch) and
                  max(m.conv1.stride + m.conv2.stride) > 1), None)
    if first is not None and first.conv1.stride[0] > 1:
        raise ValueError("model.stride_on='1x1' does not match timm's seresnet*/seresnext*, which stride on the "
                         "3x3 conv; allowed for these weights: stride_on='3x3'")


def load_timm_weights(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], *,
                      drop_unused_se: bool = False, drop_head: bool = False) -> nn.Module:
    """Load the weights of timm's modern ``seresnet*``/``seresnext*`` (``TIMM_MODELS``) into ``model``.

    Build the model as timm's: ``build_model(TIMM_MODELS[name], **TIMM_LAYOUT)`` (stride on the 3x3,
    torchvision's stem pool, SE width rounded to a multiple of 8). A state dict saved from
    ``timm.create_model(name).state_dict()`` then gives timm's logits. Arguments, return value and
    errors are those of ``load_legacy_weights``.
    """
    sd = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    sd = convert_timm_state_dict(sd)
    check_se_knobs(model)
    return _load_checked(model, sd, drop_unused_se, drop_head, lambda sd: check_timm_layout(model),
                         "Build the model as timm's: build_model(TIMM_MODELS[name], **TIMM_LAYOUT).")


def _load_checked(model: nn.Module, sd: dict[str, torch.Tensor], drop_unused_se: bool, drop_head: bool,
                  check_layout, advice: str) -> nn.Module:
    """Load renamed tensors into ``model`` after naming every missing, extra or misshapen one."""
    ours = model.state_dict()
    if drop_unused_se:
        sd = {k: v for k, v in sd.items() if ".se." not in k or k in ours}
    if drop_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        ours = {k: v for k, v in ours.items() if not k.startswith("fc.")}
    # Caffe-era checkpoints predate BN's num_batches_tracked counter; the model keeps its own.
    missing = [k for k in ours if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in ours]
    mismatched = [f"{k}: model {tuple(ours[k].shape)} vs checkpoint {tuple(v.shape)}"
                  for k, v in sd.items() if k in ours and ours[k].shape != v.shape]
    if missing or unexpected or mismatched:
        problems = []
        if mismatched:
            problems.append(f"shape mismatch ({len(mismatched)}): {_names(mismatched)}")
        if missing:
            problems.append(f"missing from the checkpoint ({len(missing)}): {_names(missing)}")
        if unexpected:
            hint = " (pass drop_unused_se=True to discard SE weights)" if any(".se." in k for k in unexpected) else ""
            problems.append(f"unexpected in the checkpoint ({len(unexpected)}){hint}: {_names(unexpected)}")
        raise ValueError("weights do not fit the model: " + "; ".join(problems) + ". " + advice)
    check_layout(sd)
    model.load_state_dict(sd, strict=False)
    return model


def _names(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _LIST} more)" if len(keys) > _LIST else ""
    return ", ".join(keys[:_LIST]) + more
