"""A sweep as a SLURM job array on a real single-node SLURM (slurmctld + slurmd + munge) and PostgreSQL.

Both servers are started by the test; ``senet-ablate sweep --slurm`` submits a 2-element array through
submitit, each element an Optuna worker on the shared study, and ``--wait`` returns when both are done.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from fixtures_servers import postgres_server, slurm_cluster

from ablations.sweep.spec import load_spec, make_config
from ablations.sweep.study import load_study

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_job_array_of_two_workers_finishes_the_study(tmp_path):
    spec = {
        "name": "slurm",
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
                 "data": {"name": "digits", "image_size": 8, "batch_size": 64},
                 "train": {"recipe": "quick", "epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1},
                 "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "disabled"}},
        "baseline": True,
        "space": {"model.se.reduction": [4, 8]},
        "seeds": 2,
        "heartbeat": {"interval": 5},
    }
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(spec))
    with postgres_server() as pg, slurm_cluster(cpus=2) as slurm:
        url = pg.new_database("slurm")
        env = {**slurm.env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "ablations.cli", "sweep", str(path), "--slurm", "--storage", url,
             "--array-size", "2", "--array-parallelism", "2", "--cpus-per-task", "1", "--time-min", "20",
             "--slurm-folder", str(tmp_path / "slurm" / "%j"), "--wait"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False)
        logs = "\n".join(p.read_text()[-1500:] for p in sorted((tmp_path / "slurm").rglob("*.err")))
        assert proc.returncode == 0, proc.stderr[-3000:] + logs
        assert "submitted job array" in proc.stderr
        spec_ = load_spec(path)
        study = load_study(spec_, url, "slurm")
        expected = {make_config(spec_, c).hash() for c in spec_.grid()}
        done = collections.Counter(t.user_attrs["config_hash"] for t in study.trials
                                   if t.state == optuna.trial.TrialState.COMPLETE)
        assert done == collections.Counter({h: 1 for h in expected}) and len(study.trials) == len(expected)
        # Both array elements ran as SLURM jobs (each wrote its submitit result).
        results = sorted((tmp_path / "slurm").rglob("*_result.pkl"))
        assert len(results) == 2, sorted(p.name for p in (tmp_path / "slurm").rglob("*"))
        workers = {t.user_attrs["worker"] for t in study.trials}
        assert workers and all(":" in w for w in workers)
        assert os.environ.get("SLURM_CONF") != str(slurm.conf)  # the test left the caller's environment alone
