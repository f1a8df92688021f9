"""ablations: the experiment framework around ``senet`` (Lightning, Optuna, W&B; docs/DESIGN.md)."""
