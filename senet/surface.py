"""timm's model surface for every network of the zoo: ``forward_head``, ``reset_classifier``, ``feature_info``.

A zoo network is ``forward_features`` (the trunk) followed by a head: pooling, the layers before the
classifier (none, or VGG's two 4096-wide FCs), dropout at ``model.drop_rate`` and the final linear
classifier. ``TimmSurface`` gives each network timm's names for those parts, so code written against
timm models (feature extractors, fine-tuning scripts, linear probes) takes ours unchanged:

- ``forward(x) == forward_head(forward_features(x))``; ``forward_head(x, pre_logits=True)`` stops
  before the classifier (``head_hidden_size`` features);
- ``get_classifier()``, ``reset_classifier(num_classes)`` (0: ``nn.Identity``, as timm),
  ``num_features`` (channels of ``forward_features``), ``num_classes``;
- ``feature_info``: timm's list, one dict ``{num_chs, reduction, module, stage}`` per output stride, the
  last module at each: index 0 is the stem's output (stride 2, or 1 for the CIFAR nets), as in timm,
  so ``out_indices`` picks the same maps as timm's for the same network (the stage id is the paper's,
  as ``se.stages`` addresses it; the stem is stage 1);
- ``FeatureList``: the trunk alone, returning those outputs (``build_model(..., features_only=True)``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senet.tree import check_int


class FeatureInfo(list):
    """timm's ``feature_info``: a list of dicts, with timm's accessors for one field of every entry."""

    def get(self, key: str, idx: int | None = None):
        return self[idx][key] if idx is not None else [f[key] for f in self]

    def channels(self, idx: int | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None):
        return self.get("module", idx)


def stage_info(entries: Iterable[tuple[int, int, int, str]]) -> FeatureInfo:
    """``feature_info`` from ``(stage, num_chs, reduction, module)`` tuples."""
    return FeatureInfo({"num_chs": c, "reduction": r, "module": m, "stage": s} for s, c, r, m in entries)


class TimmSurface(nn.Module):
    """Base of the zoo's networks: timm's trunk/head split, classifier access and feature metadata.

    A subclass sets ``num_features``, ``head_hidden_size``, ``num_classes``, ``drop_rate`` and
    ``feature_info``, and defines ``forward_features`` and ``head_features`` (pooling and any layers
    before the classifier). ``classifier_path`` names the final linear layer and ``head_modules`` the
    children that only the head uses (left out by ``FeatureList``).
    """

    classifier_path: str = "fc"
    head_modules: tuple[str, ...] = ("avgpool", "fc")
    drop_rate: float = 0.0
    num_features: int
    head_hidden_size: int
    num_classes: int
    feature_info: FeatureInfo

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output -> the (N, head_hidden_size) input of the dropout and the classifier."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Trunk output -> logits; ``pre_logits=True`` returns the pooled features before the classifier."""
        x = self.head_features(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` after ``reset_classifier(0)``)."""
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh ``num_classes``-way linear layer; 0 makes it ``nn.Identity``.

        The new layer has PyTorch's default init (as timm's) and the old one's device and dtype (the
        network's, after ``reset_classifier(0)``).
        ``model.cfg`` keeps describing the network as built. Only average pooling exists here, so
        ``global_pool`` may only be None or ``"avg"``.
        """
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r} is not allowed; the zoo pools by average: None or 'avg'")
        check_int("num_classes", num_classes, 0)
        old = next(self.get_classifier().parameters(), next(self.parameters(), None))
        factory = {} if old is None else {"device": old.device, "dtype": old.dtype}
        head = nn.Linear(self.head_hidden_size, num_classes, **factory) if num_classes else nn.Identity()
        parent, _, leaf = self.classifier_path.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, leaf, head)
        self.num_classes = num_classes


class FeatureList(nn.Module):
    """timm's ``features_only`` model: a zoo network's trunk returning the outputs of ``feature_info`` stages.

    timm has this wrapper (``timm.models._features.FeatureHookNet``/``FeatureListNet``), but ``senet``
    depends on torch only and timm is a development extra, so this is a small one of our own. As in
    timm's hook variant, forward hooks on the ``feature_info`` modules collect their outputs while the
    network's own ``forward_features`` runs, so no architecture has to be rewritten as a sequence. The
    trunk's modules are registered under their own names: the state-dict keys are the classifier's
    without its head (``head_modules``), and weights load into either the same way.

    Args:
        model: a zoo network (``TimmSurface``).
        out_indices: which ``feature_info`` entries to return, timm's indices (0 the stem's output),
            negative counting from the end (default: all); ``self.feature_info`` lists just those.
    """

    def __init__(self, model: TimmSurface, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(model.feature_info)
        indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n]
        if bad or not indices:
            raise ValueError(f"out_indices={out_indices!r} is not allowed; this network has {n} feature stages: "
                             f"give indices in 0..{n - 1} (or -{n}..-1)")
        self.out_indices = tuple(i % n for i in indices)
        self.feature_info = FeatureInfo(dict(model.feature_info[i]) for i in self.out_indices)
        for name, child in model.named_children():
            if name not in model.head_modules:
                self.add_module(name, child)
        object.__setattr__(self, "_network", model)  # not a submodule: its head is not part of this one
        for name in {f["module"] for f in self.feature_info}:
            model.get_submodule(name).register_forward_hook(_keep_output)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        mods = [self._network.get_submodule(f["module"]) for f in self.feature_info]
        try:
            self._network.forward_features(x)
            return [m.__dict__[_KEPT] for m in mods]
        finally:
            for m in mods:
                m.__dict__.pop(_KEPT, None)


_KEPT = "_senet_feature_output"


def _keep_output(module: nn.Module, args, output: torch.Tensor) -> None:
    """Forward hook of a ``feature_info`` module: keep its output for ``FeatureList.forward``.

    A plain function storing on the module itself, so a deep-copied or replicated ``FeatureList`` works.
    """
    module.__dict__[_KEPT] = output
