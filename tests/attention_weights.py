"""Random weights for the attention operators' reference tests (timm parity, closed forms)."""
from __future__ import annotations

import torch


def randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Random parameters and BN statistics, so a mapping mistake cannot hide behind an init of ones and zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if t.ndim <= 1 else torch.randn(t.shape, generator=g))
