"""The one contract between the streaming worker and every forecasting model.

A model is two verbs over per-item state held as bytes (so the worker can keep it in a
faust table and never knows which model it drives):

- ``advance``: move each item's state forward by one closed period (a day, or a week:
  ``cadence``), at a cost that does not depend on how much history the item has;
- ``forecast``: quantiles for horizons 1..H for a batch of items, from their states.

``observe_errors`` feeds the model the scored errors of its own earlier forecasts (the
records the worker publishes to ``forecast-errors`` and reads back); models without
feedback keep what they need or ignore them.

For every closed day the worker calls, in this order: ``advance`` with the day's period,
``observe_errors`` with that day's scored errors (forecasts whose target is the day), and
then, for items it refreshes, ``forecast`` from the day as origin. Backtests do the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, Sequence

import numpy as np

from mqstream.periods import Cadence

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_HORIZONS = 28


@dataclass(frozen=True)
class ItemInfo:
    """What is known of an item when it first appears (a new product has nothing else)."""

    item_id: str
    description: str = ""
    price: float = 0.0


@dataclass(frozen=True)
class Period:
    """One closed day of one item."""

    day: int  # days since 1970-01-01 (event time)
    units: float  # demand: units sold that day (see shared EVALUATION.md)
    views: float  # page views that day
    price: float  # last known unit price, carried forward; 0.0 when never seen


class TargetErrors(NamedTuple):
    """Every kept earlier forecast of one item's one target period, scored against its actual:
    a row per forecast, oldest origin (longest horizon) first. Arrays rather than an object
    per forecast: a close makes one of these per item, and the worker scores, publishes and
    aggregates them in bulk."""

    target: int  # the period forecast
    actual: float
    origins: np.ndarray  # (n,) int64: the periods the forecasts were made from (last closed then)
    forecasts: np.ndarray  # (n, Q) the quantiles as published

    @property
    def horizons(self) -> np.ndarray:
        return self.target - self.origins


class ErrorRows(NamedTuple):
    """A batch of ``TargetErrors`` as one row per scored forecast."""

    owner: np.ndarray  # (n,) index of the TargetErrors the row came from
    targets: np.ndarray  # (n,)
    actuals: np.ndarray  # (n,) float64
    horizons: np.ndarray  # (n,)
    forecasts: np.ndarray  # (n, Q)


def error_rows(errors: Sequence[TargetErrors]) -> ErrorRows:
    """Flatten a batch (at least one) of TargetErrors for vectorised work over all its forecasts."""
    owner = np.repeat(np.arange(len(errors)), [len(e.origins) for e in errors])
    targets = np.array([e.target for e in errors], np.int64)[owner]
    actuals = np.array([e.actual for e in errors], np.float64)[owner]
    return ErrorRows(owner, targets, actuals, targets - np.concatenate([e.origins for e in errors]),
                     np.concatenate([e.forecasts for e in errors]))


class QuantileForecaster(Protocol):
    name: str
    version: str
    horizons: int
    quantiles: tuple[float, ...]
    cadence: Cadence  # the periods its states step through
    history_needed: int  # periods of input its state depends on: a state made again from fewer differs

    def new_state(self, item: ItemInfo, first_day: int) -> bytes:
        """State of an item with no closed period yet; ``first_day`` is its first open day."""

    def advance(self, states: Sequence[bytes], periods: Sequence[Period]) -> list[bytes]:
        """Advance each state by its one period (``periods[i]`` belongs to ``states[i]``)."""

    def observe_errors(self, states: Sequence[bytes], errors: Sequence[TargetErrors]) -> list[bytes]:
        """Take into each state the scored errors of its item's earlier forecasts of one
        period (``errors[i]`` belongs to ``states[i]``)."""

    def forecast(self, states: Sequence[bytes]) -> np.ndarray:
        """(B, H, Q) quantile forecasts for horizons 1..H after each state's last period,
        non-decreasing along Q and never negative."""
