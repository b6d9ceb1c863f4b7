"""Which partition of a topic holds an item: Kafka's default partitioner, murmur2 of the key
(the item id), as producers of the inputs, the worker's outputs and every reader take it."""
from __future__ import annotations

from functools import lru_cache

from kafka.partitioner.default import murmur2

# A close publishes each item to three topics within one chunk (8,192 items): a cache this
# large computes its hash once, not three times (pure Python, ~2 us a key).
_HASHES_KEPT = 1 << 15


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``key`` in a topic of ``partitions`` partitions."""
    return _key_hash(key) % partitions


@lru_cache(maxsize=_HASHES_KEPT)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF
