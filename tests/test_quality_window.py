"""The worker's rolling quality (streams/metrics.py QualityWindow) agrees with the scores
module's wQL and coverage on the same forecasts, over the last week of targets only, per
horizon bucket too."""
import numpy as np

from mqstream.models.protocol import TargetErrors
from mqstream.models.scores import wql
from mqstream.streams.metrics import QUALITY_WINDOW_DAYS, QualityWindow

QUANTILES = (0.1, 0.5, 0.9)
HORIZONS = np.array([20, 12, 5, 1])  # oldest origin first, as the ledger scores them


def test_the_rolling_wql_is_the_wql_of_the_forecasts_of_the_last_week_of_targets():
    rng = np.random.default_rng(0)
    window, kept = QualityWindow(QUANTILES), []
    assert window.wql() is None
    for target in range(20):
        close = []  # one close: every item's errors of the target, taken in at once
        for _ in range(3):
            actual = float(rng.poisson(3))
            forecasts = np.sort(rng.gamma(2.0, 1.5, (len(HORIZONS), len(QUANTILES))), axis=1)
            close.append(TargetErrors(target, actual, target - HORIZONS, forecasts))
            if target > 19 - QUALITY_WINDOW_DAYS:
                kept += [(actual, h, f) for h, f in zip(HORIZONS, forecasts)]
        window.add(close)
    actuals, horizons, forecasts = (np.array([a for a, _, _ in kept]), np.array([h for _, h, _ in kept]),
                                    np.stack([f for _, _, f in kept]))
    assert np.isclose(window.wql(), wql(actuals, forecasts, QUANTILES))
    week = window.by_bucket()["1-7"]
    near = horizons <= 7
    assert week.forecasts == near.sum()
    np.testing.assert_allclose(week.wql.mean(), wql(actuals[near], forecasts[near], QUANTILES))
    inside = (forecasts[near, 0] <= actuals[near]) & (actuals[near] <= forecasts[near, -1])
    assert np.isclose(week.coverage, inside.mean())
