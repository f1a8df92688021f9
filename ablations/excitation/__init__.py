"""What the excitation learns (paper Sec. 7.2, Figs. 6-7): one feature package.

``blocks`` names the SE blocks as the paper does and picks Fig. 6's; ``recorder`` hooks every SE gate
and accumulates per-block, per-class, per-channel statistics in one pass;
``summary`` turns them into per-block rows (specificity, eta², saturation) and tables across a sweep;
``plots`` draws Figs. 6 and 7; ``wandb_log`` sends figures and summary keys to the run's W&B run.
``analysis`` runs them end to end for a checkpoint or a sweep folder; ``senet-ablate excitation``
(``ablations.commands.excitation``) parses its flags into ``analysis.Options`` and calls it.
"""
from ablations.excitation.blocks import class_index, default_blocks, se_blocks, stage_of
from ablations.excitation.recorder import ExcitationRecorder, ExcitationStats, record_excitation

__all__ = ["ExcitationRecorder", "ExcitationStats", "class_index", "default_blocks", "record_excitation", "se_blocks",
           "stage_of"]
