"""Synthetic sale events for the benchmarks, in the format of ``streams/events.py``.

Items get ids like the shipped data's stock codes, real descriptions and prices drawn from
the shipped transactions, so a message is the size of a real one (~130 bytes). Event times
are placed on chosen days, so that a day closes only when a benchmark wants it to: every
event of one day and no later event leaves the day open, and nothing is forecast.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import orjson

from mqstream.partitions import partition_of
from mqstream.periods import DAY_SECONDS
from mqstream.streams.replay import ReplayEvent

DAY = 19_787  # 2024-03-04, a Monday: well past EARLIEST_TS and never in the future
HOUR = 3600


@dataclass(frozen=True)
class Catalogue:
    ids: list[str]
    descriptions: list[str]
    prices: np.ndarray  # (N,) float

    def __len__(self) -> int:
        return len(self.ids)


def catalogue(n: int, seed: int = 0) -> Catalogue:
    """``n`` items: ids ``S`` + six digits, descriptions and prices of real products."""
    from mqstream.models.dataset import load_transactions

    tx = load_transactions()
    real = tx.drop_duplicates("item_id")[["description", "price"]]
    real = real[real["price"] >= 0.01]  # a price that rounds to 0 is not demand (EVALUATION.md)
    pick = np.random.default_rng(seed).integers(0, len(real), n)
    return Catalogue([f"S{i:06d}" for i in range(n)], real["description"].to_numpy()[pick].tolist(),
                     np.round(real["price"].to_numpy()[pick].astype(float), 2))


def sale(items: Catalogue, i: int, event_id: str, ts: int, quantity: int = 1) -> ReplayEvent:
    body = {"event_id": event_id, "item_id": items.ids[i], "ts": int(ts), "quantity": int(quantity),
            "price": float(items.prices[i]), "invoice": str(500_000 + zlib.crc32(event_id.encode()) % 100_000),
            "description": items.descriptions[i]}
    return ReplayEvent("sales", items.ids[i].encode(), orjson.dumps(body), int(ts))


def sales_in_one_day(items: Catalogue, events: int, day: int = DAY, seed: int = 1) -> list[ReplayEvent]:
    """``events`` sales spread over 00:00..23:00 of ``day`` across every item (each item at
    least once when events >= items), in event-time order. Closes nothing."""
    rng = np.random.default_rng(seed)
    which = np.concatenate([np.arange(min(events, len(items))),
                            rng.integers(0, len(items), max(0, events - len(items)))])
    ts = np.sort(rng.integers(day * DAY_SECONDS, day * DAY_SECONDS + 23 * HOUR, events))
    rng.shuffle(which)
    quantities = rng.geometric(0.4, events)  # 1, 2, 3... like invoice lines
    return [sale(items, int(i), f"e{day % 100}-{k}", int(t), int(q))
            for k, (i, t, q) in enumerate(zip(which, ts, quantities))]


def one_sale_each(items: Catalogue, day: int = DAY, seed: int = 2) -> list[ReplayEvent]:
    """One sale of every item on ``day``: every item has state and is active at the day's close."""
    return sales_in_one_day(items, len(items), day, seed)


def one_per_partition(items: Catalogue, partitions: int, ts: int, tag: str) -> list[ReplayEvent]:
    """One sale at ``ts`` on every partition, each of an existing item of that partition."""
    chosen: dict[int, int] = {}
    for i, item in enumerate(items.ids):
        chosen.setdefault(partition_of(item.encode(), partitions), i)
        if len(chosen) == partitions:
            break
    return [sale(items, i, f"{tag}-{p}", ts) for p, i in sorted(chosen.items())]


def closers(items: Catalogue, partitions: int, day: int, lateness: int) -> list[ReplayEvent]:
    """One sale per partition timed at the start of ``day`` plus the allowed lateness: its
    partition's watermark passes the end of ``day - 1`` plus the lateness, which closes every
    day up to ``day - 1``."""
    return one_per_partition(items, partitions, day * DAY_SECONDS + lateness, f"close-{day}")
