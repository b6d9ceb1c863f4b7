import logging

import pytest

from mqstream.config import Settings
from mqstream.local_broker import LocalBroker, free_port

logging.getLogger("kafka").setLevel(logging.ERROR)  # not "group_id is None" once per topic read
# items per model call and per close batch (Settings.refresh_batch): small, so that the closes
# the tests run cross batch boundaries, a crash between two batches included
REFRESH_BATCH = 32


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
    return Settings(kafka_port=broker.port, partitions=4, model="seasonal-naive",
                    refresh_batch=REFRESH_BATCH).validate()
