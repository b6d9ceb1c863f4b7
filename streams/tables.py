"""The worker's three tables, read and written in one partition's own database and changelog
partition, whatever event is current (streams/store.py).

The items the worker read or wrote last are also held decoded, up to ``held_items`` (first
out: the one held longest since it was read in or last written; ~3 kB each, the objects and
the value their history is a view of). An item's state is read at every batch that has an
event of it, and decoding it again from RocksDB was a fifth of the worker's CPU while it
ingests (bench/profile-ingest.md). A batch changes held items in place and writes them
before it ends, so between batches what is held is what the database holds; a partition's
are dropped when it is revoked (another worker may change it) and when a batch or close
fails part way (``drop_held``)."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import Iterator, Sequence

import faust

from mqstream.state.item import ItemState
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
    held_items: int = 0
    # an OrderedDict: a plain dict's oldest key is found past every key deleted before it, which
    # cost ~30 µs a read once a worker held more items than held_items (0.3 µs this way)
    _held: OrderedDict[tuple[int, bytes], ItemState] = field(default_factory=OrderedDict, init=False, repr=False)

    def item(self, partition: int, key: bytes) -> ItemState | None:
        """An item's state as last written, or None for an item the partition has not seen."""
        item = self._held.get((partition, key))
        if item is None:
            raw = self.get(self.items, partition, key)
            if raw is None:
                return None
            item = ItemState.from_bytes(raw)
            self._hold(partition, {key: item})
        return item

    async def put_items(self, partition: int, items: dict[bytes, ItemState]) -> None:
        await self.put(self.items, partition, [(key, item.to_bytes()) for key, item in items.items()])
        self._hold(partition, items)

    def drop_held(self, partitions) -> None:
        partitions = set(partitions)
        for held in [held for held in self._held if held[0] in partitions]:
            del self._held[held]

    def _hold(self, partition: int, items: dict[bytes, ItemState]) -> None:
        if not self.held_items:
            return
        held = self._held
        for key, item in items.items():
            held[partition, key] = item
            held.move_to_end((partition, key))  # the newest written leave last
        while len(held) > self.held_items:
            held.popitem(last=False)

    @staticmethod
    def get(table: faust.Table, partition: int, key: bytes) -> bytes | None:
        return table.data.get_in(partition, key)

    @staticmethod
    def scan(table: faust.Table, partition: int, after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """The partition's (key, value) pairs in key order (``after``: past that key only)."""
        return table.data.partition_items(partition, after)

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
