"""ablations: the experiment framework around ``senet`` (Lightning, Optuna, W&B; DESIGN: Training, Sweeps)."""
