"""Rolling-origin backtest of docs/EVALUATION.md: every method forecasts the same
products from the same origins at the same horizons and quantiles, and is scored on the
same cells.

A method is anything with ``forecast(series, views, origins) -> (N, O, H, Q)`` that uses,
for origin o, only days up to o. The backtest hands a method nothing after the last
origin (``history_until``), and ``leaked_origins`` checks the rest: replacing the sales and
prices of every day after an origin, and deriving every input from the changed data again
(the page views too), must leave that origin's forecast unchanged.

Page views are a retailer's real ones where a file gives them (``real_views``), else 0
unless a run asks for the simulator (``simulated_views``): no public data pairs views with
the shipped sales, and simulated inputs never enter a headline score.

``StreamingReplay`` turns any ``QuantileForecaster`` into such a method by driving it as
the streaming worker does, so the backtest measures what serving publishes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from tqdm import tqdm

from mqstream.periods import DAILY, Cadence
from mqstream.models.dataset import MIN_SALE_DAYS, PRODUCT_CODE, DemandSeries, select_products
from mqstream.models.pageviews import page_views
from mqstream.models.protocol import (DEFAULT_HORIZONS, DEFAULT_QUANTILES, ItemInfo,
                                      Period, QuantileForecaster, TargetErrors)


@dataclass(frozen=True)
class BacktestSplit:
    """Which periods train, which are origins, and what is forecast (periods of ``cadence``)."""

    cutoff: int  # last period a learned method may train on
    first_origin: int
    last_origin: int
    horizons: int = DEFAULT_HORIZONS
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    min_sale_days: int = MIN_SALE_DAYS  # a product is scored with sales in this many days' worth of periods before the first origin
    products: re.Pattern | None = PRODUCT_CODE  # ids that are products: the shipped data's codes; None: every id
    cadence: Cadence = DAILY

    def __post_init__(self):
        if not self.cutoff < self.first_origin <= self.last_origin:
            iso = self.cadence.iso
            raise ValueError(f"need cutoff < first origin <= last origin; got {iso(self.cutoff)}, "
                             f"{iso(self.first_origin)}, {iso(self.last_origin)}")

    @classmethod
    def from_dates(cls, cutoff: str, start: str, end: str, cadence: Cadence = DAILY, **kwargs) -> "BacktestSplit":
        """Dates as periods: the cutoff is the last period that ends by it (nothing later
        trains), the origins the periods that hold ``start`` and ``end``."""
        return cls(cadence.last_ending_by(cutoff), cadence.of_iso(start), cadence.of_iso(end),
                   cadence=cadence, **kwargs)

    @property
    def min_sale_periods(self) -> int:
        return self.cadence.count(self.min_sale_days)

    @property
    def origins(self) -> np.ndarray:
        return np.arange(self.first_origin, self.last_origin + 1)  # every day is an origin


@dataclass(frozen=True)
class BacktestData:
    """The scored products' series (through the last target day) and the actuals."""

    series: DemandSeries
    views: np.ndarray  # (N, T) page views aligned with series.units: 0, or simulated when asked
    simulated_views: bool
    origins: np.ndarray  # (O,) day indices
    actuals: np.ndarray  # (N, O, H) units sold on day origin + h


class ForecastMethod(Protocol):
    name: str

    def forecast(self, series: DemandSeries, views: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """(N, O, H, Q) quantiles for horizons 1..H after each origin, using days <= origin only."""


def prepare(series: DemandSeries, split: BacktestSplit, simulated_views: bool = False,
            real_views: np.ndarray | None = None) -> BacktestData:
    """Select the scored products and lay out their actuals; ``real_views`` (N, T): a file's
    page views aligned with ``series``."""
    last_target, iso = split.last_origin + split.horizons, split.cadence.iso
    if series.start_day >= split.cutoff or series.days[-1] < last_target:
        raise ValueError(f"series covers {iso(series.start_day)}..{iso(series.days[-1])}; "
                         f"the split needs data before {iso(split.cutoff)} and up to {iso(last_target)}")
    keep = select_products(series, split.first_origin, split.min_sale_periods, split.products)
    if not keep.any():
        raise ValueError(f"no item sold in {split.min_sale_periods} {split.cadence.name(2)} before the first origin "
                         f"{iso(split.first_origin)}: nothing to score")
    stop = series.column(last_target) + 1
    scored = replace(series, items=series.items[keep], descriptions=series.descriptions[keep],
                     units=series.units[keep, :stop], price=series.price[keep, :stop])
    cols = scored.column(split.origins)[:, None] + np.arange(1, split.horizons + 1)  # (O, H)
    real = None if real_views is None else real_views[keep, :stop]
    views = page_views(scored.items, scored.units, scored.start_day, simulated_views, real)
    return BacktestData(series=scored, views=views, simulated_views=simulated_views,
                        origins=split.origins, actuals=scored.units[:, cols])


def history_until(series: DemandSeries, views: np.ndarray, day: int) -> tuple[DemandSeries, np.ndarray]:
    """The series and views through ``day``: all a method may read for origins up to ``day``."""
    stop = series.column(day) + 1
    return replace(series, units=series.units[:, :stop], price=series.price[:, :stop]), views[:, :stop]


def run_method(method: ForecastMethod, data: BacktestData, split: BacktestSplit) -> np.ndarray:
    """(N, O, H, Q) forecasts of ``method``, checked against the protocol's promises."""
    series, views = history_until(data.series, data.views, int(data.origins[-1]))
    forecasts = np.asarray(method.forecast(series, views, data.origins), np.float64)
    expected = data.actuals.shape + (len(split.quantiles),)
    if forecasts.shape != expected:
        raise ValueError(f"{method.name}: forecasts {forecasts.shape}, expected {expected}")
    if not np.isfinite(forecasts).all() or (forecasts < 0).any():
        raise ValueError(f"{method.name}: forecasts must be finite and never negative")
    if (np.diff(forecasts, axis=-1) < 0).any():
        raise ValueError(f"{method.name}: quantiles must be non-decreasing")
    return forecasts


def leaked_origins(method: ForecastMethod, series: DemandSeries, origins: np.ndarray,
                   simulated_views: bool = False, seed: int = 0) -> list[int]:
    """Origins whose forecast changes when the sales and prices of every day after them are
    replaced by noise and the views are derived again from the changed sales. Empty for a
    method that uses only what was known at each origin, inputs derived from it included."""
    reference = method.forecast(series, page_views(series.items, series.units, series.start_day, simulated_views), origins)
    rng = np.random.default_rng(seed)
    leaked = []
    for k, origin in enumerate(origins):
        after = slice(series.column(int(origin)) + 1, None)
        units, price = series.units.copy(), series.price.copy()
        units[:, after] = rng.poisson(20.0, units[:, after].shape)
        price[:, after] = rng.uniform(0.5, 5.0, price[:, after].shape)
        changed = replace(series, units=units, price=price)
        perturbed = method.forecast(changed, page_views(changed.items, changed.units, changed.start_day, simulated_views), origins)
        if not np.array_equal(perturbed[:, k], reference[:, k]):  # deterministic: any change is a leak
            leaked.append(int(origin))
    return leaked


def first_columns(series: DemandSeries) -> np.ndarray:
    """(N,) each item's first column with a priced event: the day the worker first sees it
    (cancellations carry a price too, so an item may appear before its first sale)."""
    seen = series.price > 0
    if not seen.any(axis=1).all():
        raise ValueError("every item needs at least one priced event")
    return seen.argmax(axis=1)


class StreamingReplay:
    """A ``ForecastMethod`` that drives a ``QuantileForecaster`` through the streaming protocol.

    Day by day from the series start, as the worker does (``state/refresh.py``):

    1. an item's state is created (``new_state``) on the day of its first priced event;
    2. each closed day advances the state of every item that exists (``advance``);
    3. the published forecasts of the day that just closed (made 1..H days earlier) are
       scored and fed back (``observe_errors``): errors for target day D exist only once D
       has closed;
    4. forecasts are made from the new states (``forecast``), the day being the origin.

    What serving would publish is what is scored and fed back: forecasts rounded to
    ``PUBLISHED_DECIMALS``, and only items that sold within ``ACTIVE_DAYS`` of the origin are
    published (so only their errors come back). The backtest still scores the model's
    forecast for every product at every origin, active or not, as EVALUATION.md requires.

    Serving forecasts every day, so feedback exists before the first scored origin; the
    replay starts forecasting ``feedback_warmup`` days before it (default two horizons, so
    that by the first origin the model has seen a full horizon of errors at every horizon).
    """

    PUBLISHED_DECIMALS = 3  # as state.refresh.RefreshPolicy.decimals
    ACTIVE_DAYS = 28  # as Settings.active_days, whole periods

    def __init__(self, model: QuantileForecaster, feedback_warmup: int | None = None):
        self.model = model
        self.name = model.name
        self.feedback_warmup = 2 * model.horizons if feedback_warmup is None else feedback_warmup
        self.active_periods = model.cadence.count(self.ACTIVE_DAYS)

    def forecast(self, series: DemandSeries, views: np.ndarray, origins: np.ndarray) -> np.ndarray:
        if series.cadence != self.model.cadence:
            raise ValueError(f"{self.name} steps through {self.model.cadence.name(2)}, the series through "
                             f"{series.cadence.name(2)}")
        horizons, n_quantiles = self.model.horizons, len(self.model.quantiles)
        first_col = first_columns(series)
        last_sale_col = np.maximum.accumulate(
            np.where(series.units > 0, np.arange(series.units.shape[1]), -self.active_periods - 1), axis=1)
        start_forecasting = int(origins[0]) - self.feedback_warmup
        # published[d % H]: what was published at origin d, for the last H origins (NaN: nothing)
        published = np.full((horizons, len(series.items), horizons, n_quantiles), np.nan, np.float32)
        out = np.full((len(series.items), len(origins), horizons, n_quantiles), np.nan)  # NaN: not born
        origin_index = {int(d): k for k, d in enumerate(origins)}
        states: dict[int, bytes] = {}
        for col in tqdm(range(series.column(int(origins[-1])) + 1), desc=f"replay {self.name}",
                        unit=self.model.cadence.period, leave=False):
            day = series.start_day + col
            self._create_states(states, series, np.flatnonzero(first_col == col), day)
            rows = np.fromiter(states.keys(), np.int64, len(states))
            self._advance(states, rows, series, views, col)
            if day > start_forecasting:
                self._feed_back(states, rows, published, series.units[:, col], day)
            if day < start_forecasting:
                continue
            forecasts = np.round(self.model.forecast([states[r] for r in rows]), self.PUBLISHED_DECIMALS)
            active = last_sale_col[rows, col] > col - self.active_periods
            published[day % horizons] = np.nan
            published[day % horizons, rows[active]] = forecasts[active]
            if day in origin_index:
                out[rows, origin_index[day]] = forecasts
        return out

    def _create_states(self, states: dict[int, bytes], series: DemandSeries, rows: np.ndarray, day: int) -> None:
        for r in rows:
            item = ItemInfo(str(series.items[r]), str(series.descriptions[r]), float(series.price[r, day - series.start_day]))
            states[int(r)] = self.model.new_state(item, day)

    def _advance(self, states: dict[int, bytes], rows: np.ndarray, series: DemandSeries,
                 views: np.ndarray, col: int) -> None:
        day = series.start_day + col
        periods = [Period(day, float(series.units[r, col]), float(views[r, col]), float(series.price[r, col]))
                   for r in rows]
        for r, state in zip(rows, self.model.advance([states[r] for r in rows], periods)):
            states[r] = state

    def _feed_back(self, states: dict[int, bytes], rows: np.ndarray, published: np.ndarray,
                   actuals: np.ndarray, day: int) -> None:
        """Score every earlier forecast whose target is ``day`` (just closed) and feed it back."""
        horizons = self.model.horizons
        h = np.arange(horizons, 0, -1)  # oldest origin first, as the ledger scores them
        made = published[(day - h) % horizons, :, h - 1]  # (H, N, Q): made at day - h for day
        was_made = ~np.isnan(made[:, :, 0])  # (H, N)
        origins = day - h
        fed = rows[was_made[:, rows].any(axis=0)]
        errors = [TargetErrors(day, float(actuals[r]), origins[was_made[:, r]], made[was_made[:, r], r]) for r in fed]
        for r, state in zip(fed, self.model.observe_errors([states[r] for r in fed], errors)):
            states[r] = state
