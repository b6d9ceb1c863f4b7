"""The worker's batch path: each fetched batch of an input partition (streams/ingest.py) is
admitted (state/admission.py), applied to its items and, when the partition's clock passes
the end of a day, closed (streams/close.py). Per partition: a clock, the items with work at
the next close, and a lock that keeps a batch and a close apart."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Sequence

import numpy as np
import orjson
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from mqstream.config import Settings
from mqstream.models.protocol import QuantileForecaster, TargetErrors
from mqstream.state.admission import take_sales, take_views, time_refusal
from mqstream.state.clock import PartitionClock, recovered_clock
from mqstream.state.item import ItemModel, ItemState
from mqstream.state.refresh import RefreshPolicy, new_item, take_errors
from mqstream.streams.close import PartitionClose
from mqstream.streams.events import PageView, Rejection, Sale, is_watermark, parse_page_view, parse_sale
from mqstream.streams.metrics import WorkerMetrics
from mqstream.streams.publisher import Publisher
from mqstream.streams.shadow import Shadow
from mqstream.streams.tables import CLOSED_OFFSETS, MODEL_VERSION, WATERMARKS, Tables


class Processor:
    def __init__(self, settings: Settings, model: QuantileForecaster, policy: RefreshPolicy, tables: Tables,
                 names: dict[str, str], publisher: Publisher, metrics: WorkerMetrics):
        self.settings, self.model, self.policy, self.tables = settings, model, policy, tables
        self.cadence = settings.cadence
        self.sales_topic, self.error_topic = names["sales"], names["forecast-errors"]
        self.publisher, self.metrics = publisher, metrics
        self.closer = PartitionClose(tables, model, policy, publisher, metrics, self.cadence)
        self.clocks: dict[int, PartitionClock] = {}
        self.tracked: dict[int, set[bytes]] = {}  # items with work at the next close
        self.applied: dict[int, dict[str, int]] = {}  # partition -> input topic -> last offset handled
        self.closed_offsets: dict[int, dict[str, int]] = {}  # the same, as of the last close
        self.unfinished: set[int] = set()  # partitions whose clocks were just recovered
        # partitions not marked as this model version's yet -> whether another version wrote their item models
        self.unclaimed: dict[int, bool] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        self.serving = [self, self.closer, publisher]  # the parts that hold the served model

    async def switch(self, model: QuantileForecaster) -> None:
        """Serve ``model`` from now on, taken between batches: each partition's item models are
        made again for it before its next close (``PartitionClose.claim``), and every forecast
        from that close on is the new model's."""
        async with self._between_batches():
            for part in self.serving:
                part.model = model
            for partition in self.clocks:
                self.unclaimed.setdefault(partition, True)  # marked by another version

    async def run_in_shadow(self, shadow: Shadow | None) -> None:
        """Run ``shadow`` beside the served model from the next closes on (None: none)."""
        async with self._between_batches():
            self.closer.shadow = shadow

    @asynccontextmanager
    async def _between_batches(self):
        """Every partition's lock held: no batch or close is under way."""
        held = {}
        try:
            while missing := sorted(set(self.locks) - set(held)):  # a partition's first batch may add a lock
                for partition in missing:
                    held[partition] = self.locks[partition]
                    await held[partition].acquire()
            yield
        finally:
            for lock in held.values():
                lock.release()

    async def on_batch(self, tp: TP, batch: Sequence[ConsumerRecord]) -> int:
        """A fetched batch of one input partition, in offset order; how many of its messages
        were handled (all, unless a rebalance stopped a close). Each event is handled as if
        alone; an item's state is read and written once per batch, and written before any
        day close reads it."""
        partition, topic = tp.partition, tp.topic
        async with self.locks.setdefault(partition, asyncio.Lock()):
            started = time.perf_counter()
            self.metrics.consumed.labels(topic).inc(len(batch))
            self.metrics.batch_events.observe(len(batch))
            try:
                if topic == self.error_topic:
                    for message in batch:
                        await self._take_errors(message)
                    handled = len(batch)
                else:
                    handled = await self._ingest(partition, topic, batch)
            except BaseException:
                self.tables.drop_held([partition])  # items changed in memory may not have been written
                raise
            self.metrics.processing.observe((time.perf_counter() - started) / len(batch))
            return handled

    def forget(self, partitions) -> None:
        """Drop the clocks of ``partitions``: read again from the tables at their next event
        (after a rebalance another worker may have moved them on)."""
        for partition in partitions:
            self.clocks.pop(partition, None)
        self.tables.drop_held(partitions)
        if self.closer.shadow is not None:
            self.closer.shadow.forget(partitions)

    async def _ingest(self, partition: int, topic: str, batch: Sequence[ConsumerRecord]) -> int:
        parse = parse_sale if topic == self.sales_topic else parse_page_view
        clock, changed = self._clock(partition), {}
        admitted: list[tuple[bytes, Sale | PageView]] = []  # applied together before a close and at the end
        closed = self.closed_offsets[partition].get(topic, -1)
        now = time.time()
        for index, message in enumerate(batch):
            if message.offset <= closed:
                self.metrics.duplicates.inc()  # handled before a close: read again after a lost commit
                continue
            event = None
            if is_watermark(message.headers):
                ts = orjson.loads(message.value)["ts"]
            else:
                event = parse(message.key, message.value)
                refusal = _refusal(event, clock, now)
                if refusal is not None:
                    await self.publisher.dead_letter(message, *refusal)
                    continue
                ts = event.ts
            if clock.observe(topic, ts) or partition in self.unfinished:
                self._apply(partition, topic, admitted, changed)
                if not await self._close_after_commit(partition, clock, batch[:index], changed):
                    return index
                now = time.time()  # a close can take a while
            if event is None:
                await self.tables.put(self.tables.watermarks, partition, [(WATERMARKS, orjson.dumps(clock.inputs))])
            else:
                admitted.append((message.key, event))
        self._apply(partition, topic, admitted, changed)
        await self._write_items(partition, changed)
        self.applied[partition][topic] = batch[-1].offset
        return len(batch)

    def _apply(self, partition: int, topic: str, admitted: list[tuple[bytes, Sale | PageView]],
               changed: dict[bytes, ItemState]) -> None:
        """Apply the ``admitted`` events (emptied), an item at a time: each item is looked up
        once, and its events are applied in the order they came (each as if alone)."""
        by_item: dict[bytes, list[Sale | PageView]] = {}
        for key, event in admitted:
            events = by_item.get(key)
            if events is None:
                by_item[key] = [event]
            else:
                events.append(event)
        admitted.clear()
        take = take_sales if topic == self.sales_topic else take_views
        cadence, tracked, seen_before = self.cadence, self.tracked[partition], 0
        for key, events in by_item.items():
            item = changed.get(key)
            if item is None:
                item = changed[key] = (self.tables.item(partition, key)
                                       or new_item(events[0].item_id, cadence.of_ts(events[0].ts), self.policy))
            seen_before += take(item, topic, events, cadence)  # still written back: heals a changelog that missed it
            tracked.add(key)
        if seen_before:
            self.metrics.duplicates.inc(seen_before)

    async def _close_after_commit(self, partition: int, clock: PartitionClock, applied: Sequence[ConsumerRecord],
                                  changed: dict[bytes, ItemState]) -> bool:
        """Close the days the clock has passed, once every event applied so far, on every input,
        is written and committed. The event that moved the clock is applied after the close
        (its day is still open): so what is written never holds an event the broker does not
        hold as read, and after a crash only events of days still open are read again, where
        their ids tell them apart. (Read again after the close, an event of a day it closed
        could only be dead-lettered as too late.) False, with nothing closed, when the broker
        does not confirm that commit (a rebalance comes first, or acks wait behind a gap): the
        clock is forgotten, to be recovered from what was written by whoever reads the
        partition next, this worker or another, and the close happens there."""
        await self._write_items(partition, changed)
        consumer = self.tables.items.app.consumer
        if applied:  # in offset order: the last one is how far its input was handled
            self.applied[partition][applied[-1].topic] = applied[-1].offset
            consumer.ack_all(TP(applied[-1].topic, partition), applied)
        if not await consumer.commit_acked():
            self.forget([partition])
            return False
        await self._note_closed_offsets(partition)
        if partition in self.unclaimed:
            await self.closer.claim(partition, rebuild=self.unclaimed.pop(partition))
        self.unfinished.discard(partition)
        await self.closer.close(partition, self.tracked[partition], clock.closed_through)
        return True

    async def _note_closed_offsets(self, partition: int) -> None:
        """Before a close, the last offset of each input applied so far, written once those
        events' state is flushed: an event at or before it was applied before a close, and
        read again (a commit the broker lost) it is skipped, where its day would have been
        closed and it taken for a late event."""
        await self.publisher.flush()
        self.closed_offsets[partition] = dict(self.applied[partition])
        await self.tables.put(self.tables.watermarks, partition,
                              [(CLOSED_OFFSETS, orjson.dumps(self.closed_offsets[partition]))])

    async def _write_items(self, partition: int, changed: dict[bytes, ItemState]) -> None:
        await self.tables.put_items(partition, changed)
        changed.clear()

    async def _take_errors(self, message: ConsumerRecord) -> None:
        """Errors read back from ``forecast-errors``: into the item's error memory, once."""
        self._clock(message.partition)  # recovered first: it says whose states the partition holds
        if self.unclaimed.get(message.partition):
            return  # errors of the model before; its states are made again at the next close
        body = orjson.loads(message.value)
        errors = TargetErrors(self.cadence.of_iso(body["target"]), body["actual"],
                              np.array([self.cadence.of_iso(o) for o in body["origins"]], np.int64),
                              np.asarray(body["forecasts"], np.float64))
        tables = self.tables
        item_model = take_errors(tables.get(tables.item_models, message.partition, message.key), errors, self.model)
        if item_model is not None:
            await tables.put(tables.item_models, message.partition, [(message.key, item_model)])

    def _clock(self, partition: int) -> PartitionClock:
        """The partition's clock; on first use after (re)start, recovered from its tables, and
        every item it holds tracked."""
        if partition not in self.clocks:
            tables, tracked = self.tables, set()

            marks = dict(tables.scan(tables.watermarks, partition))

            def input_times():  # one pass over the items, never all of them in memory
                if WATERMARKS in marks:
                    yield orjson.loads(marks[WATERMARKS])
                for key, raw in tables.scan(tables.items, partition):
                    tracked.add(key)
                    yield ItemState.from_bytes(raw).last_event_ts

            required = tuple(self.settings.topic(name) for name in self.settings.watermark_input_names)
            closed = max((ItemModel.days_of(raw)[0] for _, raw in tables.scan(tables.item_models, partition)),
                         default=-1)  # item models are written by closes only
            self.clocks[partition] = recovered_clock(self.settings.allowed_lateness, required, input_times(), closed,
                                                     self.cadence)
            self.tracked[partition] = tracked
            self.closed_offsets[partition] = orjson.loads(marks.get(CLOSED_OFFSETS, b"{}"))
            self.applied[partition] = dict(self.closed_offsets[partition])
            self.unfinished.add(partition)  # a crash may have cut its last close short
            written_by = marks.get(MODEL_VERSION)
            if written_by != self.model.version.encode():
                self.unclaimed[partition] = written_by is not None  # unmarked: states of no other version
        return self.clocks[partition]


def _refusal(event: Sale | PageView | Rejection, clock: PartitionClock, now: float) -> tuple[str, str] | None:
    """(reason, detail) of a message that must be dead-lettered, None for an event to apply."""
    if isinstance(event, Rejection):
        return event.reason, event.detail
    return time_refusal(event.ts, clock, now)
