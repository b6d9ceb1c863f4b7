"""Material forecast changes: which revisions of an item's forecast go to `forecast-changes`.

A consumer who acts on forecasts (reorders, alerts a planner) wants the revisions that
matter, not one message per item and day. A new forecast is a material change of the
item's previous one when

- ``p50_7d_moved``: its next-7-day P50 total moves by more than ``share`` of the previous
  total: ``|after - before| > share * max(before, floor)``. The floor (1 unit) keeps slow
  movers from changing on every unit: 0 -> 0.3 units is not a 30-fold move;
- ``p90_7d_crossed_stock`` (only when ``stock_level > 0``): its next-7-day P90 total is on
  the other side of the stock level than before. "Above" means strictly above: stock equal
  to the P90 total covers it.

An item's first forecast (no previous) has nothing to move from, so it is a change only if
its P90 total is above the stock level: it starts out short of stock.

A "next-7-day total" is the sum of the day-1..7 values of one quantile (with weeks, the
week-1 value): the quantile of the week's total if the days move together; see
mqstream/client.py (Forecast.total).
Totals are rounded to the published decimals, so a consumer recomputing them from the
published forecasts gets the same totals and the same decision.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

import numpy as np
import orjson

from mqstream.periods import DAILY, Cadence
from mqstream.models.protocol import QuantileForecaster
from mqstream.state.refresh import IssuedForecast
from mqstream.streams.messages import contract

WEEK_DAYS = 7
P50_MOVED = "p50_7d_moved"
P90_CROSSED_STOCK = "p90_7d_crossed_stock"


@dataclass(frozen=True)
class ChangeRule:
    share: float = 0.25  # Settings.change_share: the relative move of the P50 total that matters
    stock_level: float = 0.0  # Settings.stock_level, units; 0 turns the stock rule off
    floor: float = 1.0  # units: a move is relative to max(before, floor), never to zero
    decimals: int = 3  # as published forecasts (RefreshPolicy.decimals), so totals are exact sums


@dataclass(frozen=True)
class WeekTotals:
    origin: int  # the period of the forecast's origin (mqstream.periods)
    p50: float  # sum of the P50 values of the horizons covering the next 7 days
    p90: float


@dataclass(frozen=True)
class MaterialChange:
    item_id: str
    reasons: tuple[str, ...]
    before: WeekTotals | None  # None: the item's first forecast
    after: WeekTotals
    p50_move: float | None  # (after.p50 - before.p50) / max(before.p50, floor); None when first


def material_change(previous: IssuedForecast | None, current: IssuedForecast,
                    quantiles: Sequence[float], rule: ChangeRule, cadence: Cadence = DAILY) -> MaterialChange | None:
    """The change from ``previous`` (the item's last published forecast, None if it has none)
    to ``current``, if the rule calls it material; None otherwise."""
    return material_changes([replace(current, previous=previous)], quantiles, rule, cadence)[0]


def material_changes(issued: Sequence[IssuedForecast], quantiles: Sequence[float], rule: ChangeRule,
                     cadence: Cadence = DAILY) -> list[MaterialChange | None]:
    """``material_change`` from each issued forecast's ``previous`` to it, the week totals of
    the whole batch summed at once and objects made for the changes only (a close issues
    thousands of forecasts, a few of them changes)."""
    afters = _sums(issued, quantiles, rule.decimals, cadence)
    earlier = [f.previous for f in issued if f.previous is not None]
    befores = iter(_sums(earlier, quantiles, rule.decimals, cadence))
    return [_change(f, next(befores) if f.previous is not None else None, after, rule)
            for f, after in zip(issued, afters)]


def _change(current: IssuedForecast, before: tuple[float, float] | None, after: tuple[float, float],
            rule: ChangeRule) -> MaterialChange | None:
    """The change to ``current`` from its previous forecast, whose (P50, P90) week totals are
    ``before`` (None: it has none), ``after`` its own."""
    reasons, move = [], None
    if before is not None:
        move = (after[0] - before[0]) / max(before[0], rule.floor)
        if abs(after[0] - before[0]) > rule.share * max(before[0], rule.floor):
            reasons.append(P50_MOVED)
    if rule.stock_level > 0:
        was_above = before is not None and before[1] > rule.stock_level
        if was_above != (after[1] > rule.stock_level):
            reasons.append(P90_CROSSED_STOCK)
    if not reasons:
        return None
    earlier = None if before is None else WeekTotals(current.previous.origin, *before)
    return MaterialChange(current.item_id, tuple(reasons), earlier, WeekTotals(current.origin, *after), move)


def week_totals(forecasts: Sequence[IssuedForecast], quantiles: Sequence[float], decimals: int,
                cadence: Cadence = DAILY) -> list[WeekTotals]:
    """Each forecast's P50 and P90 totals over the next 7 days, each summed in horizon order
    and rounded by Python's ``round``, as a consumer summing the published values gets them."""
    return [WeekTotals(f.origin, p50, p90) for f, (p50, p90) in zip(forecasts, _sums(forecasts, quantiles, decimals,
                                                                                      cadence))]


def _sums(forecasts: Sequence[IssuedForecast], quantiles: Sequence[float], decimals: int,
          cadence: Cadence) -> list[tuple[float, float]]:
    """``week_totals``' (P50, P90) of each forecast."""
    if not forecasts:
        return []
    n = cadence.count(WEEK_DAYS)  # 7 days, or 1 week
    columns = [_column(quantiles, q) for q in (0.5, 0.9)]
    short = min(len(f.values) for f in forecasts)
    if short < n:
        raise ValueError(f"a forecast needs {n} horizons for week totals, got {short}")
    weeks = np.stack([f.values[:n] for f in forecasts]).astype(np.float64, copy=False)  # (B, n, Q)
    sums = weeks[:, :, columns].sum(axis=1) + 0.0  # (B, 2); + 0.0: never a -0.0 total
    return [(round(p50, decimals), round(p90, decimals)) for p50, p90 in sums.tolist()]


def change_message(change: MaterialChange, rule: ChangeRule, model: QuantileForecaster, created_at: str,
                   cadence: Cadence = DAILY) -> bytes:
    """The `forecast-changes` message (schema: mqstream/schemas/forecast-change.v1.json, v2 for
    weeks); send it keyed by item id with streams.messages.headers(model, cadence)."""
    return orjson.dumps({
        **contract(cadence),
        "item_id": change.item_id,
        "reasons": list(change.reasons),
        "before": None if change.before is None else _totals(change.before, cadence),
        "after": _totals(change.after, cadence),
        "p50_7d_move": None if change.p50_move is None else round(change.p50_move, 6),
        "change_share": rule.share,
        "stock_level": rule.stock_level,
        "model": {"name": model.name, "version": model.version},
        "created_at": created_at,
    })


def _totals(totals: WeekTotals, cadence: Cadence) -> dict:
    return {"origin": cadence.iso(totals.origin), "p50_7d": totals.p50, "p90_7d": totals.p90}


def _column(quantiles: Sequence[float], q: float) -> int:
    return _column_of(tuple(quantiles), q)


@lru_cache(maxsize=64)
def _column_of(quantiles: tuple[float, ...], q: float) -> int:  # once per model, not per forecast
    found = np.flatnonzero(np.isclose(quantiles, q))
    if len(found) != 1:
        raise ValueError(f"the change rule needs quantile {q} among the model's quantiles {list(quantiles)}")
    return int(found[0])
