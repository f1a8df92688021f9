"""SE's successors as drop-in operators: ``se.operator`` picks one, ``senet.recalibration.make_se`` builds it.

Each operator is one module here, a ``senet.recalibration.Recalibration`` built as ``cls(channels, cfg, tag=...)``
from the ``SEConfig`` knobs it reads (``senet.config.OPERATOR_KNOBS``). The registry names each one's class by its
import path and imports it on first use, so importing ``senet.recalibration`` does not import every operator, and
the operators can build on it (and on ``senet.se``) without an import cycle.

Each also says where its per-channel gate is: ``channel_gate()``, the child whose output is s (N, C, 1, 1), which the
excitation analysis (``ablations.excitation``) hooks; None where there is none, with ``no_channel_gate`` saying why.
"""
from __future__ import annotations

import importlib

#: ``se.operator`` -> "module:class" of its ``Recalibration``.
OPERATORS = {
    "se": "senet.se:SqueezeExcite",
    "eca": "senet.attention.eca:EfficientChannelAttention",
    "simam": "senet.attention.simam:SimAM",
    "cbam": "senet.attention.cbam:CBAM",
    "gc": "senet.attention.gc:GlobalContext",
    "ge": "senet.attention.ge:GatherExcite",
    "srm": "senet.attention.srm:SRM",
    "coord": "senet.attention.coord:CoordinateAttention",
}


def operator_class(name: str) -> type:
    """The ``Recalibration`` class registered as ``name`` (``SEConfig`` has already checked the name)."""
    if name not in OPERATORS:
        raise ValueError(f"model.se.operator={name!r} is not registered; choose one of: {', '.join(OPERATORS)}")
    module, _, cls = OPERATORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
