"""The worker's rolling quality (streams/metrics.py QualityWindow) agrees with the scores
module's wQL on the same forecasts, over the last week of targets only."""
import numpy as np

from mqstream.models.scores import pinball_loss, wql
from mqstream.streams.metrics import QUALITY_WINDOW_DAYS, QualityWindow

QUANTILES = (0.1, 0.5, 0.9)


def test_the_rolling_wql_is_the_wql_of_the_forecasts_of_the_last_week_of_targets():
    rng = np.random.default_rng(0)
    window, kept = QualityWindow(QUANTILES), []
    assert window.wql() is None
    for target in range(20):
        for horizon in (1, 5, 12, 20):
            actual = float(rng.poisson(3))
            forecast = np.sort(rng.gamma(2.0, 1.5, len(QUANTILES)))
            window.add(target, horizon, actual, pinball_loss(actual, forecast, np.asarray(QUANTILES)),
                       bool(forecast[0] <= actual <= forecast[-1]))
            if target > 19 - QUALITY_WINDOW_DAYS:
                kept.append((actual, forecast))
    actuals, forecasts = np.array([a for a, _ in kept]), np.stack([f for _, f in kept])
    assert np.isclose(window.wql(), wql(actuals, forecasts, QUANTILES))
