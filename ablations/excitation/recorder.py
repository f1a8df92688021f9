"""Recording what the excitation learns (paper Sec. 7.2, Figs. 6-7): per-block, per-class gate statistics.

Forward hooks on the per-channel gate of every SE block (SE's ``gate``, a successor's ``channel_gate()``:
``blocks.channel_gates``) feed a streaming accumulator: per block, per class and per channel a count, a mean
and a sum of squared deviations (Chan et al.'s parallel form of Welford's update, in float64), plus counts of
saturated gates. Memory is O(blocks x classes x channels) whatever the split's size; no per-sample tensor
outlives its batch. Written by hand: torchmetrics has running means but no grouped (per-class, per-channel)
running variance.

A "per-sample gate value" is s_c for the usual (N, C, 1, 1) excitation; for NoSqueeze
(``se.squeeze="none"``, gates of shape (N, C, H, W)) it is the spatial mean of s_c over H x W.
Stds are population stds (ddof=0) over the samples of a class.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn

from ablations.excitation.blocks import channel_gates, class_index, se_blocks
from senet.tree import check_int

SATURATION_LOW, SATURATION_HIGH = 0.05, 0.95


@dataclass
class ExcitationStats:
    """Per-block, per-class excitation statistics of one model over one split.

    Attributes:
        blocks: block names, in forward order.
        class_names: one name per class index.
        count: (K,) samples seen per class.
        mean: block -> (K, C) mean gate value per class and channel (NaN for classes never seen).
        m2: block -> (K, C) sum of squared deviations from the class mean.
        low: block -> (K, C) samples whose gate value was below ``thresholds[0]``.
        high: block -> (K, C) samples whose gate value was above ``thresholds[1]``.
        thresholds: the saturation thresholds used while recording.
        meta: free-form provenance (checkpoint, split, run name), saved alongside.
    """

    blocks: list[str]
    class_names: list[str]
    count: np.ndarray
    mean: dict[str, np.ndarray]
    m2: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    thresholds: tuple[float, float] = (SATURATION_LOW, SATURATION_HIGH)
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.count.sum())

    def std(self, block: str) -> np.ndarray:
        """(K, C) within-class population std of the gate values."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.m2[block] / self.count[:, None])

    def pooled(self, block: str) -> tuple[np.ndarray, np.ndarray]:
        """(C,) mean and std over every sample of every class (the "all" curve of Fig. 6)."""
        n, seen = self.count, self.count > 0
        mean = (n[seen, None] * self.mean[block][seen]).sum(0) / n.sum()
        m2 = self.m2[block][seen].sum(0) + (n[seen, None] * (self.mean[block][seen] - mean) ** 2).sum(0)
        return mean, np.sqrt(m2 / n.sum())

    def class_index(self, key: str | int) -> int:
        """Index of a class given by name or by index (as text or int); ValueError lists the allowed ones."""
        return class_index(key, self.class_names)

    # ---- Persistence: one compressed npz, arrays keyed "<field>/<block>" ---- #

    def save(self, path: str | Path) -> Path:
        """Write the statistics as a compressed ``.npz`` (plain arrays; loads without this package)."""
        arrays: dict[str, np.ndarray] = {
            "blocks": np.array(self.blocks), "class_names": np.array(self.class_names),
            "count": self.count, "thresholds": np.array(self.thresholds),
            "meta_keys": np.array(list(self.meta)), "meta_values": np.array([str(v) for v in self.meta.values()]),
        }
        for b in self.blocks:
            arrays[f"mean/{b}"] = self.mean[b]
            arrays[f"std/{b}"] = self.std(b)
            arrays[f"m2/{b}"] = self.m2[b]
            arrays[f"low/{b}"] = self.low[b]
            arrays[f"high/{b}"] = self.high[b]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz" to the name
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ExcitationStats:
        """Read statistics written by ``save``."""
        with np.load(path, allow_pickle=False) as z:
            blocks = [str(b) for b in z["blocks"]]
            return cls(
                blocks=blocks, class_names=[str(c) for c in z["class_names"]], count=z["count"],
                mean={b: z[f"mean/{b}"] for b in blocks}, m2={b: z[f"m2/{b}"] for b in blocks},
                low={b: z[f"low/{b}"] for b in blocks}, high={b: z[f"high/{b}"] for b in blocks},
                thresholds=tuple(float(t) for t in z["thresholds"]),
                meta={str(k): str(v) for k, v in zip(z["meta_keys"], z["meta_values"])},
            )


class _BlockAccumulator:
    """Streaming per-class count / mean / M2 / saturation counts for one block (float64)."""

    def __init__(self, num_classes: int, channels: int, device: torch.device, thresholds: tuple[float, float]):
        shape = (num_classes, channels)
        self.n = torch.zeros(num_classes, dtype=torch.float64, device=device)
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(shape, dtype=torch.float64, device=device)
        self.low = torch.zeros(shape, dtype=torch.float64, device=device)
        self.high = torch.zeros(shape, dtype=torch.float64, device=device)
        self.thresholds = thresholds

    def update(self, values: torch.Tensor, labels: torch.Tensor) -> None:
        """Merge a batch of (N, C) gate values with (N,) labels (Chan's pairwise update)."""
        values = values.to(self.mean.device, torch.float64)
        labels = labels.to(self.mean.device)
        nb = torch.zeros_like(self.n).index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        sums = torch.zeros_like(self.mean).index_add_(0, labels, values)
        mean_b = sums / nb.clamp(min=1)[:, None]
        m2_b = torch.zeros_like(self.m2).index_add_(0, labels, (values - mean_b[labels]) ** 2)
        total = self.n + nb
        w = (nb / total.clamp(min=1))[:, None]
        delta = mean_b - self.mean
        self.mean += delta * w
        self.m2 += m2_b + delta**2 * (self.n[:, None] * w)
        self.n = total
        self.low.index_add_(0, labels, (values < self.thresholds[0]).to(torch.float64))
        self.high.index_add_(0, labels, (values > self.thresholds[1]).to(torch.float64))


class ExcitationRecorder:
    """Forward hooks on per-channel gates that accumulate per-class statistics, one batch at a time.

    Use as a context manager (hooks are removed on exit), then ``stats()``::

        with ExcitationRecorder(model, num_classes=10) as rec:
            for x, y in loader:
                rec.record(x, y)
        stats = rec.stats(class_names)

    Args:
        model: any ``nn.Module`` containing ``senet.recalibration.Recalibration`` blocks with a per-channel gate (SE, ECA,
            SRM, CBAM's channel attention, GC with scale fusion, GE at global extent; others: ``NoChannelGate``).
        num_classes: K, the label range.
        blocks: names (as ``se_blocks`` gives them) to record; ``None`` records every block.
        thresholds: gate values below the first / above the second count as saturated.
    """

    def __init__(self, model: nn.Module, num_classes: int, blocks: Iterable[str] | None = None,
                 thresholds: tuple[float, float] = (SATURATION_LOW, SATURATION_HIGH)) -> None:
        available = se_blocks(model)
        if not available:
            raise ValueError("the model has no SE blocks to record (model.se is null: a no-SE baseline?)")
        gates = channel_gates(model)
        names = list(available) if blocks is None else list(blocks)
        unknown = [b for b in names if b not in available]
        if unknown:
            raise ValueError(f"--blocks: unknown block {unknown[0]!r}; this model has: {', '.join(available)}")
        check_int("num_classes", num_classes)
        self.model, self.num_classes, self.thresholds = model, num_classes, thresholds
        self.blocks = [b for b in available if b in names]  # forward order
        self._gates = {b: gates[b] for b in self.blocks}
        self._acc: dict[str, _BlockAccumulator] = {}
        self._labels: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> Self:
        for name, gate in self._gates.items():
            self._handles.append(gate.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
            if self._labels is None:
                return  # a forward pass outside record(): nothing to attribute it to
            s = output.detach()
            s = s.flatten(2).mean(2) if s.dim() > 2 else s  # NoSqueeze: spatial mean per sample
            if s.shape[0] != self._labels.shape[0]:
                raise RuntimeError(f"{name}: gate batch {s.shape[0]} != label batch {self._labels.shape[0]} "
                                   "(is this SE block called more than once per forward?)")
            if name not in self._acc:
                device = s.device if s.device.type != "mps" else torch.device("cpu")  # MPS has no float64
                self._acc[name] = _BlockAccumulator(self.num_classes, s.shape[1], device, self.thresholds)
            self._acc[name].update(s, self._labels)

        return hook

    @torch.no_grad()
    def record(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Run ``model(x)`` and fold its gate values into the statistics of ``labels``' classes."""
        if not self._handles:
            raise RuntimeError("ExcitationRecorder.record() outside its `with` block: no hooks are registered")
        labels = labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}; got {labels.min()}..{labels.max()}")
        self._labels = labels
        try:
            with torch.no_grad():  # an analysis pass: no autograd graph to hold the batch's activations
                return self.model(x)
        finally:
            self._labels = None

    def state_nbytes(self) -> int:
        """Bytes held by the accumulators (constant in the number of samples recorded)."""
        return sum(t.numel() * t.element_size() for a in self._acc.values()
                   for t in (a.n, a.mean, a.m2, a.low, a.high))

    def stats(self, class_names: list[str] | None = None, meta: dict | None = None) -> ExcitationStats:
        """The statistics recorded so far (NaN means for classes without samples)."""
        missing = [b for b in self.blocks if b not in self._acc]
        if missing:
            raise ValueError(f"no samples reached block {missing[0]}; record at least one batch first")
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"class_names has {len(names)} names for {self.num_classes} classes")
        count = next(iter(self._acc.values())).n.cpu().numpy().astype(np.int64)
        unseen = count == 0

        def arr(t: torch.Tensor, nan: bool = False) -> np.ndarray:
            a = t.cpu().numpy().copy()
            if nan:
                a[unseen] = np.nan
            return a

        return ExcitationStats(
            blocks=list(self.blocks), class_names=names, count=count,
            mean={b: arr(self._acc[b].mean, nan=True) for b in self.blocks},
            m2={b: arr(self._acc[b].m2, nan=True) for b in self.blocks},
            low={b: arr(self._acc[b].low).astype(np.int64) for b in self.blocks},
            high={b: arr(self._acc[b].high).astype(np.int64) for b in self.blocks},
            thresholds=tuple(self.thresholds), meta={k: str(v) for k, v in (meta or {}).items()},
        )


def record_excitation(model: nn.Module, batches: Iterable, num_classes: int, *, blocks=None,
                      class_names=None, device: str | torch.device = "cpu", max_samples: int | None = None,
                      thresholds=(SATURATION_LOW, SATURATION_HIGH), meta=None) -> ExcitationStats:
    """One pass of ``model`` (in eval mode) over ``(x, y)`` batches; returns the recorded statistics."""
    was_training = model.training
    model.eval().to(device)
    seen = 0
    try:
        with ExcitationRecorder(model, num_classes, blocks, thresholds) as rec:
            for x, y in batches:
                if max_samples is not None and seen >= max_samples:
                    break
                if max_samples is not None:
                    x, y = x[: max_samples - seen], y[: max_samples - seen]
                rec.record(x.to(device), y.to(device))
                seen += len(y)
    finally:
        model.train(was_training)
    return rec.stats(class_names, meta)
