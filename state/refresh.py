"""Closing days for a batch of items: score earlier forecasts, advance the model, forecast.

This is the whole per-close computation, free of Kafka: the worker hands it the items of a
partition and publishes what it returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.protocol import ErrorRecord, ItemInfo, Period, QuantileForecaster
from state.item import UNITS, VIEWS, ItemState
from state.ledger import ForecastLedger


@dataclass(frozen=True)
class RefreshPolicy:
    active_days: int = 28  # forecasts go to items that sold within this many days
    history_days: int = 56  # closed days of buckets kept per item
    batch_size: int = 1024  # items per model call
    decimals: int = 3  # published forecasts are rounded; the ledger keeps what was published


@dataclass(frozen=True)
class ScoredDay:
    item_id: str
    target: int
    actual: float
    records: list[ErrorRecord]


@dataclass(frozen=True)
class IssuedForecast:
    item_id: str
    origin: int
    values: np.ndarray  # (H, Q) as published


@dataclass
class Refresh:
    scored: list[ScoredDay] = field(default_factory=list)
    issued: list[IssuedForecast] = field(default_factory=list)


def new_item(item_id: str, description: str, price: float, closed_through: int,
             model: QuantileForecaster, policy: RefreshPolicy) -> ItemState:
    """An item seen for the first time: born on the partition's first open day."""
    ledger = ForecastLedger.empty(model.horizons, len(model.quantiles))
    return ItemState(
        item_id=item_id, description=description, born=closed_through + 1,
        closed_through=closed_through,
        history=np.zeros((policy.history_days, 3), np.float32),
        model=model.new_state(ItemInfo(item_id, description, price), closed_through + 1),
        ledger=ledger.to_bytes(), price=price,
    )


def needs_close(item: ItemState, through: int, policy: RefreshPolicy, horizons: int) -> bool:
    """Whether closing up to ``through`` has work for the item now: it is active, or forecasts
    of it are still waiting for their targets. Dormant items catch up when they next appear."""
    if item.closed_through >= through:
        return False
    return is_active(item, through, policy) or _last_origin(item, horizons) + horizons > item.closed_through


def is_active(item: ItemState, origin: int, policy: RefreshPolicy) -> bool:
    return item.last_sale_day > origin - policy.active_days


def close_items(items: list[ItemState], through: int, model: QuantileForecaster,
                policy: RefreshPolicy) -> Refresh:
    """Close every day up to ``through`` for ``items`` (mutated in place), then forecast the
    active ones from ``through``."""
    ledgers = {it.item_id: ForecastLedger.from_bytes(it.ledger, model.horizons, len(model.quantiles))
               for it in items}
    refresh = Refresh()
    first = min((it.closed_through for it in items), default=through) + 1
    for day in range(first, through + 1):
        _close_day([it for it in items if it.closed_through < day], ledgers, model, refresh)
    _forecast([it for it in items if is_active(it, through, policy)], through, ledgers, model,
              policy, refresh)
    for it in items:
        it.ledger = ledgers[it.item_id].to_bytes()
    return refresh


def _close_day(batch: list[ItemState], ledgers: dict[str, ForecastLedger],
               model: QuantileForecaster, refresh: Refresh) -> None:
    periods = []
    for it in batch:
        day, bucket = it.close_next_day()
        periods.append(Period(day, float(bucket[UNITS]), float(bucket[VIEWS]), it.price))
    states = model.advance([it.model for it in batch], periods)
    for it, state, period in zip(batch, states, periods):
        records = ledgers[it.item_id].score(period.day, period.units)
        if records:
            state = model.observe_errors(state, records)
            it.last_error_target = period.day
            refresh.scored.append(ScoredDay(it.item_id, period.day, period.units, records))
        it.model = state


def _forecast(active: list[ItemState], origin: int, ledgers: dict[str, ForecastLedger],
              model: QuantileForecaster, policy: RefreshPolicy, refresh: Refresh) -> None:
    for start in range(0, len(active), policy.batch_size):
        chunk = active[start : start + policy.batch_size]
        values = np.round(model.forecast([it.model for it in chunk]).astype(np.float64), policy.decimals)
        for it, v in zip(chunk, values):
            ledgers[it.item_id].record(origin, v)
            refresh.issued.append(IssuedForecast(it.item_id, origin, v))


def _last_origin(item: ItemState, horizons: int) -> int:
    return int(np.frombuffer(item.ledger[: horizons * 4], np.int32).max())
