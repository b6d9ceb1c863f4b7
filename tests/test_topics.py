"""`create_topics` against the real broker: every topic a worker writes exists before a worker
starts, the table changelogs included (see streams/topics.py for why faust must not make them)."""
from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from mqstream.kafka_auth import kafka_options
from mqstream.streams.topics import TABLES, TOPICS, changelog_name, create_topics
from tests.kafka_helpers import fresh_settings


def test_every_topic_a_worker_writes_is_created_once_with_its_partitions_and_compacted_changelogs(
        kafka_settings, tmp_path):
    settings = fresh_settings(kafka_settings, tmp_path)
    changelogs = {changelog_name(settings, table) for table in TABLES}
    created = create_topics(settings)
    assert set(created) == {settings.topic(spec.name) for spec in TOPICS} | changelogs
    assert create_topics(settings) == []  # a second worker's start creates nothing

    admin = KafkaAdminClient(**kafka_options(settings))
    try:
        described = admin.describe_topics(sorted(changelogs))
        assert {t["name"]: len(t["partitions"]) for t in described} == dict.fromkeys(changelogs, settings.partitions)
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in changelogs])
    finally:
        admin.close()
    assert {name: config["cleanup.policy"]["value"] for name, config in configs["topic"].items()} == \
        dict.fromkeys(changelogs, "compact")
