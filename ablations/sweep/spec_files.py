"""The shipped sweep specs: the repository's ``sweeps/paper/*.yaml`` and ``sweeps/examples/*.yaml``, by name.

A spec is named by its path under ``sweeps/`` without ``.yaml`` (``paper/reduction``), or by its file
name alone where that is unique (``reduction``). In a wheel the specs are package data under
``ablations/specs/`` (pyproject maps the data package ``ablations.specs`` onto ``sweeps/``, which stays
YAML only: ``import sweeps`` is W&B's package); in a clone they are the ``sweeps/`` folder beside
the package. A path that exists always wins over a name, so a copied and edited spec is the one run.
"""
from __future__ import annotations

import difflib
import os
import shutil
from importlib import resources
from pathlib import Path

SUFFIX = ".yaml"


def root() -> Path:
    """The folder holding ``paper/`` and ``examples/``: the package's copy, else the clone's ``sweeps/``."""
    shipped = Path(str(resources.files("ablations").joinpath("specs")))
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[2] / "sweeps"


def names() -> list[str]:
    """Every shipped spec's name (``paper/reduction``), sorted."""
    base = root()
    return sorted(p.relative_to(base).with_suffix("").as_posix() for p in base.glob(f"*/*{SUFFIX}"))


def _lookup(name: str) -> str | None:
    """The full name for ``name``: itself, ``sweeps/<name>.yaml`` as the README writes it, or a unique file name."""
    known = names()
    key = name.removeprefix("sweeps/").removesuffix(SUFFIX)
    if key in known:
        return key
    short = [n for n in known if n.rpartition("/")[2] == key]
    return short[0] if len(short) == 1 else None


def resolve(spec: str) -> tuple[str, str]:
    """``(file to read, source to record)`` for a spec given as a path or a shipped name.

    A shipped spec is recorded as ``sweeps/<name>.yaml`` wherever it is installed, so a study's report
    reads the same from a clone and from a wheel.
    """
    if os.path.exists(spec):
        return spec, spec
    name = _lookup(spec)
    if name is None:
        raise ValueError(unknown_message(spec))
    return str(root() / f"{name}{SUFFIX}"), f"sweeps/{name}{SUFFIX}"


def unknown_message(spec: str) -> str:
    key = spec.removeprefix("sweeps/").removesuffix(SUFFIX)
    known = names()
    candidates = known + [n.rpartition("/")[2] for n in known]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return (f"spec {spec!r}: no such file and no shipped spec of that name{hint} "
            f"(senet-ablate sweep --list names them)")


def header(name: str) -> dict[str, str]:
    """A shipped spec's ``paper`` and ``description`` fields."""
    import yaml

    with open(root() / f"{name}{SUFFIX}", encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    return {"paper": str(raw.get("paper") or ""), "description": str(raw.get("description") or "")}


def listing() -> str:
    """One line per shipped spec: its name, the paper's table and what it varies."""
    rows = [(n, header(n)) for n in names()]
    width = max(len(n) for n, _ in rows)
    paper = max(len(h["paper"]) for _, h in rows)
    return "\n".join(f"{n:<{width}}  {h['paper'] or '-':<{paper}}  {h['description']}" for n, h in rows)


def copy(spec: str, folder: str | os.PathLike = ".") -> Path:
    """Copy a shipped spec into ``folder`` as ``<file name>.yaml`` to edit; an existing file is never overwritten."""
    name = _lookup(spec)
    if name is None:
        raise ValueError(unknown_message(spec))
    dest = Path(folder) / f"{name.rpartition('/')[2]}{SUFFIX}"
    if dest.exists():
        raise ValueError(f"{dest} already exists; move it away or edit it (senet-ablate sweep {dest} runs it)")
    shutil.copyfile(root() / f"{name}{SUFFIX}", dest)
    return dest
