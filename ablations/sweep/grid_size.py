"""The size of a grid sweep and the cap on it, counted from the space's list lengths before any arm is built.

A grid's cells are the product of its parameters' value counts (plus the no-SE baseline's, crossed with
the other keys only) times the seeds. Each cell is resolved into a config when the spec is checked, listed,
enqueued and reported (a few ms each), so a grid of 10**5 cells spends minutes before the first trial; the
cap refuses it while the spec is read, with the count and the flag that raises the cap.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: The default cap on a grid's arm x seed cells (``--max-arms``). The shipped specs have at most 15 (and 48
#: sampled trials); 10,000 cells take about a minute to check and list on one core.
MAX_ARMS = 10_000

#: The most ``--max-arms`` may raise the cap to: every cell is held in memory as its config before the first
#: trial (about a minute per 10,000 cells), so a larger grid is several specs, or a sampled space.
MAX_ARMS_CEILING = 1_000_000


def count_cells(counts: Mapping[str, int], baseline: bool, n_seeds: int, se_key) -> int:
    """Arm x seed cells of a grid whose keys have ``counts`` values each; ``se_key(key)`` tells the SE knobs,
    which the no-SE baseline (``baseline``) lacks."""
    arms = math.prod(counts.values())
    if baseline:
        arms += math.prod(n for k, n in counts.items() if not se_key(k))
    return arms * n_seeds


def check_cap(cells: int, max_arms: int, *, at_least: bool = False) -> None:
    """Refuse a grid of more than ``max_arms`` cells, naming the count and the flag that raises the cap."""
    if cells > max_arms:
        fix = (f"raise the cap with --max-arms {cells}" if cells <= MAX_ARMS_CEILING else
               f"no cap goes above {MAX_ARMS_CEILING}: split the grid into several specs, or sample it "
               "(sampler: tpe, budget: {n_trials: N})")
        raise ValueError(f"space: the grid has {'at least ' if at_least else ''}{cells} arm x seed cells; at most "
                         f"{max_arms} are allowed; {fix}")


def listed_counts(space_raw: Mapping[str, Any]) -> dict[str, int]:
    """Value counts of the space's categorical lists as written (``key: [...]`` or ``{values: [...]}``), read
    before the values are checked; keys of other forms (int ranges, mistakes) are left out, so the cells these
    counts give are a lower bound of the grid's."""
    out = {}
    for key, raw in space_raw.items():
        values = raw.get("values") if isinstance(raw, dict) else raw
        if isinstance(values, list):
            out[key] = len(values)
    return out


def seed_count(raw: Any) -> int:
    """The seeds a spec's ``seeds:`` names as written (a count or a list; 1 for a mistake, which
    ``fields.parse_seeds`` reports), read before ``range(seeds)`` is listed."""
    if isinstance(raw, list):
        return len(raw)
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1 else 1
