from dataclasses import replace

import numpy as np
import pytest

from mqstream.periods import day_of_iso
from mqstream.models.backtest import BacktestSplit, leaked_origins, prepare, run_method
from mqstream.models.baselines import (AutoETSBaseline, AutoETSConfig, FeatureBuilder, LightGBMBaseline,
                                       QuantileForestBaseline, TreeBaselineConfig, ZeroForecast)
from mqstream.models.dataset import DemandSeries
from mqstream.models.pageviews import simulate_views

START = day_of_iso("2010-11-01")
DAYS = 200
HORIZONS = 3
LEVELS = (0.1, 0.5, 0.9)
CUTOFF = START + DAYS - 1 - HORIZONS - 6  # six origins after it, each with all its targets in the data


def synthetic_series(n_items: int = 4, seed: int = 0) -> tuple[DemandSeries, np.ndarray]:
    """Poisson demand with a weekly pattern (no sales on Saturdays), a fixed price per item."""
    rng = np.random.default_rng(seed)
    weekday = np.array([1.0, 1.2, 1.1, 1.0, 1.4, 0.0, 0.6])[(START + np.arange(DAYS) + 3) % 7]
    units = rng.poisson(rng.uniform(1, 8, (n_items, 1)) * weekday).astype(np.float32)
    price = np.repeat(rng.uniform(1, 5, (n_items, 1)), DAYS, axis=1).astype(np.float32)
    items = np.array([str(20001 + i) for i in range(n_items)])
    series = DemandSeries(items=items, descriptions=np.array(["MUG"] * n_items), start_day=START,
                         units=units, price=price)
    return series, simulate_views(items, units, START)


SMALL_TREES = TreeBaselineConfig(horizons=HORIZONS, quantiles=LEVELS, train_days=60, train_rows=3_000)
BASELINES = {
    "zero": lambda: ZeroForecast(HORIZONS, LEVELS),
    "qrf": lambda: QuantileForestBaseline(CUTOFF, SMALL_TREES),
    "lightgbm": lambda: LightGBMBaseline(CUTOFF, SMALL_TREES),
    "autoets": lambda: AutoETSBaseline(AutoETSConfig(horizons=HORIZONS, quantiles=LEVELS, refit_every=2, n_jobs=1)),
}


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_forecasts_every_cell_with_non_negative_non_decreasing_quantiles(name):
    series, _ = synthetic_series()
    split = BacktestSplit(CUTOFF, CUTOFF + 1, CUTOFF + 6, horizons=HORIZONS, quantiles=LEVELS, min_sale_days=20)
    data = prepare(series, split)
    forecasts = run_method(BASELINES[name](), data, split)  # checks shape, sign and order
    assert forecasts.shape == (4, 6, HORIZONS, 3)


@pytest.mark.parametrize("simulated_views", [False, True])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_uses_nothing_after_each_origin(name, simulated_views):
    series, _ = synthetic_series(n_items=3)
    assert leaked_origins(BASELINES[name](), series, CUTOFF + np.array([1, 4]), simulated_views) == []


def test_tree_training_rows_read_nothing_after_the_cutoff():
    series, views = synthetic_series()
    later = series.units.copy()
    later[:, series.column(CUTOFF) + 1 :] = 99.0
    rows = lambda s: FeatureBuilder(s, views).training_rows(CUTOFF, 60, 2_000, HORIZONS, seed=0)
    (train, targets), (train_later, targets_later) = rows(series), rows(replace(series, units=later))
    np.testing.assert_array_equal(train.x, train_later.x)
    np.testing.assert_array_equal(targets, targets_later)


def test_tree_baselines_refuse_origins_not_after_the_cutoff():
    series, views = synthetic_series()
    with pytest.raises(ValueError, match="cutoff"):
        LightGBMBaseline(CUTOFF, SMALL_TREES).forecast(series, views, np.array([CUTOFF]))


def test_autoets_quantiles_are_the_central_intervals_around_the_mean():
    series, views = synthetic_series()
    series = replace(series, units=series.units + 50.0)  # far from zero: nothing is clipped
    model = AutoETSBaseline(AutoETSConfig(horizons=HORIZONS, quantiles=LEVELS, refit_every=2, n_jobs=1))
    f = model.forecast(series, views, CUTOFF + np.array([1, 2]))
    assert model.levels == [80]
    np.testing.assert_allclose(f[..., 1] - f[..., 0], f[..., 2] - f[..., 1], rtol=1e-4)


def test_zero_forecast_is_zero_at_every_quantile():
    series, views = synthetic_series()
    f = ZeroForecast(HORIZONS, LEVELS).forecast(series, views, CUTOFF + np.arange(1, 4))
    assert f.shape == (4, 3, HORIZONS, 3) and not f.any()
