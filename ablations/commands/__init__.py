"""One module per ``senet-ablate`` subcommand, each with ``add_arguments(parser)`` and ``run(args) -> int``."""
