"""``senet-ablate report STUDY``: a sweep's study as the paper's tables and plots under ``results/<study>/``.

Reads the result rows stored in the study's trials (``ablations.sweep.report``), so it works on a study
that is still running, on one from a cluster's PostgreSQL, or on a copied SQLite file. The storage URL is
shown (and written into the report's command line) with its password masked.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

# The study that the example of senet-ablate sweep --help makes (its default storage: runs/<study>/study.db).
EXAMPLES = ("senet-ablate report digits-reduction",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", help="the study name (what senet-ablate sweep printed)")
    parser.add_argument("--storage", metavar="URL", help="the study's storage (default: $SENET_STORAGE_URL, else "
                        "sqlite:///runs/STUDY/study.db, the single-worker default of senet-ablate sweep)")
    parser.add_argument("--out", help="output folder (default: results/STUDY)")
    parser.add_argument("--no-html", action="store_true", help="skip Optuna's HTML plots")
    parser.add_argument("--min-effect", type=float, metavar="PP", default=None,
                        help="the Δ top-1 error (percentage points) that the seeds-for-80%%-power column refers to "
                             "(default: each arm's observed Δ)")


def _check_study_file(url: str, path: Path) -> None:
    """Refuse an SQLite file that holds no Optuna study, before Optuna opens it and writes its tables there."""
    import sqlite3

    hint = "pass the study.db that senet-ablate sweep wrote (it prints the --storage to use)"
    with path.open("rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise ValueError(f"storage {url}: {path} is not an SQLite database; {hint}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"storage {url}: {path} cannot be read as an SQLite database ({exc}); {hint}") from None
    if "studies" not in tables:
        raise ValueError(f"storage {url}: {path} is an SQLite database without Optuna studies; {hint}")


def run(args: argparse.Namespace) -> int:
    from ablations.sweep.storage import check_reachable, check_storage_url, default_storage, masked, storage_from_env

    url = check_storage_url(args.storage or storage_from_env() or default_storage("runs", args.study))
    if url.startswith("sqlite"):
        import sqlalchemy

        path = sqlalchemy.engine.make_url(url).database
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"storage {url}: no such database file; pass the --storage the sweep printed")
        _check_study_file(url, Path(path))
    check_reachable(url)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    if args.study not in names:
        raise ValueError(f"study {args.study!r} is not in {masked(url)}; it holds: {', '.join(names) or 'no studies'}")
    from ablations.sweep.report import write_report

    study = optuna.load_study(study_name=args.study, storage=url)
    command = f"senet-ablate report {args.study} --storage {masked(url)}" + (f" --out {args.out}" if args.out else "") \
        + (f" --min-effect {args.min_effect:g}" if args.min_effect is not None else "")
    path = write_report(study, Path(args.out or Path("results") / args.study), command=command, html=not args.no_html,
                        min_effect=args.min_effect)
    print(path.read_text().split("## Pareto")[0])
    print(f"wrote {path.parent}/", file=sys.stderr)
    return 0
