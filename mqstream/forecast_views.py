"""Forecasts for a person to read: `mqstream tail` (a line per forecast as it arrives) and
`mqstream show` (one item's current forecast as a table, and a fan chart). `show` asks the
worker's HTTP lookup first, whose answer costs the same whatever the size of the topics, and
reads Kafka when no worker answers."""
from __future__ import annotations

import datetime as dt
import itertools
import sys
from pathlib import Path
from typing import TextIO

from kafka.errors import KafkaError

from mqstream.bootstrap import BrokerUnreachable
from mqstream.client import Forecast, ForecastClient, ForecastError, LookupUnavailable
from mqstream.config import Settings
from mqstream.kafka_auth import kafka_options

SHOWN_HORIZONS = {"day": (1, 2, 3, 7, 14, 21, 28), "week": (1, 2, 3, 4, 8, 13)}
TAIL_HEADER = f"{'item':<12} {'origin':<10} {'model':<20} {'p10_7d':>9} {'p50_7d':>9} {'p90_7d':>9} {'p50_h1':>8}"


def tail_line(f: Forecast) -> str:
    model = f"{f.model}/{f.model_version}"
    return (f"{f.item_id:<12} {f.origin.isoformat():<10} {model:<20} {f.total(0.1):>9.2f} {f.total(0.5):>9.2f} "
            f"{f.total(0.9):>9.2f} {f.quantile(0.5, horizon=1):>8.2f}")


def show_table(f: Forecast) -> str:
    lines = [f"item {f.item_id}  origin {f.origin}  model {f.model} {f.model_version}  "
             f"published {f.created_at:%Y-%m-%d %H:%M:%S %Z}",
             f"{'horizon':>7}  {f.period:<10} {'p10':>9} {'p50':>9} {'p90':>9}"]
    for h in (h for h in SHOWN_HORIZONS[f.period] if h in f.horizons):
        p10, p50, p90 = (f.quantile(q, horizon=h) for q in (0.1, 0.5, 0.9))
        lines.append(f"{h:>7}  {f.target(h).isoformat():<10} {p10:>9.2f} {p50:>9.2f} {p90:>9.2f}")
    lines.append(f"{'7d':>7}  {'total':<10} {f.total(0.1):>9.2f} {f.total(0.5):>9.2f} {f.total(0.9):>9.2f}")
    return "\n".join(lines)


def plot_fan(f: Forecast, history: list[ForecastError], path: Path) -> None:
    """Actuals of the past days and the forecast's quantiles as nested bands (P10-P90,
    P20-P80, ...) around the P50 line."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    days = [f.target(h) for h in f.horizons]
    fig, ax = plt.subplots(figsize=(9, 4))
    levels = sorted(f.quantiles)
    pairs = [(lo, hi) for lo in levels for hi in levels if lo < 0.5 and abs(lo + hi - 1) < 1e-9]
    for i, (lo, hi) in enumerate(pairs):  # widest band first, palest
        ax.fill_between(days, f.quantile(lo), f.quantile(hi), color="tab:blue", alpha=0.15 + 0.1 * i, linewidth=0,
                        label=f"P{lo * 100:.0f}-P{hi * 100:.0f} (darker: narrower)" if i == 0 else None)
    ax.plot(days, f.quantile(0.5), color="tab:blue", label="P50")
    if history:
        ax.plot([e.target for e in history], [e.actual for e in history], "o-", color="black", markersize=3,
                label="actual")
    ax.axvline(f.origin, color="grey", linestyle=":", linewidth=1)
    ax.set(title=f"{f.item_id}: forecast from {f.origin} ({f.model} {f.model_version})", ylabel=f"units per {f.period}")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run_tail(settings: Settings, item: str | None, fmt: str, from_beginning: bool, group: str | None,
             limit: int | None, out: TextIO = sys.stdout) -> int:
    client = _client(settings)
    try:
        if fmt == "json":
            lines = (body.decode() for body in client.raw("forecasts", group, from_beginning, item))
        else:
            forecasts = client.updates(group, from_beginning, item)
            print(TAIL_HEADER, file=out, flush=True)
            lines = (tail_line(f) for f in forecasts)
        for line in itertools.islice(lines, limit):
            print(line, file=out, flush=True)
    except KeyboardInterrupt:
        return 130
    except (KafkaError, LookupError) as exc:
        return _fail(settings, exc)
    return 0


def run_show(settings: Settings, item: str, plot: Path | None, history_days: int, worker: str | None,
             out: TextIO = sys.stdout) -> int:
    """``worker``: the HTTP address of a worker to ask first; None: read Kafka only."""
    try:
        forecast, history, source = _item(settings, item, worker, with_history=plot is not None)
        if forecast is None:
            print(f"mqstream: no forecast for item {item!r} in {source} "
                  "(an item gets one once it has sold within active_days and a day has closed)", file=sys.stderr)
            return 2
        print(show_table(forecast), file=out)
        if plot is not None:
            since = forecast.origin - dt.timedelta(days=history_days)
            plot_fan(forecast, [e for e in history if since < e.target <= forecast.origin], plot)
            print(f"fan chart: {plot}", file=out)
    except (KafkaError, LookupError, TimeoutError) as exc:
        return _fail(settings, exc)
    return 0


def worker_url(settings: Settings) -> str | None:
    """The settings' worker HTTP address as a client reaches it; None when the port is picked
    at start (metrics_port 0)."""
    if not settings.metrics_port:
        return None
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "::") else settings.metrics_host
    return f"http://{host}:{settings.metrics_port}"


def _item(settings: Settings, item: str, worker: str | None,
          with_history: bool) -> tuple[Forecast | None, list[ForecastError], str]:
    """(current forecast, scored forecasts if ``with_history``, where the forecast came from):
    the forecast from the worker when one answers at ``worker`` (a GET), else from Kafka (the
    item's partition of `forecasts-latest`); the scored forecasts from `forecast-errors`, since a
    worker keeps only the last closed day's, which stand in when the broker does not answer."""
    forecast, source = _forecast(settings, item, worker)
    if not with_history or forecast is None:
        return forecast, [], source
    try:
        return forecast, _client(settings).errors(item), source
    except (KafkaError, BrokerUnreachable, TimeoutError) as exc:
        if not source.startswith("the worker"):
            raise
        print(f"mqstream: kafka at {settings.kafka_bootstrap}: {exc}; the plot shows the actual of the last "
              "closed day only, from the worker", file=sys.stderr)
        return forecast, _client(settings, worker).errors(item), source


def _forecast(settings: Settings, item: str, worker: str | None) -> tuple[Forecast | None, str]:
    if worker is not None:
        try:
            return _client(settings, worker).latest(items=[item]).get(item), f"the worker at {worker}"
        except LookupUnavailable as exc:
            print(f"mqstream: {exc}; reading the item's partitions in Kafka instead", file=sys.stderr)
    return _client(settings).latest(items=[item]).get(item), settings.topic("forecasts-latest")


def _client(settings: Settings, worker: str | None = None) -> ForecastClient:
    options = kafka_options(settings)
    return ForecastClient(options.pop("bootstrap_servers"), settings.topic_prefix, lookup_url=worker, **options)


def _fail(settings: Settings, exc: Exception) -> int:
    where = f"kafka at {settings.kafka_bootstrap}: " if isinstance(exc, KafkaError) else ""
    print(f"mqstream: {where}{exc}", file=sys.stderr)
    return 2
