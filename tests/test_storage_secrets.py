"""A storage URL's password, planted in a real PostgreSQL login, appears nowhere the project writes or prints.

The test's own PostgreSQL asks the sweep's user for a password (scram-sha-256); sweeps run with the URL on
the main command line (local workers, one in-process worker with W&B offline) or in ``$SENET_STORAGE_URL``
(a SLURM job array). Every file under the test's folder (run folders, the study folder, W&B's offline runs
and its config and cache folders, the report, submitit's job folder), everything printed, the study's
attributes and the command lines of the worker processes while they run must not hold the password.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import process_guard
import pytest
import sqlalchemy
import yaml
from fixtures_servers import postgres_server
from fixtures_slurm import slurm_cluster

from ablations.sweep.spec import load_spec
from ablations.sweep.storage import STORAGE_ENV, check_reachable, has_password, masked, masked_argv, without_option
from ablations.sweep.study import load_study, make_storage

ROOT = Path(__file__).resolve().parent.parent
USER = "sweeper"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql+psycopg2://u:p%40ss@h/db?sslmode=require", "postgresql+psycopg2://u:***@h/db?sslmode=require"),
    ("postgres://u:s3cret@h/db", "postgres://u:***@h/db"),  # a refused scheme, still parsed
    ("postgres//u:s3cret@h/db", "postgres//u:***@h/db"),  # not a URL at all: hidden where a password would sit
    ("postgresql://u@h/db", "postgresql://u@h/db"),  # PGPASSWORD / ~/.pgpass: nothing to hide
    ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),  # an unencoded @: all of it hidden
    ("sqlite:///runs/x/study.db", "sqlite:///runs/x/study.db"),
])
def test_masked_hides_only_the_password(url, shown):
    assert masked(url) == shown
    assert has_password(url) == (shown != url)


def test_the_storage_option_leaves_argv_in_every_spelling():
    url = "postgresql://u:s3cret@h/db"
    for argv in (["sweep", "s.yaml", "--storage", url, "--workers", "2"], ["sweep", "s.yaml", f"--storage={url}",
                 "--workers", "2"], ["sweep", "s.yaml", "--stor", url, "--workers", "2"]):
        assert without_option(argv, "--storage", url) == ["sweep", "s.yaml", "--workers", "2"]
    assert masked_argv(["report", "--out", "x", f"--storage={url}"]) == ["report", "--out", "x",
                                                                          "--storage=postgresql://u:***@h/db"]


class SecretServer:
    """The module's PostgreSQL, where ``USER`` must give ``password``; ``new_database()`` is one the user owns."""

    def __init__(self, pg, password: str) -> None:
        self.pg, self.password = pg, password

    def new_database(self, prefix: str) -> str:
        admin = self.pg.new_database(prefix)
        name = admin.rsplit("/", 1)[1]
        engine = sqlalchemy.create_engine(self.pg.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" OWNER TO {USER}'))
        engine.dispose()
        return f"postgresql+psycopg2://{USER}:{self.password}@127.0.0.1:{self.pg.port}/{name}"


@pytest.fixture(scope="module")
def secret_pg():
    """The shared fixture's server (trust for its superuser) with a password login for ``USER`` on TCP."""
    password = f"pw-{uuid.uuid4().hex}"
    with postgres_server() as pg:
        hba = pg.root / "data" / "pg_hba.conf"
        hba.write_text(f"host all {USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())  # first match wins
        engine = sqlalchemy.create_engine(pg.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE ROLE {USER} LOGIN PASSWORD '{password}'"))
            conn.execute(sqlalchemy.text("SELECT pg_reload_conf()"))
        engine.dispose()
        yield SecretServer(pg, password)


def write_spec(tmp_path: Path, name: str, reductions: list[int], baseline: bool, wandb: str) -> Path:
    """A tiny grid (resnet20_cifar on 8x8 digits, two batches, one epoch) so that a trial takes seconds."""
    spec = {
        "name": name,
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}},
                 "data": {"name": "digits", "image_size": 8, "batch_size": 32},
                 "train": {"recipe": "quick", "limit_train_batches": 2, "limit_val_batches": 1},
                 "output_dir": str(tmp_path / "runs"), "wandb": {"mode": wandb}},
        "baseline": baseline,
        "space": {"model.se.reduction": reductions},
        "budget": {"epochs": 1},
        "heartbeat": {"interval": 5},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """The CLI's environment: W&B's config, cache and data folders inside the test's folder, so they are searched."""
    env = {k: v for k, v in os.environ.items() if k != STORAGE_ENV}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), **extra}


def files_holding(folder: Path, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def study_text(url: str, spec_path: Path, study_name: str) -> str:
    """The study's and its trials' attributes, as one string."""
    storage = make_storage(url, load_spec(spec_path))
    sid = storage.get_study_id_from_name(study_name)
    parts = [storage.get_study_user_attrs(sid), storage.get_study_system_attrs(sid)]
    parts += [[t.user_attrs, t.system_attrs, t.params] for t in storage.get_all_trials(sid)]
    return json.dumps(parts, default=str)


def report(tmp_path: Path, env: dict, study_name: str, *storage: str) -> subprocess.CompletedProcess:
    proc = process_guard.run([sys.executable, "-m", "ablations.cli", "report", study_name, *storage, "--out",
                              str(tmp_path / "results" / study_name), "--no-html"], cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_secret_nowhere(secret: str, tmp_path: Path, *outputs: str) -> None:
    assert not files_holding(tmp_path, secret)
    for text in outputs:
        assert secret not in text


@pytest.mark.slow
def test_a_password_with_an_unencoded_at_is_refused_whole_and_hidden(capsys):
    from ablations.cli import main

    assert main(["sweep", "sweeps/examples/tpe.yaml", "--dry-run", "--storage",
                 "postgresql://sweeper:Secr3t@part2@127.0.0.1:5432/db"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("senet-ablate sweep: error: storage postgresql://sweeper:***@127.0.0.1:5432/db: the user or "
                           "password holds an unencoded '@', so host and password cannot be told apart; write each "
                           "'@' in them as %40")
    assert "Secr3t" not in err and "part2" not in err


def test_password_is_checked_and_never_echoed(secret_pg, monkeypatch):
    url = secret_pg.new_database("auth")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # no ~/.pgpass either: only the URL may give the password
    check_reachable(url)
    bare = url.replace(f":{secret_pg.password}@", "@")
    wrong = url.replace(secret_pg.password, "pw-wrong-guess")
    for bad in (bare, wrong):  # the server really asks for the password
        with pytest.raises(ValueError) as err:
            check_reachable(bad)
        assert "password" in str(err.value) and "pw-wrong-guess" not in str(err.value)
    assert f"{USER}:***@" in str(err.value)
    monkeypatch.setenv("PGPASSWORD", secret_pg.password)  # libpq's own way: a password-less URL then works
    check_reachable(bare)
    result = process_guard.run([sys.executable, "-m", "ablations.cli", "sweep", "sweeps/examples/tpe.yaml", "--dry-run",
                                "--storage", url.replace("postgresql+psycopg2://", "postgres://")], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 2 and f"{USER}:***@" in result.stderr  # a refused scheme is echoed masked
    assert secret_pg.password not in result.stdout + result.stderr


def command_lines(root: int) -> dict[int, tuple[int, bytes]]:
    """The parent and raw command line (``/proc/<pid>/cmdline``, what ``ps`` shows) of ``root``'s descendants now."""
    procs = process_guard.table()
    out = {}
    for pid in process_guard.descendants(procs, {root}):
        try:
            out[pid] = procs[pid].ppid, Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # ended meanwhile
            pass
    return out


@pytest.mark.slow
def test_local_workers_get_the_url_from_the_environment(secret_pg, tmp_path):
    url, secret = secret_pg.new_database("local"), secret_pg.password
    path = write_spec(tmp_path, "local", [4, 8], baseline=True, wandb="offline")
    env = clean_env(tmp_path)
    out, err = tmp_path / "sweep.out", tmp_path / "sweep.err"
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "ablations.cli", "sweep", str(path), "--storage", url,
                                 "--workers", "2"], cwd=ROOT, env=env, stdout=fo, stderr=fe, start_new_session=True)
    try:
        # The sweep's own command line holds the URL as typed (Python cannot rewrite it: README, Passwords). A child
        # it forks shows that same line until it execs (ldconfig, lscpu: a moment), so that line is not a leak.
        own = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        workers, ps_seen, deadline = {}, False, time.monotonic() + 900
        while proc.poll() is None:  # every descendant, polled while the sweep runs
            assert time.monotonic() < deadline, "the sweep did not finish"
            for pid, (ppid, cmdline) in command_lines(proc.pid).items():
                if cmdline == own:
                    continue
                assert secret.encode() not in cmdline, cmdline  # workers, their forks, W&B's service
                if ppid == proc.pid and b"--worker-only" in cmdline:
                    workers[pid] = cmdline
            if len(workers) >= 2 and not ps_seen:
                ps = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "-p", ",".join(map(str, workers))],
                                    capture_output=True, text=True, check=False)
                assert "--worker-only" in ps.stdout and secret not in ps.stdout, ps.stdout
                ps_seen = True
            time.sleep(0.2)
    finally:
        process_guard.stop(proc, signal.SIGKILL, timeout=5)
    assert proc.returncode == 0, err.read_text()[-3000:]
    assert len(workers) == 2 and ps_seen, workers
    study = load_study(load_spec(path), url, "local")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    stdout = out.read_text()
    assert f"--storage postgresql+psycopg2://{USER}:***@127.0.0.1" in stdout and "PGPASSWORD" in stdout
    rep = report(tmp_path, env, "local", "--storage", url)
    assert f"{USER}:***@" in (tmp_path / "results" / "local" / "report.md").read_text()
    records = [p.read_bytes() for p in (tmp_path / "runs").rglob("offline-run-*/run-*.wandb")]
    assert len(records) == 3 and all(b"--worker-only" in r for r in records)  # W&B recorded each worker's argv
    assert_secret_nowhere(secret, tmp_path, stdout, err.read_text(), rep.stdout, rep.stderr,
                          study_text(url, path, "local"))


@pytest.mark.slow
def test_an_in_process_worker_keeps_the_password_out_of_wandb(secret_pg, tmp_path):
    # One worker runs in the CLI's own process, whose sys.argv W&B records: the CLI moves the URL to the
    # environment after parsing.
    url, secret = secret_pg.new_database("inproc"), secret_pg.password
    path = write_spec(tmp_path, "inproc", [4], baseline=False, wandb="offline")
    env = clean_env(tmp_path)
    proc = process_guard.run([sys.executable, "-m", "ablations.cli", "sweep", str(path), f"--storage={url}"],
                             cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # W&B's offline run (``run-*.wandb``, what ``wandb sync`` uploads) holds the process's arguments, less --storage.
    (record,) = (tmp_path / "runs").rglob("offline-run-*/run-*.wandb")
    assert str(path).encode() in record.read_bytes() and b"--storage" not in record.read_bytes()
    assert_secret_nowhere(secret, tmp_path, proc.stdout, proc.stderr, study_text(url, path, "inproc"))


@pytest.fixture(scope="module")
def slurm():
    with slurm_cluster(cpus=2) as cluster:
        yield cluster


@pytest.mark.slow
def test_slurm_job_folder_holds_no_password(secret_pg, slurm, tmp_path):
    # The URL in $SENET_STORAGE_URL, the way a user keeps it off the command line; sbatch passes it to the jobs.
    url, secret = secret_pg.new_database("slurm"), secret_pg.password
    path = write_spec(tmp_path, "slurm", [4], baseline=True, wandb="disabled")
    env = clean_env(tmp_path, **{STORAGE_ENV: url, "SLURM_CONF": str(slurm.conf)})
    proc = process_guard.run(
        [sys.executable, "-m", "ablations.cli", "sweep", str(path), "--slurm", "--array-size", "2", "--cpus-per-task",
         "1", "--time-min", "20", "--slurm-folder", str(tmp_path / "slurm" / "%j"), "--wait"],
        cwd=ROOT, env=env, timeout=900)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted((tmp_path / "slurm").rglob("*.err")))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    study = load_study(load_spec(path), url, "slurm")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    pickles = list((tmp_path / "slurm").rglob("*_submitted.pkl"))
    assert pickles  # submitit's pickled job (function and arguments) was searched
    rep = report(tmp_path, env, "slurm")  # the URL from the environment again
    assert_secret_nowhere(secret, tmp_path, proc.stdout, proc.stderr, rep.stdout, rep.stderr,
                          study_text(url, path, "slurm"))
