"""Sweeps on the local cluster (``tests/cluster``): hosts in network namespaces, each with its own hostname and /tmp.

- A SLURM job array whose two elements run on the two compute nodes (two CPUs each, so one element per node)
  against PostgreSQL on the db host (scram password, URL in ``$SENET_STORAGE_URL``): every arm COMPLETE exactly
  once, and the attempts recorded in the run folders name both nodes.
- One DDP trial on two nodes (one task per node, gloo on CPU, through srun and Lightning's SLURMEnvironment,
  ``--nodes-per-trial 2``): it trains to the end, and its final metrics equal those of a two-process run of the
  same experiment on one host.
- node1's link goes down while it trains, beyond the heartbeat grace, and comes back: the arm is re-run on
  node2 and COMPLETE once, only the cut-off trial FAILs (the run folder's lock burns no retry), and the run
  folder holds one result, the one the study records.
- PostgreSQL on the db host restarts while both nodes train: the workers reconnect, and every arm is COMPLETE
  once with nothing failed.
- Every process of node1 is SIGKILLed while it trains: node2 resumes the arm from node1's last checkpoint
  (its attempts: node1, then node2), and every arm is COMPLETE once.
- A test that fails with the cluster up (in a child pytest) still leaves no namespace, bridge, process or folder.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from cluster.fixtures import cluster, require_cluster  # noqa: F401 - the module's cluster
from cluster.postgres import has_study

from ablations.sweep.attrs import trial_rows
from ablations.sweep.spec import load_spec, make_config
from ablations.sweep.storage import STORAGE_ENV
from ablations.sweep.study import load_study

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def tiny_spec(folder: Path, name: str, train: dict, reductions: list[int], seeds: int) -> Path:
    spec = {
        "name": name,
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
                 "data": {"name": "digits", "image_size": 8, "batch_size": 32},
                 "train": {"recipe": "quick", "limit_train_batches": 2, "limit_val_batches": 2, **train},
                 "output_dir": str(folder / "runs"), "wandb": {"mode": "disabled"}},
        "baseline": True,
        "space": {"model.se.reduction": reductions},
        "objectives": ["val/top1_best"],
        "seeds": seeds,
        "heartbeat": {"interval": 2, "grace_period": 10},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_on_head(cluster, path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:  # noqa: F811
    slurm = path.parent / "slurm" / "%j"
    env = {**cluster.env, STORAGE_ENV: url}
    proc = cluster.run("head", [PY, "-m", "ablations.cli", "sweep", str(path), "--slurm", "--time-min", "20",
                                "--slurm-folder", str(slurm), "--wait", *extra], timeout=600, env=env, cwd=ROOT)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((path.parent / "slurm").rglob("*.err")))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs + cluster.logs()
    return proc


def test_job_array_runs_on_both_nodes_against_the_db_host(cluster):  # noqa: F811
    folder = cluster.shared / "array"
    folder.mkdir()
    path = tiny_spec(folder, "array", {"epochs": 1}, [4, 8], seeds=2)
    url = cluster.new_database("array")
    assert "@" + cluster.addr("db") in url and cluster.password in url  # the db host, with a password
    sweep_on_head(cluster, path, url, "--array-size", "2", "--cpus-per-task", "2")
    spec = load_spec(path)
    study = load_study(spec, url, "array")
    expected = {make_config(spec, c).hash() for c in spec.grid()}
    done = collections.Counter(t.user_attrs["config_hash"] for t in study.trials
                               if t.state == optuna.trial.TrialState.COMPLETE)
    assert done == collections.Counter({h: 1 for h in expected}) and len(study.trials) == len(expected)
    hosts = collections.Counter()
    for t in study.trials:
        row = trial_rows(t.user_attrs)[0]
        for attempt in json.loads((Path(row["run_dir"]) / "attempts.json").read_text()):
            hosts[attempt["host"]] += 1
        assert t.user_attrs["worker"].split(":")[0] in cluster.nodes
    assert set(hosts) == set(cluster.nodes), hosts  # each attempt names its node, and both nodes ran arms


def test_one_ddp_trial_spans_two_nodes_and_matches_two_processes_on_one_host(cluster):  # noqa: F811
    folder = cluster.shared / "ddp"
    folder.mkdir()
    train = {"epochs": 2, "accelerator": "cpu", "strategy": "ddp"}
    path = tiny_spec(folder, "ddp", train, [4], seeds=1)
    url = cluster.new_database("ddp")
    sweep_on_head(cluster, path, url, "--array-size", "1", "--nodes-per-trial", "2", "--cpus-per-task", "1")
    spec = load_spec(path)
    trials = load_study(spec, url, "ddp").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    se = next(trial_rows(t.user_attrs)[0] for t in trials if t.params.get("se"))
    assert se["config"]["train"]["num_nodes"] == 2 and se["config"]["train"]["devices"] == 1
    result = json.loads((Path(se["run_dir"]) / "result.json").read_text())
    assert result["status"] == "complete" and result["epochs"] == 2
    shown = cluster.run("head", ["scontrol", "-o", "show", "job"], timeout=60).stdout
    (job,) = [line for line in shown.splitlines() if "JobName=senet-ddp " in line]
    assert "NumNodes=2 " in job and re.search(r"\bNodeList=node\[1-2\]", job), job  # one task on each node
    # The same experiment as two processes on one host (node1): devices=2, num_nodes=1, same global batch.
    out = folder / "one_host"
    cmd = [PY, "-m", "ablations.cli", "train", "--model", "se_resnet20_cifar", "--se.reduction", "4", "--data",
           "digits", "--data.image_size", "8", "--data.batch_size", "32", "--recipe", "quick", "--epochs", "2",
           "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--wandb", "disabled",
           "--output-dir", str(out), "--no-progress", "train.limit_train_batches=2", "train.limit_val_batches=2",
           f"seed={se['seed']}"]
    local = cluster.run("node1", cmd, timeout=600, cwd=ROOT)
    assert local.returncode == 0, local.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    single = json.loads((run_dir / "result.json").read_text())
    assert single["config"]["train"]["devices"] == 2 and single["config"]["train"]["num_nodes"] == 1
    assert single["metrics"] == result["metrics"]


def test_a_failing_test_leaves_no_cluster_behind(tmp_path):
    require_cluster()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([PY, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-m", "",
                           str(ROOT / "tests" / "cluster" / "failing_case.py")], cwd=ROOT / "tests", env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1 and "failing on purpose" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    # The test failed, and its teardown did not (that would add "1 error").
    assert re.search(r"^1 failed in ", proc.stdout.strip().splitlines()[-1]), proc.stdout[-3000:]
    ((tag, pids),) = re.findall(r"CLUSTER-TAG (\w+) PIDS ([\d ]+)", proc.stdout)
    from cluster.cluster import Cluster, _alive

    assert Cluster(tag=tag).leftovers() == []
    assert len(pids.split()) >= 4 and not [p for p in pids.split() if _alive(int(p))]  # servers, munged, the sleeper


def test_a_node_cut_off_beyond_the_grace_period_loses_its_arm_once(cluster):  # noqa: F811
    # node1's link to the bridge goes down while it trains; the db host drops its connections (keepalives), so
    # its lease is free and node2 re-queues and runs the arm; the link comes back once the study shows that.
    folder = cluster.shared / "cut"
    folder.mkdir()
    path = tiny_spec(folder, "cut", {"epochs": 12, "limit_train_batches": 4}, [4], seeds=2)
    url = cluster.new_database("cut")
    spec = load_spec(path)
    proc = start_array(cluster, folder, path, url)
    with killed_on_failure(proc):
        cut = wait_for(lambda: [t for t in trials_of(spec, url, "cut") if t.state.name == "RUNNING"
                                and t.user_attrs.get("worker", "").startswith("node1:")
                                and checkpointed_on(folder / "runs", "node1")], proc, 300)[0]
        cluster.network.link("node1", up=False)
        try:
            wait_for(lambda: [t for t in trials_of(spec, url, "cut") if t.number == cut.number
                              and t.state.name == "FAIL"], proc, 120)
        finally:
            cluster.network.link("node1", up=True)
    ended(proc, folder)
    trials = load_study(spec, url, "cut").trials
    expected = {make_config(spec, c).hash() for c in spec.grid()}
    done = collections.Counter(t.user_attrs["config_hash"] for t in trials if t.state.name == "COMPLETE")
    assert done == collections.Counter({h: 1 for h in expected})
    failed = [t for t in trials if t.state.name == "FAIL"]
    # Only the cut-off attempt failed (its lease dropped); its retry was not refused by the run folder's lock.
    assert [t.number for t in failed] == [cut.number], [(t.number, t.user_attrs.get("reason")) for t in failed]
    (retry,) = [t for t in trials if cut.number in t.system_attrs.get("retry_history", ())]
    assert retry.state.name == "COMPLETE" and retry.user_attrs["worker"].startswith("node2:")
    row = trial_rows(retry.user_attrs)[0]
    on_disk = json.loads((Path(row["run_dir"]) / "result.json").read_text())
    assert on_disk["status"] == "complete" and on_disk["metrics"] == row["metrics"]  # one result, the study's


def start_array(cluster, folder: Path, path: Path, url: str) -> subprocess.Popen:  # noqa: F811
    """``sweep --slurm --wait`` of ``path``, two elements, started on the head host (not waited for)."""
    return cluster.popen("head", [PY, "-m", "ablations.cli", "sweep", str(path), "--slurm", "--array-size", "2",
                                  "--cpus-per-task", "2", "--time-min", "20", "--slurm-folder",
                                  str(folder / "slurm" / "%j"), "--wait"],
                         env={**cluster.env, STORAGE_ENV: url}, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def killed_on_failure(proc: subprocess.Popen):
    """Inside: the test's own steps while the sweep runs; if one fails, the sweep is killed at once."""
    try:
        yield
    except BaseException:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise


def ended(proc: subprocess.Popen, folder: Path) -> str:
    """The sweep's stderr once it has ended with exit 0 (the elements' logs in the message if not)."""
    with killed_on_failure(proc):
        _, err = proc.communicate(timeout=600)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((folder / "slurm").rglob("*.err")))
    assert proc.returncode == 0, err[-3000:] + logs
    return err


def test_the_db_host_restarted_mid_sweep_loses_and_repeats_nothing(cluster):  # noqa: F811
    folder = cluster.shared / "restart"
    folder.mkdir()
    path = tiny_spec(folder, "restart", {"epochs": 8, "limit_train_batches": 4}, [4], seeds=2)
    url = cluster.new_database("restart")
    spec = load_spec(path)
    proc = start_array(cluster, folder, path, url)
    with killed_on_failure(proc):
        wait_for(lambda: checkpointed_on(folder / "runs", "node1") or checkpointed_on(folder / "runs", "node2"),
                 proc, 300)
        cluster.pg.restart()  # fast shutdown: every connection closed; back on the same address and port
    ended(proc, folder)
    logs = "".join(p.read_text() for p in (folder / "slurm").rglob("*.err"))
    assert "database connection lost" in logs  # the workers did see the restart
    trials = load_study(spec, url, "restart").trials
    expected = {make_config(spec, c).hash() for c in spec.grid()}
    assert collections.Counter(t.user_attrs["config_hash"] for t in trials) == collections.Counter(
        {h: 1 for h in expected})
    assert {t.state.name for t in trials} == {"COMPLETE"}, [(t.number, t.user_attrs.get("reason")) for t in trials]


def trials_of(spec, url: str, name: str) -> list:
    return load_study(spec, url, name).get_trials(deepcopy=False) if has_study(url, name) else []


def wait_for(found, proc: subprocess.Popen | None, timeout: float):
    """Poll ``found()`` until it is true (bounded); fail at once if ``proc`` (the sweep) ended meanwhile."""
    deadline = time.monotonic() + timeout
    while not (hits := found()):
        assert proc is None or proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the state awaited did not come"
        time.sleep(0.5)
    return hits


def test_a_dead_node_s_arm_resumes_on_the_other_node_from_its_checkpoint(cluster):  # noqa: F811
    # Every process of node1 (its slurmd, the job's step and worker) is SIGKILLed while it trains: the db host
    # drops its lease with the connection, node2 re-queues the arm and resumes it from node1's last checkpoint.
    # Without --wait: SLURM requeues node1's element, which would only start once node2 is free, after the study
    # is done; the module's teardown ends it.
    folder = cluster.shared / "dead"
    folder.mkdir()
    path = tiny_spec(folder, "dead", {"epochs": 12, "limit_train_batches": 4}, [4], seeds=2)
    url = cluster.new_database("dead")
    spec = load_spec(path)
    env = {**cluster.env, STORAGE_ENV: url}
    proc = cluster.popen("head", [PY, "-m", "ablations.cli", "sweep", str(path), "--slurm", "--array-size", "2",
                                  "--cpus-per-task", "2", "--time-min", "20", "--slurm-folder",
                                  str(folder / "slurm" / "%j")],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    victim = wait_for(lambda: [t for t in trials_of(spec, url, "dead") if t.state.name == "RUNNING"
                               and t.user_attrs.get("worker", "").startswith("node1:")
                               and checkpointed_on(folder / "runs", "node1")], None, 300)[0]
    cluster.kill_host("node1")
    wait_for(lambda: sum(t.state.name == "COMPLETE" for t in trials_of(spec, url, "dead")) == len(spec.grid()),
             None, 400)
    trials = load_study(spec, url, "dead").trials
    expected = {make_config(spec, c).hash() for c in spec.grid()}
    done = collections.Counter(t.user_attrs["config_hash"] for t in trials if t.state.name == "COMPLETE")
    assert done == collections.Counter({h: 1 for h in expected})
    (retry,) = [t for t in trials if victim.number in t.system_attrs.get("retry_history", ())]
    row = trial_rows(retry.user_attrs)[0]
    attempts = json.loads((Path(row["run_dir"]) / "attempts.json").read_text())
    assert [a["host"] for a in attempts] == ["node1", "node2"] and row["epochs"] == 12
    assert attempts[1]["resumed_from_epoch"] >= 1  # from node1's checkpoint, not from scratch


def checkpointed_on(runs: Path, host: str) -> bool:
    """Whether a run whose current attempt is on ``host`` has written its ``last.ckpt`` (the node's own run, not
    another node's)."""
    for attempts in runs.rglob("attempts.json"):
        try:
            current = json.loads(attempts.read_text())[-1]
        except (ValueError, IndexError, OSError):  # being written
            continue
        if current.get("host") == host and (attempts.parent / "checkpoints" / "last.ckpt").exists():
            return True
    return False
