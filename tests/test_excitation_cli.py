"""`senet-ablate excitation` end to end (paper Sec. 7.2): a digits model trained by run_config, then the CLI."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image
import pytest

from ablations.cli import main
from ablations.config import ExperimentConfig
from ablations.excitation import ExcitationStats
from ablations.training.run import run_config

pytestmark = pytest.mark.slow
BLOCKS = [f"SE_{s}_{b}" for s in (2, 3, 4) for b in (1, 2, 3)]  # SE-ResNet-20 (CIFAR layout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two tiny SE arms (r = 16, r = 8) and the no-SE baseline on the embedded digits, one short epoch each."""
    root = tmp_path_factory.mktemp("runs")
    out = {"root": root}
    for r in (16, 8, None):
        cfg = ExperimentConfig().override({
            "model.se": {"reduction": r} if r else None, "data.image_size": 16, "train.epochs": 1,
            "train.limit_train_batches": 0.1, "output_dir": str(root), "wandb.mode": "disabled"})
        result = run_config(cfg, quiet=True)
        assert result.status == "complete", result.reason
        out[r] = Path(result.run_dir)
    return out


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_command_writes_both_figures_statistics_and_summary(runs, capsys):
    run = runs[16]
    assert main(["excitation", str(run / "checkpoints" / "last.ckpt"), "--wandb-mode", "disabled",
                 "--classes", "0", "7", "3", "--channels", "20"]) == 0
    # It says which weights it analysed, so stale or unfinished checkpoints cannot pass unnoticed.
    assert f"checkpoint: {run / 'checkpoints' / 'last.ckpt'} (after epoch 1 of 1; run complete)" in capsys.readouterr().err
    out = run / "excitation"
    stats = ExcitationStats.load(out / "stats.npz")
    assert stats.blocks == BLOCKS  # every block recorded, named as the paper names them
    assert stats.num_samples == 360 and stats.class_names == [str(i) for i in range(10)]  # digits val split
    assert stats.meta["split"] == "val" and stats.meta["run"] == run.name
    summary = rows(out / "summary.csv")
    assert [r["block"] for r in summary] == BLOCKS
    assert all(0 <= float(r["eta2"]) <= 1 and 0 <= float(r["saturation"]) <= 1 for r in summary)
    for name in ("fig6.png", "fig7.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 300 and image.shape[1] > 600


def test_figures_and_summary_go_to_the_training_run_in_wandb(runs):
    run = runs[8]
    args = ["excitation", str(run), "--wandb-mode", "offline", "--out", str(run / "exc-new")]
    assert main(args) == 0  # no W&B id recorded by training: a new run of job type "excitation"
    first = {p.name for p in (run / "wandb").glob("offline-run-*")}
    assert len(first) == 1
    (run / "wandb_id.txt").write_text("abcd1234\n")  # what training writes when W&B is on
    assert main([*args[:-1], str(run / "exc-attached")]) == 0
    attached = {p.name for p in (run / "wandb").glob("offline-run-*")} - first
    assert len(attached) == 1 and attached.pop().endswith("-abcd1234")
    assert (run / "exc-attached" / "fig6.png").is_file()


def test_sweep_table_has_one_row_per_run_and_block_with_the_ablated_factor(runs, capsys):
    root = runs["root"]
    assert main(["excitation", "--sweep-dir", str(root), "--wandb-mode", "disabled", "--channels", "8"]) == 0
    table = rows(root / "excitation_summary.csv")
    assert len(table) == 2 * len(BLOCKS) + 1  # the baseline: one row, accuracy only
    assert {r["model.se.reduction"] for r in table} == {"16", "8", ""}  # the only factor among the SE arms
    assert {r["block"] for r in table} == {*BLOCKS, ""} and all(r["val/top1_best"] for r in table)
    assert not (runs[None] / "excitation").exists()
    printed = capsys.readouterr().out
    assert "ablated factors: model.se.reduction" in printed and "no-SE baseline" in printed
    assert "eta2 per block" in printed and "saturation per block" in printed
    for r in (16, 8, None):
        assert f"| {runs[r].name.removesuffix('_s0')} | 1 |" in printed  # one row per arm, one seed each


@pytest.mark.parametrize("argv, message", [
    (["--blocks", "SE_9_9"], "unknown block 'SE_9_9'; this model has: SE_2_1"),
    (["--classes", "emu"], "unknown class 'emu'"),
    (["--data", "rootless"], "use KEY=VALUE"),  # the deprecated spelling of --set
    (["--set", "rootless"], "use KEY=VALUE"),
    (["--set", "data.name=synthetic", "--set", "data.num_classes=3"],
     "has 3 classes but the model was trained for 10; check --set data.*"),
    (["--channels", "0"], "--channels=0"),
])
def test_bad_options_are_one_error_line(runs, capsys, argv, message):
    run = runs[16]
    assert main(["excitation", str(run), "--wandb-mode", "disabled", "--out", str(run / "bad"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_checkpoint_and_missing_target_are_refused(tmp_path, capsys):
    assert main(["excitation", str(tmp_path / "nope")]) == 2
    assert "checkpoints/last.ckpt" in capsys.readouterr().err
    assert main(["excitation"]) == 2
    assert "--sweep-dir" in capsys.readouterr().err
