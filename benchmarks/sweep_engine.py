"""The sweep engine at scale: N grid cells through W workers on PostgreSQL, with a stub in place of training.

What is timed is the engine's own work per arm (claim under the study lock, lease, heartbeat check, trial
attributes, result row, dedup), not training: the stub returns a finished result at once. Per arm, the cycle of
its worker (from the worker's previous trial's completion, or its first claim, to this trial's completion) is
the engine's overhead; its median and p95 over all arms, the total wall time, and the time of
``senet-ablate report`` on the finished study are printed as one Markdown row per size.

    python benchmarks/sweep_engine.py --cells 1000 5000 --workers 8 [--storage postgresql://...]

Without ``--storage`` a throw-away PostgreSQL server is started (``tests/cluster/postgres.py``; as root it
runs as the ``postgres`` user). Each size gets its own database.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def stub_runner(cfg, callbacks=None, trial=None, baseline=None, quiet=True):
    """A finished run without training: the result row a real run would return (no run folder on disk)."""
    from ablations.training.result import Result

    return Result(config=cfg.to_dict(), config_hash=cfg.hash(), seed=cfg.seed, git_commit=None, params=1000,
                  gmacs=0.001, metrics={"val/top1_best": 0.5 + 1e-6 * cfg.seed, "val/top1": 0.5}, epochs=1,
                  wall_time_s=0.0, status="complete", reason=None, run_dir="", name=cfg.hash()[:8])


def spec_for(cells: int, out: Path):
    """A grid of ``cells`` cells: baseline and one SE arm, ``cells / 2`` seeds each."""
    import yaml

    from ablations.sweep.spec import load_spec

    path = out / f"engine{cells}.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"engine{cells}", "baseline": True, "space": {"model.se.reduction": [16]},
        "base": {"model": {"arch": "resnet20_cifar", "se": {"reduction": 16}}, "data": {"name": "digits"},
                 "output_dir": str(out / "runs"), "wandb": {"mode": "disabled"}},
        "objectives": ["val/top1_best"], "seeds": cells // 2, "heartbeat": {"interval": 60}}))
    return path, load_spec(path, max_arms=max(cells, 10000))


def _worker(path: str, cells: int, url: str, name: str) -> None:
    from ablations.sweep.spec import load_spec
    from ablations.sweep.worker import run_worker

    os.environ["OMP_NUM_THREADS"] = "1"
    run_worker(load_spec(path, max_arms=max(cells, 10000)), url, name, runner=stub_runner)


def run_size(cells: int, workers: int, url: str, out: Path) -> dict:
    from ablations.sweep.study import load_study, setup_study

    path, spec = spec_for(cells, out)
    name = f"engine{cells}"
    t0 = time.monotonic()
    setup_study(spec, url, name)
    enqueue_s = time.monotonic() - t0
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(path), cells, url, name)) for _ in range(workers)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    total_s = time.monotonic() - t0
    trials = load_study(spec, url, name).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == cells == len(trials), "not every cell ran once"
    cycles = []
    by_worker: dict[str, list] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t)
    for mine in by_worker.values():
        mine.sort(key=lambda t: t.datetime_complete)
        prev = mine[0].datetime_start
        for t in mine:
            cycles.append((t.datetime_complete - prev).total_seconds())
            prev = t.datetime_complete
    cycles.sort()
    env = {**os.environ, "SENET_STORAGE_URL": url, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    rep = subprocess.run([sys.executable, "-m", "ablations.cli", "report", name, "--no-html", "--out",
                          str(out / f"report{cells}")], env=env, capture_output=True, text=True, check=False)
    report_s = time.monotonic() - t0
    if rep.returncode != 0:
        print(rep.stderr[-2000:], file=sys.stderr)
    return {"cells": cells, "workers": workers, "enqueue_s": enqueue_s, "total_s": total_s,
            "median_ms": 1000 * statistics.median(cycles), "p95_ms": 1000 * cycles[int(0.95 * (len(cycles) - 1))],
            "per_cell_ms": 1000 * total_s * workers / cells, "report_s": report_s, "report_rc": rep.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--storage", help="a PostgreSQL URL whose server may create databases (default: a new server)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="senet-engine-"))
    server = None
    if args.storage is None:
        from cluster.postgres import PgServer

        server = PgServer()
        server.start()
    rows = []
    try:
        for cells in args.cells:
            url = server.new_database(f"engine{cells}") if server else args.storage
            rows.append(run_size(cells, args.workers, url, out))
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.close()
    print("| cells | workers | enqueue (s) | total (s) | worker time per cell (ms) | cycle median (ms) | "
          "cycle p95 (ms) | report (s) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cells']} | {r['workers']} | {r['enqueue_s']:.1f} | {r['total_s']:.1f} | {r['per_cell_ms']:.0f} | "
              f"{r['median_ms']:.0f} | {r['p95_ms']:.0f} | {r['report_s']:.1f}" + ("" if r["report_rc"] == 0 else " (failed)")
              + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
