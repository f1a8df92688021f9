"""Bounds on a sweep spec (issue 20): YAML size and alias expansion (``ablations.yaml_bounds``), the cap on a
grid's arm x seed cells (``ablations.sweep.grid_size``, ``--max-arms``) and progress lines for a large grid
(``ablations.sweep.ticker``). Each refusal is one ``senet-ablate sweep: error:`` line, exit 2, before any work."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ablations.cli import main
from ablations.sweep import ticker
from ablations.sweep.fields import SAMPLERS, named
from ablations.sweep.grid_size import MAX_ARMS, MAX_ARMS_CEILING, count_cells, listed_counts, seed_count
from ablations.sweep.preflight import preflight
from ablations.sweep.spec import is_se_key, read_yaml
from ablations.yaml_bounds import MAX_BYTES, MAX_NODES, OverBound, safe_load_bounded

ROOT = Path(__file__).resolve().parent.parent
BASE = ("base: {model: {arch: resnet20_cifar, se: {reduction: 16}}, data: {name: digits}, train: {recipe: quick}, "
        "wandb: {mode: disabled}}\n")
TEN = "[" + ", ".join(str(i) for i in range(10)) + "]"
# 10 x 10 x 10 cells, every one a distinct buildable config (the reductions all divide resnet20's 16 channels).
GRID_1000 = (f"name: big\n{BASE}space:\n  train.lr: [{', '.join(f'0.0{i}' for i in range(1, 10))}, 0.1]\n"
             f"  train.weight_decay: [{', '.join(f'0.000{i}' for i in range(10))}]\n"
             f"  model.se.reduction: [1, 2, 3, 4, 5, 6, 7, 8, 9, 16]\n")


def bomb(levels: int = 9, under: str = "space") -> str:
    """A billion-laughs spec: 9 levels of 9 aliases expand to 9**9 (387 million) strings."""
    lines = [f"{under}:", "  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return f"name: bomb\n{BASE}" + "\n".join(lines) + "\n"


def refuse(tmp_path, monkeypatch, capsys, text: str, *argv: str) -> str:
    """The one error line of ``senet-ablate sweep spec.yaml --dry-run ARGV`` on ``text`` (exit code 2)."""
    monkeypatch.chdir(tmp_path)
    Path("spec.yaml").write_text(text)
    capsys.readouterr()
    assert main(["sweep", "spec.yaml", "--dry-run", *argv]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert lines[0].startswith("senet-ablate sweep: error: ") and out.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no study, no run folder
    return lines[0]


# A child that caps its own address space, runs the command and prints its peak resident memory (KiB): a bomb
# that got past the bound dies of MemoryError there instead of taking this machine's memory. The peak is the
# kernel's VmHWM of the child's own memory: ru_maxrss would keep the forking pytest's peak across exec.
CHILD = textwrap.dedent("""
    import re, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    from ablations.cli import main
    code = main(sys.argv[1:])
    print(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1), code)
""")


@pytest.mark.parametrize("under", ["space", "paper"])
def test_alias_bomb_is_refused_with_bounded_memory_and_time(tmp_path, under):
    (tmp_path / "spec.yaml").write_text(bomb(under=under))
    # The time bound is the child's timeout (an expanding bomb runs for minutes); no wall-clock assert on a shared box.
    done = subprocess.run([sys.executable, "-c", CHILD, "sweep", "spec.yaml", "--dry-run"], cwd=tmp_path, check=False,
                          capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr, done.stderr
    assert done.stderr.strip() == (f"senet-ablate sweep: error: sweep spec spec.yaml: too large: it expands to more "
                                   f"than {MAX_NODES} YAML nodes (values, keys, lists, mappings; each alias counted "
                                   f"at every use); at most {MAX_NODES} are allowed")
    peak_kib, code = map(int, done.stdout.split())
    assert code == 2
    assert peak_kib < 200 * 1024, f"peak memory {peak_kib // 1024} MiB"


def test_expanded_size_counts_each_alias_at_every_use_and_stops_past_the_limit():
    node = yaml.compose("a: &a [1, 2]\nb: [*a, *a]\n", Loader=yaml.SafeLoader)
    from ablations.yaml_bounds import expanded_size

    # mapping + 2 keys + [1, 2] (3 nodes) + [*a, *a] (1 + 2 x 3)
    assert expanded_size(node) == 1 + 2 + 3 + 7
    # The count stops at the first node past the limit (a4: 1 + 9 x 820 nodes). Never put a bomb's node in an
    # assert: pytest's message would repr it, and a node's repr expands its aliases.
    size = expanded_size(yaml.compose(bomb(), Loader=yaml.SafeLoader), limit=1000)
    assert size == 1 + 9 * (1 + 9 * (1 + 9 * (1 + 9)))
    assert safe_load_bounded("a: &a [1, 2]\nb: [*a, *a]\n") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
    assert safe_load_bounded("<<: &a {x: 1}\ny: *a\n") == {"x": 1, "y": {"x": 1}}  # merge keys still work


@pytest.mark.parametrize("text, fragment", [
    ("name: r\npaper: &a [1, *a]\n", ("sweep spec spec.yaml: the node at line 2 holds an alias to itself; "
                                      "a recursive document is not allowed")),
    ("name: d\npaper: " + "[" * 3000 + "]" * 3000 + "\n", "sweep spec spec.yaml: too deeply nested"),
    ("name: big\npaper: '" + "x" * MAX_BYTES + "'\n", (f"sweep spec spec.yaml: too large: {MAX_BYTES + 20} bytes; "
                                                       f"at most {MAX_BYTES} bytes (256 KiB) are allowed")),
], ids=["recursive", "deep", "over-size"])
def test_unbounded_yaml_is_one_line(tmp_path, monkeypatch, capsys, text, fragment):
    assert fragment in refuse(tmp_path, monkeypatch, capsys, text)


def test_bounded_loader_refuses_what_the_file_check_would():
    with pytest.raises(OverBound, match="too large"):
        safe_load_bounded("x" * (MAX_BYTES + 1))


def test_grid_over_the_cap_names_the_count_and_the_flag(tmp_path, monkeypatch, capsys):
    space = "".join(f"  train.{k}: {TEN}\n" for k in ("lr", "weight_decay", "momentum", "epochs", "warmup_epochs"))
    line = refuse(tmp_path, monkeypatch, capsys, f"name: huge\n{BASE}space:\n{space}")  # counted, none built
    assert line == ("senet-ablate sweep: error: spec.yaml: space: the grid has 100000 arm x seed cells; "
                    f"at most {MAX_ARMS} are allowed; raise the cap with --max-arms 100000")


def test_seed_count_over_the_cap_is_refused_before_the_seeds_are_listed(tmp_path, monkeypatch, capsys):
    line = refuse(tmp_path, monkeypatch, capsys, f"name: s\n{BASE}space: {{model.se.reduction: [4, 8]}}\n"
                                                 "seeds: 1000000000000\n")
    assert "the grid has 2000000000000 arm x seed cells" in line
    assert line.endswith(f"no cap goes above {MAX_ARMS_CEILING}: split the grid into several specs, or sample it "
                         "(sampler: tpe, budget: {n_trials: N})")


@pytest.mark.parametrize("cap", ["0", str(MAX_ARMS_CEILING + 1), "1000000000000000"])
def test_max_arms_beyond_its_range_is_one_line(tmp_path, monkeypatch, capsys, cap):
    line = refuse(tmp_path, monkeypatch, capsys, GRID_1000, "--max-arms", cap)
    assert line == (f"senet-ablate sweep: error: --max-arms={cap} is not allowed; it must be an integer in "
                    f"[1, {MAX_ARMS_CEILING}] (each cell is held in memory as its config before the first trial)")


def test_int_range_counts_exactly_after_parsing(tmp_path, monkeypatch, capsys):
    line = refuse(tmp_path, monkeypatch, capsys, f"name: r\n{BASE}space:\n  train.epochs: {{type: int, low: 1, "
                                                 "high: 30}\n  model.se.reduction: [4, 8]\nseeds: 3\n", "--max-arms",
                  "100")
    assert "the grid has 180 arm x seed cells; at most 100 are allowed; raise the cap with --max-arms 180" in line


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_specs_are_far_under_the_bounds(path):
    assert path.stat().st_size < MAX_BYTES // 20
    raw = read_yaml(path)
    for variant in [None, *(raw.get("variants") or {})]:
        checked = preflight(raw, variant)
        if named("sampler", checked.raw.get("sampler"), SAMPLERS, "grid")["type"] != "grid":
            continue  # a sampled study enumerates nothing; its budget is n_trials
        space = checked.raw["space"]
        counts = listed_counts(space)
        assert len(counts) == len(space)  # every key a list, so the count is exact
        cells = count_cells(counts, checked.raw.get("baseline", False), seed_count(checked.raw.get("seeds", 1)),
                            is_se_key)
        assert cells * 100 <= MAX_ARMS, (variant, cells)


def test_ticking_prints_nothing_for_a_small_grid_and_progress_for_a_large_one(capsys, monkeypatch):
    assert list(ticker.ticking(list(range(ticker.LARGE_GRID - 1)), "checking")) == list(range(ticker.LARGE_GRID - 1))
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(ticker, "EVERY_S", 0.0)
    total = ticker.LARGE_GRID
    assert len(list(ticker.ticking(list(range(total)), "enqueueing"))) == total
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"enqueueing {total} grid cells (arm x seed) ..."
    assert lines[1] == f"enqueueing: 1/{total} cells" and lines[-1] == f"enqueueing: {total}/{total} cells done"


@pytest.mark.slow
def test_max_arms_raises_the_cap_and_a_large_grid_reports_progress(tmp_path, monkeypatch, capsys):
    line = refuse(tmp_path, monkeypatch, capsys, GRID_1000, "--max-arms", "999")
    assert "the grid has 1000 arm x seed cells; at most 999 are allowed; raise the cap with --max-arms 1000" in line
    assert main(["sweep", "spec.yaml", "--dry-run", "--max-arms", "1000"]) == 0
    out = capsys.readouterr()
    assert "1000 trials (arm x seed):" in out.out
    err = out.err.splitlines()
    for doing in ("checking", "listing"):
        assert f"{doing} 1000 grid cells (arm x seed) ..." in err and f"{doing}: 1000/1000 cells done" in err


# The same bound on a YAML file the project did not write: a run folder's config.yaml in a shared output folder.
CLAIM = textwrap.dedent("""
    import re, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # torch's own mappings fit; an expanding bomb does not
    from ablations.config import ExperimentConfig
    from ablations.naming import folder_name
    name = folder_name(ExperimentConfig(output_dir=sys.argv[1]), "run")
    print(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1), name)
""")


def test_an_alias_bomb_as_a_run_folders_config_is_not_expanded(tmp_path):
    (tmp_path / "run").mkdir()
    # Shaped as an experiment (only known keys), so its one bad field is the whole bomb: a message that quotes it
    # would expand it.
    lines = ["seed:", "  - &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "run" / "config.yaml").write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-c", CLAIM, str(tmp_path)], cwd=ROOT, check=False, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    peak_kib, name = done.stdout.split()
    assert name.startswith("run-")  # not the folder's experiment: the run goes beside it, the folder is untouched
    assert int(peak_kib) < 1024 * 1024, f"peak memory {int(peak_kib) // 1024} MiB"
