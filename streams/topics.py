"""The topics, defined once: the worker, the demo, the tests and docker/ create them from here
(`mqstream topics create`). All are keyed by item id and co-partitioned."""
from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from mqstream.config import Settings
from mqstream.kafka_auth import kafka_options

WEEK_MS = 7 * 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the prefix
    purpose: str
    config: dict[str, str]


TOPICS = (
    TopicSpec("sales", "sale events in (JSON)", {"retention.ms": str(-1)}),
    TopicSpec("page-views", "page-view events in (JSON, simulated in the demo)", {"retention.ms": str(-1)}),
    TopicSpec("forecasts", "one quantile forecast per item and origin", {"retention.ms": str(4 * WEEK_MS)}),
    TopicSpec("forecasts-latest", "the current forecast of every item (log-compacted, keyed by item)",
              {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": str(3_600_000)}),
    TopicSpec("forecast-changes", "material revisions only: before and after (see streams/changes.py)",
              {"retention.ms": str(4 * WEEK_MS)}),
    TopicSpec("forecast-errors", "scored forecasts per item and target day", {"retention.ms": str(4 * WEEK_MS)}),
    TopicSpec("dead-letters", "rejected input: original bytes, reason in headers", {"retention.ms": str(-1)}),
)


def topic_names(settings: Settings) -> dict[str, str]:
    return {spec.name: settings.topic(spec.name) for spec in TOPICS}


def create_topics(settings: Settings) -> list[str]:
    """Create the missing topics; returns the names created. Existing ones are left alone."""
    admin = KafkaAdminClient(**kafka_options(settings), client_id="mqstream-topics")
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(settings.topic(spec.name), settings.partitions, 1, topic_configs=spec.config)
                  for spec in TOPICS if settings.topic(spec.name) not in existing]
        try:
            if wanted:
                admin.create_topics(wanted)
        except TopicAlreadyExistsError:  # created concurrently by another worker
            pass
        return [t.name for t in wanted]
    finally:
        admin.close()
