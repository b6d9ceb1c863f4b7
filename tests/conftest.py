import logging

import pytest

from mqstream.config import Settings
from mqstream.local_broker import LocalBroker, free_port

logging.getLogger("kafka").setLevel(logging.ERROR)  # not "group_id is None" once per topic read


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real Kafka broker (KRaft) for the whole test session, on a free port."""
    local = LocalBroker(tmp_path_factory.mktemp("kafka"), free_port())
    local.start()
    yield local
    local.stop()


@pytest.fixture(scope="session")
def kafka_settings(broker) -> Settings:
    # the seasonal-naive model needs no checkpoint; the neural models have tests of their own
    return Settings(kafka_port=broker.port, partitions=4, model="seasonal-naive").validate()
