"""Which SE blocks the excitation analysis looks at, named as the paper names them (paper Sec. 7.2, Fig. 6).

``SE_4_6`` is stage 4, block 6 of an SE-ResNet; ``SE_4e`` module e of stage 4 of SE-BN-Inception. The
paper's Fig. 6 shows the last block of each stage and every block of the last stage (``default_blocks``).

A block is any ``senet.recalibration.Recalibration`` (SE or a successor, ``model.se.operator``); the analysis records the
per-channel gate s (N, C, 1, 1) that the block multiplies in, the output of its ``channel_gate()`` module
(SE: its ``gate``). Operators without one (a gate per position: SimAM, coordinate attention, GE at e > 0; GC's
additive fusion) are refused in one line naming the operator and why (``channel_gates``).
"""
from __future__ import annotations

import re

import numpy as np
from torch import nn

from senet.attention import OPERATORS
from senet.recalibration import Recalibration
from senet.se import SqueezeExcite

STAGE_TAG = re.compile(r"^SE_(\d+)_?(\d+|[a-z]+)$")  # also Inception modules: SE_4e (stage 4, module e)
#: The operators with a per-channel gate, as the refusal lists them (each module's ``channel_gate()`` decides).
CHANNEL_GATED = "se, eca, srm, cbam (its channel attention), gc with gc_fusion=scale, ge with ge_extent=0"


class NoChannelGate(ValueError):
    """A model whose blocks have no per-channel gate to record: one line naming the operator and why."""


def se_blocks(model: nn.Module) -> dict[str, Recalibration]:
    """Every SE block (SE or a successor) of ``model`` in forward-construction order, named as the paper names them.

    ResNet-family blocks carry the paper's tag (``SE_4_6``: stage 4, block 6). When tags are not
    unique (architectures that tag by module rather than by stage/block), blocks are named by their
    module path instead (``features.3.se``), so every name addresses exactly one block.
    """
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, Recalibration)]
    tags = [m.tag for _, m in found]
    if len(set(tags)) == len(tags):
        return {m.tag: m for _, m in found}
    return {name: m for name, m in found}


def channel_gate(block: Recalibration) -> nn.Module | None:
    """The child of ``block`` whose output is its per-channel gate (SE: ``gate``), or None where it has none."""
    if isinstance(block, SqueezeExcite):
        return block.gate  # NoSqueeze's is (N, C, H, W): the recorder averages it over H x W
    own = getattr(block, "channel_gate", None)
    return own() if own is not None else None


def operator_name(block: Recalibration) -> str:
    """The ``model.se.operator`` that builds ``block`` (its class name where none is registered)."""
    path = f"{type(block).__module__}:{type(block).__qualname__}"
    return next((name for name, target in OPERATORS.items() if target == path), type(block).__name__)


def channel_gates(model: nn.Module, source: str = "the model") -> dict[str, nn.Module]:
    """Block name (as ``se_blocks``) -> the module whose forward output is that block's per-channel gate.

    Raises ``NoChannelGate``, one line naming ``source``, the operator and why, where a block has none: the
    analysis compares one gate value per channel across classes, which a gate per position does not give.
    """
    gates = {}
    for name, block in se_blocks(model).items():
        gate = channel_gate(block)
        if gate is None:
            why = getattr(block, "no_channel_gate", "its gate is not one per channel")
            raise NoChannelGate(f"{source} uses model.se.operator={operator_name(block)!r}, which has no channel gate "
                                f"({why}); the excitation analysis needs one per channel: {CHANNEL_GATED}")
        gates[name] = gate
    return gates


def stage_of(name: str) -> int | None:
    """The stage id in a block name (``SE_4_6`` -> 4, ``SE_4e`` -> 4), or None for module-path names."""
    m = STAGE_TAG.match(name)
    return int(m.group(1)) if m else None


def default_blocks(names: list[str]) -> list[str]:
    """The paper's Fig. 6 selection: the last SE block of each stage, and every block of the last stage.

    For SE-ResNet-50 that is SE_2_3, SE_3_4, SE_4_6, SE_5_1, SE_5_2, SE_5_3 (SE-BN-Inception: SE_3c,
    SE_4e, SE_5a, SE_5b); a last stage of more than four blocks contributes its first, middle and last.
    Names without a stage get up to six blocks spread evenly from first to last.
    """
    parsed = [stage_of(n) for n in names]
    if names and all(s is not None for s in parsed):
        stages: dict[int, list[str]] = {}
        for n, s in zip(names, parsed):
            stages.setdefault(s, []).append(n)
        last = stages[max(stages)]
        if len(last) > 4:  # a long last stage (Inception-ResNet-v2: 10 blocks) shows its first, middle and last
            last = [last[i] for i in np.unique(np.linspace(0, len(last) - 1, 3).round().astype(int))]
        chosen = {v[-1] for v in stages.values()} | set(last)
        return [n for n in names if n in chosen]
    if len(names) <= 6:
        return list(names)
    idx = np.unique(np.linspace(0, len(names) - 1, 6).round().astype(int))
    return [names[i] for i in idx]


def class_index(key: str | int, class_names: list[str]) -> int:
    """Index of a class given by name or by index (as text or int); ValueError lists the allowed ones."""
    if isinstance(key, str) and key in class_names:
        return class_names.index(key)
    try:
        i = int(key)
    except (TypeError, ValueError):
        i = -1
    if 0 <= i < len(class_names):
        return i
    raise ValueError(f"--classes: unknown class {key!r}; choose names or indices 0..{len(class_names) - 1} "
                     f"of: {', '.join(class_names)}")
