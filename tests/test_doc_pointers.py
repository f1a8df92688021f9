"""Code points only to files in the repository: every ``docs/FILE.md, Section`` pointer names a file and heading
that exist, and no docstring points to a design document the repository does not have."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POINTER = re.compile(r"docs/([\w-]+\.md)(?:, ([^;)\n]+))?")


def _sources() -> dict[str, str]:
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    me = Path(__file__).resolve().relative_to(ROOT).as_posix()  # its own docstring and patterns name the forms
    return {f: (ROOT / f).read_text() for f in files.split() if f != me and (ROOT / f).is_file()}


def test_every_pointer_names_an_existing_doc_and_section():
    bad = []
    for name, text in _sources().items():
        for doc, section in POINTER.findall(text):
            path = ROOT / "docs" / doc
            if not path.is_file():
                bad.append(f"{name}: docs/{doc} does not exist")
            elif section and not re.search(rf"^#+ {re.escape(section.strip())}\s*$", path.read_text(), re.MULTILINE):
                bad.append(f"{name}: docs/{doc} has no section {section.strip()!r}")
    assert not bad, "\n".join(bad)


def test_no_pointer_to_a_design_document_outside_the_repository():
    stale = [name for name, text in _sources().items() if re.search(r"\bDESIGN: ", text) or "anchors §" in text]
    assert not stale, stale


def test_the_package_code_points_to_no_issue():
    """Issues live in a tracker, not in the repository: the packages' docstrings and comments say the rule instead.
    (Tests may name the issue whose behaviour they hold.)"""
    cited = [name for name, text in _sources().items()
             if name.startswith(("senet/", "ablations/", "benchmarks/")) and re.search(r"\bissues? #?\d+", text, re.I)]
    assert not cited, cited


def test_every_markdown_file_the_code_names_is_in_the_repository():
    """A ``*.md`` the code or the paper's values file names in prose (a transcription or notes kept elsewhere) is a
    pointer outside the repository unless the repository has it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    names = {Path(f).name for f in tracked}
    texts = {**_sources(), "ablations/paper/paper_values.yaml": (ROOT / "ablations/paper/paper_values.yaml").read_text()}
    missing = sorted({f"{name}: {md}" for name, text in texts.items()
                      for md in re.findall(r"(?<![\w./\"'-])[\w./-]+\.md\b", text)  # a quoted name is a file a test makes
                      if Path(md).name not in names})
    assert not missing, missing

