"""The worker's three tables, read and written in one partition's own database and changelog
partition, whatever event is current (streams/store.py)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Iterator, Sequence

import faust

from mqstream.streams.blocks import send_records

# the keys of the watermarks table, a record each per partition
WATERMARKS = b"watermarks"  # the input watermarks as of the last watermark marker
CLOSED_OFFSETS = b"closed-offsets"  # per input topic, the last offset applied before the last close
MODEL_VERSION = b"model-version"  # the version of the model whose states the partition's item models hold


@dataclass
class Tables:
    items: faust.Table  # key -> ItemState, written on every batch
    item_models: faust.Table  # key -> ItemModel, written once per close
    # WATERMARKS -> the partition's input watermarks, written at each watermark marker (the
    # only clock input no item remembers); CLOSED_OFFSETS, written before each close;
    # MODEL_VERSION, at the first close of each model version
    watermarks: faust.Table

    @staticmethod
    def get(table: faust.Table, partition: int, key: bytes) -> bytes | None:
        return table.data.get_in(partition, key)

    @staticmethod
    def scan(table: faust.Table, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return table.data.partition_items(partition)

    async def put(self, table: faust.Table, partition: int, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        """Into the partition's database and changelog partition, as whole record batches
        (streams/blocks.py). How far the changelog holds the partition is noted once the last
        batch is acknowledged, as faust does for its own writes: a restart then replays only
        the changelog's tail."""
        for key, value in pairs:
            table.data.put_in(partition, key, value)
        producer = self.items.app.producer._ensure_producer()
        sent = await send_records(producer, table.changelog_topic.get_topic_name(), partition,
                                  ((key, value, []) for key, value in pairs))
        if sent is not None:
            future, count = sent
            future.add_done_callback(partial(_persist_offset, table.data, count - 1))


def _persist_offset(store, last: int, sent: asyncio.Future) -> None:
    """``last``: the index of the table's last write in the acknowledged batch."""
    if not sent.cancelled() and sent.exception() is None:
        meta = sent.result()
        store.set_persisted_offset(meta.topic_partition, meta.offset + last)
