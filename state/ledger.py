"""Ledgers: the forecasts each item still has to be scored on, for a batch of items at once.

A forecast made at origin o covers targets o+1..o+H. An item's ledger keeps its last H
forecasts in a ring indexed by origin, so when day D closes every earlier forecast of D
(origins D-H..D-1) is at hand, without re-reading anything. A close decodes the ledgers of
all its items into one array and scores, reads and records them in whole-batch operations.

Values are kept exactly as published: published forecasts have ``DECIMALS`` decimals, so a
ledger holds integer thousandths of a unit, as increments over the quantile below
(quantiles never cross, so they are small and non-negative) in 16 bits while every one of
the item's fits, else 32 or 64. The increments are the serialised form too, so reading and
writing ledgers is a copy: 14 kB an item instead of the 28 kB of float32 it was, most of an
item's changelog record. (zlib would halve it again, at 200 µs an item per close: three
times the model's cost.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from mqstream.models.protocol import TargetErrors

NO_ORIGIN = -1
DECIMALS = 3  # of every published forecast value
SCALE = 10**DECIMALS
MAX_UNITS = np.iinfo(np.int32).max / SCALE  # forecasts are clipped to this (±)
WIDTHS = (np.uint16, np.int32, np.int64)  # the narrowest that holds every increment is used
NARROW = np.dtype(WIDTHS[0]).itemsize


def published(values: np.ndarray) -> np.ndarray:
    """Model output as it is published, and kept: rounded to ``DECIMALS``, within ±``MAX_UNITS``."""
    return np.round(np.clip(np.asarray(values, np.float64), -MAX_UNITS, MAX_UNITS), DECIMALS)


@dataclass
class Ledgers:
    """Row i is item i's ledger. Rows whose increments all fit 16 bits live in one block; the
    few wider ones (a top seller's) each in an array of their own width, so one of them never
    doubles the block of a whole close."""

    origins: np.ndarray  # (B, H) int32, NO_ORIGIN where empty; slot = origin % H
    increments: np.ndarray  # (B, H, H, Q) uint16 thousandths over the quantile below: row, slot, horizon-1, quantile
    # row -> (H, H, Q) int32 or int64, for the rows wider than 16 bits; a row widens, never narrows
    wide: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int, horizons: int, n_quantiles: int) -> "Ledgers":
        return cls(np.full((n, horizons), NO_ORIGIN, np.int32), np.zeros((n, horizons, horizons, n_quantiles), WIDTHS[0]))

    @property
    def horizons(self) -> int:
        return self.origins.shape[1]

    def record(self, rows: Sequence[int], origin: int, values: np.ndarray) -> None:
        """Keep each row's forecast from ``origin`` as published (``values`` (n, H, Q) from ``published``)."""
        rows = np.asarray(rows, np.intp)
        if not len(rows):
            return
        units = np.rint(np.asarray(values) * SCALE).astype(np.int64)
        step = units.copy()
        step[..., 1:] -= units[..., :-1]
        needed = _narrowest(step.reshape(len(step), -1))
        wide = (needed > NARROW) | np.isin(rows, list(self.wide))
        slot = origin % self.horizons
        self.origins[rows, slot] = origin
        self.increments[rows[~wide], slot] = step[~wide]
        for k in np.flatnonzero(wide).tolist():
            row = int(rows[k])
            own = self._row(row)
            if needed[k] > own.itemsize:
                own = own.astype(_width_of(int(needed[k])))
            own[slot] = step[k]
            self.wide[row] = own

    def score(self, rows: Sequence[int], target: int, actuals: Sequence[float]) -> list[TargetErrors | None]:
        """Each row's kept forecasts of ``target``, oldest origin first, against its actual;
        None for a row that keeps none."""
        origins = np.arange(target - self.horizons, target)
        slots, horizon_index = origins % self.horizons, target - origins - 1
        rows = np.asarray(rows, np.intp)
        kept = (origins >= 0) & (self.origins[rows[:, None], slots] == origins)  # (n, H)
        cells = self._gather(rows, self.increments[rows[:, None], slots, horizon_index],
                             lambda wide, k: wide[slots, horizon_index])
        values = np.cumsum(cells, axis=-1) / SCALE  # (n, H, Q)
        return [TargetErrors(target, actual, origins[k], v[k]) if k.any() else None
                for actual, k, v in zip(actuals, kept, values, strict=True)]

    def latest(self, rows: Sequence[int], before: int | None = None) -> list[tuple[int, np.ndarray] | None]:
        """Each row's (origin, (H, Q) values as published) of its newest kept forecast, or of
        its newest before ``before``; None for a row that keeps none."""
        rows = np.asarray(rows, np.intp)
        origins = self.origins[rows]
        kept = origins != NO_ORIGIN if before is None else (origins != NO_ORIGIN) & (origins < before)
        newest = np.where(kept, origins, NO_ORIGIN).max(axis=1, initial=NO_ORIGIN)
        slots = newest % self.horizons
        values = np.cumsum(self._gather(rows, self.increments[rows, slots], lambda wide, k: wide[slots[k]]), axis=-1) / SCALE
        return [None if origin == NO_ORIGIN else (origin, v) for origin, v in zip(newest.tolist(), values)]

    def to_bytes(self) -> list[bytes]:
        """Each row serialised: its origins, its width, its increments in that width."""
        return [b"".join((origins.tobytes(), bytes([increments.itemsize]), increments.tobytes()))
                for origins, increments in zip(self.origins, map(self._row, range(len(self.origins))))]

    def _row(self, row: int) -> np.ndarray:
        return self.wide.get(row, self.increments[row])

    def _gather(self, rows: np.ndarray, cells: np.ndarray, pick: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
        """``cells`` (n, ...) taken from the 16-bit block for ``rows``, as int64, with each wide
        row's own (``pick(its array, k)`` for the k-th row) in its place."""
        cells = cells.astype(np.int64)
        if self.wide:
            for k, row in enumerate(rows.tolist()):
                if row in self.wide:
                    cells[k] = pick(self.wide[row], k)
        return cells

    @staticmethod
    def last_origin_of(raw: bytes, horizons: int) -> int:
        """The newest origin an item's serialised ledger keeps (NO_ORIGIN if none) without decoding the rest."""
        return int(np.frombuffer(raw, np.int32, count=horizons).max())

    @classmethod
    def from_bytes(cls, raws: Sequence[bytes], horizons: int, n_quantiles: int) -> "Ledgers":
        """The ledgers of many items, each as ``to_bytes`` wrote it."""
        split, shape = horizons * 4, (horizons, horizons, n_quantiles)
        ledgers = cls(np.empty((len(raws), horizons), np.int32), np.zeros((len(raws), *shape), WIDTHS[0]))
        for row, raw in enumerate(raws):
            ledgers.origins[row] = np.frombuffer(raw, np.int32, count=horizons)
            increments = np.frombuffer(raw, _width_of(raw[split]), offset=split + 1).reshape(shape)
            if raw[split] == NARROW:
                ledgers.increments[row] = increments
            else:
                ledgers.wide[row] = increments.copy()
        return ledgers

    @staticmethod
    @lru_cache(maxsize=16)
    def empty_bytes(horizons: int, n_quantiles: int) -> bytes:
        """One item's serialised empty ledger: every new item model starts with one."""
        return Ledgers.empty(1, horizons, n_quantiles).to_bytes()[0]


@lru_cache(maxsize=8)
def _width_of(itemsize: int) -> type:
    return next(w for w in WIDTHS if np.dtype(w).itemsize >= itemsize)


def _narrowest(rows: np.ndarray) -> np.ndarray:
    """(n,) the bytes of the narrowest of ``WIDTHS`` that holds every value of each row of ``rows`` (n, k)."""
    low, high = rows.min(1, initial=0), rows.max(1, initial=0)
    needed = np.full(len(rows), np.dtype(WIDTHS[-1]).itemsize, np.uint8)
    for width in reversed(WIDTHS[:-1]):
        fits = (np.iinfo(width).min <= low) & (high <= np.iinfo(width).max)
        needed[fits] = np.dtype(width).itemsize
    return needed

