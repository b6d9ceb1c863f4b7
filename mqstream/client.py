"""Reading forecasts from Python: typed records over the topics the worker publishes.

    from mqstream.client import ForecastClient

    client = ForecastClient("127.0.0.1:19092")
    current = client.latest()                      # {item_id: Forecast}, every item's current forecast
    f = current["85099B"]
    f.quantile(0.85, horizon=1)                    # P85 of tomorrow, interpolated
    f.order_up_to(0.9, lead_days=5, on_hand=12)    # stock to hold, units to order
    for f in client.updates(group_id="planner"):   # new forecasts as they are published
        ...

    # a few items, and an item's errors, asked of the worker's HTTP lookup: one GET each,
    # whatever the size of the topics
    client = ForecastClient("127.0.0.1:19092", lookup_url="http://127.0.0.1:9100")
    client.latest(items=["85099B", "22423"])
    client.errors("85099B")

Security settings pass through to kafka-python (``security_protocol="SASL_SSL",
sasl_mechanism=..., ssl_cafile=...``). Messages follow mqstream/schemas (``validate=True``
checks every one); a ``schema_version`` this client does not know raises ValueError. A
bootstrap list where no Kafka broker answers raises BrokerUnreachable within 5 s
(mqstream.bootstrap). With the ``crc32c`` package installed kafka-python checks record
CRCs in C; without it, in Python, which makes a large read ten times slower.
"""
from __future__ import annotations

import datetime as dt
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import orjson
from kafka import KafkaConsumer, TopicPartition

from mqstream import schemas
from mqstream.bootstrap import check_bootstrap
from mqstream.partitions import partition_of

SCHEMA_VERSIONS = (1, 2)  # version 2 says its period (day or week); version 1 is days
PERIOD_DAYS = {"day": 1, "week": 7}
# a read to the end is bound by kafka-python parsing each record in Python; fewer, larger
# fetches took a fifth off reading 100,000 forecasts (2 cores), for ~150 MB more RSS
BULK_FETCH = {"fetch_max_bytes": 50 * 2**20, "max_partition_fetch_bytes": 10 * 2**20, "max_poll_records": 50_000}


class LookupUnavailable(ConnectionError):
    """The worker's HTTP lookup gave no answer: no worker there, or it is busy or being assigned
    its partitions."""


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
    origin: dt.date  # first day of the last closed period; horizon h forecasts the period h periods later
    horizons: tuple[int, ...]  # 1..H, in periods
    quantiles: tuple[float, ...]  # increasing levels
    values: np.ndarray  # (H, Q) demand units per period, read-only
    model: str
    model_version: str
    created_at: dt.datetime
    period: str = "day"  # or "week"

    @classmethod
    def from_message(cls, value: bytes | dict, validate: bool = False) -> "Forecast":
        body = _body("forecast", value, validate)
        # sorting each row is a no-op on valid messages and keeps interpolation monotone on others
        values = np.sort(np.asarray(body["values"], np.float64), axis=1)
        values.flags.writeable = False
        return cls(body["item_id"], dt.date.fromisoformat(body["origin"]), tuple(body["horizons"]),
                   tuple(body["quantiles"]), values, body["model"]["name"], body["model"]["version"],
                   dt.datetime.fromisoformat(body["created_at"]), body.get("period", "day"))

    @property
    def period_days(self) -> int:
        return PERIOD_DAYS[self.period]

    def target(self, horizon: int) -> dt.date:
        """The first day of the period ``horizon`` periods after the origin."""
        return self.origin + dt.timedelta(days=horizon * self.period_days)

    def quantile(self, q: float, horizon: int | None = None) -> float | np.ndarray:
        """The q-quantile of one horizon's demand (a float), or of every horizon ((H,) array)."""
        values = self.values if horizon is None else self.values[self._row(horizon)]
        result = interpolate(values, self.quantiles, q)
        return result if horizon is None else float(result)

    def total(self, q: float, periods: int | None = None) -> float:
        """The sum of the q-quantiles of periods 1..``periods`` (default: the next 7 days, or
        the next week). That is the q-quantile of the total demand over those periods if
        they move together (their errors share the level, as a forecast's mostly do). If
        they are partly independent, the true quantile of the total lies nearer its median:
        for q > 0.5 this sum is then on the high side (more stock than needed, seldom less),
        for q < 0.5 on the low side."""
        periods = -(-7 // self.period_days) if periods is None else periods
        if not 1 <= periods <= len(self.horizons):
            raise ValueError(f"periods must be 1..{len(self.horizons)} (the forecast's horizons, in "
                             f"{self.period}s), got {periods}")
        return float(interpolate(self.values[:periods], self.quantiles, q).sum())

    def order_up_to(self, service_level: float, lead_periods: int, on_hand: float = 0.0) -> OrderUpTo:
        """The order-up-to level for the next ``lead_periods`` periods (days or weeks) at
        ``service_level`` (the probability that stock covers their demand), and what to order
        given ``on_hand``. The level is ``total(service_level, lead_periods)``, a sum of
        per-period quantiles: exact when periods move together and otherwise erring towards
        more stock (see ``total``)."""
        if not 0 < service_level < 1:
            raise ValueError(f"service_level must be in (0, 1), got {service_level}")
        level = self.total(service_level, lead_periods)
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
    target: dt.date  # first day of the target period
    actual: float
    quantiles: tuple[float, ...]
    origins: tuple[dt.date, ...]
    horizons: tuple[int, ...]  # periods from each origin to target
    forecasts: np.ndarray  # (record, quantile)
    pinball: np.ndarray  # (record, quantile)
    model: str
    model_version: str
    period: str = "day"

    @classmethod
    def from_message(cls, value: bytes | dict, validate: bool = False) -> "ForecastError":
        body = _body("forecast-error", value, validate)
        return cls(body["item_id"], dt.date.fromisoformat(body["target"]), float(body["actual"]),
                   tuple(body["quantiles"]), tuple(dt.date.fromisoformat(o) for o in body["origins"]),
                   tuple(body["horizons"]), np.asarray(body["forecasts"], np.float64),
                   np.asarray(body["pinball"], np.float64),
                   body["model"]["name"], body["model"]["version"], body.get("period", "day"))


class LatestForecasts(Mapping[str, Forecast]):
    """Every item's current forecast (item id -> Forecast), as read from `forecasts-latest`. The
    read keeps each message's bytes; an item's are decoded when it is first looked up, and the
    Forecast then kept: decoding a million forecasts takes longer than reading them, and a
    reader often wants a few. A message this client cannot read (a newer ``schema_version``)
    raises ValueError when its item is looked up, not during the read."""

    def __init__(self, items: dict[str, bytes | Forecast]):
        self._items = items

    def __getitem__(self, item: str) -> Forecast:
        value = self._items[item]
        if isinstance(value, bytes):
            value = self._items[item] = Forecast.from_message(value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"LatestForecasts({len(self)} items)"


class ForecastClient:
    """Reads the worker's output topics. ``validate``: check every message against its schema
    (mqstream/schemas); ``lookup_url``: a worker's HTTP address (``http://host:metrics_port``),
    which then answers ``latest(items=...)`` and ``errors(item)``; ``kafka_kwargs`` go to every
    KafkaConsumer (security settings)."""

    def __init__(self, bootstrap: str, topic_prefix: str = "mqstream.", validate: bool = False,
                 lookup_url: str | None = None, **kafka_kwargs):
        self.bootstrap, self.topic_prefix, self.validate = bootstrap, topic_prefix, validate
        self.lookup_url = None if lookup_url is None else lookup_url.rstrip("/")
        self.kafka_kwargs = kafka_kwargs

    def latest(self, timeout: float = 30.0, item: str | None = None,
               items: Collection[str] | None = None) -> LatestForecasts:
        """Every item's current forecast, or only those of ``items`` (``item``: of one); an item
        without one is absent.

        From Kafka: `forecasts-latest` read in one pass from the start to its end as of the
        call; the last value of each key wins and a tombstone removes the item. With ``items``
        only their partitions are read: a few items on few partitions still cost most of a
        full read. ``validate`` checks the current messages after the read; otherwise each is
        decoded when looked up (LatestForecasts). ``timeout``: seconds without a record
        before the read gives up (TimeoutError).

        With ``lookup_url`` and ``items``: one GET per item from the worker that owns it,
        whatever the size of the topic. The worker answers from its tables, so ``created_at``
        is the time of the answer; ``timeout`` bounds each answer (LookupUnavailable)."""
        wanted = [item] if item is not None else None if items is None else list(items)
        if wanted is not None and self.lookup_url is not None:
            found = {i: self._ask_worker(f"/forecasts/{_quoted(i)}", timeout) for i in wanted}
            return LatestForecasts({i: Forecast.from_message(body, self.validate)
                                    for i, body in found.items() if body is not None})
        keys = None if wanted is None else {i.encode() for i in wanted}
        current: dict[bytes, bytes] = {}
        for record in self._read_to_end("forecasts-latest", timeout, wanted):
            if keys is not None and record.key not in keys:
                continue
            if record.value is None:
                current.pop(record.key, None)
            else:
                current[record.key] = record.value
        return LatestForecasts({key.decode(): Forecast.from_message(value, True) if self.validate else value
                                for key, value in current.items()})

    def errors(self, item: str, timeout: float = 30.0) -> list[ForecastError]:
        """The item's scored forecasts, by target day.

        With ``lookup_url``: from the worker that owns the item, one GET, the last closed target
        day only (what the worker still keeps of them). Without: `forecast-errors`
        (retention: 4 weeks), the item's partition read to its end, a read that grows with
        the topic; of a message repeated after a worker crash, the last copy."""
        if self.lookup_url is not None:
            body = self._ask_worker(f"/forecasts/{_quoted(item)}/errors", timeout)
            bodies = [] if body is None else orjson.loads(body)["errors"]
        else:
            key = item.encode()
            bodies = (r.value for r in self._read_to_end("forecast-errors", timeout, [item])
                      if r.key == key and r.value is not None)
        found = {}
        for body in bodies:
            error = ForecastError.from_message(body, self.validate)
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
        check_bootstrap(self.bootstrap, **self.kafka_kwargs)  # seconds, not kafka-python's 30 s, to say so
        # a reader never creates a topic: one made by a metadata request would have the wrong partitions
        return KafkaConsumer(bootstrap_servers=self.bootstrap, client_id="mqstream-client",
                             **{"allow_auto_create_topics": False, **self.kafka_kwargs, **config})

    def _partitions(self, consumer: KafkaConsumer, topic: str,
                    items: Collection[str] | None) -> list[TopicPartition]:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist on {self.bootstrap}")
        if items is None:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        return [TopicPartition(topic, p) for p in sorted({partition_of(i.encode(), len(partitions)) for i in items})]

    def _read_to_end(self, name: str, timeout: float, items: Collection[str] | None) -> Iterator:
        topic = self.topic_prefix + name
        consumer = self._consumer(enable_auto_commit=False, **BULK_FETCH)
        try:
            partitions = self._partitions(consumer, topic, items)
            ends = consumer.end_offsets(partitions)
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            # a stall, not the whole read, is bounded: a large topic on a busy machine takes
            # as long as it takes while records keep coming
            deadline = time.monotonic() + timeout
            while any(consumer.position(tp) < end for tp, end in ends.items()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} to its end: no record for {timeout}s")
                for tp, records in consumer.poll(timeout_ms=500).items():
                    deadline = time.monotonic() + timeout
                    end = ends[tp]  # records past the end as of the call belong to a later read
                    yield from (r for r in records if r.offset < end)
        finally:
            consumer.close()

    def _ask_worker(self, path: str, timeout: float) -> bytes | None:
        """The body of GET ``lookup_url + path``, redirects to the owner followed; None for 404."""
        url = self.lookup_url + path
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                return reply.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise LookupUnavailable(f"{exc.url}: HTTP {exc.code} {exc.read()[:200]!r}") from exc
        except OSError as exc:  # URLError, refused, timed out
            raise LookupUnavailable(f"no worker answers at {url} ({getattr(exc, 'reason', exc)})") from exc

    def _stream(self, name: str, group_id: str | None, from_beginning: bool, item: str | None,
                idle_timeout: float | None) -> Iterator:
        topic = self.topic_prefix + name
        consumer = self._consumer(group_id=group_id, enable_auto_commit=group_id is not None,
                                  auto_offset_reset="earliest" if from_beginning else "latest")
        try:
            if group_id is None:
                partitions = self._partitions(consumer, topic, None if item is None else [item])
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
    if body.get("schema_version") not in SCHEMA_VERSIONS:
        raise ValueError(f"{kind} message with schema_version {body.get('schema_version')!r}: this client "
                         f"reads versions {', '.join(map(str, SCHEMA_VERSIONS))}; upgrade mqstream")
    return body


def _quoted(item: str) -> str:
    return urllib.parse.quote(item, safe="")  # an item id is one path segment, whatever it holds


def _week(totals: dict) -> WeekTotals:
    return WeekTotals(dt.date.fromisoformat(totals["origin"]), totals["p50_7d"], totals["p90_7d"])
