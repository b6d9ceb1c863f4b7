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
# Three weeks of the November peak: over 50,000 real sales lines in few days (few day closes).
FIRST, LAST = iso_day("2010-11-01"), iso_day("2010-11-21")
QUANTILES = np.arange(1, 10) / 10


@pytest.fixture(scope="module")
def transactions():
    return load_transactions()


@pytest.fixture(scope="module")
def events(transactions):
    return replay_events(FIRST, LAST, transactions)


def run_to_the_end(settings, events) -> float:
    """Replay ``events`` into fresh topics and run one worker until it has caught up."""
    create_topics(settings)
    send(events, settings, progress=False)
    started = time.monotonic()
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)
    return time.monotonic() - started


def outputs(settings):
    return (latest_by(read_topic(settings, settings.topic("forecasts")), "item_id", "origin"),
            latest_by(read_topic(settings, settings.topic("forecast-errors")), "item_id", "target"))


@pytest.fixture(scope="module")
def replayed(kafka_settings, tmp_path_factory, events):
    """One uninterrupted run over the replay: (settings, state, forecasts, errors)."""
    settings = fresh_settings(kafka_settings, tmp_path_factory.mktemp("run"))
    run_to_the_end(settings, events)
    return (settings, table_state(settings), *outputs(settings))


def test_replay_is_at_least_fifty_thousand_real_sales(events):
    assert sum(e.topic == "sales" for e in events) >= 50_000


def test_every_item_sold_in_the_period_gets_well_formed_forecasts(replayed, transactions):
    _, _, forecasts, _ = replayed
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
    _, state, _, _ = replayed
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
    assert len(state) >= 2_900


def test_forecast_errors_equal_an_offline_scoring_of_the_published_forecasts(replayed, transactions):
    _, state, forecasts, errors = replayed
    actual = daily_series(transactions, np.array(sorted(state)), FIRST, LAST)
    row = {item: i for i, item in enumerate(actual.items)}
    published = {key: np.array(body["values"]) for key, body in forecasts.items()}
    expected_records = sum(min(28, LAST - iso_day(origin)) for _, origin in forecasts)
    scored_records = 0
    for (item, target), body in errors.items():
        y = float(actual.units[row[item], iso_day(target) - FIRST])
        assert body["actual"] == pytest.approx(y), (item, target)
        offline = np.stack([published[(item, o)][h - 1] for o, h in zip(body["origins"], body["horizons"])])
        assert [iso_day(target) - iso_day(o) for o in body["origins"]] == body["horizons"]
        np.testing.assert_allclose(body["forecasts"], offline, atol=1e-6, err_msg=f"{item} {target}")
        np.testing.assert_allclose(body["pinball"], pinball(y, offline, QUANTILES), atol=1e-5)
        scored_records += len(body["origins"])
    assert scored_records == expected_records  # every forecast of every closed target, once


def test_worker_killed_mid_replay_ends_with_the_state_of_an_uninterrupted_run(
        kafka_settings, tmp_path_factory, transactions):
    events = replay_events(iso_day("2010-11-08"), iso_day("2010-11-14"), transactions)
    reference = fresh_settings(kafka_settings, tmp_path_factory.mktemp("reference"))
    seconds = run_to_the_end(reference, events)
    settings = fresh_settings(kafka_settings, tmp_path_factory.mktemp("killed"))
    create_topics(settings)
    send(events, settings, progress=False)
    rng = random.Random(7)
    for _ in range(3):
        worker = start_worker(settings)
        time.sleep(rng.uniform(0.2, 0.5) * seconds)
        stop_worker(worker, signal.SIGKILL)
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)

    state, ref_state = table_state(settings), table_state(reference)
    assert state.keys() == ref_state.keys()
    for item, ref in ref_state.items():
        got = state[item]
        assert (got.closed_through, got.open_days) == (ref.closed_through, ref.open_days), item
        assert {d: set(ids) for d, ids in got.seen.items()} == {d: set(ids) for d, ids in ref.seen.items()}
        np.testing.assert_array_equal(got.history, ref.history)
    sides, ref_sides = model_state(settings), model_state(reference)
    assert sides.keys() == ref_sides.keys()
    assert all(sides[k] == ref_sides[k] for k in sides)
    (forecasts, errors), (ref_forecasts, ref_errors) = outputs(settings), outputs(reference)
    assert forecasts.keys() == ref_forecasts.keys()
    assert all(forecasts[k]["values"] == ref_forecasts[k]["values"] for k in forecasts)
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
