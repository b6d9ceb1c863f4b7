"""The worker's guarantees against the real broker: bad input, SIGKILLs, duplicates, events out
of order, a second worker joining and the first dying, the broker restarting.

Each run is compared with one uninterrupted run over the same real events: item state, model
state, forecasts and forecast errors must be equal (``assert_same_run``).
"""
from __future__ import annotations

import random
import signal
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from mqstream.partitions import partition_of
from mqstream.periods import day_of_iso
from mqstream.models.dataset import load_transactions
from mqstream.state.item import UNITS
from mqstream.streams.replay import ReplayEvent, replay_events, send
from mqstream.streams.topics import create_topics
from tests.bad_events import CORPUS, ITEM, TS
from tests.kafka_helpers import (assert_same_run, fresh_settings, read_topic, run_to_the_end, start_worker,
                                 stop_worker, table_state, wait_caught_up)

pytestmark = [pytest.mark.fault, pytest.mark.slow]
# Tuesday to Sunday, no sales on the Saturday: five day closes, 13,881 events
FIRST, LAST = day_of_iso("2011-03-01"), day_of_iso("2011-03-06")
LATENESS = 3600


@pytest.fixture(scope="module")
def events():
    return replay_events(FIRST, LAST, load_transactions())


@pytest.fixture(scope="module")
def reference(kafka_settings, tmp_path_factory, events):
    """(settings, worker seconds) of one uninterrupted run."""
    settings = fresh_settings(kafka_settings, tmp_path_factory.mktemp("reference"))
    return settings, run_to_the_end(settings, events)


def shuffled_with_duplicates(events: list[ReplayEvent], share: float, rng: random.Random) -> list[ReplayEvent]:
    """``events`` with ``share`` of them sent twice and every event delayed by up to 50
    minutes of event time (within the allowed lateness): out of order, nothing too late."""
    delayed = [(e.ts + rng.uniform(0, 3000), i, e) for i, e in enumerate(events)]
    copies = [(e.ts + rng.uniform(0, 3000), len(events) + i, e) for i, e in enumerate(rng.sample(events, int(share * len(events))))]
    return [e for _, _, e in sorted(delayed + copies)]


def test_killed_five_times_with_duplicates_and_late_events_ends_as_an_uninterrupted_run(
        kafka_settings, tmp_path, events, reference):
    ref_settings, seconds = reference
    rng = random.Random(11)
    sent = shuffled_with_duplicates(events, 0.10, rng)
    assert len(sent) - len(events) == len(events) // 10
    settings = fresh_settings(kafka_settings, tmp_path)
    create_topics(settings)
    half = len(sent) // 2  # the second half goes out after two restarts: its duplicates meet recovered state
    send(sent[:half], settings, close_last_period=False, progress=False)
    for kill in range(5):
        if kill == 2:
            send(sent[half:], settings, progress=False)
        worker = start_worker(settings)
        time.sleep(rng.uniform(0.1, 0.3) * seconds)
        stop_worker(worker, signal.SIGKILL)
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)
    assert_same_run(settings, ref_settings)
    assert_no_dead_letters(settings)  # nothing was too late


def assert_no_dead_letters(settings) -> None:
    """Nothing dead-lettered; else, how many for each reason and source, and their offsets."""
    found: dict[tuple[str, ...], list[int]] = {}
    for record in read_topic(settings, settings.topic("dead-letters")):
        headers = {name: value.decode() for name, value in record.headers}
        source = (headers["reason"], headers["source-topic"].rsplit(".", 1)[-1], headers["source-partition"])
        found.setdefault(source, []).append(int(headers["source-offset"]))
    assert not found, "; ".join(f"{reason} {topic}[{partition}]: {len(offsets)} at offsets {min(offsets)}..{max(offsets)}"
                                for (reason, topic, partition), offsets in sorted(found.items()))


def test_a_second_worker_joins_then_the_first_dies_and_nothing_is_lost(kafka_settings, tmp_path, events, reference):
    ref_settings, seconds = reference
    settings = fresh_settings(kafka_settings, tmp_path)
    create_topics(settings)
    send(events, settings, progress=False)
    first = start_worker(settings, "w1")
    time.sleep(0.3 * seconds)
    second = start_worker(settings, "w2")  # the group rebalances: partitions and their state move
    try:
        time.sleep(0.3 * seconds)
        stop_worker(first, signal.SIGKILL)  # everything moves to the second
        wait_caught_up(settings, second)
    finally:
        stop_worker(first, signal.SIGKILL)
        stop_worker(second)
    assert_same_run(settings, ref_settings)


def test_the_broker_restarting_mid_replay_needs_no_manual_action(broker, kafka_settings, tmp_path, events, reference):
    ref_settings, seconds = reference
    settings = fresh_settings(kafka_settings, tmp_path)
    create_topics(settings)
    send(events, settings, progress=False)
    worker = start_worker(settings)
    try:
        time.sleep(0.4 * seconds)
        broker.stop()
        time.sleep(10)
        broker.start()
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)
    assert_same_run(settings, ref_settings)


def other_partition_key(partitions: int) -> bytes:
    """An item key whose partition differs from ITEM's, for a clock of its own."""
    mine = partition_of(ITEM.encode(), partitions)
    return next(k for k in (f"F{i}".encode() for i in range(100)) if partition_of(k, partitions) != mine)


def test_every_kind_of_bad_input_is_dead_lettered_with_its_reason_and_counted(kafka_settings, tmp_path):
    settings = fresh_settings(kafka_settings, tmp_path)
    create_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=2**20)

    def good(event_id: str, ts: int, key: bytes = ITEM.encode()) -> None:
        body = {"event_id": event_id, "item_id": key.decode(), "ts": ts, "quantity": 2, "price": 1.5}
        producer.send(settings.topic("sales"), key=key, value=orjson.dumps(body))

    now_key = other_partition_key(settings.partitions)
    now = int(time.time())
    future = replace(CORPUS[0], kind="ts_in_future", key=now_key, reason="ts_in_future", value=orjson.dumps(
        {"event_id": "f1", "item_id": now_key.decode(), "ts": now + 3 * 86_400, "quantity": 1, "price": 1.0}))
    corpus = [*CORPUS, future]
    good("g1", TS - 86_400)  # 2011-06-02
    good("g2", TS)  # 2011-06-03: with the views below, closes 2011-06-01
    producer.send(settings.topic("page-views"), key=ITEM.encode(), value=orjson.dumps(
        {"event_id": "gv1", "item_id": ITEM, "ts": TS, "views": 4}))
    good("n1", now - 3600, now_key)
    producer.flush()
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
        for bad in corpus:
            producer.send(settings.topic(bad.topic), key=bad.key, value=bad.value)
            good(f"after-{bad.kind}", TS + 60)  # the worker keeps going around each of them
        producer.flush()
        wait_caught_up(settings, worker)
        counted = dead_letter_counts(Path(settings.data_dir) / "w1")
    finally:
        stop_worker(worker)

    letters = read_topic(settings, settings.topic("dead-letters"))
    got = sorted(((dict(r.headers)["reason"].decode(), r.key, r.value) for r in letters), key=repr)
    assert got == sorted(((b.reason, b.key, b.value) for b in corpus), key=repr)  # original bytes
    wanted: dict[str, int] = {}
    for bad in corpus:
        wanted[bad.reason] = wanted.get(bad.reason, 0) + 1
    assert counted == wanted
    assert len(corpus) >= 30
    totals = table_state(settings)[ITEM].daily(UNITS, day_of_iso("2011-06-02"), day_of_iso("2011-06-03"))
    assert totals.tolist() == [2.0, 2.0 * (1 + len(corpus))]


def dead_letter_counts(data_dir: Path) -> dict[str, int]:
    port = int((data_dir / "metrics.port").read_text())
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("mqstream_dead_letters_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            counts[reason] = int(float(line.rsplit(" ", 1)[1]))
    return counts
