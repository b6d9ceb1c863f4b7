"""Seasonal-naive forecaster with empirical quantiles of its own past errors.

The point forecast for day t + h repeats the same weekday of the last observed week
(lag 7·ceil(h/7) days back from the target); with weeks, the same week a year before
(lag 52). Its spread comes from the errors that the same rule made over the last
``memory`` periods at the same lag: the q-quantile of ``actual − naive`` is added to the
point forecast. Four lags (7, 14, 21, 28) cover horizons 1..28 (one lag, 52, covers 13
weeks), so the state is small and fixed in size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mqstream.models.protocol import DEFAULT_HORIZONS, DEFAULT_QUANTILES, ItemInfo, Period, TargetErrors
from mqstream.periods import DAILY, Cadence


@dataclass(frozen=True)
class SeasonalNaiveConfig:
    horizons: int = DEFAULT_HORIZONS
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    memory: int = 56  # periods of errors per lag: eight weeks of days, enough for a 0.1/0.9 quantile
    cadence: Cadence = DAILY

    @classmethod
    def of(cls, cadence: Cadence) -> "SeasonalNaiveConfig":
        """The defaults for a cadence: 28 days or 13 weeks, errors of eight weeks (days) or a quarter's weeks."""
        return cls(horizons=cadence.default_horizons, memory=56 if cadence.days == 1 else 13, cadence=cadence)


class SeasonalNaive:
    """State layout (float32): ``[periods_seen, history (H_max), errors (L, memory)]`` where the
    history ring holds the last ``n_lags * season`` periods and errors are NaN until observed."""

    name = "seasonal-naive"
    version = "1"

    def __init__(self, config: SeasonalNaiveConfig = SeasonalNaiveConfig()):
        self.config = config
        self.horizons = config.horizons
        self.quantiles = config.quantiles
        self.cadence = config.cadence
        self.season = season = config.cadence.week  # 7 days, or 52 weeks
        self.n_lags = -(-config.horizons // season)  # ceil: lags 7, 14, ..., 7·n_lags
        self.window = self.history_needed = self.n_lags * season
        self._lag_of_horizon = (np.arange(config.horizons) // season)  # (H,) lag index

    # --- state as bytes -----------------------------------------------------------------
    def _size(self) -> int:
        return 1 + self.window + self.n_lags * self.config.memory

    def _unpack(self, states: Sequence[bytes]) -> np.ndarray:
        return np.frombuffer(b"".join(states), np.float32).reshape(len(states), self._size()).copy()

    @staticmethod
    def _pack(rows: np.ndarray) -> list[bytes]:
        return [row.tobytes() for row in rows.astype(np.float32)]

    def new_state(self, item: ItemInfo, first_day: int) -> bytes:
        row = np.full(self._size(), np.nan, np.float32)
        row[0] = 0.0
        row[1 : 1 + self.window] = 0.0
        return row.tobytes()

    # --- the protocol ---------------------------------------------------------------------
    def advance(self, states: Sequence[bytes], periods: Sequence[Period]) -> list[bytes]:
        rows = self._unpack(states)  # (B, S)
        seen, history, errors = self._views(rows)
        y = np.array([p.units for p in periods], np.float32)  # (B,)
        # history[:, -1] is yesterday; history[:, -7k] is k weeks before today
        lags = self.season * np.arange(1, self.n_lags + 1)
        lagged = history[:, self.window - lags]  # (B, L)
        has_lag = seen[:, None] >= lags  # (B, L)
        new_err = np.where(has_lag, y[:, None] - lagged, np.nan)  # (B, L)
        errors[:] = np.concatenate([errors[:, :, 1:], new_err[:, :, None]], axis=2)
        history[:] = np.concatenate([history[:, 1:], y[:, None]], axis=1)
        seen += 1
        return self._pack(rows)

    def observe_errors(self, states: Sequence[bytes], errors: Sequence[TargetErrors]) -> list[bytes]:
        return list(states)  # its errors are those of its own rule, already kept by advance

    def forecast(self, states: Sequence[bytes]) -> np.ndarray:
        rows = self._unpack(states)
        _, history, errors = self._views(rows)
        h = np.arange(self.horizons)  # (H,) horizon - 1
        lag_idx = self._lag_of_horizon  # (H,)
        # target day t+h+1 repeats day t+h+1-7(k+1), i.e. history index window-7(k+1)+h+1
        point = history[:, self.window - self.season * (lag_idx + 1) + h]  # (B, H)
        spread = _nan_quantiles(errors, self.quantiles)  # (B, L, Q)
        values = point[:, :, None] + spread[:, lag_idx, :]  # (B, H, Q)
        return np.maximum.accumulate(np.clip(values, 0.0, None), axis=2)

    def _views(self, rows: np.ndarray):
        seen = rows[:, 0]
        history = rows[:, 1 : 1 + self.window]
        errors = rows[:, 1 + self.window :].reshape(len(rows), self.n_lags, self.config.memory)
        return seen, history, errors


def _nan_quantiles(errors: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """(B, L, Q) quantiles over the last axis of (B, L, M), ignoring NaN, 0 where nothing was
    observed. np.nanquantile's linear rule, vectorised: its own NaN path loops over rows."""
    ordered = np.sort(errors, axis=2)  # NaN sorts last
    valid = (~np.isnan(errors)).sum(axis=2, keepdims=True)  # (B, L, 1)
    position = np.asarray(quantiles) * np.maximum(valid - 1, 0)  # (B, L, Q)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, np.maximum(valid - 1, 0))
    below = np.take_along_axis(ordered, low, axis=2)
    above = np.take_along_axis(ordered, high, axis=2)
    result = below + (position - low) * (above - below)
    return np.where(valid > 0, result, 0.0)
