"""Bad input across the ``senet-ablate`` commands (issue 9): each case ends in exit code 2 and one
``senet-ablate <cmd>: error:`` line that names the input, the field or file and what is allowed, with no
traceback and nothing written. Each case builds its inputs in a fresh working folder; the folder must hold
exactly the same files, byte for byte, after the refusal."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from ablations.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "sweeps" / "paper" / "reduction.yaml")
BINARY = bytes(range(0x80, 0x100)) * 2  # not UTF-8 from the first byte
MALFORMED_YAML = "model: {arch: resnet20_cifar\ntrain: [\n"


def _write(name: str, content: str | bytes) -> None:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _sqlite_without_study(name: str) -> None:
    with sqlite3.connect(name) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    sqlite3.connect(name).close()


def _truncated_checkpoint(name: str) -> None:
    import torch

    Path(name).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "hyper_parameters": {}}, name)
    data = Path(name).read_bytes()
    Path(name).write_bytes(data[: len(data) // 2])  # a run killed while writing it


# (id, setup, argv, fragments the one line must contain). Paths are relative to the case's working folder.
CASES = [
    ("config-malformed-yaml", lambda: _write("exp.yaml", MALFORMED_YAML),
     ["train", "--config", "exp.yaml"], ["--config exp.yaml", "not valid YAML", "line 2, column 6"]),
    ("config-binary", lambda: _write("exp.yaml", BINARY),
     ["train", "--config", "exp.yaml"], ["--config exp.yaml", "not a text file", "give a YAML file"]),
    ("config-missing", None,
     ["train", "--config", "nope.yaml"], ["--config nope.yaml", "no such file"]),
    ("override-malformed-yaml", None,
     ["train", "--data", "digits", "model.se.stages=[2,", "--epochs", "1"],
     ["model.se.stages='[2,'", "not valid YAML", "a list such as [2, 3]"]),
    ("option-malformed-yaml", None,
     ["train", "--model.se.stages", "[2,"], ["model.se.stages='[2,'", "not valid YAML", "a list such as [2, 3]"]),
    ("override-not-key-value", None,
     ["train", "--data", "digits", "lr0.05"], ["'lr0.05' is not allowed", "KEY=VALUE", "train.lr=0.05"]),
    ("decoder-not-for-this-dataset", None,
     ["train", "--data", "digits", "data.decoder=gpu"],
     ["data.decoder='gpu' is not allowed for data.name='digits'", "use data.decoder='pil'"]),
    ("decoder-unknown", None,
     ["train", "data.decoder=nvjpeg"], ["data.decoder='nvjpeg' is not allowed", "choose one of: pil, gpu"]),
    ("override-wrong-type", None,
     ["train", "data.val_fraction=abc"], ["data.val_fraction='abc' is not allowed", "it must be a number"]),
    ("config-wrong-type", lambda: _write("exp.yaml", "train: {milestones: 5}\n"),
     ["train", "--config", "exp.yaml"], ["--config exp.yaml", "train.milestones=5 is not allowed", "a list of integers"]),
    ("sweep-base-wrong-type", lambda: _write("spec.yaml", "name: s\nbase: {model: {se: {stages: 5}}}\n"
                                                         "space: {model.se.reduction: [4, 8]}\n"),
     ["sweep", "spec.yaml", "--dry-run"], ["spec.yaml: base: model.se.stages=5 is not allowed", "a list of integers"]),
    ("seed-negative", None,
     ["train", "--seed", "-1"], ["seed=-1 is not allowed", "integer in [0, 4294967295]"]),
    ("num-classes-overruled-by-data", None,
     ["train", "--data", "digits", "model.num_classes=5", "--print-config"],
     ["model.num_classes=5 is not allowed with data 'digits'", "10 classes", "drop model.num_classes"]),
    ("operator-needs-larger-maps", None,
     ["train", "--data", "digits", "--model", "se_resnet50", "model.se.operator=srm", "--print-config"],
     ["model resnet50 on 3x32x32 images", "SRM (SE_5_1) needs at least 2 spatial positions", "it got 1x1"]),
    ("report-storage-not-a-database", lambda: _write("notes.db", "not a database\n"),
     ["report", "digits-reduction", "--storage", "sqlite:///notes.db"],
     ["storage sqlite:///notes.db", "not an SQLite database", "study.db"]),
    ("report-storage-without-a-study", lambda: _sqlite_without_study("other.db"),
     ["report", "digits-reduction", "--storage", "sqlite:///other.db"],
     ["storage sqlite:///other.db", "without Optuna studies", "study.db"]),
    ("train-truncated-last-ckpt", lambda: _truncated_checkpoint("runs/resnet20_cifar_digits_s0/checkpoints/last.ckpt"),
     ["train", "--data", "digits", "--epochs", "1"],
     ["checkpoint runs/resnet20_cifar_digits_s0/checkpoints/last.ckpt is truncated", "--no-resume"]),
    ("train-devices-beyond-cores", None,
     ["train", "--devices", "64", "--strategy", "ddp", "--accelerator", "cpu"],
     ["train.devices=64 is not allowed", "CPU cores", "between 1 and"]),
    ("excitation-corrupt-checkpoint", lambda: _write("run/checkpoints/last.ckpt", "garbage\n"),
     ["excitation", "run"], ["checkpoint run/checkpoints/last.ckpt cannot be read", "truncated", ".ckpt"]),
    ("excitation-truncated-checkpoint", lambda: _truncated_checkpoint("run/checkpoints/last.ckpt"),
     ["excitation", "run/checkpoints/last.ckpt"], ["checkpoint run/checkpoints/last.ckpt cannot be read", "truncated"]),
    ("excitation-data-malformed", lambda: _write("run/checkpoints/last.ckpt", "garbage\n"),
     ["excitation", "run", "--set", "data.root=[a,"], ["--set data.root='[a,'", "not valid YAML"]),
    ("sweep-spec-binary", lambda: _write("spec.yaml", BINARY),
     ["sweep", "spec.yaml", "--dry-run"], ["sweep spec spec.yaml", "not a text file", "give a YAML file"]),
    ("sweep-spec-malformed-yaml", lambda: _write("spec.yaml", MALFORMED_YAML),
     ["sweep", "spec.yaml"], ["sweep spec spec.yaml", "not valid YAML", "line 2, column 6"]),
    ("sweep-set-malformed", None,
     ["sweep", SPEC, "--variant", "digits", "--set", "train.epochs=["],
     ["--set train.epochs='['", "not valid YAML"]),
    ("sweep-set-not-key-value", None,
     ["sweep", SPEC, "--variant", "digits", "--set", "train.epochs"], ["--set 'train.epochs'", "KEY=VALUE"]),
    ("complexity-set-malformed", None,
     ["complexity", "--model", "se_resnet20_cifar", "--set", "se.stages=[2,"],
     ["--set se.stages='[2,'", "not valid YAML"]),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``, files with a digest of their bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    _, setup, argv, fragments = case
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        setup()
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(list(argv)) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    line = lines[0]
    assert line.startswith(f"senet-ablate {argv[0]}: error: ") and "Traceback" not in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert out.out == ""
    assert _snapshot(tmp_path) == before  # no run folder, no study, no report, no touched input

