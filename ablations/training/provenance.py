"""Where a number came from: the software and hardware a run used (docs/DESIGN.md, Results you can trust).

``collect()`` is stored in each run's ``result.json`` (``env``) and in its W&B config. It names what
changes the digits of a result: float reductions are split by thread count and ISA (AVX2 vs AVX-512
kernels), cuDNN/cuBLAS pick algorithms per GPU and version, and precision and deterministic mode change
the arithmetic itself. Two runs of one config hash agree bit for bit only when these agree too. No
host name, user or path is recorded: the file is committed and shared.
"""
from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: The keys that must agree for two runs of one config hash to give the same digits.
SAME_DIGITS = ("torch", "cuda", "cudnn", "cpu", "isa", "gpu", "threads", "devices", "precision", "deterministic")


def package_version() -> str | None:
    """This package's installed version (``importlib.metadata``), or ``None`` when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("senet-ablations")
    except metadata.PackageNotFoundError:
        return None


def code_of(row: dict) -> str | None:
    """Which code made a result row: its git commit in a clone, else the installed package's version."""
    if row.get("git_commit"):
        return str(row["git_commit"])
    version = (row.get("env") or {}).get("senet_ablations")
    return f"senet-ablations {version} (installed, no git commit)" if version else None


def cpu_model() -> str:
    """The CPU's marketing name (``AMD EPYC 7B13``) from /proc/cpuinfo, else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect(trainer: Any = None) -> dict:
    """The environment of a run, as a flat JSON-able dict.

    Args:
        trainer: a Lightning ``Trainer``; when given, ``devices`` and ``precision`` are what it uses, else
            what this process would use on its own (all visible GPUs or one CPU process, ``32-true``).

    Returns:
        ``senet_ablations`` (this package's version), ``torch``, ``cuda``, ``cudnn`` (None without them),
        ``python``, ``numpy``, ``lightning``, ``os``,
        ``cpu`` (model name), ``isa`` (the SIMD level torch's CPU kernels dispatch to), ``gpu`` (name or
        None), ``threads`` (torch intra-op threads), ``devices``, ``precision``, ``deterministic``.
    """
    import lightning
    import numpy
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    devices = torch.cuda.device_count() if gpu else 1
    precision = "32-true"
    if trainer is not None:
        devices = int(getattr(trainer, "num_devices", devices) or devices) * int(getattr(trainer, "num_nodes", 1) or 1)
        precision = str(getattr(trainer, "precision", precision))
        if type(getattr(trainer, "accelerator", None)).__name__ == "CPUAccelerator":
            gpu = None  # a CPU run on a GPU machine: the card took no part
    return {
        "senet_ablations": package_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if gpu else None,
        "cudnn": torch.backends.cudnn.version() if gpu and torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "lightning": lightning.__version__,
        "os": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_model(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "gpu": gpu,
        "threads": torch.get_num_threads(),
        "devices": devices,
        "precision": precision,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def describe(env: dict | None) -> str:
    """One line: ``torch 2.14.1, CPU AMD EPYC (AVX2), 1 thread, 32-true, deterministic``; ``unknown`` if absent."""
    if not env:
        return "environment not recorded"
    device = f"GPU {env['gpu']} x{env.get('devices', 1)}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}" \
        if env.get("gpu") else f"CPU {env.get('cpu')} ({env.get('isa')})"
    threads = env.get("threads")
    return (f"torch {env.get('torch')}, {device}, {threads} thread{'s' if threads != 1 else ''}, "
            f"{env.get('precision')}, {'deterministic' if env.get('deterministic') else 'non-deterministic'}")


def mixed(rows: Iterable[dict], keys: Sequence[str] = SAME_DIGITS) -> list[str]:
    """What differs between the rows' code and environments, one phrase each (empty when all agree).

    The code (``code_of``: the git commit, else the installed version) counts as different when two rows
    name different ones (``-dirty`` included: an uncommitted change is a different code); rows without
    ``env`` (made before it was recorded) are counted, not compared.
    """
    rows = list(rows)
    out = []
    commits = sorted({str(code_of(r)) for r in rows})
    if len(commits) > 1:
        out.append(f"{len(commits)} code commits")
    envs = [r.get("env") for r in rows]
    missing = sum(e is None for e in envs)
    known = [e for e in envs if e]
    for key in keys:
        values = sorted({str(e.get(key)) for e in known})
        if len(values) > 1:
            out.append(f"{key} ({', '.join(values)})")
    if missing and known:
        out.append(f"{missing} of {len(rows)} runs without a recorded environment")
    return out
