"""A flush of several requests settles request by request: each is acknowledged as soon as the
batches holding its rows have landed, not when the flush's last batch has. Otherwise one partition
whose leader does not answer would hold back every request that merely shared a flush with one
of its rows (and their memory, and their wait=true replies)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.queues import Entry


class Landing:
    """Which of a flush's entries have all their records acknowledged, as batches land.

    The flush numbers its records across its entries in order (entry k holds records
    starts[k] .. starts[k] + rows); a batch reports the record numbers it holds, ascending."""

    __slots__ = ("batches", "entries", "left", "live", "on_landed", "released", "starts", "times")

    def __init__(self, entries: list[Entry], on_landed: Callable[[Landing, list[int]], None]) -> None:
        self.entries = entries
        self.on_landed = on_landed  # told of the entries (by position) whose records all landed
        self.live = True  # False once the flush failed: its unreleased entries are retried
        # set up by the first `landed` (a sink that does not tell never costs more)
        self.starts: list[int] = []  # each entry's first record number
        self.left: list[int] = []  # records not acknowledged yet, per entry
        self.released: list[bool] = []  # settled through `landed` already
        self.batches: list[tuple[int, int, Sequence[int]]] = []  # landed so far
        self.times: list[int] = []  # each landed batch's record timestamp

    def _start(self) -> None:
        n = 0
        for e in self.entries:
            self.starts.append(n)
            n += e.rows
        self.left = [e.rows for e in self.entries]
        self.released = [False] * len(self.entries)

    def landed(self, partition: int, offset: int, indices: Sequence[int], timestamp: int = -1) -> None:
        """A batch of the flush landed at `partition`, `offset`, its records stamped `timestamp`
        (the sink's `on_batch`)."""
        if not self.live or not indices:
            return
        if not self.batches:
            self._start()
        self.batches.append((partition, offset, indices))
        self.times.append(timestamp)
        starts, left, entries = self.starts, self.left, self.entries
        first = bisect.bisect_right(starts, indices[0]) - 1
        last = bisect.bisect_right(starts, indices[-1]) - 1
        whole = isinstance(indices, range)
        done: list[int] = []
        for k in range(first, last + 1):
            lo = starts[k]
            hi = lo + entries[k].rows
            if whole:
                n = min(hi, indices[-1] + 1) - max(lo, indices[0])
            else:
                n = bisect.bisect_left(indices, hi) - bisect.bisect_left(indices, lo)
            if n > 0:
                left[k] -= n
                if not left[k]:
                    self.released[k] = True
                    done.append(k)
        if done:
            self.on_landed(self, done)

    def unreleased(self) -> list[Entry]:
        """The entries not settled through `landed`."""
        if not self.batches:
            return self.entries
        return [e for e, r in zip(self.entries, self.released, strict=True) if not r]
