"""The README quotes the committed results' computed conclusions word for word (never a hand-written summary)."""
from __future__ import annotations

from pathlib import Path

from ablations.reporting.verdicts import README_BLOCK, quote_conclusions

ROOT = Path(__file__).resolve().parent.parent


def test_readme_quotes_match_the_committed_summaries():
    readme = (ROOT / "README.md").read_text()
    assert {m["name"] for m in README_BLOCK.finditer(readme)} >= {"quickstart", "fashion-mnist"}
    assert quote_conclusions(readme, ROOT) == readme, "run: python -m ablations.reporting.verdicts"


def test_quote_replaces_the_block_body(tmp_path):
    (tmp_path / "results" / "x").mkdir(parents=True)
    (tmp_path / "results" / "x" / "summary.json").write_text('{"conclusion": "A differs.\\n\\nB does not."}')
    text = "intro\n<!-- x-conclusion: note -->\n> old\n<!-- /x-conclusion -->\nend\n"
    assert quote_conclusions(text, tmp_path) == "intro\n<!-- x-conclusion: note -->\n> A differs.\n>\n> B does not.\n<!-- /x-conclusion -->\nend\n"
