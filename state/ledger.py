"""Ledgers: the forecasts each item still has to be scored on, for a batch of items at once.

A forecast made at origin o covers targets o+1..o+H. An item's ledger keeps its last H
forecasts in a ring indexed by origin, so when day D closes every earlier forecast of D
(origins D-H..D-1) is at hand, without re-reading anything. A close decodes the ledgers of
all its items into one array and scores, reads and records them in whole-batch operations.

Values are kept exactly as published: published forecasts have ``DECIMALS`` decimals, so a
ledger holds integer thousandths of a unit, as increments over the quantile below
(quantiles never cross, so they are small and non-negative) in 16 bits while every one of
the item's fits, else 32 or 64.

Written, a ledger keeps only what is still needed (``_needed``): the cells whose target has
not closed, those of the last closed target (what `/forecasts/{item}/errors` answers), and
the newest forecast whole (what `/forecasts/{item}` answers). For an item forecast every
day that is 433 of the ring's 784 cells: 7.9 kB an item instead of 14.2. Read back, the
other cells are zeros, and ``score`` answers no target before the last one it closed.
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
PACKED = -2  # the first int32 of a ledger written with only its needed cells (an origin is >= -1)
NOT_CLOSED = np.iinfo(np.int32).min  # a ledger that has closed no target yet keeps every cell


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
    closed: np.ndarray  # (B,) int64: the last target each row scored (NOT_CLOSED before its first)
    # row -> (H, H, Q) int32 or int64, for the rows wider than 16 bits
    wide: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int, horizons: int, n_quantiles: int) -> "Ledgers":
        return cls(np.full((n, horizons), NO_ORIGIN, np.int32), np.zeros((n, horizons, horizons, n_quantiles), WIDTHS[0]),
                   np.full(n, NOT_CLOSED, np.int64))

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
        None for a row that keeps none, or whose ledger has closed a later target (its
        forecasts of earlier targets are gone once written). ``target`` is then the row's
        last closed target."""
        origins = np.arange(target - self.horizons, target)
        slots, horizon_index = origins % self.horizons, target - origins - 1
        rows = np.asarray(rows, np.intp)
        kept = (origins >= 0) & (self.origins[rows[:, None], slots] == origins)  # (n, H)
        kept &= (self.closed[rows] <= target)[:, None]
        self.closed[rows] = np.maximum(self.closed[rows], target)
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
        """Each row serialised with only its ``_needed`` cells: ``PACKED``, its origins, its
        last closed target (int32), the width of its cells (a byte), and the cells in slot,
        horizon order, in the narrowest width that holds them. The 16-bit rows' cells are
        taken in one pass over the block."""
        needed = _needed(self.origins, self.closed)  # (B, H, H)
        n = len(self.origins)
        head_size = 4 * (self.horizons + 2)
        heads = np.column_stack([np.full(n, PACKED), self.origins, self.closed]).astype(np.int32).tobytes()
        sizes = needed.sum((1, 2)) * _cells(self.increments).itemsize
        narrow = memoryview(np.take(_cells(self.increments), np.flatnonzero(needed)).view(np.uint8))  # no copy
        out = []
        for row, (size, end) in enumerate(zip(sizes.tolist(), np.cumsum(sizes).tolist())):
            if row in self.wide:
                cells = self.wide[row][needed[row]]
                cells = cells.astype(_width_of(int(_narrowest(cells.reshape(1, -1))[0])))
                width, body = cells.itemsize, cells.tobytes()
            else:
                width, body = NARROW, narrow[end - size : end]
            out.append(b"".join((heads[row * head_size : (row + 1) * head_size], _WIDTH_BYTE[width], body)))
        return out

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
        head = np.frombuffer(raw, np.int32, count=horizons + 1)
        return int(head[1:].max() if head[0] == PACKED else head[:horizons].max())

    @classmethod
    def from_bytes(cls, raws: Sequence[bytes], horizons: int, n_quantiles: int) -> "Ledgers":
        """The ledgers of many items, each as ``to_bytes`` wrote it, or whole as ledgers were
        written before (origins, width, every cell): those keep every cell until written again."""
        raws = [raw if raw[:4] == _PACKED_BYTES else _repacked(raw, horizons, n_quantiles) for raw in raws]
        head_size = 4 * (horizons + 2)
        ledgers = cls.empty(len(raws), horizons, n_quantiles)
        heads = np.frombuffer(b"".join(raw[:head_size] for raw in raws), np.int32).reshape(len(raws), horizons + 2)
        ledgers.origins[:], ledgers.closed[:] = heads[:, 1:-1], heads[:, -1]
        needed = _needed(ledgers.origins, ledgers.closed)
        narrow = np.frombuffer(bytes(raw[head_size] for raw in raws), np.uint8) == NARROW
        cells = b"".join(memoryview(raw)[head_size + 1 :] for raw, ok in zip(raws, narrow.tolist()) if ok)
        block = _cells(ledgers.increments)
        block[(needed & narrow[:, None, None]).ravel()] = np.frombuffer(cells, block.dtype)  # a third of np.put's time
        for row in np.flatnonzero(~narrow).tolist():
            raw = raws[row]
            ledgers.wide[row] = np.zeros((horizons, horizons, n_quantiles), _width_of(raw[head_size]))
            ledgers.wide[row][needed[row]] = np.frombuffer(raw, ledgers.wide[row].dtype, offset=head_size + 1).reshape(-1, n_quantiles)
        return ledgers

    @staticmethod
    @lru_cache(maxsize=16)
    def empty_bytes(horizons: int, n_quantiles: int) -> bytes:
        """One item's serialised empty ledger: every new item model starts with one."""
        return Ledgers.empty(1, horizons, n_quantiles).to_bytes()[0]


_PACKED_BYTES = np.int32(PACKED).tobytes()
_WIDTH_BYTE = {np.dtype(w).itemsize: bytes([np.dtype(w).itemsize]) for w in WIDTHS}


def _cells(increments: np.ndarray) -> np.ndarray:
    """The (B, H, H, Q) block as a flat array of (B * H * H) cells, each its Q values as one
    opaque element: whole cells are moved at memcpy speed."""
    q = increments.shape[-1]
    return increments.reshape(-1, q).view(np.dtype((np.void, q * increments.itemsize))).ravel()


def _repacked(whole: bytes, horizons: int, n_quantiles: int) -> bytes:
    """A ledger written whole, as before ``PACKED`` (origins, width, every cell), written
    packed with every cell it keeps."""
    origins = np.frombuffer(whole, np.int32, count=horizons)
    width = _width_of(whole[4 * horizons])
    increments = np.frombuffer(whole, width, offset=4 * horizons + 1).reshape(1, horizons, horizons, n_quantiles)
    ledgers = Ledgers(origins[None].copy(), np.zeros(increments.shape, WIDTHS[0]), np.full(1, NOT_CLOSED, np.int64))
    if width == WIDTHS[0]:
        ledgers.increments[:] = increments
    else:
        ledgers.wide[0] = increments[0].copy()
    return ledgers.to_bytes()[0]


def _needed(origins: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """(B, H, H) the cells of each row (slot, horizon) a written ledger keeps: of a kept
    forecast, those whose target is not before the row's last closed target (a suffix of its
    horizons), and all of the newest forecast."""
    horizons = origins.shape[1]
    first = np.clip(closed[:, None] - origins.astype(np.int64) - 1, 0, horizons)  # (B, H) first horizon index kept
    first[origins == origins.max(1, keepdims=True)] = 0
    first[origins == NO_ORIGIN] = horizons
    return np.arange(horizons) >= first[:, :, None]


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

