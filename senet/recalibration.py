"""The contract every channel-recalibration operator keeps (SE and its successors), and the factory that places one.

``Recalibration`` is the base of SE (``senet.se.SqueezeExcite``) and of each successor (``senet.attention``);
``make_se`` builds the operator ``se.operator`` names where the ``SEConfig`` asks for one (stage, block, placement),
and ``se_modules`` finds every one in a network by its paper-style tag (``SE_4_6``).
"""
from __future__ import annotations

import torch
from torch import nn

from senet.attention import operator_class
from senet.config import SEConfig
from senet.fused_se import fused_scale


class Recalibration(nn.Module):
    """Base of every operator ``make_se`` builds: SE and its successors (``senet.attention``).

    One contract, which the blocks, the fast path and the complexity counter (``senet.op_counts``) rely on:

    - ``forward(x, residual=None)`` returns the recalibrated ``x``, plus ``residual`` when it is given;
    - the module's own ``forward`` runs only the final combination (F_scale, ``self.scale``); everything that
      computes the gate lives in child modules, so the counter attributes it;
    - the children named in ``squeeze_children`` aggregate context (F_sq): their element-wise ops count as the
      squeeze, their multiply-accumulates as MACs;
    - ``fuses_residual``: the output is ``x * s``, so a residual unit hands its sum in (``residual + x * s``,
      one ``addcmul``). An operator whose output is not ``x * s`` (GC's additive fusion) sets it False and the
      unit adds.

    Attributes: ``tag`` (``SE_4_6``: stage 4, block 6, whatever the operator) and ``channels``.
    """

    squeeze_children: tuple[str, ...] = ("squeeze",)
    fuses_residual: bool = True

    def scale(self, x: torch.Tensor, s: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """F_scale ``x * s``; with ``residual``, fused into the sum: ``residual + x * s``."""
        return fused_scale(self, x, s, residual)

    def extra_repr(self) -> str:
        return f"tag={self.tag}"


def make_se(channels: int, cfg: SEConfig | None, stage: int, block: int, placement: str | None = None,
            tag: str | None = None) -> Recalibration | None:
    """The ``cfg.operator`` block for ``(stage, block)`` if ``cfg`` asks for one there (and at ``placement``), else
    None. ``tag`` defaults to the paper's ``SE_{stage}_{block}``."""
    if cfg is None or not cfg.applies_to(stage, block):
        return None
    if placement is not None and cfg.placement != placement:
        return None
    return operator_class(cfg.operator)(channels, cfg, tag=tag or f"SE_{stage}_{block}")


def se_modules(model: nn.Module) -> dict[str, Recalibration]:
    """Every recalibration block (SE or a successor) in ``model`` by its tag, in order of construction."""
    return {m.tag: m for m in model.modules() if isinstance(m, Recalibration)}
