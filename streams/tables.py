"""The worker's three tables, read and written in one partition's own database and changelog
partition, whatever event is current (streams/store.py)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Iterator, Sequence

import faust

# the keys of the watermarks table, a record each per partition
WATERMARKS = b"watermarks"  # the input watermarks as of the last watermark marker
CLOSED_OFFSETS = b"closed-offsets"  # per input topic, the last offset applied before the last close


@dataclass
class Tables:
    items: faust.Table  # key -> ItemState, written on every batch
    item_models: faust.Table  # key -> ItemModel, written once per close
    # WATERMARKS -> the partition's input watermarks, written at each watermark marker (the
    # only clock input no item remembers); CLOSED_OFFSETS, written before each close
    watermarks: faust.Table

    @staticmethod
    def get(table: faust.Table, partition: int, key: bytes) -> bytes | None:
        return table.data.get_in(partition, key)

    @staticmethod
    def scan(table: faust.Table, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return table.data.partition_items(partition)

    async def put(self, table: faust.Table, partition: int, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        """Into the partition's database and changelog partition. Straight to the producer:
        faust's send_soon costs a buffered future message and a task switch per write, several
        times the rest of an event's handling. The changelog offset is noted once, at the last
        write (offsets of one partition are acknowledged in order)."""
        topic, sent = table.changelog_topic.get_topic_name(), None
        producer = self.items.app.producer
        for key, value in pairs:
            table.data.put_in(partition, key, value)
            sent = await producer.send(topic, key, value, partition, None, None)
        if sent is not None:
            sent.add_done_callback(partial(_persist_offset, table.data))


def _persist_offset(store, sent: asyncio.Future) -> None:
    """Note in the partition's database how far its changelog is known to hold it, as faust
    does for its own writes: a restart then replays only the changelog's tail."""
    if not sent.cancelled() and sent.exception() is None:
        meta = sent.result()
        store.set_persisted_offset(meta.topic_partition, meta.offset)
