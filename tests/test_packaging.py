"""The package as a user installs it: the shipped sweep specs by name, and the wheel run from an empty folder."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools
import tomllib

from ablations.sweep import spec_files

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_package_and_the_shipped_specs():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = setuptools.find_packages(str(ROOT), include=["senet*", "ablations*"])
    specs = sorted(f"ablations.specs.{p.name}" for p in (ROOT / "sweeps").iterdir() if p.is_dir())
    assert sorted(tool["packages"]) == sorted(found + specs)
    assert tool["package-dir"] == {"ablations.specs": "sweeps"}
    assert all(tool["package-data"][s] == ["*.yaml"] for s in specs)
    assert not list((ROOT / "sweeps").rglob("*.py"))  # YAML only: `import sweeps` is W&B's package


def test_gitignore_covers_build_outputs():
    for path in ("build/lib/x.py", "dist/senet_ablations-0.1.0.tar.gz", "senet_ablations-0.1.0-py3-none-any.whl"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False).returncode == 0, path


def test_specs_by_name_path_and_readme_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "paper/reduction" in spec_files.names() and "examples/tpe" in spec_files.names()
    for name in ("reduction", "paper/reduction", "sweeps/paper/reduction.yaml", "paper/reduction.yaml"):
        path, source = spec_files.resolve(name)
        assert Path(path).is_file() and source == "sweeps/paper/reduction.yaml", name
    dest = spec_files.copy("reduction")
    assert dest == Path("reduction.yaml") and dest.read_text() == Path(spec_files.resolve("reduction")[0]).read_text()
    assert spec_files.resolve("reduction.yaml") == ("reduction.yaml", "reduction.yaml")  # a file wins over a name
    with pytest.raises(ValueError, match="reduction.yaml already exists"):
        spec_files.copy("paper/reduction")
    with pytest.raises(ValueError, match=r"spec 'reductoin': no such file .*did you mean reduction or paper/reduction"):
        spec_files.resolve("reductoin")


def test_list_names_each_spec_with_its_paper_table():
    lines = spec_files.listing().splitlines()
    assert len(lines) == len(spec_files.names())
    assert any(line.startswith("paper/reduction ") and "Table 10" in line for line in lines)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel of this checkout and, through a .pth line, .venv's dependencies (not the repo).

    The wheel is built from a copy of the sources, so building leaves no build/ in the work tree.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("ablations", "senet", "sweeps"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src)],
                   check=True, timeout=300)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(purelib, "deps.pth").write_text(deps + "\n")
    subprocess.run(pip + ["--python", str(python), "install", "--no-deps", "-q", *map(str, (tmp / "dist").glob("*.whl"))],
                   check=True, timeout=300)
    return venv


def _run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, check=False, cwd=cwd, env={**env, "WANDB_MODE": "disabled"}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_wheel_runs_the_readme_commands_from_an_empty_folder(installed, tmp_path):
    python, cli = str(installed / "bin" / "python"), str(installed / "bin" / "senet-ablate")
    where = _run(installed, tmp_path, python, "-c", "import ablations, importlib.metadata as m, ablations.training.result as r; "
                 "print(ablations.__file__, m.version('senet-ablations'), r.git_commit())")
    assert where.returncode == 0, where.stderr
    path, version, commit = where.stdout.split()
    assert Path(path).is_relative_to(installed) and version == "0.1.0" and commit == "None"
    assert _run(installed, tmp_path, cli, "quickstart", "--help").returncode == 0
    dry = _run(installed, tmp_path, cli, "sweep", "reduction", "--variant", "digits", "--dry-run")
    assert dry.returncode == 0 and "study digits-reduction" in dry.stdout and "15 trials" in dry.stdout, dry.stderr
    listed = _run(installed, tmp_path, cli, "sweep", "--list")
    assert listed.returncode == 0 and "paper/reduction" in listed.stdout and "Table 10" in listed.stdout
    table = _run(installed, tmp_path, cli, "complexity", "--table", "10")
    assert table.returncode == 0 and "Table 10" in table.stdout, table.stderr
    assert _run(installed, tmp_path, cli, "--version").stdout.strip() == "senet-ablate 0.1.0"
    # The README refresher is a maintainer's step: installed, it says so in one line instead of a traceback.
    refresh = _run(installed, tmp_path, python, "-m", "ablations.reporting.verdicts")
    assert refresh.returncode != 0 and "runs only in a clone" in refresh.stderr and "Traceback" not in refresh.stderr
    assert not (ROOT / "build").exists()
