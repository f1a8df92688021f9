"""Progress lines on stderr while a large grid's cells are walked (checked, listed, enqueued).

Each cell is resolved into a config (a few ms), so a grid of thousands of cells is minutes of silence
without them: a large grid prints a line when the walk starts, one every ``EVERY_S`` seconds, and one at
the end. A small grid, done in a second or two, prints nothing.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Grids of at least this many arm x seed cells report progress (about 3 s of work per pass at this size).
LARGE_GRID = 1000
#: Seconds between two progress lines.
EVERY_S = 5.0


def ticking(cells: Sequence[T], doing: str) -> Iterator[T]:
    """Yield ``cells`` in order; for a large grid, print ``doing`` and the count done so far on stderr."""
    total = len(cells)
    if total < LARGE_GRID:
        yield from cells
        return
    print(f"{doing} {total} grid cells (arm x seed) ...", file=sys.stderr, flush=True)
    last = time.monotonic()
    for done, cell in enumerate(cells, 1):
        yield cell
        if done < total and time.monotonic() - last >= EVERY_S:
            print(f"{doing}: {done}/{total} cells", file=sys.stderr, flush=True)
            last = time.monotonic()
    print(f"{doing}: {total}/{total} cells done", file=sys.stderr, flush=True)
