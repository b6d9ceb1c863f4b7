"""faust's RocksDB table store, able to list what it holds for one partition.

Every table write happens while the worker handles an event of the written item's own
partition (a day close refreshes only the items of the partition whose event closed it),
so faust's default placement — the current event's partition, for the local database and
the changelog alike — keeps each item on its source partition. Recovery needs one thing
more: the items of a partition, to rebuild its clock. Register the scheme by importing
this module.
"""
from __future__ import annotations

from typing import Iterator

from faust.stores import STORES
from faust.stores.rocksdb import Store

SCHEME = "partitioned-rocksdb"


class PartitionedStore(Store):
    def partition_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) held locally for one partition."""
        db = self._dbs.get(partition)
        return iter(()) if db is None else self._visible_items(db)


STORES.aliases[SCHEME] = f"{__name__}:PartitionedStore"
