"""The material-change rule (streams/changes.py): a change exactly when the rule says so."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import orjson
import pytest

from mqstream.models.protocol import DEFAULT_QUANTILES
from mqstream.schemas import validate
from mqstream.state.refresh import IssuedForecast
from mqstream.streams.changes import (P50_MOVED, P90_CROSSED_STOCK, ChangeRule, WeekTotals, change_message,
                                      material_change, material_changes, week_totals)
from tests.forecast_helpers import CREATED_AT, MODEL, issued

Q = DEFAULT_QUANTILES
P50, P90 = Q.index(0.5), Q.index(0.9)


def flat(p50_7d: float, p90_7d: float, origin: int = 100, item: str = "A") -> IssuedForecast:
    """A forecast whose day-1..7 P50 and P90 values sum to the given totals (same every day;
    quantiles between follow linearly, so rows never decrease)."""
    values = np.zeros((28, len(Q)))
    values[:, :] = np.linspace(0.0, p50_7d / 7, len(Q))
    values[:, P50:] = np.linspace(p50_7d / 7, p90_7d / 7, len(Q) - P50)
    return IssuedForecast(item, origin, values)


def change(before, after, share=0.25, stock=0.0):
    return material_change(before, after, Q, ChangeRule(share=share, stock_level=stock))


def test_week_totals_sum_the_first_seven_days_of_p50_and_p90():
    f = issued("A", 15_000)
    (totals,) = week_totals([f], Q, decimals=3)
    assert totals == WeekTotals(15_000, round(f.values[:7, P50].sum(), 3), round(f.values[:7, P90].sum(), 3))


@pytest.mark.parametrize("after", [70.0, 87.5, 52.5, 80.0, 60.0])
def test_p50_moving_by_at_most_the_share_is_not_a_change(after):
    assert change(flat(70, 100), flat(after, 120, origin=101)) is None


@pytest.mark.parametrize("after", [87.501, 52.499, 140.0, 0.0])  # 0.001: the published resolution
def test_p50_moving_by_more_than_the_share_is_a_change(after):
    got = change(flat(70, 140), flat(after, 140, origin=101))
    assert got.reasons == (P50_MOVED,)
    assert (got.before.p50, got.after.p50) == (70.0, after)
    assert (got.before.origin, got.after.origin) == (100, 101)
    assert got.p50_move == pytest.approx((after - 70) / 70)


def test_a_small_total_moves_relative_to_one_unit_not_to_itself():
    assert change(flat(0.0, 1), flat(0.25, 1)) is None  # 0 -> 0.25: not a move of "infinity"
    assert change(flat(0.5, 1), flat(0.75, 1)) is None  # 0.25 of a unit is exactly the share
    assert change(flat(0.0, 1), flat(0.5, 1)).reasons == (P50_MOVED,)


def test_the_stock_rule_is_off_at_stock_level_zero():
    assert change(flat(7, 7), flat(7, 700)) is None
    assert change(None, flat(7, 700)) is None


@pytest.mark.parametrize("before,after,crossed", [
    (49.0, 50.0, False),   # reaching the stock level exactly: stock still covers P90
    (50.0, 50.5, True),    # above it
    (49.0, 70.0, True),
    (70.0, 50.0, True),    # back to covered
    (70.0, 60.0, False),   # above, still above
    (10.0, 30.0, False),   # below, still below
])
def test_p90_total_crossing_the_stock_level_either_way_is_a_change(before, after, crossed):
    got = change(flat(7, before), flat(7, after, origin=101), stock=50.0)
    assert (got is not None and got.reasons == (P90_CROSSED_STOCK,)) == crossed
    assert got is None or (got.before.p90, got.after.p90) == (before, after)


def test_both_reasons_together():
    got = change(flat(7, 40), flat(70, 80, origin=101), stock=50.0)
    assert got.reasons == (P50_MOVED, P90_CROSSED_STOCK)


def test_a_first_forecast_is_a_change_only_when_its_p90_total_is_above_the_stock_level():
    assert change(None, flat(7, 50.0), stock=50.0) is None
    assert change(None, flat(700, 800.0)) is None  # no previous P50 to move from
    got = change(None, flat(7, 50.5), stock=50.0)
    assert got.reasons == (P90_CROSSED_STOCK,) and got.before is None and got.p50_move is None


def test_a_repeated_forecast_is_never_a_change():
    f = issued("A", 15_000)
    assert change(f, f, share=0.01, stock=1.0) is None
    as_ledger_keeps_it = IssuedForecast("A", 15_000, f.values.astype(np.float32))  # float32 copy
    assert change(as_ledger_keeps_it, f, share=1e-9, stock=week_totals([f], Q, 3)[0].p90) is None


def test_over_real_forecasts_changes_are_exactly_the_revisions_the_rule_selects():
    series = [issued("A", 15_000 + d, level=level, seed=d) for d, level in enumerate([1, 1, 5, 5, 2, 9, 9, 0.5])]
    rule = ChangeRule(share=0.3, stock_level=40.0)
    emitted = []
    for before, after in zip([None] + series[:-1], series):
        got = material_change(before, after, Q, rule)
        b = None if before is None else week_totals([before], Q, 3)[0]
        (a,) = week_totals([after], Q, 3)
        moved = b is not None and abs(a.p50 - b.p50) > 0.3 * max(b.p50, 1.0)
        crossed = (b is not None and b.p90 > 40) != (a.p90 > 40)
        assert (got is not None) == (moved or crossed)
        emitted += [got] if got else []
    assert 0 < len(emitted) < len(series)


def test_a_batch_is_judged_as_each_forecast_alone_with_totals_a_consumer_sums_the_same():
    rng = np.random.default_rng(0)
    series = [IssuedForecast(f"I{k}", 15_000, np.round(np.cumsum(rng.gamma(0.4, 3.0, (28, len(Q))), 1), 3))
              for k in range(300)]
    batch = [replace(f, previous=None if k % 4 == 0 else series[k - 1]) for k, f in enumerate(series)]
    rule = ChangeRule(share=0.2, stock_level=25.0)
    got = material_changes(batch, Q, rule)
    for f, change_ in zip(batch, got):
        totals = change_.after if change_ else week_totals([f], Q, 3)[0]
        assert totals.p50 == round(sum(f.values[:7, P50].tolist()), 3)  # in horizon order, from 0
        assert totals.p90 == round(sum(f.values[:7, P90].tolist()), 3)
    assert 0 < sum(c is not None for c in got) < len(batch)


def test_change_message_keeps_its_schema_and_says_before_and_after():
    got = change(flat(30, 40), flat(50, 60, origin=101), stock=50.0)
    body = validate("forecast-change", change_message(got, ChangeRule(0.25, 50.0), MODEL, CREATED_AT))
    assert body["reasons"] == [P50_MOVED, P90_CROSSED_STOCK]
    assert body["before"] == {"origin": "1970-04-11", "p50_7d": 30.0, "p90_7d": 40.0}
    assert body["after"] == {"origin": "1970-04-12", "p50_7d": 50.0, "p90_7d": 60.0}
    assert body["p50_7d_move"] == pytest.approx(20 / 30)
    assert (body["change_share"], body["stock_level"]) == (0.25, 50.0)
    assert body["model"] == {"name": MODEL.name, "version": MODEL.version}
    first = change(None, flat(7, 60), stock=50.0)
    body = orjson.loads(change_message(first, ChangeRule(0.25, 50.0), MODEL, CREATED_AT))
    assert body["before"] is None and body["p50_7d_move"] is None
    validate("forecast-change", body)


def test_a_forecast_without_a_p90_cannot_be_judged():
    f = issued("A", 15_000)
    with pytest.raises(ValueError, match="0.9"):
        material_change(None, f, Q[:-1], ChangeRule(stock_level=1.0))
