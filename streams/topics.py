"""The topics, defined once: the worker, the demo, the tests and docker/ create them from here
(`mqstream topics create`). All but ``models`` are keyed by item id and co-partitioned.

The worker's table changelogs are created here too, before any worker starts, though faust
would make them: aiokafka's producer, once it sends to a topic it did not know at start-up,
asks the broker for that topic's metadata alone from then on and forgets every other topic's
leaders, so batches already queued for them wait for good (a worker whose producer started
before another worker had made the changelogs hangs there, every commit behind the
producer's flush)."""
from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from mqstream.config import Settings
from mqstream.kafka_auth import kafka_options

WEEK_MS = 7 * 86_400_000
MAX_MODEL_BYTES = 16 * 2**20  # a checkpoint is about 0.6 MB: the models topic refuses more than this


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the prefix
    purpose: str
    config: dict[str, str]
    partitions: int = 0  # 0: the settings' partitions


TOPICS = (
    TopicSpec("sales", "sale events in (JSON)", {"retention.ms": str(-1)}),
    TopicSpec("page-views", "page-view events in (JSON, simulated in the demo)", {"retention.ms": str(-1)}),
    TopicSpec("forecasts", "one quantile forecast per item and origin", {"retention.ms": str(4 * WEEK_MS)}),
    TopicSpec("forecasts-latest", "the current forecast of every item (log-compacted, keyed by item)",
              {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": str(3_600_000)}),
    TopicSpec("forecast-changes", "material revisions only: before and after (see streams/changes.py)",
              {"retention.ms": str(4 * WEEK_MS)}),
    TopicSpec("forecast-errors", "scored forecasts per item and target day", {"retention.ms": str(4 * WEEK_MS)}),
    TopicSpec("forecasts-shadow", "forecasts of the candidate model, run beside the served one (streams/shadow.py)",
              {"retention.ms": str(4 * WEEK_MS)}),
    TopicSpec("forecast-errors-shadow", "the candidate's forecasts, scored", {"retention.ms": str(4 * WEEK_MS)}),
    TopicSpec("dead-letters", "rejected input: original bytes, reason in headers", {"retention.ms": str(-1)}),
    TopicSpec("models", "checkpoints by model and role (log-compacted, keyed by <model>:<role>; streams/models_topic.py)",
              {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "max.message.bytes": str(MAX_MODEL_BYTES)},
              partitions=1),
)


TABLES = ("items", "item-models", "watermarks")  # the worker's tables (streams/worker.py)


def changelog_name(settings: Settings, table: str) -> str:
    """faust's name for a table's changelog topic."""
    return f"{settings.app_id}-{table}-changelog"


def partition_count(settings: Settings, name: str) -> int:
    spec = next(spec for spec in TOPICS if spec.name == name)
    return spec.partitions or settings.partitions


def topic_names(settings: Settings) -> dict[str, str]:
    return {spec.name: settings.topic(spec.name) for spec in TOPICS}


def create_topics(settings: Settings) -> list[str]:
    """Create the missing topics; returns the names created. Existing ones are left alone."""
    admin = KafkaAdminClient(**kafka_options(settings), client_id="mqstream-topics")
    try:
        existing = set(admin.list_topics())
        specs = [(settings.topic(spec.name), partition_count(settings, spec.name), spec.config) for spec in TOPICS]
        specs += [(changelog_name(settings, table), settings.partitions, {"cleanup.policy": "compact"})
                  for table in TABLES]
        wanted = [NewTopic(name, partitions, 1, topic_configs=config)
                  for name, partitions, config in specs if name not in existing]
        try:
            if wanted:
                admin.create_topics(wanted)
        except TopicAlreadyExistsError:  # created concurrently by another worker
            pass
        return [t.name for t in wanted]
    finally:
        admin.close()
