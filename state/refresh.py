"""Closing periods (days or weeks) for a batch of items: score earlier forecasts, advance the model, forecast.

This is the whole per-close computation, free of Kafka: the worker hands it the items of a
partition (both parts of each) and publishes what it returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from mqstream.models.protocol import ItemInfo, Period, QuantileForecaster, TargetErrors
from mqstream.periods import Cadence
from mqstream.state.item import N_HISTORY, UNITS, VIEWS, ItemModel, ItemState
from mqstream.state.ledger import DECIMALS, Ledgers, published


@dataclass(frozen=True)
class RefreshPolicy:
    active_periods: int = 28  # forecasts go to items that sold within this many periods
    history_periods: int = 56  # closed periods of buckets kept per item
    batch_size: int = 1024  # items per model call
    decimals: ClassVar[int] = DECIMALS  # of published forecasts: the ledger keeps them exactly


@dataclass(frozen=True)
class ScoredDay:
    item_id: str
    errors: TargetErrors


@dataclass(frozen=True)
class IssuedForecast:
    item_id: str
    origin: int
    values: np.ndarray  # (H, Q) as published
    previous: "IssuedForecast | None" = None  # the item's forecast before this one, if still kept


@dataclass
class Refresh:
    scored: list[ScoredDay] = field(default_factory=list)
    issued: list[IssuedForecast] = field(default_factory=list)


def new_item(item_id: str, born: int, policy: RefreshPolicy) -> ItemState:
    """An item seen for the first time, born on the day of that event (moved back if an
    earlier event of it arrives before its first close)."""
    return ItemState(item_id=item_id, born=born, closed_through=born - 1,
                     history=np.zeros((policy.history_periods, N_HISTORY), np.float32))


def new_model(item: ItemInfo, born: int, model: QuantileForecaster) -> ItemModel:
    """The item model of a new item, made at its first close (``ItemState.launch_info``)."""
    return ItemModel(born - 1, model.new_state(item, born), Ledgers.empty_bytes(model.horizons, len(model.quantiles)))


def needs_close(item: ItemState, item_model: ItemModel, through: int, policy: RefreshPolicy,
                horizons: int) -> bool:
    """Whether closing up to ``through`` has work for the item now: it is active, forecasts of
    it are still waiting for their targets, or it has buckets of days now closed (an item with
    views or returns but no recent sale). Others are dormant and catch up when next needed."""
    if item.closed_through >= through:
        return False
    return (is_active(item, through, policy) or min(item.open_days, default=through + 1) <= through
            or _waiting(item_model, horizons))


def is_dormant(item: ItemState, item_model: ItemModel, through: int, policy: RefreshPolicy, horizons: int) -> bool:
    """Nothing to do for the item at this close or the next ones until its next event: no
    open days, no recent sale, no forecast waiting for its target."""
    return not item.open_days and not is_active(item, through, policy) and not _waiting(item_model, horizons)


def is_active(item: ItemState, origin: int, policy: RefreshPolicy) -> bool:
    return item.sold_within(origin - policy.active_periods + 1, origin)


def rebuild_states(items: list[ItemState], item_models: list[ItemModel], model: QuantileForecaster,
                   cadence: Cadence) -> None:
    """Make the item models' states again with ``model``, from the closed periods each item
    keeps (its history, each period at the item's last closed price): a state holds what its
    own model's encoder made of the history, so another model, or another version, cannot go
    on from it. The ledgers are kept; each item model is then closed through its item's last
    closed period. Items are advanced together, a period at a time."""
    firsts = [max(item.born, item.closed_through - len(item.history) + 1) for item in items]
    states = [model.new_state(item.launch_info(first, cadence), first) for item, first in zip(items, firsts)]
    for day in range(min(firsts, default=0), max((item.closed_through for item in items), default=-1) + 1):
        batch = [i for i, item in enumerate(items) if firsts[i] <= day <= item.closed_through]
        if not batch:
            continue
        periods = [Period(day, float(items[i].daily(UNITS, day, day)[0]), float(items[i].daily(VIEWS, day, day)[0]),
                          items[i].price) for i in batch]
        for i, state in zip(batch, model.advance([states[i] for i in batch], periods)):
            states[i] = state
    for item, item_model, state in zip(items, item_models, states):
        item_model.model, item_model.closed_through = state, item.closed_through


def close_items(items: list[ItemState], item_models: list[ItemModel], through: int,
                model: QuantileForecaster, policy: RefreshPolicy) -> Refresh:
    """Close the days up to ``through`` for ``items`` and their item models (both mutated in
    place) exactly as closing them one day at a time would: at each day the items that need
    it (``needs_close``) catch up to it, and each day caught up advances the models, scores
    earlier forecasts of it and forecasts the items active that day. So the result never
    depends on how many days one close covers, which depends on how fast the inputs
    arrived. A item model already past a day (a close cut short by a crash, its outputs
    already published) only has its item's buckets folded for it."""
    ledgers = Ledgers.from_bytes([s.ledger for s in item_models], model.horizons, len(model.quantiles))
    refresh = Refresh()
    first = min((it.closed_through for it in items), default=through) + 1
    for day in range(first, through + 1):
        due = [i for i, it in enumerate(items) if needs_close(it, item_models[i], day, policy, model.horizons)]
        for caught_up in range(min((items[i].closed_through for i in due), default=day) + 1, day + 1):
            _close_day([i for i in due if items[i].closed_through < caught_up], caught_up, items, item_models,
                       ledgers, model, policy, refresh)
    for item_model, ledger in zip(item_models, ledgers.to_bytes()):
        item_model.ledger = ledger
    return refresh


def _close_day(pending: list[int], day: int, items, item_models, ledgers, model, policy, refresh) -> None:
    buckets = {i: items[i].close_next_day()[1] for i in pending}
    fresh = [i for i in pending if item_models[i].closed_through < day]
    _advance(fresh, day, items, item_models, ledgers, buckets, model, refresh)
    active = [i for i in fresh if is_active(items[i], day, policy)]
    for start in range(0, len(active), policy.batch_size):
        _forecast(active[start : start + policy.batch_size], day, items, item_models, ledgers, model, policy, refresh)


def _advance(batch: list[int], day: int, items, item_models, ledgers, buckets, model, refresh) -> None:
    periods = [Period(day, float(buckets[i][UNITS]), float(buckets[i][VIEWS]), items[i].price) for i in batch]
    for i, state in zip(batch, model.advance([item_models[i].model for i in batch], periods)):
        item_models[i].model, item_models[i].closed_through = state, day
    scored = [(i, errors) for i, errors in zip(batch, ledgers.score(batch, day, [p.units for p in periods]))
              if errors is not None]
    fed = model.observe_errors([item_models[i].model for i, _ in scored], [errors for _, errors in scored])
    for (i, errors), state in zip(scored, fed):
        item_models[i].model, item_models[i].last_error_target = state, day
        refresh.scored.append(ScoredDay(items[i].item_id, errors))


def _forecast(batch: list[int], origin: int, items, item_models, ledgers, model, policy, refresh) -> None:
    if not batch:
        return
    values = published(model.forecast([item_models[i].model for i in batch]))
    kept = ledgers.latest(batch, before=origin)
    ledgers.record(batch, origin, values)
    for i, v, earlier in zip(batch, values, kept):
        previous = None if earlier is None else IssuedForecast(items[i].item_id, *earlier)
        refresh.issued.append(IssuedForecast(items[i].item_id, origin, v, previous))


def take_errors(raw_model: bytes | None, errors: TargetErrors, model: QuantileForecaster) -> bytes | None:
    """Errors of one target period read back from ``forecast-errors`` into the item's error memory,
    once: the new item model, or None where they must be left out: taken in at the close
    that scored them, or that close was cut short by a crash and will score them again
    (taking them now would count them twice)."""
    closed, last_error = ItemModel.days_of(raw_model) if raw_model is not None else (-1, -1)
    if not last_error < errors.target <= closed:
        return None
    item_model = ItemModel.from_bytes(raw_model)
    (item_model.model,) = model.observe_errors([item_model.model], [errors])
    item_model.last_error_target = errors.target
    return item_model.to_bytes()


def _waiting(item_model: ItemModel, horizons: int) -> bool:
    """Forecasts in the ledger whose targets have not closed yet."""
    return Ledgers.last_origin_of(item_model.ledger, horizons) + horizons > item_model.closed_through
