"""ForecastLedger: the forecasts an item still has to be scored on.

A forecast made at origin o covers targets o+1..o+H. The ledger keeps the last H
forecasts in a ring indexed by origin, so when day D closes every earlier forecast of D
(origins D-H..D-1) is at hand, without re-reading anything.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.protocol import ErrorRecord

NO_ORIGIN = -1


@dataclass
class ForecastLedger:
    origins: np.ndarray  # (H,) int32, NO_ORIGIN where empty; slot = origin % H
    values: np.ndarray  # (H, H, Q) float32: slot, horizon-1, quantile

    @classmethod
    def empty(cls, horizons: int, n_quantiles: int) -> "ForecastLedger":
        return cls(np.full(horizons, NO_ORIGIN, np.int32),
                   np.zeros((horizons, horizons, n_quantiles), np.float32))

    @property
    def horizons(self) -> int:
        return len(self.origins)

    def record(self, origin: int, values: np.ndarray) -> None:
        slot = origin % self.horizons
        self.origins[slot] = origin
        self.values[slot] = values

    def forecasts_of(self, target: int) -> list[tuple[int, np.ndarray]]:
        """(origin, quantiles) of every kept forecast of ``target``, oldest origin first."""
        found = []
        for origin in range(target - self.horizons, target):
            slot = origin % self.horizons
            if origin >= 0 and self.origins[slot] == origin:
                found.append((origin, self.values[slot, target - origin - 1]))
        return found

    def score(self, target: int, actual: float) -> list[ErrorRecord]:
        return [ErrorRecord(origin, target, actual, q.copy()) for origin, q in self.forecasts_of(target)]

    def last_origin(self) -> int:
        return int(self.origins.max())

    def latest(self, before: int | None = None) -> tuple[int, np.ndarray] | None:
        """(origin, (H, Q) values) of the newest kept forecast, or of the newest before ``before``."""
        kept = self.origins[self.origins != NO_ORIGIN]
        if before is not None:
            kept = kept[kept < before]
        if not len(kept):
            return None
        origin = int(kept.max())
        return origin, self.values[origin % self.horizons]

    def to_bytes(self) -> bytes:
        return self.origins.tobytes() + self.values.tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes, horizons: int, n_quantiles: int) -> "ForecastLedger":
        split = horizons * 4
        origins = np.frombuffer(raw[:split], np.int32).copy()
        values = np.frombuffer(raw[split:], np.float32).reshape(horizons, horizons, n_quantiles).copy()
        return cls(origins, values)


def pinball(actual: float, forecast: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Pinball loss per quantile: max(q·(y−f), (q−1)·(y−f))."""
    diff = actual - forecast
    return np.maximum(quantiles * diff, (quantiles - 1.0) * diff)
