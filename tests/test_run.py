"""run_config: one JSON result row per run, failures recorded with their reason, config errors before any work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from ablations.config import ExperimentConfig
from ablations.experiment import settle
from ablations.naming import folder_name, run_name
from ablations.training.metrics import RESULT_METRICS
from ablations.training.run import RESULT_FILE, Result, git_commit, run_config, run_experiment
from senet import build_model, model_config
from senet.complexity import complexity

FIELDS = {"config", "config_hash", "seed", "git_commit", "params", "gmacs", "metrics", "epochs", "wall_time_s",
          "status", "reason", "run_dir"}


def tiny(tmp_path, **overrides) -> ExperimentConfig:
    cfg = ExperimentConfig(model=model_config("se_resnet20_cifar", **{"se.reduction": 4}), output_dir=str(tmp_path))
    return cfg.override({"data.name": "synthetic", "data.image_size": 8, "data.num_samples": 48, "data.num_classes": 4,
                         "data.batch_size": 16, "train.epochs": 2, "wandb.mode": "disabled", **overrides})


def test_writes_one_complete_result_row(tmp_path):
    cfg = tiny(tmp_path)
    result = run_config(cfg, progress_bar=False, quiet=True)
    run_dir = tmp_path / run_name(cfg)
    assert result.status == "complete" and result.reason is None
    assert Path(result.run_dir) == run_dir
    row = json.loads((run_dir / RESULT_FILE).read_text())
    assert FIELDS <= set(row)
    assert row == json.loads(json.dumps(result.to_dict()))
    # The data decides the head: 4 synthetic classes, whatever the registry's default of 10 said.
    assert row["config"]["model"]["num_classes"] == 4
    resolved = ExperimentConfig.from_dict(row["config"])
    assert row["config_hash"] == resolved.hash() and row["seed"] == 0 and row["epochs"] == 2
    assert set(row["metrics"]) == set(RESULT_METRICS)
    cx = complexity(build_model(resolved.model), input_size=(3, 8, 8))
    assert (row["params"], row["gmacs"]) == (cx.params, pytest.approx(cx.gmacs))
    assert row["git_commit"] == git_commit() and row["wall_time_s"] > 0
    cost = row["cost"]  # measured, next to the GMACs: 6 steps of 16 images, the first one warm-up
    assert cost["train_img_per_s"] > 0 and cost["step_time_ms"] > 0 and cost["peak_mem_mb"] > 0
    assert row["env"]["threads"] == torch.get_num_threads() and row["env"]["torch"] == torch.__version__
    assert row["env"]["data_workers"] == row["config"]["data"]["num_workers"]  # the number the loaders used
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and (run_dir / "config.yaml").exists()
    assert Result.load(run_dir) == result


def test_a_complete_run_is_reused_not_retrained(tmp_path):
    cfg = tiny(tmp_path, **{"train.epochs": 1})
    first = run_config(cfg, progress_bar=False, quiet=True)
    mtime = (Path(first.run_dir) / RESULT_FILE).stat().st_mtime_ns
    again = run_config(cfg, progress_bar=False, quiet=True)
    assert again == first and (Path(first.run_dir) / RESULT_FILE).stat().st_mtime_ns == mtime


def test_a_different_config_never_overwrites_a_run_folder(tmp_path):
    a = tiny(tmp_path, **{"train.epochs": 1})
    b = a.override({"train.lr": 0.05})  # same run name (the lr is not an SE field), different experiment
    ra = run_config(a, progress_bar=False, quiet=True)
    name = folder_name(b, run_name(b))
    assert name == f"{run_name(b)}-{b.hash()[:8]}" and Path(b.output_dir) / name != Path(ra.run_dir)
    with pytest.raises(ValueError, match="holds a different experiment"):
        folder_name(b.replace(name=ra.name), ra.name)
    exp = settle(b)  # the resolve step names the folder once (by the settled config's hash), and the run writes there
    assert exp.name == f"{run_name(b)}-{exp.config_hash[:8]}"
    assert run_config(b, progress_bar=False, quiet=True).run_dir == str(Path(b.output_dir) / exp.name)


def _files(folder: str) -> dict[str, int]:
    """Every file of a run folder but its lock (which names its latest holder), with its modification time."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in Path(folder).rglob("*")
            if p.is_file() and p.name != "run.lock"}


@pytest.mark.parametrize("resume", [True, False])
def test_a_folder_another_experiment_took_after_naming_is_refused_untouched(tmp_path, resume):
    """Two experiments that share a run name, started together: both are named before either writes, and the one
    that takes the folder second must neither return, resume nor (``resume=False``) clear the other's run."""
    a = tiny(tmp_path, **{"train.epochs": 1})
    b = a.override({"train.lr": 0.05})
    late = settle(b)  # named while the folder is still free
    first = run_config(a, progress_bar=False, quiet=True)
    assert late.name == first.name
    before = _files(first.run_dir)
    with pytest.raises(ValueError, match=r"holds a different experiment since this run was named .* rerun the same"):
        run_experiment(late, resume=resume, progress_bar=False, quiet=True)
    assert _files(first.run_dir) == before and Result.load(first.run_dir) == first
    assert settle(b).name == f"{first.name}-{late.config_hash[:8]}"  # the rerun gets a folder of its own


class PoisonWeights(pl.Callback):
    """Turns a weight into NaN at the second step, as a diverging run would."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 1:
            with torch.no_grad():
                pl_module.model.fc.weight.fill_(float("nan"))


class Crash(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        raise RuntimeError("worker lost")


def test_a_nan_loss_is_a_failed_run_with_its_reason(tmp_path):
    result = run_config(tiny(tmp_path), callbacks=[PoisonWeights()], progress_bar=False, quiet=True)
    assert result.status == "failed" and result.reason.startswith("non-finite loss")
    assert json.loads((Path(result.run_dir) / RESULT_FILE).read_text())["status"] == "failed"
    assert result.params > 0  # the cost of the arm is known even when training fails


def test_an_exception_inside_training_is_recorded_not_raised(tmp_path):
    result = run_config(tiny(tmp_path), callbacks=[Crash()], progress_bar=False, quiet=True)
    assert (result.status, result.reason, result.epochs) == ("failed", "RuntimeError: worker lost", 0)


@pytest.mark.parametrize(("overrides", "error", "match"), [
    ({"data.name": "cifar10", "data.root": "/nonexistent/cifar"}, FileNotFoundError, "/nonexistent/cifar"),
    ({"model.se.reduction": 1000}, ValueError, "reduction"),
    ({"train.schedule": "plateau", "train.warmup_epochs": 2}, ValueError, "warmup_epochs"),
])
def test_config_errors_raise_before_any_work(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        run_config(tiny(tmp_path, **overrides))
    assert not any(tmp_path.iterdir())  # no run folder, nothing trained


def test_wandb_offline_run_lives_in_the_run_folder_and_is_finished(tmp_path, monkeypatch):
    import wandb

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    out = tmp_path / "runs"
    result = run_config(tiny(out, **{"wandb.mode": "offline", "train.epochs": 1}), progress_bar=False,
                            quiet=True)
    runs = list((Path(result.run_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].is_dir() and list(runs[0].glob("run-*.wandb"))
    assert result.wandb_dir == str(runs[0])
    assert wandb.run is None  # finished
    failed = run_config(tiny(out, **{"wandb.mode": "offline", "seed": 1}), callbacks=[Crash()],
                            progress_bar=False, quiet=True)
    assert failed.status == "failed" and wandb.run is None  # finished on errors too
    assert not any(cwd.iterdir())  # nothing littered where the command ran


def test_online_without_a_login_falls_back_to_offline(monkeypatch, tmp_path):
    from ablations.training import wandb_logging

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert not wandb_logging.logged_in()
    assert wandb_logging.resolve_mode(ExperimentConfig().override({"wandb.mode": "online"})) == "offline"
    assert wandb_logging.resolve_mode(ExperimentConfig().override({"wandb.mode": "disabled"})) == "disabled"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_logging.resolve_mode(ExperimentConfig().override({"wandb.mode": "online"})) == "online"


def test_a_wandb_login_netrc_entry_counts_as_logged_in(monkeypatch, tmp_path):
    from ablations.training import wandb_logging

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert wandb_logging.logged_in()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a self-hosted server: another host
    assert not wandb_logging.logged_in()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_trainer_misconfiguration_is_a_value_error_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="train.accelerator.*gpu"):
        run_config(tiny(tmp_path, **{"train.accelerator": "gpu"}))
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_more_cpu_devices_than_cores_is_refused_before_any_work(tmp_path):
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=rf"train.devices={cores + 6} is not allowed.*between 1 and {cores}"):
        run_config(tiny(tmp_path, **{"train.devices": cores + 6, "train.strategy": "ddp"}))
    assert not any(tmp_path.iterdir())


def test_a_truncated_checkpoint_names_the_file_and_the_way_out(tmp_path):
    cfg = tiny(tmp_path, **{"train.epochs": 1})
    first = run_config(cfg, callbacks=[Crash()], progress_bar=False, quiet=True)  # unfinished: resumable
    ckpt = Path(first.run_dir) / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(exist_ok=True)
    ckpt.write_bytes(torch.save.__name__.encode() * 100)  # not a zip: a checkpoint cut short
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt} is truncated.*--no-resume"):
        run_config(cfg, progress_bar=False, quiet=True)
    again = run_config(cfg, resume=False, progress_bar=False, quiet=True)
    assert again.status == "complete" and again.attempts == 1


def test_a_held_run_folder_is_refused_in_one_line_and_taken_over_when_its_holder_dies(tmp_path):
    from ablations.training.run import RunFolderBusy
    from ablations.training.run_folder import RunLock

    cfg = tiny(tmp_path, **{"train.epochs": 1})
    folder = tmp_path / run_name(cfg)
    script = (f"import time; from ablations.training.run_folder import RunLock; lock = RunLock({str(folder)!r}); "
              "lock.acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=rf"in use by pid {holder.pid} on .*already running"):
            run_config(cfg, progress_bar=False, quiet=True)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(folder):  # the kernel dropped the dead holder's lock: no stale-lock heuristics
        pass
    assert run_config(cfg, progress_bar=False, quiet=True).status == "complete"


def test_one_config_hash_gives_identical_metrics_twice_on_one_machine(tmp_path):
    # Same machine, same pinned threads: the digits agree bit for bit (README: why another machine may not).
    a = run_config(tiny(tmp_path / "a", **{"train.threads": 1}), progress_bar=False, quiet=True)
    b = run_config(tiny(tmp_path / "b", **{"train.threads": 1}), progress_bar=False, quiet=True)
    assert a.config_hash == b.config_hash and a.status == b.status == "complete"
    assert a.metrics == b.metrics and a.env == b.env and a.env["threads"] == 1


def test_the_w_and_b_config_records_the_environment_the_run_used(tmp_path):
    """The W&B run starts before its Trainer exists; the environment its config ends with is result.json's (the
    Trainer's deterministic mode, devices and precision, the loaders' workers)."""
    import wandb_records

    result = run_config(tiny(tmp_path, **{"train.epochs": 1, "wandb.mode": "offline"}), progress_bar=False, quiet=True)
    logged = {k[len("env."):]: v for k, v in wandb_records.config(Path(result.wandb_dir)).items() if k.startswith("env.")}
    assert result.env["deterministic"] is True and logged == result.env
