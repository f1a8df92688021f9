"""``train.compile``: the network compiled in place when a Trainer sets the module up (docs/DESIGN.md, Training).

``CompileNetwork`` calls ``nn.Module.compile`` on ``module.model`` in its ``setup`` (every stage: fit, validate, test,
predict), not ``torch.compile(model)``: the module and its state_dict keys stay the plain network's (no
``_orig_mod.``), so checkpoints load into an eager model. ``SEClassifier.configure_callbacks`` hands it to any Trainer,
after ``ComplexityLog`` (``ablations.training.cost``), whose count must see the eager network. A module loaded from a
checkpoint outside a Trainer (``load_from_checkpoint``, as the excitation analysis does) is never set up by one, so
it stays eager: forward hooks on the SE gates run as Python on every call rather than being traced into a graph.
"""
from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class CompileNetwork(Callback):
    """Compiles ``module.model`` in place with ``module.cfg.train.compile``'s mode; nothing for ``None`` (eager)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        mode = pl_module.cfg.train.compile
        if mode is None or getattr(pl_module.model, "_compiled_call_impl", None) is not None:
            return
        pl_module.model.compile(mode=mode)
