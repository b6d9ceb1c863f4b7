"""Many records to one partition, sent as whole record batches.

aiokafka's ``send`` costs a future, a metadata wait and a partitioner call per record: a
third of the worker's CPU while it ingests (bench/profile-ingest.md). A batch filled through
the producer's own record builder (compiled) and queued with ``send_batch`` costs one of each
per batch. It goes through the same accumulator, so the producer's ``flush`` (which faust's
commit waits for) covers it, and aiokafka keeps one batch in flight per partition, so a
partition's records reach the log in the order they were given.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Iterable

from aiokafka import AIOKafkaProducer

from mqstream.partitions import partition_of

Record = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers (a list: the builder wants one)


async def send_records(producer: AIOKafkaProducer, topic: str, partition: int,
                       records: Iterable[Record]) -> tuple[asyncio.Future, int] | None:
    """Queue ``records`` for one partition, in order. Returns the last batch's future (its
    result names the batch's first offset) and how many records that batch holds, or None
    when there were none."""
    batch, count, sent = producer.create_batch(), 0, None
    for key, value, headers in records:
        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
            sent = await _queue(producer, batch, topic, partition)
            batch, count = producer.create_batch(), 0
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record of {len(value)} bytes for {topic} exceeds the producer's batch size")
        count += 1
    if count:
        sent = await _queue(producer, batch, topic, partition)
    return None if sent is None else (sent, count)


async def _queue(producer: AIOKafkaProducer, batch, topic: str, partition: int) -> asyncio.Future:
    batch.close()  # a closed batch is sent at once rather than after the linger time
    return await producer.send_batch(batch, topic, partition=partition)


async def partitioner(producer: AIOKafkaProducer, topic: str) -> Callable[[bytes], int]:
    """The partition ``send`` would give each key of ``topic``: Kafka's default rule, as for
    the inputs, so an item's outputs share its partition number; each key hashed once for
    all the topics a close writes it to (``partition_of``)."""
    await producer.client._wait_on_metadata(topic)
    partitions = len(producer.client.cluster.partitions_for_topic(topic))
    return lambda key: partition_of(key, partitions)
