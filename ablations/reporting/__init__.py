"""Arms against their no-SE baseline, as tables, figures, verdicts and W&B runs (paper Tables 10-16 layout).

``compare`` aggregates result rows over seeds into arms with tested deltas; ``stats`` holds the tests
(scipy: paired or Welch t, Holm, seeds for 80 % power); ``verdicts`` says in words what a comparison shows
and where its numbers came from; ``cost_table`` puts measured cost beside GMACs; ``plot`` draws the arms;
``wandb_log`` logs a comparison as a W&B run. The quickstart and ``senet-ablate report`` both build on it.
"""
