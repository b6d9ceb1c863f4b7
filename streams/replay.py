"""Replay transactions into ``sales`` (and page views into ``page-views``: a file's real ones,
or simulated ones) in event-time order, as a real producer would send them."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import orjson
import pandas as pd
from kafka import KafkaProducer
from tqdm import tqdm

from mqstream.periods import DAY_SECONDS, day_of_ts
from mqstream.models.dataset import demand_series, load_transactions
from mqstream.models.pageviews import simulate_views
from mqstream.config import Settings
from mqstream.kafka_auth import kafka_options
from mqstream.streams.events import CONTROL_HEADER

VIEWS_HOUR = 12  # a day's simulated views are sent as one event at noon


@dataclass(frozen=True)
class ReplayEvent:
    topic: str  # "sales" or "page-views"
    key: bytes
    value: bytes
    ts: int


def sale_events(tx: pd.DataFrame) -> Iterator[ReplayEvent]:
    """One event per invoice line, with the loader's event id (``models.history``: the file's,
    or from the line's position in the file, because identical lines are separate sales)."""
    for row in tx.itertuples(index=False):
        body = {"event_id": row.event_id, "item_id": row.item_id, "ts": int(row.ts),
                "quantity": row.quantity, "price": float(row.price),  # quantity: int, or float if the file's are
                "invoice": row.invoice, "description": row.description}
        yield ReplayEvent("sales", row.item_id.encode(), orjson.dumps(body), int(row.ts))


def real_view_events(views: pd.DataFrame) -> Iterator[ReplayEvent]:
    """One event per row of a page-views file (``models.history.read_views``)."""
    for row in views.itertuples(index=False):
        body = {"event_id": row.event_id, "item_id": row.item_id, "ts": int(row.ts), "views": row.views}
        yield ReplayEvent("page-views", row.item_id.encode(), orjson.dumps(body), int(row.ts))


def view_events(tx: pd.DataFrame, first_day: int, last_day: int) -> list[ReplayEvent]:
    """Simulated page views (see models/pageviews.py) of every item sold in the window."""
    items = np.array(sorted(tx.loc[day_of_ts(tx["ts"]).between(first_day, last_day), "item_id"].unique()))
    series = demand_series(tx, items, first_day, last_day)
    views = simulate_views(series.items, series.units, first_day)
    events = []
    for i, j in zip(*np.nonzero(views)):
        day, item = first_day + int(j), str(items[i])
        ts = day * DAY_SECONDS + VIEWS_HOUR * 3600
        body = {"event_id": f"pv-{item}-{day}", "item_id": item, "ts": ts, "views": int(views[i, j])}
        events.append(ReplayEvent("page-views", item.encode(), orjson.dumps(body), ts))
    return events


def replay_events(first_day: int, last_day: int, tx: pd.DataFrame | None = None,
                  views: bool = True, real_views: pd.DataFrame | None = None) -> list[ReplayEvent]:
    """Every event of days first_day..last_day, sales and views merged in event-time order.
    The views are ``real_views`` (a page-views file's rows) when given, else simulated;
    none without ``views``."""
    tx = load_transactions() if tx is None else tx
    window = tx[day_of_ts(tx["ts"]).between(first_day, last_day)]
    events = list(sale_events(window))
    if views and real_views is not None:
        events += real_view_events(real_views[day_of_ts(real_views["ts"]).between(first_day, last_day)])
    elif views:
        events += view_events(tx, first_day, last_day)
    events.sort(key=lambda e: e.ts)  # stable: file order within a minute
    return events


def send(events: list[ReplayEvent], settings: Settings, speedup: float = 0.0,
         close_last_period: bool = True, progress: bool = True) -> int:
    """Produce ``events``; ``speedup`` event-time seconds per wall second (0: no waiting).
    With ``close_last_period`` a watermark marker to every partition closes the period (day or
    week, ``settings.period``) of the last event. Returns the number of messages produced,
    markers included."""
    producer = KafkaProducer(**kafka_options(settings), acks="all",
                             linger_ms=20, batch_size=512 * 1024, compression_type=None)
    start_wall, start_ts = time.monotonic(), events[0].ts if events else 0
    for event in tqdm(events, desc="replay", unit="ev", disable=not progress, mininterval=1.0):
        if speedup > 0:
            lag = (event.ts - start_ts) / speedup - (time.monotonic() - start_wall)
            if lag > 0:
                time.sleep(lag)
        producer.send(settings.topic(event.topic), key=event.key, value=event.value)
    sent = len(events)
    if close_last_period and events:
        cadence = settings.cadence
        mark = cadence.end_ts(cadence.of_ts(events[-1].ts)) + settings.allowed_lateness
        for topic in {settings.topic(e.topic) for e in events}:
            for partition in range(settings.partitions):
                producer.send(topic, value=orjson.dumps({"ts": mark}), partition=partition,
                              headers=[(CONTROL_HEADER, b"watermark")])
                sent += 1
    producer.flush()
    producer.close()
    return sent
