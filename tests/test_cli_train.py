"""``senet-ablate train``: dotted overrides, config files and recipes resolve as documented; user mistakes end in
one ``error:`` line with exit code 2 and no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablations.cli import main
from ablations.commands.train import config_keys
from ablations.experiment import resolve_experiment
from ablations.recipes import get_recipe

ROOT = Path(__file__).resolve().parent.parent


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_unknown_model_name_is_one_error_line(capsys):
    assert main(["train", "--model", "se_resnet_nope", "--data", "digits"]) == 2
    line = error_line(capsys)
    assert line.startswith("senet-ablate train: error: model='se_resnet_nope' is not registered")
    assert "(did you mean se_resnet50 or se_resnet34 or se_resnet18?)" in line  # the closest names
    assert "senet.list_models() names all" in line  # and where the rest are


def test_missing_cifar_folder_is_one_error_line(capsys, tmp_path):
    missing = tmp_path / "no-cifar-here"
    assert main(["train", "--data", "cifar10", "--data.root", str(missing), "--output-dir", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert line.startswith("senet-ablate train: error:") and str(missing) in line
    assert not (tmp_path / "resnet20_cifar_cifar10_s0").exists()


def test_unknown_key_in_a_config_file_is_one_error_line(capsys, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "resnet20_cifar", "se": None}, "train": {"lr": 0.1, "lr_decay": 2}}))
    assert main(["train", "--config", str(path)]) == 2
    assert error_line(capsys) == (f"senet-ablate train: error: --config {path}: unknown key train.lr_decay; allowed keys: "
                                  + ", ".join(k for k in config_keys() if k.startswith("train."))
                                  + " (did you mean train.weight_decay or train.lr or train.recipe?)")


def test_unknown_dotted_override_is_one_error_line(capsys):
    assert main(["train", "model.se.ratio=8"]) == 2
    assert "unknown key model.se.ratio" in error_line(capsys)


def test_print_config_resolves_aliases_recipe_and_data(capsys):
    assert main(["train", "--model", "se_resnet20_cifar", "--se.reduction", "8", "--se.placement", "pre",
                 "--data", "synthetic", "--data.num_classes", "3", "--recipe", "quick", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["se"]["reduction"] == 8 and cfg["model"]["se"]["placement"] == "pre"
    assert cfg["model"]["num_classes"] == 3  # the data decides the head
    assert cfg["train"]["recipe"] == "quick" and cfg["train"]["lr"] == get_recipe("quick").lr


def test_precedence_defaults_recipe_file_model_flags(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "resnet50"}, "train": {"recipe": "cifar", "epochs": 3},
                                    "data": {"image_size": 24}}))
    cfg = resolve_experiment(str(path), None, {"train.lr": 0.05})
    cifar = get_recipe("cifar")
    assert cfg.model.arch == "resnet50" and cfg.model.se is not None  # the file's model section
    assert (cfg.train.recipe, cfg.train.milestones) == ("cifar", cifar.milestones)  # the recipe under the file
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.image_size) == (3, 0.05, 24)  # file, then flags win
    named = resolve_experiment(str(path), "resnet20_cifar", {"se.reduction": 4})
    assert named.model.arch == "resnet20_cifar" and named.model.se.reduction == 4  # --model replaces the section
    # An explicit per-device batch rescales the recipe's lr linearly (global batch = batch x devices).
    scaled = resolve_experiment(None, None, {"train.recipe": "paper-imagenet", "data.batch_size": 64, "train.devices": 4})
    assert scaled.train.lr == pytest.approx(get_recipe("paper-imagenet").lr * 256 / 1024)


def test_a_later_null_turns_off_what_an_earlier_layer_set(tmp_path):
    """``model.se=null`` over a file's SE section is the no-SE arm, with a recipe too (the recipe re-applies
    the explicit keys on top; the file's ``model.se.*`` keys must not switch SE back on)."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "resnet20_cifar", "se": {"reduction": 4}},
                                    "train": {"recipe": "quick"}}))
    assert resolve_experiment(str(path), None, {}).model.se.reduction == 4
    assert resolve_experiment(str(path), None, {"model.se": None}).model.se is None


def test_sweep_device_counts_reshare_the_recipe_batch_as_train_does():
    """``--set train.devices=4`` and ``--gpus-per-trial 4`` resolve with the spec's keys: the recipe's global
    batch is shared over the devices and its lr kept, as ``senet-ablate train --train.devices 4`` gives."""
    from ablations.sweep.slurm import with_gpus
    from ablations.sweep.spec import parse_spec

    raw = {"name": "x", "base": {"model": "se_resnet20_cifar", "data": {"name": "digits", "image_size": 16},
                                 "train": {"recipe": "quick"}}, "space": {"model.se.reduction": [4]}}
    flags = resolve_experiment(None, "se_resnet20_cifar", {"data.name": "digits", "data.image_size": 16,
                                                       "train.recipe": "quick", "train.devices": 4})
    from ablations.recipes import recipe_spec

    assert flags.data.batch_size == recipe_spec("quick").batch_size // 4
    by_set = parse_spec(raw, overrides={"train.devices": 4}).base
    by_gpus = with_gpus(parse_spec(raw), 4).base
    for cfg in (by_set, by_gpus):
        assert (cfg.data.batch_size, cfg.train.lr) == (flags.data.batch_size, flags.train.lr)


def test_string_fields_keep_the_text_typed(capsys):
    # YAML would read 007 as the integer 7; a string field keeps what was typed, and null still means None.
    assert main(["train", "--name", "007", "wandb.group=2024", "data.root=null", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["name"], cfg["wandb"]["group"], cfg["data"]["root"]) == ("007", "2024", None)


def test_wandb_agent_style_arguments_are_accepted(capsys):
    # `wandb agent` passes --key=value for every swept parameter.
    assert main(["train", "--model.se.reduction=2", "--train.lr=0.01", "--data.name=synthetic", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["se"]["reduction"] == 2 and cfg["train"]["lr"] == 0.01


def test_train_runs_and_reports(tmp_path, capsys):
    rc = main(["train", "--model", "se_resnet20_cifar", "--data", "synthetic", "--data.image_size", "8",
               "--data.num_samples", "32", "--epochs", "1", "--wandb", "disabled", "--output-dir", str(tmp_path),
               "--no-progress", "--name", "cli-run"])
    out = capsys.readouterr()
    assert rc == 0
    assert out.out.startswith("complete: cli-run (1 epochs")
    assert "# resolved config" not in out.err  # the config is in the run folder; a refusal stays one line
    assert (tmp_path / "cli-run" / "config.yaml").is_file()
    assert json.loads((tmp_path / "cli-run" / "result.json").read_text())["status"] == "complete"


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--model", "nope"],
    ["--data", "cifar100", "--data.root", "/nonexistent/cifar-100"],
    ["train.bogus=1"],
])
def test_errors_from_the_real_command_line_have_no_traceback(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "ablations.cli", "train", *args], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("senet-ablate train: error:"), proc.stderr


def readme_train_commands() -> list[list[str]]:
    """The ``senet-ablate train`` lines of README.md's code blocks (continuations joined, comments dropped),
    without the ``...`` placeholder line."""
    import re
    import shlex

    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines if line.startswith("senet-ablate train ")]
    return [c[2:] for c in commands if "..." not in c]


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (80 * i, 0, 0)).save(folder / f"{i}.png")
    return root


def test_readme_train_examples_run_as_written(tmp_path, monkeypatch, capsys):
    commands = readme_train_commands()
    assert len(commands) == 3, commands  # the README's three runnable train lines
    monkeypatch.chdir(tmp_path)
    # Their inputs: the run folder that --config names, and a tiny ImageFolder for data.root=/data/imagenet.
    Path("runs/NAME").mkdir(parents=True)
    Path("runs/NAME/config.yaml").write_text(yaml.safe_dump(resolve_experiment(None, "se_resnet20_cifar").to_dict()))
    imagenet = _image_folder(tmp_path / "imagenet")
    # The ImageNet line asks for 8 GPUs: --print-config checks the config, not this machine's devices.
    before = sorted(tmp_path.rglob("*"))
    configs = []
    for argv in commands:
        argv = [f"data.root={imagenet}" if a.startswith("data.root=") else a for a in argv]
        assert main(["train", *argv, "--print-config"]) == 0, (argv, capsys.readouterr().err)
        configs.append(yaml.safe_load(capsys.readouterr().out))
    assert sorted(tmp_path.rglob("*")) == before  # --print-config writes nothing
    quick, from_file, imagenet_cfg = configs
    assert quick["model"]["se"]["reduction"] == 8 and quick["model"]["se"]["placement"] == "pre"
    assert from_file["model"]["arch"] == "resnet20_cifar" and from_file["train"]["epochs"] == 10
    assert imagenet_cfg["model"]["arch"] == "resnet50" and imagenet_cfg["model"]["num_classes"] == 2
    assert imagenet_cfg["data"]["root"] == str(imagenet) and imagenet_cfg["data"]["image_size"] == 224
    t = imagenet_cfg["train"]
    assert (t["recipe"], t["devices"], t["strategy"], t["precision"], t["channels_last"]) == \
        ("paper-imagenet", 8, "ddp", "bf16-mixed", True)
    assert imagenet_cfg["data"]["batch_size"] == 1024 // 8 and t["lr"] == get_recipe("paper-imagenet").lr
