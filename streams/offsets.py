"""Reading back from the broker: end and committed offsets, group lag, a whole topic."""
from __future__ import annotations

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorError

from mqstream.config import Settings
from mqstream.kafka_auth import kafka_options

WORKER_INPUTS = ("sales", "page-views", "forecast-errors")


def end_offsets(settings: Settings, topic: str, partitions: int | None = None) -> dict[TopicPartition, int]:
    """Of each of the topic's partitions: ``partitions``, or the settings' (co-partitioned topics)."""
    consumer = KafkaConsumer(**kafka_options(settings))
    try:
        return consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions or settings.partitions)])
    finally:
        consumer.close()


def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(**kafka_options(settings))
    try:
        offsets = admin.list_group_offsets({settings.app_id: None}).get(settings.app_id, {})
    except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
        return {}  # the group's coordinator is (re)starting: nothing known to be committed yet
    finally:
        admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def partition_lags(settings: Settings, inputs=WORKER_INPUTS) -> dict[TopicPartition, int]:
    """Messages of each partition of ``inputs`` that the worker group has not committed yet."""
    committed = committed_offsets(settings)
    return {tp: end - committed.get(tp, 0)
            for name in inputs for tp, end in end_offsets(settings, settings.topic(name)).items()}


def group_lag(settings: Settings, inputs=WORKER_INPUTS) -> int:
    return sum(partition_lags(settings, inputs).values())


def read_topic(settings: Settings, topic: str, partitions: int | None = None) -> list:
    """Every message of a topic, from the start to its end as of the call."""
    ends = {tp: off for tp, off in end_offsets(settings, topic, partitions).items() if off > 0}
    if not ends:
        return []
    consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    consumer.assign(list(ends))
    consumer.seek_to_beginning()
    out = []
    try:
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for records in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                out.extend(records)
    finally:
        consumer.close()
    return out
