"""The worker's gauges, read on timers (streams/worker.py): lag from the broker's end offsets
and faust's consumer positions, watermark ages, and the state held."""
from __future__ import annotations

import time

import faust
from faust.types import TP

from mqstream.state.clock import PartitionClock
from mqstream.streams.metrics import WorkerMetrics
from mqstream.streams.tables import Tables


def assigned_inputs(app: faust.App, inputs: set[str]) -> list[TP]:
    """The input partitions this worker is assigned (whether or not an event has come since)."""
    return sorted(tp for tp in app.consumer.assignment() if tp.topic in inputs)


async def sample_lag(app: faust.App, inputs: set[str], metrics: WorkerMetrics) -> None:
    assigned = assigned_inputs(app, inputs)
    if not assigned:
        return
    ends = await app.consumer.highwaters(*assigned)
    for tp, end in ends.items():
        # faust keeps the last offset read and the last committed (next to read)
        read, committed = app.consumer._read_offset.get(tp), app.consumer._committed_offset.get(tp)
        position = max(read + 1 if read is not None else 0, committed or 0)
        metrics.lag.labels(tp.topic, str(tp.partition)).set(end - position)


def sample_watermarks(clocks: dict[int, PartitionClock], metrics: WorkerMetrics) -> None:
    now = time.time()
    for partition, clock in clocks.items():
        if clock.inputs:
            metrics.watermark_age.labels(str(partition), "now").set(now - clock.watermark)
            metrics.watermark_age.labels(str(partition), "newest").set(clock.newest - clock.watermark)


def sample_state(tables: Tables, partitions, metrics: WorkerMetrics) -> None:
    """Items and bytes held for ``partitions`` (a scan: every minute)."""
    count = 0
    for name, table in (("items", tables.items), ("item-models", tables.item_models)):
        size = 0
        for partition in partitions:
            for key, value in tables.scan(table, partition):
                size += len(key) + len(value)
                count += name == "items"
        metrics.state_bytes.labels(name).set(size)
    metrics.items.set(count)
