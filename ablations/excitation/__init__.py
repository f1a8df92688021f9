"""What the excitation learns (paper Sec. 7.2, Figs. 6-7): one feature package.

``recorder`` hooks every SE gate and accumulates per-block, per-class, per-channel statistics in one pass;
``summary`` turns them into per-block rows (specificity, eta², saturation) and tables across a sweep;
``plots`` draws Figs. 6 and 7; ``wandb_log`` sends figures and summary keys to the run's W&B run.
``senet-ablate excitation`` (``ablations.commands.excitation``) parses arguments and calls these.
"""
from ablations.excitation.recorder import (
    ExcitationRecorder,
    ExcitationStats,
    class_index,
    default_blocks,
    record_excitation,
    se_blocks,
    stage_of,
)

__all__ = ["ExcitationRecorder", "ExcitationStats", "class_index", "default_blocks", "record_excitation", "se_blocks",
           "stage_of"]
