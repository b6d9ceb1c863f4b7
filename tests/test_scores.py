import numpy as np
import pytest

from mqstream.models.scores import (coverage_80, item_losses, paired_bootstrap, pinball_loss, score, volatility, wql,
                                    wql_by_bucket, wql_per_quantile)

LEVELS = (0.1, 0.5, 0.9)
NINE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_pinball_loss_weighs_under_forecasts_by_q_and_over_forecasts_by_one_minus_q():
    assert pinball_loss(10.0, 8.0, 0.9) == pytest.approx(1.8)  # under by 2: 0.9 · 2
    assert pinball_loss(8.0, 10.0, 0.9) == pytest.approx(0.2)  # over by 2: 0.1 · 2
    assert pinball_loss(5.0, 5.0, 0.3) == 0.0


def test_pinball_loss_takes_one_level_per_quantile_of_a_forecast():
    q = np.array([0.1, 0.9])
    np.testing.assert_allclose(pinball_loss(10.0, np.array([8.0, 8.0]), q), [0.2, 1.8])
    np.testing.assert_allclose(pinball_loss(10.0, np.array([12.0, 12.0]), q), [1.8, 0.2])


def test_wql_is_twice_summed_pinball_over_summed_actuals_averaged_over_levels():
    actuals = np.array([[[2.0, 0.0]]])  # (N=1, O=1, H=2)
    forecasts = np.array([[[[0.0, 1.0, 3.0],  # horizon 1: y=2
                            [0.0, 1.0, 1.0]]]])  # horizon 2: y=0
    # q=0.1: 0.1·2 + 0 = 0.2 -> 2·0.2/2 = 0.2; q=0.5: 0.5 + 0.5 -> 1.0; q=0.9: 0.1 + 0.1 -> 0.2
    np.testing.assert_allclose(wql_per_quantile(actuals, forecasts, LEVELS), [0.2, 1.0, 0.2])
    assert wql(actuals, forecasts, LEVELS) == pytest.approx(1.4 / 3)


def test_an_all_zero_forecast_scores_twice_the_mean_level():
    rng = np.random.default_rng(0)
    actuals = rng.poisson(3.0, (4, 5, 28)).astype(float)
    levels = tuple(np.round(np.arange(1, 10) / 10, 1))
    assert wql(actuals, np.zeros(actuals.shape + (9,)), levels) == pytest.approx(1.0)


def test_each_horizon_bucket_is_normalised_by_its_own_actuals():
    actuals = np.ones((1, 1, 28))
    actuals[..., 7:] = 5.0  # later buckets sell more; that must not dilute bucket 1-7
    forecasts = np.repeat(actuals[..., None], 3, axis=-1)
    forecasts[:, :, :7] = 0.0  # only horizons 1..7 miss
    buckets = wql_by_bucket(actuals, forecasts, LEVELS)
    assert buckets["1-7"] == pytest.approx(2 * np.mean(LEVELS))
    assert buckets["8-14"] == 0.0 and buckets["15-28"] == 0.0


def test_coverage_counts_actuals_on_the_interval_ends_as_inside():
    actuals = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    forecasts = np.broadcast_to(np.array([1.0, 2.0, 3.0]), (1, 1, 4, 3))  # P10=1, P90=3
    assert coverage_80(actuals, forecasts, LEVELS) == pytest.approx(0.75)


def _forecasts_from_median(median: np.ndarray) -> np.ndarray:
    return np.stack([median - 1, median, median + 1], axis=-1)


def test_volatility_is_mean_change_between_consecutive_origins_over_mean_actual():
    origins, horizons = np.arange(3), np.arange(1, 4)
    median = 10.0 * origins[:, None] + horizons[None, :]  # each day later adds 9 to a target's P50
    actuals = np.full((1, 3, 3), 3.0)
    assert volatility(actuals, _forecasts_from_median(median[None]), LEVELS) == pytest.approx(9.0 / 3.0)


def test_volatility_is_zero_when_every_target_keeps_its_forecast_as_origins_advance():
    origins, horizons = np.arange(5), np.arange(1, 8)
    target = origins[:, None] + horizons[None, :]
    median = np.sin(target)[None] + 2.0  # varies across target days, not across origins
    actuals = np.ones((1, 5, 7))
    assert volatility(actuals, _forecasts_from_median(median), LEVELS) == pytest.approx(0.0)


def test_score_reports_every_number_of_the_protocol():
    rng = np.random.default_rng(1)
    actuals = rng.poisson(2.0, (3, 4, 28)).astype(float)
    forecasts = np.sort(rng.uniform(0, 4, (3, 4, 28, 3)), axis=-1)
    result = score(actuals, forecasts, LEVELS)
    assert set(result) == {"wql", "wql_by_bucket", "wql_per_quantile", "coverage_80", "volatility"}
    assert set(result["wql_per_quantile"]) == {"0.1", "0.5", "0.9"}
    assert result["wql"] == pytest.approx(np.mean(list(result["wql_per_quantile"].values())))


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="forecasts"):
        wql(np.ones((1, 2, 3)), np.ones((1, 2, 3, 2)), LEVELS)


def test_coverage_needs_the_p10_and_p90_levels():
    with pytest.raises(ValueError, match="0.9"):
        coverage_80(np.ones((1, 1, 1)), np.ones((1, 1, 1, 2)), (0.1, 0.5))


def test_item_losses_add_up_to_the_wql_numerator():
    rng = np.random.default_rng(3)
    actuals = rng.poisson(2.0, (5, 4, 3)).astype(float)
    forecasts = np.sort(rng.gamma(2.0, 1.0, (5, 4, 3, 9)), axis=-1)
    assert item_losses(actuals, forecasts, NINE).sum() / actuals.sum() == pytest.approx(wql(actuals, forecasts, NINE))


def test_paired_bootstrap_separates_a_real_gain_from_a_tie():
    rng = np.random.default_rng(4)
    scale = rng.gamma(2.0, 10.0, 500)
    base = scale * rng.uniform(0.7, 0.9, 500)
    better = paired_bootstrap(base * 0.95, base, scale)
    assert better["ci95"][1] < 0 and better["difference"] == pytest.approx((base * -0.05).sum() / scale.sum())
    noisy = paired_bootstrap(base + rng.normal(0, 2.0, 500), base, scale)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1]
