"""What the worker publishes: forecasts, forecast errors and dead letters, as JSON bytes.

Days are published in schema version 1, which every consumer reads; weeks in version 2,
which says its period (mqstream/schemas/README.md: a new unit needs a new version)."""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np
import orjson

from mqstream.periods import DAILY, Cadence
from mqstream.models.protocol import QuantileForecaster, error_rows
from mqstream.models.scores import pinball_loss
from mqstream.state.refresh import IssuedForecast, ScoredDay

# numpy arrays written as JSON directly: the same text as their tolist(), in half the time
ARRAYS = orjson.OPT_SERIALIZE_NUMPY


def contract(cadence: Cadence) -> dict:
    """The fields that open every output message: its schema version and, from version 2, its period."""
    return {"schema_version": 1} if cadence.period == "day" else {"schema_version": 2, "period": cadence.period}


def headers(model: QuantileForecaster, cadence: Cadence = DAILY) -> list[tuple[str, bytes]]:
    return [("schema-version", str(contract(cadence)["schema_version"]).encode()),
            ("model", model.name.encode()), ("model-version", model.version.encode())]


def forecast_messages(issued: Sequence[IssuedForecast], model: QuantileForecaster, created_at: str,
                      cadence: Cadence = DAILY) -> list[bytes]:
    """The `forecasts` message of each issued forecast."""
    head, tail = contract(cadence), _tail(model, created_at)
    horizons, quantiles = list(range(1, model.horizons + 1)), list(model.quantiles)
    return [orjson.dumps({
        **head,
        "item_id": f.item_id,
        "origin": cadence.iso(f.origin),
        "horizons": horizons,
        "quantiles": quantiles,
        "values": np.ascontiguousarray(f.values, np.float64),  # (horizon, quantile)
        **tail,
    }, option=ARRAYS) for f in issued]


def error_messages(scored: Sequence[ScoredDay], model: QuantileForecaster, created_at: str, decimals: int,
                   cadence: Cadence = DAILY) -> list[bytes]:
    """The `forecast-errors` message of each scored period, its pinball losses computed for
    the whole batch at once."""
    if not scored:
        return []
    rows = error_rows([s.errors for s in scored])
    forecasts = np.round(rows.forecasts.astype(np.float64), decimals)
    losses = np.round(pinball_loss(rows.actuals[:, None], forecasts, np.asarray(model.quantiles)), 6)
    origins = rows.targets - rows.horizons
    first = int(origins.min())
    names = np.array([cadence.iso(o) for o in range(first, int(origins.max()) + 1)], object)[origins - first].tolist()
    head, tail, quantiles = contract(cadence), _tail(model, created_at), list(model.quantiles)
    ends = np.cumsum([len(s.errors.origins) for s in scored]).tolist()
    return [orjson.dumps({
        **head,
        "item_id": s.item_id,
        "target": cadence.iso(s.errors.target),
        "actual": s.errors.actual,
        "quantiles": quantiles,
        "origins": names[start:end],
        "horizons": rows.horizons[start:end],
        "forecasts": forecasts[start:end],  # (record, quantile)
        "pinball": losses[start:end],  # (record, quantile)
        **tail,
    }, option=ARRAYS) for s, start, end in zip(scored, [0, *ends], ends)]


def forecast_message(issued: IssuedForecast, model: QuantileForecaster, created_at: str,
                     cadence: Cadence = DAILY) -> bytes:
    return forecast_messages([issued], model, created_at, cadence)[0]


def error_message(scored: ScoredDay, model: QuantileForecaster, created_at: str, decimals: int,
                  cadence: Cadence = DAILY) -> bytes:
    return error_messages([scored], model, created_at, decimals, cadence)[0]


def _tail(model: QuantileForecaster, created_at: str) -> dict:
    return {"model": {"name": model.name, "version": model.version}, "created_at": created_at}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
