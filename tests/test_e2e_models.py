"""The worker serves the neural models through the same protocol, on the real broker."""
from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

from mqstream.periods import day_of_iso
from mqstream.models.mqcnn import MQCNN, MQCNNConfig
from mqstream.models.mqtransformer import MQTransformer, MQTransformerConfig
from mqstream.models.training import save_checkpoint
from mqstream.streams.offsets import read_topic
from mqstream.streams.replay import replay_events
from tests.kafka_helpers import fresh_settings
from tests.test_e2e import run_to_the_end

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NETWORKS = {"mqcnn": lambda: MQCNN(MQCNNConfig()), "mqtransformer": lambda: MQTransformer(MQTransformerConfig())}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_the_worker_serves_a_neural_checkpoint(name, kafka_settings, tmp_path):
    torch.manual_seed(0)  # weights do not matter here: serving through the protocol does
    checkpoint = save_checkpoint(tmp_path / name, name, NETWORKS[name](), {"note": "untrained, for a test"})
    settings = fresh_settings(kafka_settings, tmp_path, model=name, checkpoint=str(checkpoint))
    events = replay_events(day_of_iso("2010-11-08"), day_of_iso("2010-11-10"))
    items = sorted({e.key for e in events})[::10]  # a tenth of the items keeps it quick
    events = [e for e in events if e.key in set(items)]
    run_to_the_end(settings, events)
    forecasts = [orjson.loads(r.value) for r in read_topic(settings, settings.topic("forecasts"))]
    assert forecasts and {f["model"]["name"] for f in forecasts} == {name}
    assert {f["origin"] for f in forecasts} == {"2010-11-08", "2010-11-09", "2010-11-10"}
    for body in forecasts:
        values = np.array(body["values"])
        assert values.shape == (28, 9) and (np.diff(values, axis=1) >= 0).all() and (values >= 0).all()
    assert read_topic(settings, settings.topic("forecast-errors"))  # earlier forecasts were scored
