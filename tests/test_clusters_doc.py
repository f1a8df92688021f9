"""docs/clusters.md: its `wandb sync` line, run as written, finds every offline W&B run of a study.

The study tree is laid out as the project writes it: one folder per run under ``runs/<study>/``, each with
``wandb/offline-run-<time>-<id>/``; a resumed run has two such folders with one id; the quickstart's
comparison run sits in ``runs/<study>/wandb/``. The runs are real offline ``wandb.init`` runs.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "clusters.md"

_MAKE_RUNS = """
import sys, time, wandb
for run_dir, rid in zip(sys.argv[1::2], sys.argv[2::2]):
    run = wandb.init(mode="offline", id=rid, resume="allow", dir=run_dir, project="senet-ablations",
                     settings=wandb.Settings(silent=True, console="off"))
    run.log({"val/top1": 0.5})
    run.finish()
    time.sleep(1.1)  # offline folders are named by the second they start in
"""


def _sync_lines() -> list[str]:
    block = re.search(r"```bash\n(STUDY=.*?)```", DOC.read_text(), re.DOTALL)
    assert block, "docs/clusters.md lost its wandb sync block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_the_documented_wandb_sync_line_finds_every_run_of_a_study_including_resumed_ones(tmp_path):
    study = tmp_path / "runs" / "digits-reduction"
    layout = [(study / "se_resnet20_cifar-r8_digits_s0", "aaaa0001"),
              (study / "se_resnet20_cifar-r8_digits_s0", "aaaa0001"),  # resumed: a second attempt, same id
              (study / "resnet20_cifar_digits_s1", "bbbb0002"),
              (study, "cccc0003")]  # a study-level comparison run
    for d, _ in layout:
        d.mkdir(parents=True, exist_ok=True)
    args = [str(a) for pair in layout for a in pair]
    env = {**os.environ, "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", _MAKE_RUNS, *args], check=True, env=env, timeout=300)
    made = sorted(str(p.relative_to(tmp_path)) for p in study.rglob("run-*.wandb"))
    assert len(made) == 4 and sum("aaaa0001" in m for m in made) == 2

    dry_run = [line for line in _sync_lines() if "--dry-run" in line or line.startswith("STUDY=")]
    bin_dir = str(Path(sys.executable).parent)  # the venv's wandb
    out = subprocess.run(["bash", "-ec", "\n".join(dry_run)], check=False, cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "PATH": bin_dir + os.pathsep + env["PATH"]}, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "Would sync 4 run(s)" in text
    for m in made:
        assert m in text, f"{m} not found by the documented command:\n{text}"
    # both attempts of the resumed run are listed in time order (sort -z), the order wandb uploads them in
    first, second = sorted(m for m in made if "aaaa0001" in m)
    assert text.index(first) < text.index(second)
