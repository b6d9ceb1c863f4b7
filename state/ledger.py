"""ForecastLedger: the forecasts an item still has to be scored on.

A forecast made at origin o covers targets o+1..o+H. The ledger keeps the last H
forecasts in a ring indexed by origin, so when day D closes every earlier forecast of D
(origins D-H..D-1) is at hand, without re-reading anything.

Values are kept exactly as published: published forecasts have ``DECIMALS`` decimals, so
the ledger holds integer thousandths of a unit. Serialised, a forecast's quantiles are
stored as increments over the quantile below (quantiles never cross, so they are small
and non-negative) in 16 bits where every one fits, else 32 or 64: 14 kB an item instead
of the 28 kB of float32 it was, and it is most of an item's changelog record. (zlib would
halve it again, at 200 µs an item per close: three times the model's own cost.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.protocol import ErrorRecord

NO_ORIGIN = -1
DECIMALS = 3  # of every published forecast value
SCALE = 10**DECIMALS
MAX_UNITS = np.iinfo(np.int32).max / SCALE  # kept as int32 thousandths; forecasts are clipped to it
WIDTHS = (np.uint16, np.int32, np.int64)  # narrowest that holds every increment is stored


@dataclass
class ForecastLedger:
    origins: np.ndarray  # (H,) int32, NO_ORIGIN where empty; slot = origin % H
    values: np.ndarray  # (H, H, Q) int32 thousandths: slot, horizon-1, quantile

    @classmethod
    def empty(cls, horizons: int, n_quantiles: int) -> "ForecastLedger":
        return cls(np.full(horizons, NO_ORIGIN, np.int32),
                   np.zeros((horizons, horizons, n_quantiles), np.int32))

    @property
    def horizons(self) -> int:
        return len(self.origins)

    def record(self, origin: int, values: np.ndarray) -> None:
        """Keep a forecast as published (``values`` (H, Q), rounded to ``DECIMALS``, within
        ±``MAX_UNITS``)."""
        slot = origin % self.horizons
        self.origins[slot] = origin
        self.values[slot] = np.clip(np.rint(np.asarray(values, np.float64) * SCALE), -MAX_UNITS * SCALE, MAX_UNITS * SCALE)

    def forecasts_of(self, target: int) -> list[tuple[int, np.ndarray]]:
        """(origin, quantiles as published) of every kept forecast of ``target``, oldest origin first."""
        found = []
        for origin in range(target - self.horizons, target):
            slot = origin % self.horizons
            if origin >= 0 and self.origins[slot] == origin:
                found.append((origin, self.values[slot, target - origin - 1] / SCALE))
        return found

    def score(self, target: int, actual: float) -> list[ErrorRecord]:
        return [ErrorRecord(origin, target, actual, q) for origin, q in self.forecasts_of(target)]

    def last_origin(self) -> int:
        return int(self.origins.max())

    def latest(self, before: int | None = None) -> tuple[int, np.ndarray] | None:
        """(origin, (H, Q) values as published) of the newest kept forecast, or of the newest
        before ``before``."""
        kept = self.origins[self.origins != NO_ORIGIN]
        if before is not None:
            kept = kept[kept < before]
        if not len(kept):
            return None
        origin = int(kept.max())
        return origin, self.values[origin % self.horizons] / SCALE

    def to_bytes(self) -> bytes:
        return encode_all([self])[0]

    @classmethod
    def from_bytes(cls, raw: bytes, horizons: int, n_quantiles: int) -> "ForecastLedger":
        return decode_all([raw], horizons, n_quantiles)[0]


def encode_all(ledgers: Sequence[ForecastLedger], chunk: int = 1024) -> list[bytes]:
    """Serialise ledgers, ``chunk`` at a time: per ledger, numpy's fixed cost was a tenth of a close."""
    out = []
    for start in range(0, len(ledgers), chunk):
        part = ledgers[start : start + chunk]
        values = np.stack([ledger.values for ledger in part]).astype(np.int64)  # (n, H, H, Q)
        increments = np.diff(values, axis=3, prepend=0).reshape(len(part), -1)
        low, high = increments.min(axis=1), increments.max(axis=1)
        narrow = increments.astype(WIDTHS[0])
        for i, ledger in enumerate(part):
            width = next(w for w in WIDTHS if np.iinfo(w).min <= low[i] and high[i] <= np.iinfo(w).max)
            body = narrow[i] if width is WIDTHS[0] else increments[i].astype(width)
            out.append(ledger.origins.tobytes() + bytes([np.dtype(width).itemsize]) + body.tobytes())
    return out


def decode_all(raws: Sequence[bytes], horizons: int, n_quantiles: int) -> list[ForecastLedger]:
    """The ledgers of ``raws``; those stored in 16 bits (nearly all) are decoded together."""
    split, shape = horizons * 4, (horizons, horizons, n_quantiles)
    narrow = [i for i, raw in enumerate(raws) if raw[split] == np.dtype(WIDTHS[0]).itemsize]
    joined = np.frombuffer(b"".join(raws[i][split + 1 :] for i in narrow), WIDTHS[0])
    values = dict(zip(narrow, np.cumsum(joined.reshape(-1, *shape), axis=3, dtype=np.int32)))
    ledgers = []
    for i, raw in enumerate(raws):
        if i not in values:
            width = next(w for w in WIDTHS if np.dtype(w).itemsize == raw[split])
            increments = np.frombuffer(raw[split + 1 :], width).reshape(shape)
            values[i] = np.cumsum(increments, axis=2, dtype=np.int64).astype(np.int32)
        ledgers.append(ForecastLedger(np.frombuffer(raw[:split], np.int32).copy(), values[i]))
    return ledgers


def pinball(actual: float, forecast: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Pinball loss per quantile: max(q·(y−f), (q−1)·(y−f))."""
    diff = actual - forecast
    return np.maximum(quantiles * diff, (quantiles - 1.0) * diff)
