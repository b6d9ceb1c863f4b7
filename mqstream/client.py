"""Reading forecasts from Python: typed records over the topics the worker publishes.

    from mqstream.client import ForecastClient

    client = ForecastClient("127.0.0.1:19092")
    current = client.latest()                      # {item_id: Forecast}, every item's current forecast
    f = current["85099B"]
    f.quantile(0.85, horizon=1)                    # P85 of tomorrow, interpolated
    f.order_up_to(0.9, lead_days=5, on_hand=12)    # stock to hold, units to order
    for f in client.updates(group_id="planner"):   # new forecasts as they are published
        ...

Security settings pass through to kafka-python (``security_protocol="SASL_SSL",
sasl_mechanism=..., ssl_cafile=...``). Messages follow mqstream/schemas (``validate=True``
checks every one); a ``schema_version`` this client does not know raises ValueError.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from mqstream import schemas

SCHEMA_VERSION = 1


def interpolate(values: np.ndarray, quantiles: Sequence[float], q: float) -> np.ndarray:
    """values (..., Q) at the increasing levels ``quantiles`` -> (...) at level ``q``, linear
    between neighbouring levels: exact at stored levels, and non-decreasing in ``q`` when
    each row is. Levels outside [quantiles[0], quantiles[-1]] raise ValueError: the forecast
    says nothing about tails beyond what it stores, and a flat or extrapolated answer would
    understate exactly the risk a P95 is asked for."""
    levels = np.asarray(quantiles, np.float64)
    if not levels[0] <= q <= levels[-1]:
        raise ValueError(f"quantile {q} is outside the stored levels {levels[0]:g}..{levels[-1]:g}")
    if len(levels) == 1:
        return values[..., 0].copy()
    i = min(int(np.searchsorted(levels, q, side="right")) - 1, len(levels) - 2)
    w = (q - levels[i]) / (levels[i + 1] - levels[i])
    low, high = values[..., i], values[..., i + 1]
    if w == 0 or w == 1:  # a stored level: its value as stored, not low + (high - low)
        return (low if w == 0 else high).copy()  # a copy: never a view into the forecast's values
    return np.clip(low + w * (high - low), low, high)  # clip: rounding never leaves the segment


@dataclass(frozen=True)
class OrderUpTo:
    level: float  # stock to hold now so the lead time's demand is covered at the service level
    order: float  # units to order: max(level - on_hand, 0)


@dataclass(frozen=True, eq=False)
class Forecast:
    """One forecast of one item from one origin (a `forecasts` or `forecasts-latest` message)."""

    item_id: str
    origin: dt.date  # the last closed day; horizon h forecasts origin + h days
    horizons: tuple[int, ...]  # 1..H
    quantiles: tuple[float, ...]  # increasing levels
    values: np.ndarray  # (H, Q) demand units, read-only
    model: str
    model_version: str
    created_at: dt.datetime

    @classmethod
    def from_message(cls, value: bytes | dict, validate: bool = False) -> "Forecast":
        body = _body("forecast", value, validate)
        # sorting each row is a no-op on valid messages and keeps interpolation monotone on others
        values = np.sort(np.asarray(body["values"], np.float64), axis=1)
        values.flags.writeable = False
        return cls(body["item_id"], dt.date.fromisoformat(body["origin"]), tuple(body["horizons"]),
                   tuple(body["quantiles"]), values, body["model"]["name"], body["model"]["version"],
                   dt.datetime.fromisoformat(body["created_at"]))

    def target(self, horizon: int) -> dt.date:
        return self.origin + dt.timedelta(days=horizon)

    def quantile(self, q: float, horizon: int | None = None) -> float | np.ndarray:
        """The q-quantile of one horizon's demand (a float), or of every horizon ((H,) array)."""
        values = self.values if horizon is None else self.values[self._row(horizon)]
        result = interpolate(values, self.quantiles, q)
        return result if horizon is None else float(result)

    def total(self, q: float, days: int = 7) -> float:
        """The sum of the q-quantiles of days 1..``days``. That is the q-quantile of the total
        demand over those days if the days move together (their errors share the level, as a
        forecast's mostly do). If they are partly independent, the true quantile of the
        total lies nearer its median: for q > 0.5 this sum is then on the high side (more
        stock than needed, seldom less), for q < 0.5 on the low side."""
        if not 1 <= days <= len(self.horizons):
            raise ValueError(f"days must be 1..{len(self.horizons)} (the forecast's horizons), got {days}")
        return float(interpolate(self.values[:days], self.quantiles, q).sum())

    def order_up_to(self, service_level: float, lead_days: int, on_hand: float = 0.0) -> OrderUpTo:
        """The order-up-to level for the next ``lead_days`` days at ``service_level`` (the
        probability that stock covers their demand), and what to order given ``on_hand``.
        The level is ``total(service_level, lead_days)``, a sum of daily quantiles: exact when
        days move together and otherwise erring towards more stock (see ``total``)."""
        if not 0 < service_level < 1:
            raise ValueError(f"service_level must be in (0, 1), got {service_level}")
        level = self.total(service_level, lead_days)
        return OrderUpTo(level, max(level - on_hand, 0.0))

    def _row(self, horizon: int) -> int:
        if horizon not in self.horizons:
            raise ValueError(f"horizon {horizon} is not among the forecast's 1..{len(self.horizons)}")
        return self.horizons.index(horizon)


@dataclass(frozen=True)
class WeekTotals:
    origin: dt.date
    p50_7d: float
    p90_7d: float


@dataclass(frozen=True)
class ForecastChange:
    """A material revision of one item's forecast (a `forecast-changes` message)."""

    item_id: str
    reasons: tuple[str, ...]  # "p50_7d_moved", "p90_7d_crossed_stock"
    before: WeekTotals | None  # None: the item's first forecast
    after: WeekTotals
    p50_7d_move: float | None  # relative move of the P50 total
    change_share: float
    stock_level: float
    model: str
    model_version: str
    created_at: dt.datetime

    @classmethod
    def from_message(cls, value: bytes | dict, validate: bool = False) -> "ForecastChange":
        body = _body("forecast-change", value, validate)
        before = None if body["before"] is None else _week(body["before"])
        return cls(body["item_id"], tuple(body["reasons"]), before, _week(body["after"]), body["p50_7d_move"],
                   body["change_share"], body["stock_level"], body["model"]["name"], body["model"]["version"],
                   dt.datetime.fromisoformat(body["created_at"]))


@dataclass(frozen=True, eq=False)
class ForecastError:
    """Every kept earlier forecast of one item for one closed day, scored (a `forecast-errors`
    message)."""

    item_id: str
    target: dt.date
    actual: float
    quantiles: tuple[float, ...]
    origins: tuple[dt.date, ...]
    horizons: tuple[int, ...]  # days from each origin to target
    forecasts: np.ndarray  # (record, quantile)
    pinball: np.ndarray  # (record, quantile)
    model: str
    model_version: str

    @classmethod
    def from_message(cls, value: bytes | dict, validate: bool = False) -> "ForecastError":
        body = _body("forecast-error", value, validate)
        return cls(body["item_id"], dt.date.fromisoformat(body["target"]), float(body["actual"]),
                   tuple(body["quantiles"]), tuple(dt.date.fromisoformat(o) for o in body["origins"]),
                   tuple(body["horizons"]), np.asarray(body["forecasts"], np.float64),
                   np.asarray(body["pinball"], np.float64),
                   body["model"]["name"], body["model"]["version"])


class ForecastClient:
    """Reads the worker's output topics. ``validate``: check every message against its schema
    (mqstream/schemas); ``kafka_kwargs`` go to every KafkaConsumer (security settings)."""

    def __init__(self, bootstrap: str, topic_prefix: str = "mqstream.", validate: bool = False, **kafka_kwargs):
        self.bootstrap, self.topic_prefix, self.validate = bootstrap, topic_prefix, validate
        self.kafka_kwargs = kafka_kwargs

    def latest(self, timeout: float = 30.0, item: str | None = None) -> dict[str, Forecast]:
        """Every item's current forecast: `forecasts-latest` read from the start to its end as
        of the call; the last value of each key wins and a tombstone removes the item. With
        ``item``, only that item's partition is read. ``timeout``: seconds without a record
        before the read gives up (TimeoutError)."""
        current: dict[str, Forecast] = {}
        for record in self._read_to_end("forecasts-latest", timeout, item):
            key = record.key.decode()
            if record.value is None:
                current.pop(key, None)
            elif item is None or key == item:
                current[key] = Forecast.from_message(record.value, self.validate)
        return current

    def errors(self, item: str, timeout: float = 30.0) -> list[ForecastError]:
        """The item's scored forecasts kept in `forecast-errors` (retention: 4 weeks), by target
        day; of a message repeated after a worker crash, the last copy."""
        found = {}
        for record in self._read_to_end("forecast-errors", timeout, item):
            if record.key == item.encode() and record.value is not None:
                error = ForecastError.from_message(record.value, self.validate)
                found[error.target] = error
        return [found[t] for t in sorted(found)]

    def updates(self, group_id: str | None = None, from_beginning: bool = False, item: str | None = None,
                idle_timeout: float | None = None) -> Iterator[Forecast]:
        """Forecasts as the worker publishes them to `forecasts`. With ``group_id`` the group's
        committed offsets say where to start (``from_beginning``: where the group has none)
        and progress is committed; without, every partition is read from its end as of this
        call (or its start). Stops after ``idle_timeout`` seconds without a message; None: never."""
        records = self._stream("forecasts", group_id, from_beginning, item, idle_timeout)
        return (Forecast.from_message(r.value, self.validate) for r in records)

    def changes(self, group_id: str | None = None, from_beginning: bool = False, item: str | None = None,
                idle_timeout: float | None = None) -> Iterator[ForecastChange]:
        """Material forecast changes (`forecast-changes`), read like ``updates``."""
        records = self._stream("forecast-changes", group_id, from_beginning, item, idle_timeout)
        return (ForecastChange.from_message(r.value, self.validate) for r in records)

    def raw(self, name: str, group_id: str | None = None, from_beginning: bool = False,
            item: str | None = None, idle_timeout: float | None = None) -> Iterator[bytes]:
        """Message bodies of an output topic (``name`` without the prefix) as published, read
        like ``updates``."""
        return (r.value for r in self._stream(name, group_id, from_beginning, item, idle_timeout))

    # --- reading ------------------------------------------------------------------------------
    def _consumer(self, **config) -> KafkaConsumer:
        # a reader never creates a topic: one made by a metadata request would have the wrong partitions
        return KafkaConsumer(bootstrap_servers=self.bootstrap, client_id="mqstream-client",
                             **{"allow_auto_create_topics": False, **self.kafka_kwargs, **config})

    def _partitions(self, consumer: KafkaConsumer, topic: str, item: str | None) -> list[TopicPartition]:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist on {self.bootstrap}")
        if item is None:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        # the topics are keyed by item id with the default (murmur2) partitioner
        return [TopicPartition(topic, (murmur2(item.encode()) & 0x7FFFFFFF) % len(partitions))]

    def _read_to_end(self, name: str, timeout: float, item: str | None) -> Iterator:
        topic = self.topic_prefix + name
        consumer = self._consumer(enable_auto_commit=False)
        try:
            partitions = self._partitions(consumer, topic, item)
            ends = consumer.end_offsets(partitions)
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            # a stall, not the whole read, is bounded: a large topic on a busy machine takes
            # as long as it takes while records keep coming
            deadline = time.monotonic() + timeout
            while any(consumer.position(tp) < end for tp, end in ends.items()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} to its end: no record for {timeout}s")
                for records in consumer.poll(timeout_ms=500).values():
                    deadline = time.monotonic() + timeout
                    # records past the end as of the call belong to a later read
                    yield from (r for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)])
        finally:
            consumer.close()

    def _stream(self, name: str, group_id: str | None, from_beginning: bool, item: str | None,
                idle_timeout: float | None) -> Iterator:
        topic = self.topic_prefix + name
        consumer = self._consumer(group_id=group_id, enable_auto_commit=group_id is not None,
                                  auto_offset_reset="earliest" if from_beginning else "latest")
        try:
            if group_id is None:
                partitions = self._partitions(consumer, topic, item)
                consumer.assign(partitions)
                if from_beginning:
                    consumer.seek_to_beginning()
                else:
                    consumer.seek_to_end()
                for tp in partitions:  # resolve the offsets now, so what is published next is read
                    consumer.position(tp)
            else:
                consumer.subscribe([topic])
        except BaseException:
            consumer.close()
            raise
        return _poll(consumer, item, idle_timeout)


def _poll(consumer: KafkaConsumer, item: str | None, idle_timeout: float | None) -> Iterator:
    key = None if item is None else item.encode()
    try:
        idle_since = time.monotonic()
        while idle_timeout is None or time.monotonic() - idle_since < idle_timeout:
            batches = consumer.poll(timeout_ms=500)
            if batches:
                idle_since = time.monotonic()
            for records in batches.values():
                yield from (r for r in records if r.value is not None and (key is None or r.key == key))
    finally:
        consumer.close()


def _body(kind: str, value: bytes | dict, validate: bool) -> dict:
    if validate:
        return schemas.validate(kind, value)
    body = value if isinstance(value, dict) else orjson.loads(value)
    if body.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{kind} message with schema_version {body.get('schema_version')!r}: this client "
                         f"reads version {SCHEMA_VERSION}; upgrade mqstream")
    return body


def _week(totals: dict) -> WeekTotals:
    return WeekTotals(dt.date.fromisoformat(totals["origin"]), totals["p50_7d"], totals["p90_7d"])
