"""A RocksDB table store whose local partitions follow the key, not the current event.

faust's RocksDB store files every write under the partition of the event being handled.
The worker writes many items while handling one event (a day closing refreshes a whole
partition), so each write must land on the key's own partition: the one the producer's
murmur2 partitioner sends its changelog message to (``use_partitioner=True``) and the one
the source topics are keyed to. Register the scheme by importing this module.
"""
from __future__ import annotations

from typing import Iterator

from aiokafka.partitioner import murmur2
from faust.stores import STORES
from faust.stores.rocksdb import Store

SCHEME = "keyed-rocksdb"


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (Java client, aiokafka and kafka-python agree)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitionedStore(Store):
    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = partition_of(key, self.table.partitions)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def partition_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) held locally for one partition."""
        db = self._dbs.get(partition)
        return iter(()) if db is None else self._visible_items(db)


STORES.aliases[SCHEME] = f"{__name__}:KeyPartitionedStore"
