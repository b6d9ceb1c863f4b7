"""ForecastLedger: the forecasts an item still has to be scored on.

A forecast made at origin o covers targets o+1..o+H. The ledger keeps the last H
forecasts in a ring indexed by origin, so when day D closes every earlier forecast of D
(origins D-H..D-1) is at hand, without re-reading anything.

Values are kept exactly as published: published forecasts have ``DECIMALS`` decimals, so
the ledger holds integer thousandths of a unit, as increments over the quantile below
(quantiles never cross, so they are small and non-negative) in 16 bits while every one
fits, else 32 or 64. The increments are the serialised form too, so reading and writing a
ledger is a copy, and a close touches only the cells it scores and the slot it records:
14 kB an item instead of the 28 kB of float32 it was, most of an item's changelog record.
(zlib would halve it again, at 200 µs an item per close: three times the model's cost.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mqstream.models.protocol import TargetErrors

NO_ORIGIN = -1
DECIMALS = 3  # of every published forecast value
SCALE = 10**DECIMALS
MAX_UNITS = np.iinfo(np.int32).max / SCALE  # forecasts are clipped to this (±)
WIDTHS = (np.uint16, np.int32, np.int64)  # the narrowest that holds every increment is used


def published(values: np.ndarray) -> np.ndarray:
    """Model output as it is published, and kept: rounded to ``DECIMALS``, within ±``MAX_UNITS``."""
    return np.round(np.clip(np.asarray(values, np.float64), -MAX_UNITS, MAX_UNITS), DECIMALS)


@dataclass
class ForecastLedger:
    origins: np.ndarray  # (H,) int32, NO_ORIGIN where empty; slot = origin % H
    increments: np.ndarray  # (H, H, Q) thousandths over the quantile below: slot, horizon-1, quantile

    @classmethod
    def empty(cls, horizons: int, n_quantiles: int) -> "ForecastLedger":
        return cls(np.full(horizons, NO_ORIGIN, np.int32),
                   np.zeros((horizons, horizons, n_quantiles), WIDTHS[0]))

    @property
    def horizons(self) -> int:
        return len(self.origins)

    def record(self, origin: int, values: np.ndarray) -> None:
        """Keep a forecast as published (``values`` (H, Q) from ``published``)."""
        units = np.rint(values * SCALE).astype(np.int64)
        step = np.diff(units, axis=-1, prepend=0)
        width = _narrowest(int(step.min()), int(step.max()))
        if np.dtype(width).itemsize > self.increments.itemsize:
            self.increments = self.increments.astype(width)
        slot = origin % self.horizons
        self.origins[slot] = origin
        self.increments[slot] = step

    def score(self, target: int, actual: float) -> TargetErrors | None:
        """Every kept forecast of ``target``, oldest origin first, against ``actual``; None
        where none is kept."""
        origins = np.arange(target - self.horizons, target)
        slots = origins % self.horizons
        kept = (origins >= 0) & (self.origins[slots] == origins)
        if not kept.any():
            return None
        cells = self.increments[slots[kept], target - origins[kept] - 1]  # (n, Q)
        return TargetErrors(target, actual, origins[kept], np.cumsum(cells, axis=-1, dtype=np.int64) / SCALE)

    def latest(self, before: int | None = None) -> tuple[int, np.ndarray] | None:
        """(origin, (H, Q) values as published) of the newest kept forecast, or of the newest
        before ``before``."""
        kept = self.origins[self.origins != NO_ORIGIN]
        if before is not None:
            kept = kept[kept < before]
        if not len(kept):
            return None
        origin = int(kept.max())
        return origin, np.cumsum(self.increments[origin % self.horizons], axis=-1, dtype=np.int64) / SCALE

    def to_bytes(self) -> bytes:
        return b"".join((self.origins.tobytes(), bytes([self.increments.itemsize]), self.increments.tobytes()))

    @staticmethod
    def last_origin_of(raw: bytes, horizons: int) -> int:
        """The newest origin kept (NO_ORIGIN if none) without decoding the rest."""
        return int(np.frombuffer(raw, np.int32, count=horizons).max())

    @classmethod
    def from_bytes(cls, raw: bytes, horizons: int, n_quantiles: int) -> "ForecastLedger":
        split = horizons * 4
        width = next(w for w in WIDTHS if np.dtype(w).itemsize == raw[split])
        increments = np.frombuffer(raw, width, offset=split + 1).reshape(horizons, horizons, n_quantiles)
        return cls(np.frombuffer(raw, np.int32, count=horizons).copy(), increments.copy())


def _narrowest(low: int, high: int) -> type:
    return next(w for w in WIDTHS if np.iinfo(w).min <= low and high <= np.iinfo(w).max)

