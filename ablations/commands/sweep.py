"""``senet-ablate sweep SPEC``: run an ablation's Optuna study locally, with N workers, or as a SLURM job array.

Everything is checked before any work: the spec (keys, distributions, metrics, every arm's config),
the storage choice (SQLite only for one worker) and that the storage answers within seconds. Then
the study is created once and the grid enqueued once; workers (this process, N local processes or
SLURM array elements) claim trials until none is left. See ``ablations.sweep`` and docs/DESIGN.md (Sweeps).
The storage URL reaches the workers through the environment (``storage.STORAGE_ENV``), never their command
line, and is printed with its password masked.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

# Table 10's reduction ratios on the embedded digits (15 short runs, minutes on a CPU); --dry-run lists them.
EXAMPLES = ("senet-ablate sweep reduction --variant digits",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ablations.sweep.grid_size import MAX_ARMS

    parser.add_argument("spec", metavar="SPEC", nargs="?", help="a sweep YAML's path, or a shipped spec's name: "
                        "reduction, paper/reduction, examples/tpe (--list names them)")
    parser.add_argument("--list", action="store_true", help="list the shipped specs with their paper table and exit")
    parser.add_argument("--copy", metavar="NAME", help="copy a shipped spec into this folder to edit, and exit "
                        "(default: none, run SPEC)")
    parser.add_argument("--variant", help="a dataset override named in the spec's variants: (e.g. digits, cifar; "
                        "default: none, the spec's base)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base-experiment key (repeatable), e.g. --set train.epochs=2")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage: sqlite:///file.db (one worker, the default "
                        "runs/<study>/study.db) or postgresql://user:pw@host:port/db (several workers, clusters); "
                        "default: $SENET_STORAGE_URL, then the spec's storage. Keep a password off the command "
                        "line: $SENET_STORAGE_URL, PGPASSWORD or ~/.pgpass")
    parser.add_argument("--study-name", help="the study (default: the spec's name, prefixed with the variant)")
    parser.add_argument("--n-trials", type=int, help="the study's trial budget (default: the spec's; a grid's size)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes sharing the study")
    parser.add_argument("--retry-failed", action="store_true", help="re-queue grid arms whose trial failed")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the arms and exit")
    parser.add_argument("--max-arms", type=int, default=None, metavar="N", help="the most arm x seed cells a grid "
                        f"may have (default: {MAX_ARMS}); a larger grid is refused before any arm is built")
    parser.add_argument("--worker-only", action="store_true", help=argparse.SUPPRESS)  # spawned local workers
    slurm = parser.add_argument_group("SLURM (a job array of workers, submitted with submitit)")
    slurm.add_argument("--slurm", action="store_true", help="submit the workers as a SLURM job array")
    slurm.add_argument("--partition", help="SLURM partition (default: the cluster's default partition)")
    slurm.add_argument("--gpus-per-trial", type=int, default=0, help="GPUs per worker/trial (DDP when > 1)")
    slurm.add_argument("--nodes-per-trial", type=int, default=1, help="nodes per worker/trial (DDP across them, "
                       "--gpus-per-trial GPUs or the spec's train.devices processes on each)")
    slurm.add_argument("--array-size", type=int, help="array elements = workers (default: --workers, at least 2)")
    slurm.add_argument("--array-parallelism", type=int, help="elements running at once (default: all)")
    slurm.add_argument("--cpus-per-task", type=int, default=4, help="CPUs per task")
    slurm.add_argument("--mem-gb", type=float, help="memory per element (default: the partition's default)")
    slurm.add_argument("--time-min", type=int, default=24 * 60, help="time limit per element in minutes")
    slurm.add_argument("--slurm-folder", default=None, help="submitit's log folder (default: runs/<study>/slurm/%%j)")
    slurm.add_argument("--wait", action="store_true", help="wait for the array to finish and print the summary")


def _sets(items: list[str]) -> dict:
    from ablations.overrides import parse_assignments

    return parse_assignments(items, "--set", "train.epochs=2")


def _cap(args: argparse.Namespace) -> dict:
    """``build_spec``'s ``max_arms`` from ``--max-arms`` (none given: the default of ``ablations.sweep.grid_size``)."""
    return {} if args.max_arms is None else {"max_arms": args.max_arms}


def _spawn_args(args: argparse.Namespace, study_name: str) -> list[str]:
    """A local worker's command line: no storage URL (``ps`` shows it to every user); it comes in the environment."""
    cmd = [sys.executable, "-m", "ablations.cli", "sweep", args.spec, "--worker-only", "--study-name", study_name]
    if args.variant:
        cmd += ["--variant", args.variant]
    for item in args.sets:
        cmd += ["--set", item]
    if args.n_trials is not None:
        cmd += ["--n-trials", str(args.n_trials)]
    if args.max_arms is not None:
        cmd += ["--max-arms", str(args.max_arms)]
    return cmd


def run(args: argparse.Namespace) -> int:
    from ablations.sweep.grid_size import MAX_ARMS_CEILING
    from ablations.sweep.preflight import preflight
    from ablations.sweep.spec import build_spec, read_yaml
    from ablations.sweep.storage import check_reachable, default_storage, resolve_storage, storage_from_env

    # Checked here by hand: senet.tree.check_int would import torch (the senet package) before the cheap checks.
    if args.workers < 1:
        raise ValueError(f"--workers={args.workers} is not allowed; it must be an integer >= 1")
    if args.n_trials is not None and args.n_trials < 1:
        raise ValueError(f"--n-trials={args.n_trials} is not allowed; it must be an integer >= 1")
    if args.max_arms is not None and not 1 <= args.max_arms <= MAX_ARMS_CEILING:
        raise ValueError(f"--max-arms={args.max_arms} is not allowed; it must be an integer in [1, {MAX_ARMS_CEILING}] "
                         "(each cell is held in memory as its config before the first trial)")
    from ablations.sweep import spec_files

    if args.list:
        print(spec_files.listing())
        return 0
    if args.copy:
        dest = spec_files.copy(args.copy)
        print(f"wrote {dest}; edit it, then: senet-ablate sweep {dest}")
        return 0
    if args.spec is None:
        raise ValueError("SPEC is required: a sweep YAML's path or a shipped spec's name (senet-ablate sweep --list)")
    path, source = spec_files.resolve(args.spec)
    # The cheap checks first (no torch yet): --set values, spec keys, storage choice, storage reachable.
    sets = _sets(args.sets)
    raw = read_yaml(path)
    try:
        checked = preflight(raw, args.variant)
    except ValueError as exc:
        raise ValueError(f"{args.spec}: {exc}") from None
    study_name = args.study_name or checked.study
    spec_url = args.storage or storage_from_env() or checked.storage or default_storage(checked.output_dir, study_name)
    url = resolve_storage(spec_url, workers=args.workers, cluster=args.slurm)
    if not args.dry_run:
        check_reachable(url)
    try:
        spec = build_spec(checked, source=source, overrides=sets, **_cap(args))
    except ValueError as exc:
        raise ValueError(f"{args.spec}: {exc}") from None
    if args.slurm:
        from ablations.sweep.slurm import with_gpus

        if args.nodes_per_trial < 1:
            raise ValueError(f"--nodes-per-trial={args.nodes_per_trial} is not allowed; it must be an integer >= 1")
        spec = with_gpus(spec, args.gpus_per_trial, args.nodes_per_trial)
    if args.dry_run:
        return _print_plan(spec, study_name, url)
    from ablations.sweep import study as st
    from ablations.sweep.worker import run_worker

    if args.worker_only:  # the launching process reports (and sets the exit code)
        run_worker(spec, url, study_name, n_trials=args.n_trials)
        return 0
    study, queued = st.setup_study(spec, url, study_name, retry_failed=args.retry_failed)
    print(f"study {study_name} on {st.masked(url)}: {queued} arm x seed cells queued, "
          f"{len(study.trials)} trials in the study", file=sys.stderr)
    if args.slurm:
        return _submit(args, spec, url, study_name)
    if args.workers == 1:
        run_worker(spec, url, study_name, n_trials=args.n_trials)
    else:
        # Each run pins its own torch threads (train.threads, 1 unless the spec sets it), so the worker
        # count changes no number. The workers get their own session: a Ctrl-C reaches them once, from here.
        from ablations.sweep.storage import worker_env

        procs = [subprocess.Popen(_spawn_args(args, study_name), env=worker_env(url), start_new_session=True)
                 for _ in range(args.workers)]
        codes = _wait_workers(procs)
        if any(codes):
            print(f"warning: worker exit codes {codes}", file=sys.stderr)
    return _summary(spec, url, study_name, args.n_trials)


def _wait_workers(procs: list[subprocess.Popen]) -> list[int]:
    """Wait for the local workers; a signal to this process goes on to each (each re-queues its trial)."""
    from ablations.training import interrupts

    try:
        with interrupts.guard():
            return [p.wait() for p in procs]
    except interrupts.RunInterrupted as stop:
        with interrupts.guard(), interrupts.deferred():  # a second Ctrl-C must not orphan them mid-cleanup
            for p in procs:
                if p.poll() is None:
                    p.send_signal(stop.signum)
            for p in procs:
                p.wait()
        raise


def _submit(args: argparse.Namespace, spec, url: str, study_name: str) -> int:
    from ablations.sweep.slurm import SlurmOptions, submit, wait_for

    size = args.array_size or max(2, args.workers)
    options = SlurmOptions(array_size=size, array_parallelism=args.array_parallelism or size,
                           partition=args.partition, gpus_per_trial=args.gpus_per_trial,
                           cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, timeout_min=args.time_min,
                           folder=args.slurm_folder or f"{spec.base.output_dir}/{study_name}/slurm/%j")
    jobs = submit(spec, url, study_name, options, n_trials=args.n_trials)
    print(f"submitted job array {jobs[0].job_id.split('_')[0]} ({size} workers, {options.array_parallelism} at once); "
          f"logs in {options.folder}", file=sys.stderr)
    if not args.wait:
        print(f"follow it with: {_report_command(study_name, url)}", file=sys.stderr)
        return 0
    from submitit.core.utils import FailedJobError, UncompletedJobError

    for job, why in wait_for(jobs):
        if why is not None:
            print(f"array element {job.job_id} did not finish ({why}); its log: {job.paths.stderr}", file=sys.stderr)
            continue
        try:
            job.results()  # every task of every element
        except (FailedJobError, UncompletedJobError) as exc:
            # A time limit, a preemption or a crash: its trial went back to the queue (or failed with a reason), and
            # the summary lists what is left; the element's traceback is in its log, not here.
            last = next((line for line in reversed(str(exc).splitlines()) if line.strip()), type(exc).__name__)
            print(f"array element {job.job_id} did not finish ({last.strip()}); its log: {job.paths.stderr}",
                  file=sys.stderr)
    return _summary(spec, url, study_name)


def _report_command(study_name: str, url: str) -> str:
    """The follow-up ``senet-ablate report`` command, its URL masked (and how to give the password then)."""
    from ablations.sweep.storage import PASSWORD_HINT, has_password, masked

    return f"senet-ablate report {study_name} --storage {masked(url)}" + (f" ({PASSWORD_HINT})" if has_password(url) else "")


def _print_plan(spec, study_name: str, url: str) -> int:
    from ablations.sweep.spec import baseline_config, make_config
    from ablations.sweep.storage import masked
    from ablations.sweep.ticker import ticking

    print(f"study {study_name}: {spec.description or spec.name}\nstorage: {masked(url)}\n"
          f"objectives: {', '.join(f'{o.direction} {o.metric}' for o in spec.objectives)}; "
          f"sampler {spec.sampler['type']}, pruner {spec.pruner['type']}, seeds {list(spec.seeds)}")
    if spec.is_grid:
        from ablations.naming import run_name

        cells, baseline = spec.grid(), baseline_config(spec)
        print(f"{len(cells)} trials (arm x seed):")
        for c in ticking(cells, "listing"):
            print("  " + run_name(make_config(spec, c), baseline))
    else:
        print(f"{spec.n_trials} trials over: {', '.join(p.key for p in spec.space)}")
    return 0


def _summary(spec, url: str, study_name: str, n_trials: int | None = None) -> int:
    from ablations.sweep.study import load_study, progress, unfinished

    study = load_study(spec, url, study_name)
    counts = {k: v for k, v in progress(study).items() if v}
    print(f"study {study_name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if done:
        names = [o.metric for o in spec.objectives]
        best = study.best_trials if spec.multi_objective else [study.best_trial]
        print("Pareto front:" if spec.multi_objective else "best trial:")
        for t in best:
            values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values))
            print(f"  #{t.number} {values}  {t.params}")
    print(f"report: {_report_command(study_name, url)}")
    missing = unfinished(study, spec, n_trials)
    if not missing:
        return 0
    # Not done is not success: a script that chains sweep && report must not report half a study.
    print(f"not complete: {len(missing)} " + ("arm" if spec.is_grid else "trial") + "(s):", file=sys.stderr)
    for line in missing:
        print(f"  {line}", file=sys.stderr)
    print("rerun the same command to resume" + (" (--retry-failed re-queues failed arms)"
                                                 if any(": failed" in m for m in missing) else ""), file=sys.stderr)
    return 1
