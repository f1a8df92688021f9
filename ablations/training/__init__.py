"""The training core: one arm, one seed, trained with Lightning into one run folder (docs/DESIGN.md, Training).

``run.run_experiment(experiment) -> Result`` is the entry (an ``ablations.experiment.Experiment``; ``run.run_config``
settles a config first); the other modules are its parts: the LightningModule (``module``) and the callbacks it hands
any Trainer (``data_check``, ``cost``, ``compiling``), the Trainer, the run folder (lock, attempts), its checkpoints,
the CSV history, the result row, cost, the epoch log, signals (``interrupts``) and machine faults, W&B
logging and provenance.
"""
