"""The whole loop against the real local broker: replay -> worker -> state, forecasts, errors."""
from __future__ import annotations

import random
import signal
import time

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer

from models.dataset import daily_series, demand_mask, load_transactions, to_day
from state.item import RETURNS, UNITS, VIEWS
from state.ledger import pinball
from streams.messages import day_iso, iso_day
from streams.replay import replay_events, send
from streams.topics import create_topics
from tests.kafka_helpers import (fresh_settings, latest_by, model_state, read_topic, start_worker,
                                 stop_worker, table_state, wait_caught_up)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FIRST, LAST = iso_day("2011-06-01"), iso_day("2011-07-12")
QUANTILES = np.arange(1, 10) / 10


@pytest.fixture(scope="module")
def transactions():
    return load_transactions()


@pytest.fixture(scope="module")
def events(transactions):
    return replay_events(FIRST, LAST, transactions)


@pytest.fixture(scope="module")
def replayed(kafka_settings, tmp_path_factory, events):
    """One uninterrupted run over the replay: (settings, state, forecasts, errors, seconds)."""
    settings = fresh_settings(kafka_settings, tmp_path_factory.mktemp("run"))
    create_topics(settings)
    started = time.monotonic()
    send(events, settings, progress=False)
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)
    seconds = time.monotonic() - started
    return (settings, table_state(settings),
            latest_by(read_topic(settings, settings.topic("forecasts")), "item_id", "origin"),
            latest_by(read_topic(settings, settings.topic("forecast-errors")), "item_id", "target"),
            seconds)


def test_replay_is_at_least_fifty_thousand_real_sales(events):
    assert sum(e.topic == "sales" for e in events) >= 50_000


def test_every_item_sold_in_the_period_gets_well_formed_forecasts(replayed, transactions):
    _, _, forecasts, _, _ = replayed
    window = transactions[to_day(transactions["ts"]).between(FIRST, LAST) & demand_mask(transactions)]
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
        assert FIRST <= iso_day(body["origin"]) <= LAST
        assert body["created_at"].endswith("+00:00")


def test_state_daily_totals_equal_totals_from_the_file(replayed, transactions, events):
    _, state, _, _, _ = replayed
    expected = daily_series(transactions, np.array(sorted(state)), FIRST, LAST)
    views = {}
    for e in events:
        if e.topic == "page-views":
            body = orjson.loads(e.value)
            views[(body["item_id"], body["ts"] // 86400)] = body["views"]
    returns = transactions[to_day(transactions["ts"]).between(FIRST, LAST) & (transactions["quantity"] < 0)]
    returned = returns.groupby(["item_id", to_day(returns["ts"])])["quantity"].sum()
    for i, item in enumerate(expected.items):
        np.testing.assert_allclose(state[item].daily(UNITS, FIRST, LAST), expected.units[i], err_msg=item)
        got_views = state[item].daily(VIEWS, FIRST, LAST)
        want_views = [views.get((item, d), 0) for d in range(FIRST, LAST + 1)]
        np.testing.assert_allclose(got_views, want_views, err_msg=item)
        got_returns = state[item].daily(RETURNS, FIRST, LAST)
        want_returns = [-returned.get((item, d), 0) for d in range(FIRST, LAST + 1)]
        np.testing.assert_allclose(got_returns, want_returns, err_msg=item)
    assert len(state) >= 2_700


def test_forecast_errors_equal_an_offline_scoring_of_the_published_forecasts(replayed, transactions):
    _, state, forecasts, errors, _ = replayed
    actual = daily_series(transactions, np.array(sorted(state)), FIRST, LAST)
    row = {item: i for i, item in enumerate(actual.items)}
    expected = {}
    for (item, origin), body in forecasts.items():
        for h, quantiles in enumerate(body["values"], start=1):
            target = iso_day(origin) + h
            if target <= LAST:
                expected[(item, day_iso(target), origin)] = np.array(quantiles)
    published = {}
    for (item, target), body in errors.items():
        y = float(actual.units[row[item], iso_day(target) - FIRST])
        assert body["actual"] == pytest.approx(y), (item, target)
        for origin, f, loss in zip(body["origins"], body["forecasts"], body["pinball"]):
            published[(item, target, origin)] = np.array(f)
            np.testing.assert_allclose(loss, pinball(y, np.array(f), QUANTILES), atol=1e-5)
    assert published.keys() == expected.keys()
    for key, f in expected.items():
        np.testing.assert_allclose(published[key], f, atol=1e-6, err_msg=str(key))


def test_worker_killed_mid_replay_ends_with_the_state_of_an_uninterrupted_run(
        replayed, kafka_settings, tmp_path_factory, events):
    reference, ref_state, ref_forecasts, ref_errors, seconds = replayed
    settings = fresh_settings(kafka_settings, tmp_path_factory.mktemp("killed"))
    create_topics(settings)
    send(events, settings, progress=False)
    rng = random.Random(7)
    for attempt in range(3):
        worker = start_worker(settings)
        time.sleep(rng.uniform(0.25, 0.6) * seconds / 3 + 8)  # 8 s: faust's start-up
        stop_worker(worker, signal.SIGKILL)
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)
    state = table_state(settings)
    assert state.keys() == ref_state.keys()
    for item, ref in ref_state.items():
        got = state[item]
        assert (got.closed_through, got.open_days, got.seen) == (ref.closed_through, ref.open_days, ref.seen), item
        np.testing.assert_array_equal(got.history, ref.history)
    sides, ref_sides = model_state(settings), model_state(reference)
    assert sides.keys() == ref_sides.keys()
    assert all(sides[k] == ref_sides[k] for k in sides)
    forecasts = latest_by(read_topic(settings, settings.topic("forecasts")), "item_id", "origin")
    assert forecasts.keys() == ref_forecasts.keys()
    assert all(forecasts[k]["values"] == ref_forecasts[k]["values"] for k in forecasts)
    errors = latest_by(read_topic(settings, settings.topic("forecast-errors")), "item_id", "target")
    assert errors.keys() == ref_errors.keys()


BAD_SALES = {
    "malformed_json": b'{"event_id": "b1", "item_id": "22423"',
    "not_an_object": b"[1, 2, 3]",
    "bad_event_id": b'{"item_id": "22423", "ts": 1307000000, "quantity": 1, "price": 1.0}',
    "bad_quantity": b'{"event_id": "b4", "item_id": "22423", "ts": 1307000000, "quantity": "two", "price": 1.0}',
    "unknown_field": b'{"event_id": "b5", "item_id": "22423", "ts": 1307000000, "quantity": 1, "price": 1, "x": 1}',
    "key_mismatch": b'{"event_id": "b6", "item_id": "99999", "ts": 1307000000, "quantity": 1, "price": 1.0}',
    "too_late": b'{"event_id": "b7", "item_id": "22423", "ts": 1306900000, "quantity": 1, "price": 1.0}',
}


def test_bad_events_go_to_dead_letters_with_reasons_and_the_worker_keeps_going(kafka_settings, tmp_path):
    settings = fresh_settings(kafka_settings, tmp_path)
    create_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)

    def sale(event_id: str, ts: int) -> bytes:
        return orjson.dumps({"event_id": event_id, "item_id": "22423", "ts": ts, "quantity": 2, "price": 1.5})

    producer.send(settings.topic("sales"), key=b"22423", value=sale("g1", 1307000000))  # 2011-06-02
    producer.send(settings.topic("sales"), key=b"22423", value=sale("g2", 1307100000))  # 2011-06-03
    for value in BAD_SALES.values():
        producer.send(settings.topic("sales"), key=b"22423", value=value)
    producer.send(settings.topic("sales"), key=b"22423", value=sale("g3", 1307100100))
    producer.send(settings.topic("page-views"), key=b"22423", value=b'{"event_id": "v1", "item_id": "22423", '
                                                                     b'"ts": 1307100000, "views": -3}')
    producer.flush()
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)
    letters = read_topic(settings, settings.topic("dead-letters"))
    reasons = {dict(r.headers)["reason"].decode(): r.value for r in letters}
    assert reasons == {**BAD_SALES, "bad_views": reasons.get("bad_views")}
    assert reasons["bad_views"] is not None
    state = table_state(settings)["22423"]
    assert state.daily(UNITS, iso_day("2011-06-02"), iso_day("2011-06-03")).tolist() == [2.0, 4.0]
