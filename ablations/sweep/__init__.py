"""The sweep engine (docs/DESIGN.md, Sweeps): a YAML spec, an Optuna study over it, SLURM launch, W&B export, reports.

``spec`` parses and validates the YAML, ``space`` turns it into Optuna suggestions, ``study`` owns
the storage and the grid queue, ``objective`` runs one trial, ``worker`` loops over trials,
``slurm`` submits workers as a job array, ``wandb_export`` writes the W&B sweep, ``report`` the tables.
"""
