"""PartitionClock: the event-time watermark of one partition and the periods it has closed.

Sales and page views arrive on separate topics that a worker consumes at different paces
(a whole fetched batch of one before any of the other), so each input keeps its own
watermark (its newest event time) and the partition's watermark is the lowest of them: a
period (a day or a week, ``mqstream.periods``) closes only when every required input has
passed it, and nothing closes before each has spoken. An input without data holds closes
back until a watermark marker speaks for it. Period P closes once that watermark passes the
end of P plus the allowed lateness; events of P arriving before that are applied, later
ones are too late.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from mqstream.periods import DAILY, Cadence


def closed_through(watermark: int, lateness: int, cadence: Cadence = DAILY) -> int:
    """Last period whose end plus ``lateness`` seconds the watermark has reached."""
    return int(cadence.of_ts(watermark - lateness)) - 1


@dataclass
class PartitionClock:
    lateness: int
    required: tuple[str, ...] = ()  # inputs that must have spoken before any period closes
    inputs: dict[str, int] = field(default_factory=dict)  # input name -> newest event time
    cadence: Cadence = DAILY
    # derived from inputs, kept as they change: asked for every event (a tenth of ingest CPU)
    _required: frozenset[str] = field(init=False, repr=False)
    _closed: int = field(init=False, repr=False)
    _newest: int = field(init=False, repr=False)
    _next_close: int = field(init=False, repr=False)  # the least watermark that closes another period

    def __post_init__(self):
        self._required = frozenset(self.required)
        self._derive()

    @property
    def watermark(self) -> int:
        if not self.inputs.keys() >= self._required:
            return 0
        return min(self.inputs.values(), default=0)

    @property
    def newest(self) -> int:
        return self._newest

    @property
    def closed_through(self) -> int:
        return self._closed

    def is_too_late(self, ts: int) -> bool:
        return self.cadence.of_ts(ts) <= self._closed

    def observe(self, source: str, ts: int) -> bool:
        """Advance one input's watermark; True when that closes at least one more period."""
        if ts <= self.inputs.get(source, -1):
            return False  # no new time: nothing can close (most events; the min is not recomputed)
        if source in self.inputs and ts < self._next_close:
            # the watermark, the least input, stays below the next close too: most events in time order
            self.inputs[source] = ts
            self._newest = max(self._newest, ts)
            return False
        first, before = not self.inputs, self._closed
        self.inputs[source] = max(ts, 0)
        self._derive()
        return not first and self._closed > before

    def hold_closed(self, period: int) -> None:
        """Never reopen ``period``: after a restart the watermark is at least its close."""
        if period < 0:
            return
        floor = self.cadence.end_ts(period) + self.lateness
        for source in {*self.inputs, *self.required}:
            self.inputs[source] = max(self.inputs.get(source, 0), floor)
        self._derive()

    def _derive(self) -> None:
        self._closed = closed_through(self.watermark, self.lateness, self.cadence)
        self._newest = max(self.inputs.values(), default=0)
        self._next_close = self.cadence.end_ts(self._closed + 1) + self.lateness


def recovered_clock(lateness: int, required: tuple[str, ...], input_times: Iterable[dict[str, int]],
                    closed: int, cadence: Cadence = DAILY) -> PartitionClock:
    """A partition's clock after a (re)start, from what its tables hold: the newest event time
    of each input, as every item and the watermark markers remember them (``input_times``),
    and ``closed``, the newest period a close finished (-1: none); it is never reopened."""
    clock = PartitionClock(lateness, required, cadence=cadence)
    for times in input_times:
        for source, ts in times.items():
            clock.observe(source, ts)
    clock.hold_closed(closed)
    return clock
