import numpy as np

from mqstream.models.protocol import ItemInfo, Period
from mqstream.models.seasonal_naive import SeasonalNaive


def run(model, series):
    state = model.new_state(ItemInfo("x"), 0)
    for day, y in enumerate(series):
        (state,) = model.advance([state], [Period(day, float(y), 0.0, 1.0)])
    return state


def test_point_forecast_repeats_the_same_weekday_of_the_last_week():
    model = SeasonalNaive()
    weekly = np.tile([5, 0, 1, 2, 3, 4, 9], 6)
    f = model.forecast([run(model, weekly)])[0]  # (H, Q)
    expected = np.tile([5, 0, 1, 2, 3, 4, 9], 4)  # the pattern goes on
    np.testing.assert_allclose(f[:, 4], expected)
    np.testing.assert_allclose(f[:, 0], f[:, 8])  # no errors: no spread


def test_spread_comes_from_past_errors_and_quantiles_never_cross():
    rng = np.random.default_rng(0)
    model = SeasonalNaive()
    f = model.forecast([run(model, rng.poisson(5, 120))])[0]
    assert (np.diff(f, axis=1) >= 0).all()
    assert (f >= 0).all()
    assert (f[:, -1] - f[:, 0]).mean() > 2  # Poisson(5) noise makes a real interval


def test_state_size_does_not_grow_with_history():
    model = SeasonalNaive()
    assert len(run(model, np.ones(100))) == len(run(model, np.ones(1000)))
