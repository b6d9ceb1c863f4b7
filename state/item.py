"""One item's state, as two table values written at different paces.

``ItemState`` changes with every event, so it stays small: the open days' buckets, the
event ids already applied to them (so a redelivered event is recognised, also after a
restart) and the last ``history_days`` closed days. ``ItemModel`` changes once per closed
day: the model's state and the ledger of forecasts still to be scored. Each is written
back whole, so a changelog message is always a consistent snapshot of its part. A day here
is a period of the worker's cadence (``mqstream.periods``): a day, or a week.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

from mqstream.periods import DAILY, Cadence
from mqstream.models.protocol import ItemInfo

# bucket columns; history keeps the first three. The day's price is that of its latest priced
# line (PRICE_TS; ties: the higher price), so it does not depend on the order of arrival.
UNITS, RETURNS, VIEWS, PRICE, PRICE_TS = range(5)
N_HISTORY = 3
_ITEM_HEAD = struct.Struct("<II")  # meta, history byte lengths
_MODEL_HEAD = struct.Struct("<iiI")  # closed_through, last_error_target, model byte length


@dataclass
class ItemState:
    item_id: str
    born: int  # day of its earliest event
    closed_through: int  # last day folded into history (born - 1 before its first close)
    history: np.ndarray  # (history_days, 3) float32: units, returns, views; last row is closed_through
    price: float = 0.0  # the price of the last closed day that had one (0.0 before any)
    description: str = ""  # of its earliest sale that had one (description_ts)
    description_ts: int = 0
    last_event_ts: dict[str, int] = field(default_factory=dict)  # input topic -> newest event time
    open_days: dict[int, list[float]] = field(default_factory=dict)  # day -> bucket (columns above)
    seen: dict[int, list[str]] = field(default_factory=dict)  # day -> applied event ids

    def to_bytes(self) -> bytes:
        # a JSON array of the fields, the dicts as they are (their day keys as strings): built
        # for every item of every batch, so no per-day list is made (a dict of lists cost 2 µs)
        meta = orjson.dumps((self.item_id, self.description, self.description_ts, self.born, self.closed_through,
                             self.price, self.last_event_ts, self.open_days, self.seen), option=orjson.OPT_NON_STR_KEYS)
        history = np.asarray(self.history, np.float32).tobytes()
        return b"".join((_ITEM_HEAD.pack(len(meta), len(history)), meta, history))

    @classmethod
    def from_bytes(cls, raw: bytes) -> "ItemState":
        n_meta, n_history = _ITEM_HEAD.unpack_from(raw)
        start = _ITEM_HEAD.size
        meta = orjson.loads(memoryview(raw)[start : start + n_meta])
        # a read-only view of ``raw``: a close replaces the history, nothing writes into it
        history = np.frombuffer(raw, np.float32, n_history // 4, start + n_meta).reshape(-1, N_HISTORY)
        if type(meta) is dict:
            return cls._from_object(meta, history)
        item_id, description, description_ts, born, closed, price, last_event_ts, open_days, seen = meta
        return cls(item_id=item_id, born=born, closed_through=closed, history=history, price=price,
                   description=description, description_ts=description_ts, last_event_ts=last_event_ts,
                   open_days={int(day): bucket for day, bucket in open_days.items()},
                   seen={int(day): ids for day, ids in seen.items()})

    @classmethod
    def _from_object(cls, meta: dict, history: np.ndarray) -> "ItemState":
        """A state in the earlier format, a JSON object, as changelogs and databases written by
        earlier versions still hold it."""
        return cls(
            item_id=meta["i"], born=meta["b"], closed_through=meta["c"], history=history,
            price=meta["p"], description=meta["d"], description_ts=meta["dt"], last_event_ts=meta["t"],
            open_days={row[0]: row[1:] for row in meta["o"]}, seen=dict(meta["n"]),
        )

    # --- events ---------------------------------------------------------------------------
    def apply(self, source: str, event_id: str, ts: int, amounts: list[tuple[int, float]],
              price: float = 0.0, description: str = "", cadence: Cadence = DAILY) -> bool:
        """Add each (column, amount) to the bucket of the period of ``ts``, unless ``event_id``
        was applied to that period before (then nothing changes: False); the caller checked
        that the period is open for the partition. Every choice here (the period's price, the
        description, the first period) is independent of the order events arrive in."""
        day = cadence.of_ts(ts)
        ids = self.seen.get(day)
        if ids is None:
            ids = self.seen[day] = []
        elif event_id in ids:
            return False
        if day < self.born and self.closed_through == self.born - 1:
            self.born, self.closed_through = day, day - 1  # an earlier event came in later
        bucket = self.open_days.get(day)
        if bucket is None:
            bucket = self.open_days[day] = [0.0] * 5
        for column, amount in amounts:
            bucket[column] += amount
        if price > 0 and (ts, price) > (bucket[PRICE_TS], bucket[PRICE]):
            bucket[PRICE], bucket[PRICE_TS] = price, float(ts)
        if description and (not self.description_ts or (ts, description) < (self.description_ts, self.description)):
            self.description, self.description_ts = description, ts
        ids.append(event_id)
        self.last_event_ts[source] = max(self.last_event_ts.get(source, 0), ts)
        return True

    def launch_info(self, through: int, cadence: Cadence = DAILY) -> ItemInfo:
        """What the model is told of the item when it starts at ``born``, from days up to
        ``through`` only (all of them complete): a close redone after a crash, or run after
        more events of later days arrived, tells the same."""
        first_day = self.open_days.get(self.born, [0.0] * 5)
        described = self.description_ts and cadence.of_ts(self.description_ts) <= through
        return ItemInfo(self.item_id, self.description if described else "", first_day[PRICE])

    # --- closing days ---------------------------------------------------------------------
    def close_next_day(self) -> tuple[int, list[float]]:
        """Fold the day after ``closed_through`` into history; returns (day, bucket)."""
        day = self.closed_through + 1
        bucket = self.open_days.pop(day, None) or [0.0] * 5
        self.seen.pop(day, None)
        history = np.empty((max(len(self.history), 1), N_HISTORY), np.float32)  # a decoded history is read-only
        history[:-1] = self.history[1:]
        history[-1] = bucket[:N_HISTORY]
        self.history, self.closed_through = history, day
        if bucket[PRICE] > 0:
            self.price = float(bucket[PRICE])
        return day, bucket

    def sold_within(self, first: int, last: int) -> bool:
        """Any demand on days first..last, closed or open. Depends only on those days, so
        a close gives the same answer whatever later events have already arrived. Asked
        twice an item at every close, so it reads the days in place (``daily`` builds an array)."""
        if any(first <= day <= last and bucket[UNITS] for day, bucket in self.open_days.items()):
            return True
        lo, hi = self._closed_rows(first, last)
        return lo < hi and bool(self.history[lo:hi, UNITS].any())

    def _closed_rows(self, first: int, last: int) -> tuple[int, int]:
        """The rows [lo, hi) of ``history`` that hold closed days first..last (lo >= hi: none)."""
        n = len(self.history)  # its last row is closed_through
        row = n - 1 - self.closed_through
        return row + max(first, self.born, self.closed_through - n + 1), row + min(last, self.closed_through) + 1

    def daily(self, column: int, first: int, last: int) -> np.ndarray:
        """Totals of one bucket column for days first..last, closed or open (0 where unknown)."""
        out = np.zeros(last - first + 1, np.float64)
        lo, hi = self._closed_rows(first, last)
        if lo < hi:
            start = lo - (len(self.history) - 1 - self.closed_through) - first  # the day of row lo, from first
            out[start : start + hi - lo] = self.history[lo:hi, column]
        for day, bucket in self.open_days.items():
            if first <= day <= last:
                out[day - first] = bucket[column]
        return out


@dataclass
class ItemModel:
    """What the model keeps of an item: its state (``model``), the ledger of forecasts still to
    be scored, and the newest day whose errors it took in. Written before its ``ItemState`` at
    a close, so after a crash it is never behind it (``closed_through`` ≥ the item's)."""

    closed_through: int
    model: bytes
    ledger: bytes
    last_error_target: int = -1  # newest target day whose errors the model has taken in

    def to_bytes(self) -> bytes:
        head = _MODEL_HEAD.pack(self.closed_through, self.last_error_target, len(self.model))
        return b"".join((head, self.model, self.ledger))

    @staticmethod
    def days_of(raw: bytes) -> tuple[int, int]:
        """(closed_through, last_error_target) without decoding the rest: the hot check of
        the errors read back."""
        closed, last_error, _ = _MODEL_HEAD.unpack_from(raw)
        return closed, last_error

    @classmethod
    def from_bytes(cls, raw: bytes) -> "ItemModel":
        closed, last_error, n_model = _MODEL_HEAD.unpack_from(raw)
        start = _MODEL_HEAD.size
        return cls(closed, raw[start : start + n_model], raw[start + n_model :], last_error)
