"""What the worker publishes: forecasts, forecast errors and dead letters, as JSON bytes.

Days are published in schema version 1, which every consumer reads; weeks in version 2,
which says its period (mqstream/schemas/README.md: a new unit needs a new version)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import orjson

from mqstream.periods import DAILY, Cadence
from mqstream.models.protocol import QuantileForecaster
from mqstream.models.scores import pinball_loss
from mqstream.state.refresh import IssuedForecast, ScoredDay



def contract(cadence: Cadence) -> dict:
    """The fields that open every output message: its schema version and, from version 2, its period."""
    return {"schema_version": 1} if cadence.period == "day" else {"schema_version": 2, "period": cadence.period}


def headers(model: QuantileForecaster, cadence: Cadence = DAILY) -> list[tuple[str, bytes]]:
    return [("schema-version", str(contract(cadence)["schema_version"]).encode()),
            ("model", model.name.encode()), ("model-version", model.version.encode())]


def forecast_message(issued: IssuedForecast, model: QuantileForecaster, created_at: str, cadence: Cadence = DAILY) -> bytes:
    return orjson.dumps({
        **contract(cadence),
        "item_id": issued.item_id,
        "origin": cadence.iso(issued.origin),
        "horizons": list(range(1, model.horizons + 1)),
        "quantiles": list(model.quantiles),
        "values": issued.values.tolist(),  # (horizon, quantile)
        "model": {"name": model.name, "version": model.version},
        "created_at": created_at,
    })


def error_message(scored: ScoredDay, model: QuantileForecaster, created_at: str, decimals: int,
                  cadence: Cadence = DAILY) -> bytes:
    e = scored.errors
    forecasts = np.round(e.forecasts.astype(np.float64), decimals)
    losses = pinball_loss(e.actual, forecasts, np.asarray(model.quantiles))
    return orjson.dumps({
        **contract(cadence),
        "item_id": scored.item_id,
        "target": cadence.iso(e.target),
        "actual": e.actual,
        "quantiles": list(model.quantiles),
        "origins": [cadence.iso(o) for o in e.origins.tolist()],
        "horizons": e.horizons.tolist(),
        "forecasts": forecasts.tolist(),  # (record, quantile)
        "pinball": np.round(losses, 6).tolist(),  # (record, quantile)
        "model": {"name": model.name, "version": model.version},
        "created_at": created_at,
    })


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
