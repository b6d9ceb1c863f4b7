"""Baselines that every forecasting model must beat, all ``ForecastMethod``s of
``models.backtest`` (``forecast(series, views, origins) -> (N, O, H, Q)``).

- ``ZeroForecast``: every quantile 0 — the floor any method must clear (wQL 2·mean q = 1.0).
- ``QuantileForestBaseline``: a quantile regression forest on ``lag_features``.
- ``LightGBMBaseline``: one LightGBM quantile model per level on the same features.
- ``AutoETSBaseline``: statsforecast's AutoETS with prediction intervals, per item.

The seasonal-naive baseline is the lead's ``models.seasonal_naive.SeasonalNaive``, run
through ``models.backtest.StreamingReplay`` like the neural models.

The two learned baselines are global, direct multi-horizon models: one row per (item,
origin, horizon) with the horizon and the target day's calendar as features, trained only
on targets up to ``cutoff``. Demand features and the target are divided by the item's
recent mean (its scale), and rows are weighted by that scale, so the trees see comparable
shapes while the loss they minimise is still the pinball loss in units, as wQL weighs it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from quantile_forest import RandomForestQuantileRegressor
from statsforecast import StatsForecast
from statsforecast.models import AutoETS
from tqdm import tqdm

from mqstream.models.backtest import first_columns
from mqstream.models.dataset import DemandSeries
from mqstream.models.features import calendar
from mqstream.models.protocol import DEFAULT_HORIZONS, DEFAULT_QUANTILES

# Spans in days; with weeks, each is the whole weeks it covers (rounded up)
DEMAND_LAGS = 28  # units on the origin day and the 27 days before it
ROLLING_WINDOWS = (7, 14, 28, 56)
SCALE_WINDOW = 112  # days whose mean demand is an item's scale
SAME_WEEKDAY_WEEKS = 4  # weeks averaged for "the target's weekday, recently" (with weeks: the last 4)
DAY_CAP = 365  # "days since" features saturate here: older is "long ago"


class ZeroForecast:
    """Forecasts zero at every quantile."""

    name = "zero"

    def __init__(self, horizons: int = DEFAULT_HORIZONS, quantiles: tuple[float, ...] = DEFAULT_QUANTILES):
        self.horizons, self.quantiles = horizons, quantiles

    def forecast(self, series: DemandSeries, views: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return np.zeros((len(series.items), len(origins), self.horizons, len(self.quantiles)))


# --- features shared by the two tree baselines ------------------------------------------------
@dataclass(frozen=True)
class LagFeatures:
    """Rows of (item, origin column, horizon): features known at the origin, the item's
    scale, and the target's calendar."""

    x: np.ndarray  # (M, F) float32
    scale: np.ndarray  # (M,) float64 mean daily demand over SCALE_WINDOW days to the origin


class FeatureBuilder:
    """Precomputes cumulative sums once so that any rows' features cost O(F) each."""

    def __init__(self, series: DemandSeries, views: np.ndarray):
        self.series, self.views = series, views.astype(np.float64)
        c = self.cadence = series.cadence
        self.n_lags, self.scale_window, self.cap = c.count(DEMAND_LAGS), c.count(SCALE_WINDOW), c.count(DAY_CAP)
        self.rolling = tuple(sorted({c.count(w) for w in ROLLING_WINDOWS}))
        self.season = 7 if c.days == 1 else 1  # the target's weekday; weeks have none
        units = series.units.astype(np.float64)
        self.units = units
        self.cum_units = _cumsum0(units)  # (N, T+1)
        self.cum_sold_days = _cumsum0((units > 0).astype(np.float64))
        self.cum_price = _cumsum0(series.price.astype(np.float64))
        self.cum_views = _cumsum0(self.views)
        cols = np.arange(units.shape[1])
        self.last_sale = np.maximum.accumulate(np.where(units > 0, cols, -self.cap), axis=1)  # (N, T)
        self.first_col = first_columns(series)

    def rows(self, item: np.ndarray, col: np.ndarray, horizon: np.ndarray) -> LagFeatures:
        """Features of (item, origin column, horizon) rows, each reading columns <= its origin."""
        window, cadence, start = self.scale_window, self.cadence, self.series.start_day
        scale = np.maximum(self._mean(self.cum_units, item, col, window), 1.0 / window)
        columns = [
            self._demand(item, col, horizon) / scale[:, None],
            np.log1p(scale)[:, None],
            np.stack([self._mean(self.cum_sold_days, item, col, w) for w in (self.n_lags, window)], 1),
            np.minimum(col - self.last_sale[item, col], self.cap)[:, None],
            np.minimum(col - self.first_col[item], 2 * self.cap)[:, None],
            self._price_and_views(item, col),
            horizon[:, None],
            ((cadence.first_day(start + col) + 3) % 7)[:, None],  # origin (first) weekday, Monday = 0
            calendar(start + col + horizon, cadence),  # (M, N_CALENDAR) the target period
        ]
        return LagFeatures(x=np.concatenate(columns, axis=1).astype(np.float32), scale=scale)

    def _demand(self, item: np.ndarray, col: np.ndarray, horizon: np.ndarray) -> np.ndarray:
        """(M, L + W + 2) demand lags, rolling means, and the target weekday's recent demand."""
        lags = self.units[item[:, None], np.maximum(col[:, None] - np.arange(self.n_lags), 0)]
        season = self.season
        back = season * -(-horizon // season)  # the latest day known at the origin on the target's weekday
        weeks = (col + horizon - back)[:, None] - season * np.arange(SAME_WEEKDAY_WEEKS)
        same_weekday = self.units[item[:, None], np.maximum(weeks, 0)]  # (M, SAME_WEEKDAY_WEEKS)
        rolling = np.stack([self._mean(self.cum_units, item, col, w) for w in self.rolling], 1)
        return np.concatenate([lags, rolling, same_weekday.mean(1, keepdims=True), same_weekday[:, :1]], 1)

    def _price_and_views(self, item: np.ndarray, col: np.ndarray) -> np.ndarray:
        price = self.series.price[item, col].astype(np.float64)
        price_mean = self._mean(self.cum_price, item, col, self.n_lags)
        views_mean = self._mean(self.cum_views, item, col, self.n_lags)
        # views lead demand by one to three days (models/pageviews.py): the last three matter
        recent_views = self.views[item[:, None], np.maximum(col[:, None] - np.arange(3), 0)]
        return np.concatenate([price[:, None], (price / np.maximum(price_mean, 1e-6))[:, None],
                               recent_views / (views_mean[:, None] + 1.0), np.log1p(views_mean)[:, None]], 1)

    @staticmethod
    def _mean(cum: np.ndarray, item: np.ndarray, col: np.ndarray, window: int) -> np.ndarray:
        """Mean over the ``window`` days ending at ``col`` (days before the series count as 0)."""
        return (cum[item, col + 1] - cum[item, np.maximum(col + 1 - window, 0)]) / window

    def training_rows(self, cutoff: int, train_days: int, n_rows: int, horizons: int,
                      seed: int) -> tuple[LagFeatures, np.ndarray]:
        """A uniform sample of rows whose origin lies in the ``train_days`` before ``cutoff``,
        whose target is at most ``cutoff``, and whose item already existed; with targets."""
        rng = np.random.default_rng(seed)
        last = self.series.column(cutoff)
        first = max(last - self.cadence.count(train_days), self.scale_window)
        draws = 2 * n_rows  # about half survive the filters below
        item = rng.integers(0, len(self.series.items), draws)
        col = rng.integers(first, last, draws)
        horizon = rng.integers(1, horizons + 1, draws)
        keep = np.flatnonzero((col + horizon <= last) & (col >= self.first_col[item]))[:n_rows]
        item, col, horizon = item[keep], col[keep], horizon[keep]
        return self.rows(item, col, horizon), self.units[item, col + horizon]

    def origin_rows(self, origin_cols: np.ndarray, horizons: int) -> LagFeatures:
        """Every (item, origin, horizon), in (N, O, H) order."""
        n = len(self.series.items)
        item, col, horizon = np.meshgrid(np.arange(n), origin_cols, np.arange(1, horizons + 1), indexing="ij")
        return self.rows(item.ravel(), col.ravel(), horizon.ravel())


def _cumsum0(a: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((a.shape[0], 1)), np.cumsum(a, axis=1)], axis=1)


def _to_units(normalised: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Quantiles in units: rescaled, never negative, and sorted along Q (independently fitted
    levels can cross; sorting them never raises the pinball loss summed over the levels)."""
    return np.sort(np.clip(normalised, 0.0, None) * scale[:, None], axis=1)


# --- the tree baselines -------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeBaselineConfig:
    horizons: int = DEFAULT_HORIZONS
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    train_days: int = 364  # origins from one year before the cutoff: every season once
    train_rows: int = 200_000  # sampled (item, origin, horizon) rows; fitting time grows with it
    origins_per_batch: int = 8  # prediction rows are built this many origins at a time (memory)
    seed: int = 0


class _TreeBaseline(ABC):
    """Fit once on rows up to the cutoff, then predict every (item, origin, horizon)."""

    name: str
    DEFAULT_CONFIG = TreeBaselineConfig()

    def __init__(self, cutoff: int, config: TreeBaselineConfig | None = None):
        self.cutoff = cutoff  # last day whose demand may be a training target
        self.config = config or self.DEFAULT_CONFIG

    def forecast(self, series: DemandSeries, views: np.ndarray, origins: np.ndarray) -> np.ndarray:
        cfg = self.config
        if origins[0] <= self.cutoff:
            raise ValueError(f"{self.name}: origins must come after the training cutoff")
        builder = FeatureBuilder(series, views)
        train, targets = builder.training_rows(self.cutoff, cfg.train_days, cfg.train_rows, cfg.horizons, cfg.seed)
        self._fit(train.x, targets / train.scale, train.scale)
        out = np.empty((len(series.items), len(origins), cfg.horizons, len(cfg.quantiles)))
        for start in tqdm(range(0, len(origins), cfg.origins_per_batch), desc=f"{self.name} predict", leave=False):
            batch = origins[start : start + cfg.origins_per_batch]
            rows = builder.origin_rows(series.column(batch), cfg.horizons)
            values = _to_units(self._predict(rows.x), rows.scale)  # (N·b·H, Q)
            out[:, start : start + len(batch)] = values.reshape(len(series.items), len(batch), cfg.horizons, -1)
        return out

    @abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> None:
        """Fit to normalised targets ``y`` with row weights ``weight`` (the item scales)."""

    @abstractmethod
    def _predict(self, x: np.ndarray) -> np.ndarray:
        """(M, Q) normalised quantiles, in any order along Q."""


class QuantileForestBaseline(_TreeBaseline):
    """Quantile regression forest (Meinshausen, 2006): one forest, every quantile from the
    weighted empirical distribution of the training targets in the leaves."""

    name = "qrf"
    DEFAULT_CONFIG = TreeBaselineConfig(train_rows=100_000)  # a forest fits ~4x slower than boosting
    FOREST = dict(n_estimators=60, min_samples_leaf=30, max_features=0.33, max_samples=0.5, n_jobs=2)

    def _fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> None:
        # Unweighted: quantile-forest 1.4.2 fails (IndexError) with sample_weight and max_samples
        # together. The leaves still estimate the same conditional quantiles of y / scale.
        self.forest = RandomForestQuantileRegressor(random_state=self.config.seed, **self.FOREST)
        self.forest.fit(x, y)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.forest.predict(x, quantiles=list(self.config.quantiles))


class LightGBMBaseline(_TreeBaseline):
    """Gradient-boosted trees, one model per quantile level (pinball objective)."""

    name = "lightgbm"
    # One thread: LightGBM's OpenMP workers spin-wait, and on a shared two-core machine two
    # threads ran 3-5x slower than one (measured).
    BOOSTER = dict(objective="quantile", n_estimators=100, learning_rate=0.1, num_leaves=31,
                   min_child_samples=100, subsample=0.5, subsample_freq=1, colsample_bytree=0.8,
                   n_jobs=1, verbose=-1)

    def _fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> None:
        self.boosters = [lgb.LGBMRegressor(alpha=q, random_state=self.config.seed, **self.BOOSTER).fit(
                             x, y, sample_weight=weight)
                         for q in tqdm(self.config.quantiles, desc="lightgbm fit", leave=False)]

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.stack([b.predict(x) for b in self.boosters], axis=1)


# --- AutoETS -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AutoETSConfig:
    horizons: int = DEFAULT_HORIZONS
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    season_length: int = 7
    refit_every: int = 28  # origins between refits; in between, the last fit is run forward
    n_jobs: int = 2


class AutoETSBaseline:
    """statsforecast AutoETS per item, from its first sale, with prediction intervals.

    Fitting AutoETS costs about 0.1 s per item and history, so refitting ~2,000 items at
    every origin is out of reach on two cores: the model is refit every ``refit_every``
    origins, and at the other origins the latest fit is run forward over the data to that
    origin (statsforecast ``cross_validation(refit=k)``, which calls ``forward``): the
    states and the forecast use every day to the origin, the parameters lag by at most
    ``refit_every - 1`` days. Central intervals at levels 20..80 give quantiles 0.1..0.9
    (level L spans quantiles 0.5 ∓ L/200), the mean is the 0.5 quantile (ETS errors are
    Gaussian), and everything is clipped at 0.
    """

    name = "autoets"

    def __init__(self, config: AutoETSConfig = AutoETSConfig()):
        self.config = config
        self.levels = sorted({round(abs(200 * (q - 0.5))) for q in config.quantiles} - {0})

    def forecast(self, series: DemandSeries, views: np.ndarray, origins: np.ndarray) -> np.ndarray:
        cfg = self.config
        engine = StatsForecast(models=[AutoETS(season_length=cfg.season_length)], freq=1, n_jobs=cfg.n_jobs)
        first_origin, last_origin = int(origins[0]), int(origins[-1])
        # one cross-validation window per day from the first to the last origin, so that
        # ``refit_every`` counts days whatever origins are asked for
        result = engine.cross_validation(df=self._frame(series, last_origin, cfg.horizons), h=cfg.horizons,
                                         n_windows=last_origin - first_origin + 1, step_size=1,
                                         refit=cfg.refit_every, level=self.levels)
        result = result[result["cutoff"].isin(origins)].sort_values(["unique_id", "cutoff", "ds"])
        columns = [self._column(q) for q in cfg.quantiles]
        values = result[columns].to_numpy(np.float64)  # rows in (item, origin, horizon) order
        values = values.reshape(len(series.items), len(origins), cfg.horizons, len(columns))
        return np.maximum.accumulate(np.clip(values, 0.0, None), axis=-1)

    @staticmethod
    def _frame(series: DemandSeries, last_origin: int, horizons: int) -> pd.DataFrame:
        """Long frame of each item from its first sale through ``last_origin``, then ``horizons``
        placeholder days: statsforecast places the last window's test days there, and only
        reads them as the 'actuals' column, which is discarded."""
        stop = series.column(last_origin) + 1
        units = np.concatenate([series.units[:, :stop], np.zeros((len(series.items), horizons))], axis=1)
        first_sale = (units[:, :stop] > 0).argmax(axis=1)
        parts = [pd.DataFrame({"unique_id": i, "ds": series.start_day + np.arange(f, units.shape[1]),
                               "y": units[i, f:]}) for i, f in enumerate(first_sale)]
        return pd.concat(parts, ignore_index=True)

    @staticmethod
    def _column(q: float) -> str:
        level = round(abs(200 * (q - 0.5)))
        if level == 0:
            return "AutoETS"
        return f"AutoETS-{'lo' if q < 0.5 else 'hi'}-{level}"
