"""A comparison in plain words, computed from its tests: what the numbers show and where they came from.

The sentences under each table (quickstart, sweep reports, Fashion-MNIST) are made here from
``compare.ArmSummary`` tests and the rows' provenance, never written by hand, so that a table whose
differences are inside seed noise says so, and a table that mixes code commits or machines says that too.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from ablations.reporting.compare import ArmSummary
from ablations.reporting.stats import NONE, POWER
from ablations.training import provenance

NEGLIGIBLE = 0.005  # pp: below the table's precision (float32 accuracies differ by ~1e-6 pp for equal counts)


def _range(values: Sequence[int | None]) -> str:
    """``12``, ``12–140`` or ``more than 10,000`` seeds."""
    finite = sorted(v for v in values if v is not None)
    if not finite:
        return "more than 10,000"
    lo, hi = finite[0], finite[-1]
    text = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
    return text + (" (more than 10,000 for some)" if len(finite) < len(values) else "")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def conclusion(summaries: Sequence[ArmSummary], data: str = "", min_effect: float | None = None) -> str:
    """One paragraph per baseline: which arms differ beyond seed noise, and the seeds it would take to tell.

    Args:
        summaries: ``compare.aggregate`` output (arms with their tests).
        data: where, for the sentence (``on digits``); empty to leave it out.
        min_effect: the Δ (pp) the seeds-needed count refers to; ``None``: each arm's observed |Δ|.
    """
    where = f" on {data}" if data else ""
    bases = {s.key: s for s in summaries if s.is_baseline}
    out = []
    for key, base in bases.items():
        arms = [s for s in summaries if s.baseline_key == key and not s.is_baseline and s.top1_test is not None]
        tested = [s for s in arms if s.top1_test.test != NONE]
        prefix = f"Against {base.label}: " if len(bases) > 1 else ""
        if not tested:
            if arms:
                out.append(f"{prefix}too few seeds to test any arm{where} (a test needs two seeds per arm).")
            continue
        tests = sorted({s.top1_test.test for s in tested})
        n = sorted({s.top1_test.n for s in tested})
        how = f"{' and '.join(tests)}-tests over {'/'.join(map(str, n))} seeds, Holm-adjusted over {len(tested)} arms"
        differ = [s for s in tested if s.verdict in ("better", "worse")]
        same = [s for s in tested if s not in differ]
        parts = []
        for s in differ:
            t = s.top1_test
            parts.append(f"{s.label} is {s.verdict} than the baseline{where} (Δ top-1 error {t.delta:+.2f} pp, "
                         f"95 % CI [{t.ci_low:+.2f}, {t.ci_high:+.2f}], Holm-adjusted p = {_p(t.p_holm)})")
        if same:
            low = min(s.top1_test.p_holm for s in same)
            who = "No SE variant" if not differ else "No other SE variant"
            if len(same) == 1:
                parts.append(f"{same[0].label} does not differ from the baseline beyond seed noise{where} "
                             f"(Δ {same[0].top1_test.delta:+.2f} pp, Holm-adjusted p = {_p(low)})")
            else:
                parts.append(f"{who} differs from the baseline beyond seed noise{where} (Holm-adjusted p ≥ {_p(low)})")
        text = prefix + "; ".join(parts) + f" [{how}]."
        same = [s for s in same if s.top1_test.effect >= NEGLIGIBLE]  # a Δ of 0 is never "detected"
        if same:
            effects = [s.top1_test.effect for s in same]
            size = f"{min_effect:g} pp" if min_effect is not None else (
                f"the observed |Δ| of {min(effects):.2f} pp" if len(same) == 1 else
                f"the observed |Δ| ({min(effects):.2f}–{max(effects):.2f} pp)")
            text += (f" Detecting {size} at {100 * POWER:.0f} % power would take about "
                     f"{_range([s.top1_test.seeds_needed for s in same])} seeds per arm.")
        out.append(text)
    return "\n\n".join(out) or "No arm ran beside its no-SE baseline here: there is no difference to test."


def provenance_line(rows: Sequence[dict]) -> str:
    """One line: the code and environment of every run, or what differs between them."""
    commits = sorted({str(provenance.code_of(r)) for r in rows})
    envs = [r.get("env") for r in rows]
    diffs = provenance.mixed(rows)
    if diffs:
        unknown = "" if any(envs) else "; their environment was not recorded (runs made before it was)"
        return (f"Provenance: these {len(rows)} runs mix {'; '.join(diffs)}: digits may differ for that reason "
                f"alone (see results/README.md, Reproducibility){unknown}.")
    env = next((e for e in envs if e), None)
    code = commits[0] if commits and commits[0] != "None" else "unknown"
    return f"Provenance: all {len(rows)} runs from code {code}; {provenance.describe(env)}."


#: A README block that quotes a committed result's conclusion: ``<!-- NAME-conclusion: ... -->`` to its closing tag.
README_BLOCK = re.compile(r"(?P<open><!-- (?P<name>[\w-]+)-conclusion:[^>]*-->)\n.*?\n"
                          r"(?P<close><!-- /(?P=name)-conclusion -->)", re.DOTALL)


def quote_conclusions(readme: str, root: Path) -> str:
    """``readme`` with each ``<!-- NAME-conclusion: ... -->`` block set to ``root/results/NAME/summary.json``'s conclusion.

    The README quotes the committed results' computed sentences rather than paraphrasing them; a test checks
    that this function leaves the README unchanged. Update with ``python -m ablations.reporting.verdicts``.
    """
    def quote(match: re.Match) -> str:
        summary = root / "results" / match["name"] / "summary.json"
        text = json.loads(summary.read_text())["conclusion"]
        body = "\n>\n".join("> " + para for para in text.split("\n\n"))
        return f"{match['open']}\n{body}\n{match['close']}"

    return README_BLOCK.sub(quote, readme)


def refresh_readme(root: Path) -> None:
    """Rewrite ``root/README.md``'s quotes of ``root/results/*/summary.json``: a maintainer's step, in a clone only."""
    readme = root / "README.md"
    if not (readme.is_file() and (root / "results").is_dir()):
        raise SystemExit(f"{root}: not a clone of senet-ablations (no README.md and results/ there); this refreshes "
                         "the repository README's quotes of the committed results and runs only in a clone")
    readme.write_text(quote_conclusions(readme.read_text(), root))


if __name__ == "__main__":  # python -m ablations.reporting.verdicts, from a clone
    refresh_readme(Path(__file__).resolve().parents[2])
