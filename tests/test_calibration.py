import numpy as np
import pytest

from mqstream.models.scores import calibration, coverage_80

LEVELS = (0.1, 0.5, 0.9)
DECILES = tuple(np.round(np.arange(1, 10) / 10, 1))


def zero_inflated_poisson(n: int, zero_share: float = 0.7, mean: float = 3.0, seed: int = 0) -> np.ndarray:
    """Integer demand: no sale with probability ``zero_share``, else Poisson(``mean``) (itself maybe 0)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < zero_share, 0, rng.poisson(mean, n)).astype(float)


def test_shares_below_and_at_or_below_each_level_and_coverage_split_by_zero_and_sale_days():
    actuals = np.array([0.0, 0.0, 1.0, 3.0])
    forecasts = np.array([[0.0, 0.0, 1.0],  # y=0: on P10, inside
                          [0.5, 1.0, 2.0],  # y=0: under P10, outside
                          [0.0, 1.0, 2.0],  # y=1: on P50, inside
                          [0.0, 1.0, 2.0]])  # y=3: over P90, outside
    c = calibration(actuals, forecasts, LEVELS)
    assert c["below"] == {"0.1": 0.25, "0.5": 0.25, "0.9": 0.75}
    assert c["at_or_below"] == {"0.1": 0.5, "0.5": 0.75, "0.9": 0.75}
    assert c["zero_share"] == 0.5
    assert c["coverage_80_zero_days"] == 0.5 and c["coverage_80_sale_days"] == 0.5


def test_exact_quantiles_of_zero_inflated_demand_are_calibrated_yet_cover_more_than_ninety_percent():
    actuals = zero_inflated_poisson(20_000)
    # The pinball-optimal forecast of each level: the smallest k with share(y <= k) >= q.
    exact = np.quantile(actuals, DECILES, method="inverted_cdf")  # P10..P70 are 0, P80 2, P90 4
    forecasts = np.broadcast_to(exact, actuals.shape + (len(DECILES),))
    c = calibration(actuals, forecasts, DECILES)
    for q in c["below"]:
        assert c["below"][q] <= float(q) <= c["at_or_below"][q]  # every level inside its bracket
    assert c["zero_share"] == pytest.approx(0.7 + 0.3 * np.exp(-3.0), abs=0.01)
    assert c["coverage_80_zero_days"] == 1.0  # P10 = 0 ties with every zero day
    assert coverage_80(actuals, forecasts, DECILES) > 0.9


def test_a_p10_just_above_zero_lowers_coverage_and_leaves_its_bracket():
    actuals = zero_inflated_poisson(20_000)
    forecasts = np.quantile(actuals, LEVELS, method="inverted_cdf")[None, :].repeat(len(actuals), 0)
    forecasts[:, 0] = 0.01  # every zero day now falls under P10
    c = calibration(actuals, forecasts, LEVELS)
    assert c["below"]["0.1"] > 0.7  # far above 0.1: P10 is too high, not calibrated
    assert c["coverage_80_zero_days"] == 0.0
    assert coverage_80(actuals, forecasts, LEVELS) < 0.3


def test_coverage_is_at_or_below_p90_minus_below_p10_and_the_zero_weighted_mean_of_its_parts():
    rng = np.random.default_rng(2)
    actuals = zero_inflated_poisson(2 * 5 * 28, seed=3).reshape(2, 5, 28)  # (N, O, H)
    forecasts = np.sort(rng.integers(0, 4, (2, 5, 28, 3)), axis=-1).astype(float)
    c = calibration(actuals, forecasts, LEVELS)
    coverage = coverage_80(actuals, forecasts, LEVELS)
    assert coverage == pytest.approx(c["at_or_below"]["0.9"] - c["below"]["0.1"])
    z = c["zero_share"]
    assert coverage == pytest.approx(z * c["coverage_80_zero_days"] + (1 - z) * c["coverage_80_sale_days"])


def test_coverage_on_zero_days_is_none_when_there_are_none():
    c = calibration(np.array([1.0, 2.0]), np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]), LEVELS)
    assert c["zero_share"] == 0.0 and c["coverage_80_zero_days"] is None
    assert c["coverage_80_sale_days"] == 1.0
