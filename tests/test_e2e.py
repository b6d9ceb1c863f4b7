"""The whole loop against the real local broker: replay -> worker -> state, forecasts, errors."""
from __future__ import annotations


import numpy as np
import orjson
import pytest

from mqstream.periods import day_of_iso, day_of_ts
from mqstream.models.dataset import demand_series, demand_mask, load_transactions
from mqstream.state.item import RETURNS, UNITS, VIEWS
from mqstream.models.scores import pinball_loss
from mqstream.streams.replay import replay_events
from tests.kafka_helpers import fresh_settings, outputs, run_to_the_end, table_state

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# Three weeks of the November peak: over 50,000 real sales lines in few days (few day closes).
FIRST, LAST = day_of_iso("2010-11-01"), day_of_iso("2010-11-21")
QUANTILES = np.arange(1, 10) / 10


@pytest.fixture(scope="module")
def transactions():
    return load_transactions()


@pytest.fixture(scope="module")
def events(transactions):
    return replay_events(FIRST, LAST, transactions)


@pytest.fixture(scope="module")
def replayed(kafka_settings, tmp_path_factory, events):
    """One uninterrupted run over the replay: (settings, state, forecasts, errors). Model batches
    of 16 items make each partition's close run in chunks of 128 (streams/close.py)."""
    settings = fresh_settings(kafka_settings, tmp_path_factory.mktemp("run"), refresh_batch=16)
    run_to_the_end(settings, events)
    return (settings, table_state(settings), *outputs(settings))


def test_replay_is_at_least_fifty_thousand_real_sales(events):
    assert sum(e.topic == "sales" for e in events) >= 50_000


def test_every_item_sold_in_the_period_gets_well_formed_forecasts(replayed, transactions):
    _, _, forecasts, _ = replayed
    window = transactions[day_of_ts(transactions["ts"]).between(FIRST, LAST) & demand_mask(transactions)]
    forecast_items = {item for item, _ in forecasts}
    assert set(window["item_id"]) <= forecast_items
    for body in forecasts.values():
        assert body["schema_version"] == 1
        assert body["horizons"] == list(range(1, 29))
        assert body["quantiles"] == pytest.approx(list(QUANTILES))
        values = np.array(body["values"])
        assert values.shape == (28, 9)
        assert (np.diff(values, axis=1) >= 0).all() and (values >= 0).all()
        assert body["model"]["name"] == "seasonal-naive" and body["model"]["version"]
        assert FIRST <= day_of_iso(body["origin"]) <= LAST
        assert body["created_at"].endswith("+00:00")


def test_state_daily_totals_equal_totals_from_the_file(replayed, transactions, events):
    _, state, _, _ = replayed
    expected = demand_series(transactions, np.array(sorted(state)), FIRST, LAST)
    views = {}
    for e in events:
        if e.topic == "page-views":
            body = orjson.loads(e.value)
            views[(body["item_id"], body["ts"] // 86400)] = body["views"]
    returns = transactions[day_of_ts(transactions["ts"]).between(FIRST, LAST) & (transactions["quantity"] < 0)]
    returned = returns.groupby(["item_id", day_of_ts(returns["ts"])])["quantity"].sum()
    for i, item in enumerate(expected.items):
        np.testing.assert_allclose(state[item].daily(UNITS, FIRST, LAST), expected.units[i], err_msg=item)
        got_views = state[item].daily(VIEWS, FIRST, LAST)
        want_views = [views.get((item, d), 0) for d in range(FIRST, LAST + 1)]
        np.testing.assert_allclose(got_views, want_views, err_msg=item)
        got_returns = state[item].daily(RETURNS, FIRST, LAST)
        want_returns = [-returned.get((item, d), 0) for d in range(FIRST, LAST + 1)]
        np.testing.assert_allclose(got_returns, want_returns, err_msg=item)
    assert len(state) >= 2_900


def test_forecast_errors_equal_an_offline_scoring_of_the_published_forecasts(replayed, transactions):
    _, state, forecasts, errors = replayed
    actual = demand_series(transactions, np.array(sorted(state)), FIRST, LAST)
    row = {item: i for i, item in enumerate(actual.items)}
    published = {key: np.array(body["values"]) for key, body in forecasts.items()}
    expected_records = sum(min(28, LAST - day_of_iso(origin)) for _, origin in forecasts)
    scored_records = 0
    for (item, target), body in errors.items():
        y = float(actual.units[row[item], day_of_iso(target) - FIRST])
        assert body["actual"] == pytest.approx(y), (item, target)
        offline = np.stack([published[(item, o)][h - 1] for o, h in zip(body["origins"], body["horizons"])])
        assert [day_of_iso(target) - day_of_iso(o) for o in body["origins"]] == body["horizons"]
        np.testing.assert_allclose(body["forecasts"], offline, atol=1e-6, err_msg=f"{item} {target}")
        np.testing.assert_allclose(body["pinball"], pinball_loss(y, offline, QUANTILES), atol=1e-5)
        scored_records += len(body["origins"])
    assert scored_records == expected_records  # every forecast of every closed target, once
