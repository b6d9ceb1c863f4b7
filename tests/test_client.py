"""The Python client (mqstream/client.py): quantiles between the stored ones, stock levels,
reading every topic it reads from a real broker, and asking the worker's HTTP lookup."""
from __future__ import annotations

import datetime as dt
import time

import numpy as np
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from mqstream.periods import Cadence, iso_of_day
from mqstream.bootstrap import BrokerUnreachable
from mqstream.client import Forecast, ForecastChange, ForecastClient, LookupUnavailable, interpolate
from mqstream.local_broker import free_port
from mqstream.partitions import partition_of
from mqstream.schemas import InvalidMessage
from mqstream.streams.changes import ChangeRule, change_message, material_change
from mqstream.streams import messages
from mqstream.streams.topics import create_topics
from tests.forecast_helpers import CREATED_AT, MODEL, error_bytes, forecast_bytes, issued, produce
from tests.kafka_helpers import fresh_settings
from tests.lookup_helpers import errors_answer, lookups, worker_answering

ORIGIN = 15_000  # 2011-01-26
STORED = MODEL.quantiles


@pytest.fixture(scope="module")
def forecast() -> Forecast:
    return Forecast.from_message(forecast_bytes(issued("85099B", ORIGIN, level=4.0)))


def test_an_item_lies_on_the_partition_the_producers_default_partitioner_gives_it():
    # the rule the worker's outputs and every reader use, against the producer's own
    producers = DefaultPartitioner()
    for key in [f"item-{i}".encode() for i in range(500)] + ["84879".encode(), "ménage".encode()]:
        for partitions in (1, 3, 4, 12):
            every = list(range(partitions))
            assert partition_of(key, partitions) == producers(key, every, every)


def test_a_message_becomes_a_typed_forecast(forecast):
    assert forecast.item_id == "85099B"
    assert forecast.origin == dt.date(2011, 1, 26) and forecast.target(1) == dt.date(2011, 1, 27)
    assert forecast.values.shape == (28, 9) and not forecast.values.flags.writeable
    assert (forecast.model, forecast.model_version) == (MODEL.name, MODEL.version)
    assert forecast.created_at == dt.datetime(2011, 6, 15, 6, tzinfo=dt.timezone.utc)


def test_interpolation_is_exact_at_every_stored_quantile(forecast):
    for j, q in enumerate(STORED):
        assert np.array_equal(forecast.quantile(q), forecast.values[:, j])
        assert forecast.quantile(q, horizon=5) == forecast.values[4, j]


def test_interpolation_is_monotone_in_the_level():
    rng = np.random.default_rng(0)
    values = np.sort(rng.gamma(0.5, 3.0, size=(500, len(STORED))), axis=1)  # (rows, Q), ties and jumps
    values[:, 3:5] = values[:, [3]]  # flat stretches too
    grid = np.linspace(STORED[0], STORED[-1], 2001)
    curve = np.stack([interpolate(values, STORED, q) for q in grid], axis=1)  # (rows, grid)
    assert (np.diff(curve, axis=1) >= 0).all()


def test_p85_lies_halfway_between_p80_and_p90(forecast):
    np.testing.assert_allclose(forecast.quantile(0.85), (forecast.quantile(0.8) + forecast.quantile(0.9)) / 2)


@pytest.mark.parametrize("q", [0.0, 0.05, 0.95, 1.0])
def test_levels_beyond_the_stored_ones_are_refused(forecast, q):
    with pytest.raises(ValueError, match="outside the stored levels 0.1..0.9"):
        forecast.quantile(q)


def test_crossing_quantiles_in_a_message_are_rearranged_so_interpolation_stays_monotone():
    body = orjson.loads(forecast_bytes(issued("A", ORIGIN)))
    body["values"] = [row[::-1] for row in body["values"]]
    f = Forecast.from_message(body)
    assert (np.diff(f.values, axis=1) >= 0).all()


def test_a_newer_schema_version_is_refused_not_misread():
    body = {**orjson.loads(forecast_bytes(issued("A", ORIGIN))), "schema_version": 3}
    with pytest.raises(ValueError, match="schema_version 3"):
        Forecast.from_message(body)


def test_total_sums_the_daily_quantiles(forecast):
    assert forecast.total(0.5) == pytest.approx(forecast.values[:7, STORED.index(0.5)].sum())
    assert forecast.total(0.85, periods=3) == pytest.approx(forecast.quantile(0.85)[:3].sum())
    with pytest.raises(ValueError, match="periods must be 1..28"):
        forecast.total(0.5, periods=29)


def test_order_up_to_covers_the_lead_time_at_the_service_level(forecast):
    advice = forecast.order_up_to(0.85, lead_periods=5, on_hand=3.0)
    assert advice.level == pytest.approx(forecast.total(0.85, periods=5))
    assert advice.order == pytest.approx(advice.level - 3.0)
    assert forecast.order_up_to(0.85, 5, on_hand=1e6).order == 0.0


def test_a_weekly_forecast_counts_weeks_and_its_default_total_is_the_next_week():
    weeks = Cadence("week")
    origin = weeks.of_iso("2011-01-26")  # the week of Monday 2011-01-24
    f = Forecast.from_message(messages.forecast_message(issued("A", origin), MODEL, CREATED_AT, weeks), validate=True)
    assert (f.period, f.origin, f.target(2)) == ("week", dt.date(2011, 1, 24), dt.date(2011, 2, 7))
    assert f.total(0.5) == pytest.approx(f.values[0, STORED.index(0.5)])  # the next 7 days: week 1
    assert f.order_up_to(0.9, lead_periods=4).level == pytest.approx(f.values[:4, STORED.index(0.9)].sum())


def test_order_up_to_grows_with_service_level_and_lead_time(forecast):
    by_service = [forecast.order_up_to(s, 7).level for s in np.linspace(0.1, 0.9, 81)]
    by_lead = [forecast.order_up_to(0.9, d).level for d in range(1, 29)]
    assert (np.diff(by_service) >= 0).all() and (np.diff(by_lead) >= 0).all()
    with pytest.raises(ValueError, match="outside the stored levels"):
        forecast.order_up_to(0.95, 7)


# --- the worker's HTTP lookup (no broker: the bootstrap address is closed) ---------------------
def no_broker() -> str:
    return f"127.0.0.1:{free_port()}"


def test_a_few_items_come_from_the_worker_that_owns_them_through_the_redirect():
    current = issued("A", ORIGIN, level=5.0)
    with lookups({"/forecasts/A": forecast_bytes(current)}) as (redirecting, _):
        got = ForecastClient(no_broker(), lookup_url=redirecting, validate=True).latest(items=["A", "NOPE"])
    assert list(got) == ["A"]  # 404: no forecast, absent
    np.testing.assert_array_equal(got["A"].values, current.values)


def test_errors_come_from_the_worker_lookup_by_target_day():
    earlier = [issued("A", ORIGIN - 2), issued("A", ORIGIN - 1)]
    answer = errors_answer("A", [error_bytes("A", ORIGIN, 3.0, earlier), error_bytes("A", ORIGIN - 1, 2.0, earlier[:1])])
    with lookups({"/forecasts/A/errors": answer}) as (redirecting, _):
        client = ForecastClient(no_broker(), lookup_url=redirecting, validate=True)
        got, unknown = client.errors("A"), client.errors("NOPE")
    assert [(e.target, e.actual) for e in got] == [(dt.date.fromisoformat(iso_of_day(ORIGIN - 1)), 2.0),
                                                   (dt.date.fromisoformat(iso_of_day(ORIGIN)), 3.0)]
    assert unknown == []


def test_an_item_id_is_sent_as_one_path_segment():
    with lookups({"/forecasts/A%2FB%20C": forecast_bytes(issued("A/B C", ORIGIN))}) as (_, owner):
        assert list(ForecastClient(no_broker(), lookup_url=owner).latest(item="A/B C")) == ["A/B C"]


def test_a_worker_that_does_not_answer_is_named():
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LookupUnavailable, match=f"no worker answers at {closed}/forecasts/A/errors"):
        ForecastClient(no_broker(), lookup_url=closed).errors("A")


def test_a_busy_worker_is_named_with_its_answer():
    busy = (503, b'{"error": "the worker is busy; try again"}', {"Retry-After": "1"})
    with worker_answering(lambda path: busy) as worker:
        with pytest.raises(LookupUnavailable, match=f"{worker}/forecasts/A: HTTP 503 .*busy"):
            ForecastClient(no_broker(), lookup_url=worker).latest(item="A")


def test_a_broker_that_does_not_answer_is_named_within_seconds():
    bootstrap = no_broker()
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match=f"{bootstrap}: Connection refused"):
        ForecastClient(bootstrap).latest()
    assert time.monotonic() - started < 1


# --- against the real broker -------------------------------------------------------------------
@pytest.fixture
def topics(kafka_settings, tmp_path):
    settings = fresh_settings(kafka_settings, tmp_path)
    create_topics(settings)
    return settings


@pytest.mark.consumers
def test_latest_holds_exactly_the_last_forecast_of_every_item(topics):
    items = ["85099B", "22423", "POST", "GONE"]
    versions = [(item, issued(item, ORIGIN + d, seed=d)) for d in range(4) for item in items]
    produce(topics, "forecasts-latest", [(item, forecast_bytes(f)) for item, f in versions] + [("GONE", None)])
    client = ForecastClient(topics.kafka_bootstrap, topics.topic_prefix, validate=True)
    current = client.latest(timeout=60)
    assert sorted(current) == sorted(items[:3])  # the tombstone removed GONE
    for item, f in current.items():
        assert f.item_id == item and f.origin == dt.date.fromisoformat(iso_of_day(ORIGIN + 3))
        np.testing.assert_array_equal(f.values, issued(item, ORIGIN + 3, seed=3).values)
    assert list(client.latest(item="POST")) == ["POST"]
    assert client.latest(item="NEVER") == {}


@pytest.mark.consumers
def test_latest_of_a_few_items_holds_only_theirs(topics):
    items = [f"I{i}" for i in range(20)]  # on every partition
    produce(topics, "forecasts-latest", [(item, forecast_bytes(issued(item, ORIGIN))) for item in items]
            + [("I3", None)])
    got = ForecastClient(topics.kafka_bootstrap, topics.topic_prefix).latest(timeout=60, items=["I1", "I3", "NEVER"])
    assert list(got) == ["I1"] and got["I1"].item_id == "I1"


@pytest.mark.consumers
def test_latest_decodes_a_message_when_its_item_is_looked_up(topics):
    newer = {**orjson.loads(forecast_bytes(issued("B", ORIGIN))), "schema_version": 3}
    produce(topics, "forecasts-latest", [("A", forecast_bytes(issued("A", ORIGIN))), ("B", orjson.dumps(newer))])
    current = ForecastClient(topics.kafka_bootstrap, topics.topic_prefix).latest(timeout=60)
    assert sorted(current) == ["A", "B"] and current["A"].item_id == "A"
    with pytest.raises(ValueError, match="schema_version 3"):
        current["B"]


@pytest.mark.consumers
def test_updates_start_at_the_end_as_of_the_call_unless_asked_from_the_beginning(topics):
    produce(topics, "forecasts", [("A", forecast_bytes(issued("A", ORIGIN)))])
    client = ForecastClient(topics.kafka_bootstrap, topics.topic_prefix)
    upcoming = client.updates(idle_timeout=3)
    produce(topics, "forecasts", [(item, forecast_bytes(issued(item, ORIGIN + 1))) for item in ("A", "B")])
    assert sorted((f.item_id, f.origin.isoformat()) for f in upcoming) == [("A", iso_of_day(ORIGIN + 1)),
                                                                         ("B", iso_of_day(ORIGIN + 1))]
    everything = client.updates(from_beginning=True, item="A", idle_timeout=3)
    assert sorted(f.origin.isoformat() for f in everything) == [iso_of_day(ORIGIN), iso_of_day(ORIGIN + 1)]


@pytest.mark.consumers
def test_a_group_reads_changes_once(topics):
    before, after = issued("A", ORIGIN, level=1.0), issued("A", ORIGIN + 1, level=9.0)
    rule = ChangeRule(share=0.25)
    change = material_change(before, after, STORED, rule)
    produce(topics, "forecast-changes", [("A", change_message(change, rule, MODEL, CREATED_AT))])
    client = ForecastClient(topics.kafka_bootstrap, topics.topic_prefix, validate=True)
    [got] = client.changes(group_id=f"{topics.app_id}-planner", from_beginning=True, idle_timeout=8)
    assert isinstance(got, ForecastChange) and got.reasons == ("p50_7d_moved",)
    assert got.before.p50_7d == change.before.p50 and got.after.origin == dt.date.fromisoformat(iso_of_day(ORIGIN + 1))
    assert list(client.changes(group_id=f"{topics.app_id}-planner", from_beginning=True, idle_timeout=8)) == []


@pytest.mark.consumers
def test_errors_of_an_item_come_by_target_day_once_each(topics):
    earlier = [issued("A", ORIGIN - 2), issued("A", ORIGIN - 1)]
    produce(topics, "forecast-errors", [
        ("A", error_bytes("A", ORIGIN, 3.0, earlier)),
        ("B", error_bytes("B", ORIGIN, 1.0, earlier)),
        ("A", error_bytes("A", ORIGIN - 1, 2.0, earlier[:1])),
        ("A", error_bytes("A", ORIGIN, 3.0, earlier)),  # repeated after a worker crash
    ])
    got = ForecastClient(topics.kafka_bootstrap, topics.topic_prefix).errors("A", timeout=60)
    assert [(e.target, e.actual) for e in got] == [(dt.date.fromisoformat(iso_of_day(ORIGIN - 1)), 2.0),
                                                   (dt.date.fromisoformat(iso_of_day(ORIGIN)), 3.0)]
    assert got[1].horizons == (2, 1) and got[1].forecasts.shape == (2, 9)


@pytest.mark.consumers
def test_validation_refuses_a_broken_message(topics):
    body = {**orjson.loads(forecast_bytes(issued("A", ORIGIN))), "values": [[1.0]]}
    produce(topics, "forecasts-latest", [("A", orjson.dumps(body))])
    with pytest.raises(InvalidMessage, match="values"):
        ForecastClient(topics.kafka_bootstrap, topics.topic_prefix, validate=True).latest(timeout=60)


@pytest.mark.consumers
def test_a_missing_topic_is_named(kafka_settings):
    with pytest.raises(LookupError, match="no-such-prefix.forecasts-latest"):
        ForecastClient(kafka_settings.kafka_bootstrap, "no-such-prefix.").latest(timeout=10)
