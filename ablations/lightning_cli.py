"""Lightning's own command line over ``SEClassifier`` and the DataModules (DESIGN: Training; issue 13).

``senet-ablate train`` is the product's command: run folders, resume, result rows, sweeps. This is the other
door, for people who know Lightning: ``LightningCLI`` with every Trainer flag, ``fit``/``validate``/``test``/
``predict`` subcommands and ``--print_config``, and none of the run-folder bookkeeping. The model and data
are built from their typed constructors (``--model.config.train.lr``, ``--data.cfg.image_size``); the data
class is named with ``--data`` (required: any ``ImageDataModule`` subclass, e.g. ``DigitsDataModule``)::

    python -m ablations.lightning_cli fit --data=DigitsDataModule --data.cfg.image_size=16 --trainer.max_epochs=2
    python -m ablations.lightning_cli fit --data=CIFAR10DataModule --data.cfg.root=~/data/cifar \\
        --model.config.model.arch=resnet20_cifar --model.config.model.se.reduction=8
    python -m ablations.lightning_cli test --data=DigitsDataModule --ckpt_path=lightning_logs/version_0/checkpoints/...

``--model.config.data`` is not needed: the module records the datamodule's ``cfg`` when training starts.

``LightningCLI(SEClassifier, DigitsDataModule)`` works as well, with one data class and no ``--data`` choice.
"""
from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from ablations.data import ImageDataModule
from ablations.module import SEClassifier


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Parse ``args`` (``sys.argv[1:]`` when ``None``) and run the subcommand; returns the CLI object.

    ``--data`` has no default on purpose: jsonargparse carries a default class's ``init_args`` over to the class
    that ``--data`` names, so a digits default would hand ``data.name='digits'`` to every other DataModule.
    """
    return LightningCLI(SEClassifier, ImageDataModule, subclass_mode_data=True, args=args, run=run)


if __name__ == "__main__":
    main()
