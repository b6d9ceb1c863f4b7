"""Real output messages for consumer-side tests: seasonal-naive forecasts of synthetic
demand, built and encoded by the worker's own functions, and a producer for them."""
from __future__ import annotations

import numpy as np
from kafka import KafkaProducer

from mqstream.models.protocol import ItemInfo, Period
from mqstream.models.seasonal_naive import SeasonalNaive
from mqstream.config import Settings
from mqstream.state.ledger import Ledgers
from mqstream.state.refresh import IssuedForecast, ScoredDay
from mqstream.streams import messages

MODEL = SeasonalNaive()
CREATED_AT = "2011-06-15T06:00:00.000+00:00"


def issued(item_id: str, origin: int, level: float = 3.0, seed: int = 0) -> IssuedForecast:
    """The forecast from ``origin`` of an item that sold Poisson(``level``) units a day for
    the eight weeks before, rounded as the worker publishes it."""
    rng = np.random.default_rng(seed)
    state = MODEL.new_state(ItemInfo(item_id), origin - 55)
    for day in range(origin - 55, origin + 1):
        state = MODEL.advance([state], [Period(day, float(rng.poisson(level)), 0.0, 1.0)])[0]
    return IssuedForecast(item_id, origin, np.round(MODEL.forecast([state])[0].astype(np.float64), 3))


def forecast_bytes(forecast: IssuedForecast) -> bytes:
    return messages.forecast_message(forecast, MODEL, CREATED_AT)


def error_bytes(item_id: str, target: int, actual: float, earlier: list[IssuedForecast]) -> bytes:
    """The forecast-errors message of ``target``, scoring the ``earlier`` forecasts of it."""
    ledger = Ledgers.empty(1, MODEL.horizons, len(MODEL.quantiles))
    for forecast in earlier:
        ledger.record([0], forecast.origin, forecast.values[None])
    scored = ScoredDay(item_id, ledger.score([0], target, [actual])[0])
    return messages.error_message(scored, MODEL, CREATED_AT, decimals=3)


def produce(settings: Settings, name: str, messages_: list[tuple[str, bytes | None]]) -> None:
    """(item id, body) pairs to topic ``name``, keyed by item id like the worker's, with its headers."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for item_id, body in messages_:
            producer.send(settings.topic(name), key=item_id.encode(), value=body, headers=messages.headers(MODEL))
        producer.flush()
    finally:
        producer.close()
