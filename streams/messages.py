"""What the worker publishes: forecasts, forecast errors and dead letters, as JSON bytes."""
from __future__ import annotations

import datetime as dt

import numpy as np
import orjson

from mqstream.periods import iso_of_day
from mqstream.models.protocol import QuantileForecaster
from mqstream.models.scores import pinball_loss
from mqstream.state.refresh import IssuedForecast, ScoredDay

SCHEMA_VERSION = 1


def headers(model: QuantileForecaster) -> list[tuple[str, bytes]]:
    return [("schema-version", str(SCHEMA_VERSION).encode()),
            ("model", model.name.encode()), ("model-version", model.version.encode())]


def forecast_message(issued: IssuedForecast, model: QuantileForecaster, created_at: str) -> bytes:
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION,
        "item_id": issued.item_id,
        "origin": iso_of_day(issued.origin),
        "horizons": list(range(1, model.horizons + 1)),
        "quantiles": list(model.quantiles),
        "values": issued.values.tolist(),  # (horizon, quantile)
        "model": {"name": model.name, "version": model.version},
        "created_at": created_at,
    })


def error_message(scored: ScoredDay, model: QuantileForecaster, created_at: str, decimals: int) -> bytes:
    q = np.asarray(model.quantiles)
    forecasts = np.round(np.stack([r.forecast for r in scored.records]).astype(np.float64), decimals)
    losses = np.stack([pinball_loss(scored.actual, f, q) for f in forecasts])
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION,
        "item_id": scored.item_id,
        "target": iso_of_day(scored.target),
        "actual": scored.actual,
        "quantiles": list(model.quantiles),
        "origins": [iso_of_day(r.origin) for r in scored.records],
        "horizons": [r.horizon for r in scored.records],
        "forecasts": forecasts.tolist(),  # (record, quantile)
        "pinball": np.round(losses, 6).tolist(),  # (record, quantile)
        "model": {"name": model.name, "version": model.version},
        "created_at": created_at,
    })


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
