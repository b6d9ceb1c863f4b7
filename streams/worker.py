"""The faust worker: the app, its topics and tables, and the ``Processor``.

Input arrives in batches per partition (streams/ingest.py); ``Processor`` keeps the
per-partition clocks and locks and calls the plain functions of ``state/`` and ``models/``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from pathlib import Path
from typing import Sequence

import faust
import numpy as np
import orjson
from faust.types import Message

import mqstream.streams.store  # noqa: F401  registers the partitioned-rocksdb store
from mqstream.periods import DAY_SECONDS, day_of_iso, iso_of_day
from mqstream.models.dataset import is_demand
from mqstream.models.registry import load_model as from_registry
from mqstream.models.protocol import ErrorRecord, QuantileForecaster
from mqstream.config import Settings
from mqstream.kafka_auth import faust_credentials
from mqstream.state.clock import PartitionClock
from mqstream.state.item import RETURNS, UNITS, VIEWS, ItemModel, ItemState
from mqstream.models.scores import pinball_loss
from mqstream.state.refresh import Refresh, RefreshPolicy, close_items, is_dormant, new_item, new_model, take_errors
from mqstream.streams import ingest, messages
from mqstream.streams.changes import ChangeRule, change_message, material_change
from mqstream.streams.metrics import QualityWindow, WorkerMetrics
from mqstream.streams.events import PageView, Rejection, Sale, parse_page_view, parse_sale
from mqstream.streams.store import SCHEME
from mqstream.streams.topics import TABLES, topic_names

log = logging.getLogger("mqstream.worker")
RAW = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
CONTROL_HEADER = "mqstream-control"  # value b"watermark": {"ts": ...} asserts no earlier events
MAX_AHEAD_OF_NEWEST = 7 * 86_400  # an event this far past the partition's newest is rejected
MAX_AHEAD_OF_NOW = 86_400
WATERMARKS = b"watermarks"  # the one key of the watermarks table (a record per partition)


def load_model(settings: Settings) -> QuantileForecaster:
    return from_registry(settings.model, settings.checkpoint_path)


class Processor:
    def __init__(self, settings: Settings, model: QuantileForecaster, items: faust.Table,
                 sides: faust.Table, watermarks: faust.Table, outputs: dict[str, faust.TopicT]):
        self.settings = settings
        self.model = model
        self.items = items  # key -> ItemState, written on every event
        self.sides = sides  # key -> ItemModel, written once per close
        # WATERMARKS -> the partition's input watermarks, written at each watermark marker (the
        # only clock input no item remembers); one record per partition's own database
        self.watermarks = watermarks
        self.outputs = outputs
        self.names = {name: topic.get_topic_name() for name, topic in outputs.items()}
        self.producer = items.app.producer
        self.sales_topic, self.error_topic = self.names["sales"], self.names["forecast-errors"]
        self.policy = RefreshPolicy(settings.active_days, settings.history_days, settings.refresh_batch)
        self.change_rule = ChangeRule(settings.change_share, settings.stock_level, decimals=self.policy.decimals)
        self.clocks: dict[int, PartitionClock] = {}
        self.tracked: dict[int, set[bytes]] = {}  # items with work at the next close
        self.unfinished: set[int] = set()  # partitions whose clocks were just recovered
        self.locks: dict[int, asyncio.Lock] = {}
        self.metrics = WorkerMetrics()
        self.metrics.model.info({"name": model.name, "version": model.version})
        self.quality = QualityWindow(model.quantiles)

    # --- events in ------------------------------------------------------------------------
    async def on_batch(self, tp, batch: Sequence[Message]) -> int:
        """A fetched batch of one input partition (streams/ingest.py), in offset order; how
        many of its messages were handled (all, unless a rebalance stopped a close). Each
        event is handled as if alone; an item's state is read and written once per batch,
        and written before any day close reads it."""
        partition, topic = tp.partition, tp.topic
        async with self.locks.setdefault(partition, asyncio.Lock()):
            started = time.perf_counter()
            self.metrics.consumed.labels(topic).inc(len(batch))
            self.metrics.batch_events.observe(len(batch))
            if topic == self.error_topic:
                for message in batch:
                    await self._take_errors(message)
                handled = len(batch)
            else:
                handled = await self._ingest(partition, topic, batch)
            self.metrics.processing.observe((time.perf_counter() - started) / len(batch))
            return handled

    async def _ingest(self, partition: int, topic: str, batch: Sequence[Message]) -> int:
        parse = parse_sale if topic == self.sales_topic else parse_page_view
        clock, cache = self._clock(partition), {}
        for index, message in enumerate(batch):
            event = None
            if _is_watermark(message.headers):
                ts = orjson.loads(message.value)["ts"]
            else:
                event = parse(message.key, message.value)
                if not isinstance(event, Rejection):
                    event = _check_time(event, clock)
                if isinstance(event, Rejection):
                    await self.dead_letter(message, event)
                    continue
                ts = event.ts
            if clock.observe(topic, ts) or partition in self.unfinished:
                if not await self._close_after_commit(partition, clock, batch[:index], cache):
                    return index
            if event is None:
                await self._put(self.watermarks, partition, [(WATERMARKS, orjson.dumps(clock.inputs))])
            else:
                self._apply(partition, topic, message.key, event, cache)
        await self._write_items(partition, cache)
        return len(batch)

    def _apply(self, partition: int, topic: str, key: bytes, event: Sale | PageView,
               cache: dict[bytes, ItemState]) -> None:
        item = cache.get(key)
        if item is None:
            raw = self._get(self.items, partition, key)
            item = cache[key] = (ItemState.from_bytes(raw) if raw is not None
                                 else new_item(event.item_id, event.ts // DAY_SECONDS, self.policy))
        day = event.ts // DAY_SECONDS
        if item.has_seen(event.event_id, day):
            self.metrics.duplicates.inc()  # still written back: heals a changelog that missed it
        else:
            item.apply(topic, event.event_id, event.ts, _amounts(event), getattr(event, "price", 0.0),
                       getattr(event, "description", ""))
        self.tracked[partition].add(key)

    async def _close_after_commit(self, partition: int, clock: PartitionClock, applied: Sequence[Message],
                                  cache: dict[bytes, ItemState]) -> bool:
        """Close the days the clock has passed, once every event applied so far, on every input,
        is written and committed. The event that moved the clock is applied after the close
        (its day is still open): so what is written never holds an event the broker does not
        hold as read, and after a crash only events of days still open are read again, where
        their ids tell them apart. (Read again after the close, an event of a day it closed
        could only be dead-lettered as too late.) False, with nothing closed, when a rebalance
        comes first: the clock is forgotten, to be recovered from what was written by whoever
        reads the partition next, this worker or another, and the close happens there."""
        await self._write_items(partition, cache)
        consumer = self.items.app.consumer
        for message in applied:
            consumer.ack(message)
        if not await consumer.commit_acked():
            self.forget([partition])
            return False
        self.unfinished.discard(partition)
        await self.close_partition(partition, clock.closed_through)
        return True

    def forget(self, partitions) -> None:
        """Drop the clocks of ``partitions``: read again from the tables at their next event
        (after a rebalance another worker may have moved them on)."""
        for partition in partitions:
            self.clocks.pop(partition, None)

    async def _write_items(self, partition: int, cache: dict[bytes, ItemState]) -> None:
        await self._put(self.items, partition, [(key, item.to_bytes()) for key, item in cache.items()])
        cache.clear()

    async def _take_errors(self, message: Message) -> None:
        """Errors read back from ``forecast-errors``: into the item's error memory, once."""
        body = orjson.loads(message.value)
        target = day_of_iso(body["target"])
        records = [ErrorRecord(day_of_iso(o), target, body["actual"], np.asarray(f, np.float32))
                   for o, f in zip(body["origins"], body["forecasts"])]
        side = take_errors(self._get(self.sides, message.partition, message.key), target, records, self.model)
        if side is not None:
            await self._put(self.sides, message.partition, [(message.key, side)])

    @staticmethod
    def _get(table: faust.Table, partition: int, key: bytes) -> bytes | None:
        return table.data.get_in(partition, key)

    async def _put(self, table: faust.Table, partition: int, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        """Into the partition's own database and changelog partition, whatever event is current.
        Straight to the producer: faust's send_soon costs a buffered future message and a task
        switch per write, several times the rest of an event's handling. The changelog offset
        is noted once, at the last write (offsets of one partition are acknowledged in order)."""
        topic, sent = table.changelog_topic.get_topic_name(), None
        for key, value in pairs:
            table.data.put_in(partition, key, value)
            sent = await self.producer.send(topic, key, value, partition, None, None)
        if sent is not None:
            sent.add_done_callback(partial(_persist_offset, table.data))

    # --- closing days ---------------------------------------------------------------------
    def _clock(self, partition: int) -> PartitionClock:
        """The partition's clock; on first use after (re)start, recovered from its items."""
        if partition not in self.clocks:
            required = tuple(self.settings.topic(name) for name in self.settings.watermark_input_names)
            clock, closed, tracked = PartitionClock(self.settings.allowed_lateness, required), -1, set()
            for _, raw in self.watermarks.data.partition_items(partition):
                for source, ts in orjson.loads(raw).items():
                    clock.observe(source, ts)
            for key, raw in self.items.data.partition_items(partition):
                for source, ts in ItemState.from_bytes(raw).last_event_ts.items():
                    clock.observe(source, ts)
                tracked.add(key)
            for _, raw in self.sides.data.partition_items(partition):  # written by closes only
                closed = max(closed, ItemModel.days_of(raw)[0])
            clock.hold_closed(closed)  # never reopen a day that was closed before a restart
            self.clocks[partition] = clock
            self.tracked[partition] = tracked
            self.unfinished.add(partition)  # a crash may have cut its last close short
        return self.clocks[partition]

    async def close_partition(self, partition: int, through: int) -> None:
        keys = self.tracked[partition]
        items, sides = [], []
        for key in list(keys):
            item = ItemState.from_bytes(self._get(self.items, partition, key))
            raw_side = self._get(self.sides, partition, key)
            if raw_side is None:  # the item's first close: its model starts now
                if item.born > through:
                    continue
                side = new_model(item.launch_info(item.born), item.born, self.model)
            else:
                side = ItemModel.from_bytes(raw_side)
            if item.closed_through < through:
                items.append(item)
                sides.append(side)
        if not items:
            return
        started = time.perf_counter()
        before = [item.closed_through for item in items]
        refresh = close_items(items, sides, through, self.model, self.policy)
        closed = [i for i, item in enumerate(items) if item.closed_through != before[i]]
        self.metrics.refresh_items.observe(len(closed))
        # Outputs first, then model sides, then items, each flushed: after a crash the close
        # is redone (outputs repeat, never go missing) and a side is never behind its item.
        await self._publish(refresh)
        await self._put(self.sides, partition, [(items[i].item_id.encode(), sides[i].to_bytes()) for i in closed])
        await self._flush()
        await self._put(self.items, partition, [(items[i].item_id.encode(), items[i].to_bytes()) for i in closed])
        for item, side in zip(items, sides):
            if is_dormant(item, side, through, self.policy, self.model.horizons):
                keys.discard(item.item_id.encode())  # tracked again at its next event
        self.metrics.refresh_seconds.observe(time.perf_counter() - started)

    async def _publish(self, refresh: Refresh) -> None:
        now = messages.utc_now()
        head = messages.headers(self.model)
        changes = 0
        for issued in refresh.issued:
            key, body = issued.item_id.encode(), messages.forecast_message(issued, self.model, now)
            await self._send("forecasts", key, body, head)
            await self._send("forecasts-latest", key, body, head)
            change = material_change(issued.previous, issued, self.model.quantiles, self.change_rule)
            if change is not None:
                changes += 1
                await self._send("forecast-changes", key, change_message(change, self.change_rule, self.model, now),
                                 head)
        for scored in refresh.scored:
            await self._send("forecast-errors", scored.item_id.encode(),
                             messages.error_message(scored, self.model, now, self.policy.decimals), head)
        await self._flush()
        self.metrics.forecasts.inc(len(refresh.issued))
        self.metrics.changes.inc(changes)
        self.metrics.errors.inc(len(refresh.scored))
        self._track_quality(refresh)

    async def _send(self, output: str, key: bytes, value: bytes, headers) -> None:
        """Straight to the producer, partitioned by key like the inputs (faust's Topic.send
        costs a future message per record: 5% of a close)."""
        await self.producer.send(self.names[output], key, value, None, None, headers)

    def _track_quality(self, refresh: Refresh) -> None:
        q = np.asarray(self.model.quantiles)
        for scored in refresh.scored:
            for record in scored.records:
                f = record.forecast
                self.quality.add(scored.target, record.horizon, scored.actual, pinball_loss(scored.actual, f, q),
                                 bool(f[0] <= scored.actual <= f[-1]))
        self.quality.publish(self.metrics)

    async def _flush(self) -> None:
        await self.items.app.producer.flush()

    async def sample(self, app: faust.App) -> None:
        """Gauges read every few seconds: lag from the broker's end offsets, watermark ages,
        state size."""
        inputs = {self.names[name] for name in ("sales", "page-views", "forecast-errors")}
        assigned = sorted(tp for tp in app.consumer.assignment() if tp.topic in inputs)
        if assigned:
            ends = await app.consumer.highwaters(*assigned)
            for tp, end in ends.items():
                # faust keeps the last offset read and the last committed (next to read)
                read, committed = app.consumer._read_offset.get(tp), app.consumer._committed_offset.get(tp)
                position = max(read + 1 if read is not None else 0, committed or 0)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(end - position)
        now = time.time()
        for partition, clock in self.clocks.items():
            if clock.inputs:
                self.metrics.watermark_age.labels(str(partition), "now").set(now - clock.watermark)
                self.metrics.watermark_age.labels(str(partition), "newest").set(clock.newest - clock.watermark)

    def sample_state(self) -> None:
        """Items and bytes held for the partitions this worker owns (a scan: every minute)."""
        count = 0
        for name, table in (("items", self.items), ("item-models", self.sides)):
            size = 0
            for partition in self.clocks:
                for key, value in table.data.partition_items(partition):
                    size += len(key) + len(value)
                    count += name == "items"
            self.metrics.state_bytes.labels(name).set(size)
        self.metrics.items.set(count)

    async def dead_letter(self, m: Message, rejection: Rejection) -> None:
        self.metrics.dead_letters.labels(rejection.reason).inc()
        if rejection.reason == "too_late":
            self.metrics.late.inc()
        await self._send("dead-letters", m.key, m.value, [
            ("reason", rejection.reason.encode()), ("detail", rejection.detail.encode()),
            ("source-topic", m.topic.encode()), ("source-partition", str(m.partition).encode()),
            ("source-offset", str(m.offset).encode())])


def _persist_offset(store, sent: asyncio.Future) -> None:
    """Note in the partition's database how far its changelog is known to hold it, as faust
    does for its own writes: a restart then replays only the changelog's tail."""
    if not sent.cancelled() and sent.exception() is None:
        meta = sent.result()
        store.set_persisted_offset(meta.topic_partition, meta.offset)


def _check_time(event: Sale | PageView, clock: PartitionClock) -> Sale | PageView | Rejection:
    if clock.is_too_late(event.ts):
        return Rejection("too_late", f"day {iso_of_day(event.ts // DAY_SECONDS)} closed "
                         f"(watermark {clock.watermark}, lateness {clock.lateness}s)")
    if clock.newest and event.ts > clock.newest + MAX_AHEAD_OF_NEWEST:
        return Rejection("ts_too_far_ahead", f"ts {event.ts} is over a week past the newest event {clock.newest}")
    if event.ts > time.time() + MAX_AHEAD_OF_NOW:
        return Rejection("ts_in_future", f"ts {event.ts} is more than a day in the future")
    return event


def _is_watermark(headers) -> bool:
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    return any(k == CONTROL_HEADER and v == b"watermark" for k, v in pairs)


def _amounts(event: Sale | PageView) -> list[tuple[int, float]]:
    if isinstance(event, PageView):
        return [(VIEWS, event.views)]
    if is_demand(event.invoice, event.quantity, event.price):
        return [(UNITS, event.quantity)]
    return [(RETURNS, -event.quantity)] if event.quantity < 0 else []


def build_app(settings: Settings, model: QuantileForecaster, url: str = "") -> tuple[faust.App, Processor]:
    """The app and its processor; ``url`` is this worker's HTTP address, which faust tells the
    other workers of the group (lookups of their items are redirected there)."""
    app = faust.App(
        settings.app_id,
        broker=f"{ingest.SCHEME}://" + settings.kafka_bootstrap.replace(",", ";"),
        broker_credentials=faust_credentials(settings),
        store=f"{SCHEME}://",  # RocksDB (rocksdict), recovered from the changelogs
        datadir=str(Path(settings.data_dir) / "worker"),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_enabled=False,
        canonical_url=url or None,
        broker_session_timeout=settings.session_timeout,
        table_standby_replicas=settings.standby_replicas,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 4),
        producer_linger=0.05,  # batches changelog writes: a tenth of the broker CPU (FAUST-NOTES)
        producer_max_batch_size=512 * 1024,  # 16 kB by default: under one model side, so one per request
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
    )
    topics = {name: app.topic(full, schema=RAW, partitions=settings.partitions)
              for name, full in topic_names(settings).items()}
    tables = [app.Table(name, partitions=settings.partitions, key_type=bytes, value_type=bytes)
              for name in TABLES]
    processor = Processor(settings, model, *tables, topics)

    inputs = [topics[name] for name in ("sales", "page-views", "forecast-errors")]
    for topic in inputs:
        app.topics.add(topic)  # subscribed by the consumer; no agent: see streams/ingest.py
    app.consumer.route({t.get_topic_name() for t in inputs}, processor.on_batch)

    @app.on_partitions_revoked.connect
    async def forget_clocks(app, revoked, **kwargs):
        processor.forget({tp.partition for tp in revoked})

    @app.timer(interval=5.0)
    async def sample_gauges():
        await processor.sample(app)

    @app.timer(interval=60.0)
    async def sample_state():
        processor.sample_state()

    return app, processor


def is_ready(app: faust.App) -> bool:
    """Assigned partitions recovered and consuming (faust's recovery has finished). Asked from
    the HTTP thread, so it must not make the consumer (``app.consumer`` would, before faust
    does: a probe at start-up then hung the worker for good)."""
    consumer = app._consumer
    if consumer is None:
        return False
    return bool(consumer.assignment()) and app.tables.recovery.completed.is_set() and not app.rebalancing
