"""Readers: what ``ForecastClient`` costs a reader of the published forecasts, on a real local broker.

**Every item** (``--reader-items``, default 10,000 and 1,000,000): one forecast per item in the
worker's format (``streams.messages.forecast_message``; 28 horizons x 9 quantiles, values
rounded as published, ~1.8 kB) written to a fresh compacted `forecasts-latest`. Each read
below runs in a process of its own, so its peak RSS (VmHWM, imports included) is its own:

- ``latest()``: every item, as the client returns it (messages kept, each decoded on lookup);
- ``latest()`` and then every item looked up, i.e. decoded: what a reader of all items pays;
- ``latest()`` with ``validate=True`` (sizes up to ``VALIDATE_UP_TO`` only; beyond, extrapolated
  from the per-message cost and labelled so);
- ``latest(items=[5 items])`` and ``latest(item=...)`` from Kafka: their partitions read;
- references, reading every record and keeping nothing: kafka-python with the client's fetch
  sizes (the floor of any kafka-python reader) and aiokafka (C record parsing), which says how
  much of ``latest()`` is kafka-python's.

**One item's history** (``readers-lookup``): ``errors(item)`` from Kafka over a
`forecast-errors` of 56,000 messages (2,000 items x 28 days, the demo's size), and
``errors(item)`` and ``latest(items=[5 items])`` from a real worker's HTTP lookup (seasonal-naive,
``--lookup-items`` items, two days closed), median of ``CALLS`` calls. The lookup reads one key
of each table, so its cost does not grow with the topics; measured at one size.

The bound: ``latest()`` of N items within ``2 + 60 * N / 1e6`` seconds and a peak RSS of
``0.5 + 3.5 * N / 1e6`` GiB on a 2-core machine (60 s and 4 GiB at a million).
"""
from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench import synthetic
from bench.live import follow, local_broker, running, total
from mqstream.models.seasonal_naive import SeasonalNaive
from mqstream.client import BULK_FETCH, ForecastClient
from mqstream.config import Settings
from mqstream.kafka_auth import kafka_options
from mqstream.state.ledger import DECIMALS, Ledgers
from mqstream.state.refresh import IssuedForecast, ScoredDay
from mqstream.streams import messages
from mqstream.streams.replay import send
from mqstream.streams.topics import create_topics

MODEL = SeasonalNaive()  # its message shape is the served models': 28 horizons, P10..P90
ORIGIN = synthetic.DAY
FEW = 5
VALIDATE_UP_TO = 100_000  # ~0.4 ms a message: a million validated is minutes, extrapolated instead
ERROR_ITEMS, ERROR_DAYS = 2_000, 28  # 56,000 forecast-errors messages, as the demo writes
CALLS = 20
STALL_SECONDS = 120  # latest()'s timeout: seconds without a record, on a busy machine


def item_id(i: int) -> str:
    return f"S{i:06d}"  # as synthetic.catalogue names its items


def bound_seconds(items: int) -> float:
    return 2 + 60 * items / 1e6


def bound_rss_bytes(items: int) -> float:
    return (0.5 + 3.5 * items / 1e6) * 2**30


def run(options) -> dict[str, dict]:
    sizes = [int(s) for s in str(options.reader_items).split(",") if s]
    out = {f"readers:{n}": measure_latest(n, options.partitions) for n in sizes}
    out[f"readers-lookup:{options.lookup_items}"] = measure_history(options.lookup_items, options.partitions)
    return out


# --- every item -----------------------------------------------------------------------------
def measure_latest(items: int, partitions: int) -> dict:
    with local_broker(partitions=partitions) as rig:
        settings = rig.fresh()
        create_topics(settings)
        wrote = time.monotonic()
        message_bytes = write_forecasts(settings, items)
        write_seconds = time.monotonic() - wrote
        few = [item_id(i) for i in np.linspace(0, items - 1, FEW).astype(int)]
        reads = ["latest", "latest-decoded", "few", "one", "kafka-python-bare", "aiokafka-bare"]
        if items <= VALIDATE_UP_TO:
            reads.append("latest-validated")
        got = {name: in_own_process(name, settings, few) for name in reads}
    latest = got["latest"]
    result = {"model": MODEL.name, "items": items, "partitions": partitions, "message_bytes": message_bytes,
              "write_seconds": write_seconds, "reads": got,
              "latest_seconds": latest["seconds"], "latest_items_per_second": items / latest["seconds"],
              "latest_peak_rss_bytes": latest["peak_rss_bytes"],
              "kafka_python_to_aiokafka": got["kafka-python-bare"]["seconds"] / got["aiokafka-bare"]["seconds"],
              "bound_seconds": bound_seconds(items), "bound_rss_bytes": bound_rss_bytes(items),
              "meets_bound": latest["seconds"] <= bound_seconds(items)
              and latest["peak_rss_bytes"] <= bound_rss_bytes(items)}
    if "latest-validated" not in got:
        small = _validation_seconds_per_message()
        result["latest_validated_seconds_extrapolated"] = latest["seconds"] + small * items
    if {got[n]["records"] for n in ("latest", "latest-decoded", "kafka-python-bare", "aiokafka-bare")} != {items} \
            or got["few"]["records"] != FEW or got["one"]["records"] != 1:
        raise RuntimeError(f"reads returned the wrong items: {got}")
    return result


def write_forecasts(settings: Settings, items: int, chunk: int = 10_000) -> float:
    """One forecast message per item to `forecasts-latest`; returns their mean size in bytes."""
    rng = np.random.default_rng(0)
    producer = KafkaProducer(**kafka_options(settings), acks=1, linger_ms=50, batch_size=1024 * 1024)
    created_at, size = messages.utc_now(), 0
    topic = settings.topic("forecasts-latest")
    for start in range(0, items, chunk):
        n = min(chunk, items - start)
        levels = rng.gamma(0.8, 4.0, (n, 1, 1))  # slow and fast movers
        values = np.round(np.sort(levels * rng.gamma(2.0, 0.5, (n, MODEL.horizons, len(MODEL.quantiles))),
                                  axis=2), DECIMALS)  # (n, H, Q)
        for i in range(n):
            item = item_id(start + i)
            body = messages.forecast_message(IssuedForecast(item, ORIGIN, values[i]), MODEL, created_at)
            size += len(body)
            producer.send(topic, key=item.encode(), value=body, headers=messages.headers(MODEL))
    producer.flush()
    producer.close()
    return size / items


def in_own_process(name: str, settings: Settings, few: list[str]) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_read, name, settings, few).result()


def _read(name: str, settings: Settings, few: list[str]) -> dict:
    """In a fresh process: one read, timed, with the process's memory before and at its peak."""
    before = _memory()["VmRSS"]
    wall, cpu = time.perf_counter(), time.process_time()
    records = READS[name](settings, few)
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "records": records,
            "rss_before_bytes": before, "peak_rss_bytes": _memory()["VmHWM"]}


def _client(settings: Settings, validate: bool = False) -> ForecastClient:
    return ForecastClient(settings.kafka_bootstrap, settings.topic_prefix, validate)


def _latest_decoded(settings: Settings, few: list[str]) -> int:
    current = _client(settings).latest(STALL_SECONDS)
    return sum(1 for _ in current.values())  # each lookup decodes


def _kafka_python_bare(settings: Settings, few: list[str]) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **BULK_FETCH)
    topic = settings.topic("forecasts-latest")
    parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
    ends = consumer.end_offsets(parts)
    consumer.assign(parts)
    consumer.seek_to_beginning()
    n = 0
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        n += sum(len(records) for records in consumer.poll(timeout_ms=500).values())
    consumer.close()
    return n


def _aiokafka_bare(settings: Settings, few: list[str]) -> int:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as AioPartition

    async def read() -> int:
        # earliest: with the default (latest) the reset that assign() starts can land after the seek
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                    group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        try:
            topic = settings.topic("forecasts-latest")
            parts = [AioPartition(topic, p) for p in range(settings.partitions)]
            consumer.assign(parts)
            size = sum((await consumer.end_offsets(parts)).values())
            await consumer.seek_to_beginning(*parts)
            n = 0
            while n < size:
                n += sum(len(r) for r in (await consumer.getmany(*parts, timeout_ms=1000, max_records=10_000)).values())
            return n
        finally:
            await consumer.stop()

    return asyncio.run(read())


READS = {  # name -> read(settings, few items) -> records read
    "latest": lambda settings, few: len(_client(settings).latest(STALL_SECONDS)),
    "latest-decoded": _latest_decoded,
    "latest-validated": lambda settings, few: len(_client(settings, validate=True).latest(STALL_SECONDS)),
    "few": lambda settings, few: len(_client(settings).latest(STALL_SECONDS, items=few)),
    "one": lambda settings, few: len(_client(settings).latest(STALL_SECONDS, item=few[0])),
    "kafka-python-bare": _kafka_python_bare,
    "aiokafka-bare": _aiokafka_bare,
}


def _validation_seconds_per_message(n: int = 200) -> float:
    from mqstream.schemas import validate

    body = messages.forecast_message(IssuedForecast("S0000000", ORIGIN, np.ones((MODEL.horizons, len(MODEL.quantiles)))),
                                     MODEL, messages.utc_now())
    started = time.perf_counter()
    for _ in range(n):
        validate("forecast", body)
    return (time.perf_counter() - started) / n


def _memory() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


# --- one item's history -----------------------------------------------------------------------
def measure_history(items: int, partitions: int) -> dict:
    with local_broker(partitions=partitions) as rig:
        errors_kafka = _errors_from_kafka(rig.fresh())
        lookup = _from_the_lookup(rig.fresh(), items)
    return {"model": MODEL.name, "partitions": partitions, **errors_kafka, **lookup}


def _errors_from_kafka(settings: Settings) -> dict:
    create_topics(settings)
    producer = KafkaProducer(**kafka_options(settings), acks=1, linger_ms=50, batch_size=1024 * 1024)
    rng = np.random.default_rng(1)
    for i in range(ERROR_ITEMS):
        item = item_id(i)
        ledger = Ledgers.empty(1, MODEL.horizons, len(MODEL.quantiles))
        values = np.round(np.sort(rng.gamma(2.0, 1.0, (MODEL.horizons, len(MODEL.quantiles))), axis=1), DECIMALS)
        for origin in range(ORIGIN - MODEL.horizons + 1, ORIGIN + 1):
            ledger.record([0], origin, values[None])
        for target in range(ORIGIN + 1, ORIGIN + ERROR_DAYS + 1):  # 28 kept forecasts of the first, 1 of the last
            actual = float(rng.poisson(2.0))
            scored = ScoredDay(item, ledger.score([0], target, [actual])[0])
            producer.send(settings.topic("forecast-errors"), key=item.encode(),
                          value=messages.error_message(scored, MODEL, messages.utc_now(), DECIMALS))
    producer.flush()
    producer.close()
    client = ForecastClient(settings.kafka_bootstrap, settings.topic_prefix)
    times, found = _timed(lambda: client.errors(item_id(7), STALL_SECONDS), calls=3)
    if len(found) != ERROR_DAYS:
        raise RuntimeError(f"errors() from Kafka found {len(found)} days, wrote {ERROR_DAYS}")
    return {"errors_topic_messages": ERROR_ITEMS * ERROR_DAYS, "kafka_errors_seconds": statistics.median(times)}


def _from_the_lookup(settings: Settings, items: int) -> dict:
    create_topics(settings)
    catalogue = synthetic.catalogue(items)
    with running(settings) as [worker]:
        for day in (synthetic.DAY, synthetic.DAY + 1):
            send(synthetic.one_sale_each(catalogue, day), settings, close_last_period=False, progress=False)
        closers = synthetic.closers(catalogue, settings.partitions, synthetic.DAY + 2, settings.allowed_lateness)
        send(closers, settings, close_last_period=False, progress=False)
        follow([worker], lambda ws: total(ws, "mqstream_forecast_errors_published_total") >= items,
               timeout=items / 20 + 600)
        client = ForecastClient(settings.kafka_bootstrap, settings.topic_prefix, lookup_url=worker._url(""))
        few = catalogue.ids[:FEW]
        latest_times, latest = _timed(lambda: client.latest(items=few))
        error_times, found = _timed(lambda: client.errors(few[0]))
    if len(latest) != FEW or not found:
        raise RuntimeError(f"the lookup answered {len(latest)} forecasts and {len(found)} errors")
    return {"lookup_items": items, "calls": CALLS,
            "lookup_latest_few_seconds": statistics.median(latest_times),
            "lookup_latest_few_p90_seconds": float(np.quantile(latest_times, 0.9)),
            "lookup_errors_seconds": statistics.median(error_times),
            "lookup_errors_p90_seconds": float(np.quantile(error_times, 0.9)), "lookup_error_days": len(found)}


def _timed(call, calls: int = CALLS) -> tuple[list[float], object]:
    times, got = [], None
    for _ in range(calls):
        started = time.perf_counter()
        got = call()
        times.append(time.perf_counter() - started)
    return times, got


# --- results.md ---------------------------------------------------------------------------------
def section(results: dict[str, dict]) -> list[str]:
    found = sorted((r for k, r in results.items() if k.startswith("readers:")), key=lambda r: r["items"])
    history = [r for k, r in results.items() if k.startswith("readers-lookup:")]
    if not found and not history:
        return []
    rows = ["## Readers: `ForecastClient` over `forecasts-latest` and one item's history", "",
            "| items | `latest()` s | items/s | peak RSS GiB | bound (s, GiB) | within | then every item decoded s "
            "| `validate=True` s | 5 items s | 1 item s | kafka-python bare s | aiokafka bare s |",
            "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in found:
        reads = r["reads"]
        validated = (f"{reads['latest-validated']['seconds']:.1f}" if "latest-validated" in reads
                     else f"~{r['latest_validated_seconds_extrapolated']:.0f} (extrapolated)")
        rows.append(f"| {r['items']:,} | {r['latest_seconds']:.1f} | {r['latest_items_per_second']:,.0f} "
                    f"| {r['latest_peak_rss_bytes'] / 2**30:.2f} | {r['bound_seconds']:.1f}, "
                    f"{r['bound_rss_bytes'] / 2**30:.1f} | {'yes' if r['meets_bound'] else '**no**'} "
                    f"| {reads['latest-decoded']['seconds']:.1f} | {validated} | {reads['few']['seconds']:.1f} "
                    f"| {reads['one']['seconds']:.1f} | {reads['kafka-python-bare']['seconds']:.1f} "
                    f"| {reads['aiokafka-bare']['seconds']:.1f} |")
    for r in history:
        rows += ["", f"One item's history: `errors(item)` from Kafka over {r['errors_topic_messages']:,} "
                     f"`forecast-errors` messages {r['kafka_errors_seconds']:.2f} s; from a worker's HTTP lookup "
                     f"({r['lookup_items']:,} items, median of {r['calls']}) `errors(item)` "
                     f"{r['lookup_errors_seconds'] * 1000:.1f} ms, `latest(items=[5])` "
                     f"{r['lookup_latest_few_seconds'] * 1000:.1f} ms."]
    return rows
