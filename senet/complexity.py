"""Counting conventions: which measured categories a complexity number counts (paper Sec. 4, Tables 2-3, 10-16).

``senet.op_counts.count_ops`` measures one forward by category (conv/FC MACs, the SE squeeze and scale,
batch norm, sums, other element-wise ops); a ``Convention`` says which of them a number counts, and
``summarize`` applies it, so one traced forward serves every convention. Units are named: ``macs``/``gmacs``
are multiply-accumulates (the paper's "GFLOPs"), ``gflops`` is 2 x MACs (``FlopCounterMode``'s unit); the
convention's element-wise ops count one each. The paper's own convention is hand-written here: no counter
counts the SE squeeze and scale as the paper does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

# The measurement is part of the public counting API: ``from senet.complexity import count_ops`` keeps working.
from senet.op_counts import MAC_CATEGORIES, OP_CATEGORY, OPTIONAL_CATEGORIES, OpCounts, count_ops
from senet.tree import check_choice

__all__ = ["BREAKDOWN_KEYS", "CONVENTIONS", "MAC_CATEGORIES", "OPTIONAL_CATEGORIES", "OP_CATEGORY", "Complexity",
           "Convention", "OpCounts", "check_convention", "complexity", "count_ops", "summarize"]

#: Keys of ``Complexity.breakdown``; they partition ``macs``.
BREAKDOWN_KEYS = ("conv", "linear", "se_squeeze", "se_scale", "other")


@dataclass(frozen=True)
class Convention:
    """Which measured categories a complexity number counts (conv and linear MACs always count)."""

    name: str
    counts: frozenset
    description: str


CONVENTIONS = {c.name: c for c in (
    Convention("paper", frozenset({"se_squeeze", "se_scale"}),
               "conv + FC multiply-accumulates, plus one op per element for the SE squeeze (pooling) and for the "
               "SE scale; reproduces ResNet-50 3.86 -> SE-ResNet-50 3.87 (the paper's Table 2)"),
    Convention("conv+fc", frozenset(),
               "conv + FC multiply-accumulates only: what fvcore and FlopCounterMode/2 report; SE shows only "
               "through its FC layers"),
    Convention("squeeze-only", frozenset({"se_squeeze"}),
               "conv + FC MACs plus the SE squeeze: what module-hook counters (thop, ptflops) see of an SE "
               "block whose pooling is a module and whose scale is a functional multiply"),
    Convention("paper+add", frozenset({"se_squeeze", "se_scale", "add"}),
               "paper, plus one op per element of every tensor sum (residual additions, Caffe Eltwise layers)"),
    Convention("paper+bn", frozenset({"se_squeeze", "se_scale", "bn"}),
               "paper, plus one op per element for every batch norm (an inference-time scale and shift)"),
    Convention("all-elementwise", frozenset(OPTIONAL_CATEGORIES),
               "paper, plus batch norm, sums, activations, gates and pooling, one op per element "
               "(reductions and pooling: per input element)"),
)}


# ---- Conventions: what a number counts ---- #


@dataclass(frozen=True)
class Complexity:
    """Params and multiply-accumulates of a model under one counting convention.

    Attributes:
        params: learnable parameters (``sum(p.numel() for p in model.parameters())``).
        macs: multiply-accumulates (the paper's "FLOPs"), plus one per element for the element-wise
            categories the convention counts.
        gmacs: ``macs / 1e9``, the unit of the paper's "GFLOPs" columns.
        gflops: ``2 * gmacs``, what ``torch.utils.flop_counter`` reports.
        breakdown: the counted part of ``macs`` by kind; keys ``conv`` (including the SE FCs),
            ``linear``, ``se_squeeze``, ``se_scale``, ``other`` (bn, sums, activations ... when the
            convention counts them). Sums to ``macs``.
        se_macs: the part of ``macs`` that runs inside SE blocks (FCs, squeeze, scale, ...).
        uncounted: measured categories this convention leaves out (``bn``, ``add``, ``elementwise``...),
            so nothing is silently zero.
        convention: the ``CONVENTIONS`` key.
        unknown_ops: ops with no known cost (counted as 0; ``strict=True`` refuses them).
    """

    params: int
    macs: int
    breakdown: dict
    convention: str
    se_macs: int = 0
    uncounted: dict = field(default_factory=dict)
    unknown_ops: tuple = ()
    input_size: tuple = (3, 224, 224)
    gmacs: float = field(init=False)
    gflops: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gmacs", self.macs / 1e9)
        object.__setattr__(self, "gflops", 2 * self.macs / 1e9)


def check_convention(convention: str) -> Convention:
    check_choice("convention", convention, tuple(CONVENTIONS))
    return CONVENTIONS[convention]


def summarize(counts: OpCounts, convention: str = "paper") -> Complexity:
    """Apply a counting convention to a measurement (cheap: no forward)."""
    conv = check_convention(convention)
    counted = set(MAC_CATEGORIES) | conv.counts
    cats = counts.categories
    breakdown = {k: cats[k] if k in counted else 0 for k in BREAKDOWN_KEYS[:-1]}
    breakdown["other"] = sum(cats[k] for k in ("bn", "add", "elementwise") if k in counted)
    return Complexity(
        params=counts.params,
        macs=sum(breakdown.values()),
        breakdown=breakdown,
        convention=convention,
        se_macs=sum(v for k, v in counts.se.items() if k in counted),
        uncounted={k: v for k, v in cats.items() if k not in counted},
        unknown_ops=counts.unknown_ops,
        input_size=counts.input_size,
    )


def complexity(model: nn.Module, input_size=(3, 224, 224), convention: str = "paper", strict: bool = False,
               device: str | None = "meta") -> Complexity:
    """Params and MACs of ``model`` for one ``input_size`` image under ``convention``.

    A pure function of the built model: one batch-1 forward in eval mode on meta tensors (see
    ``count_ops``), then ``summarize``. ``convention`` is a key of ``CONVENTIONS`` (``paper``,
    ``conv+fc``, ``squeeze-only``, ``paper+add``, ``paper+bn``, ``all-elementwise``).
    """
    check_convention(convention)
    return summarize(count_ops(model, input_size, strict=strict, device=device), convention)
