"""The state gauges' census (streams/gauges.py) over real RocksDB stores of the worker's kind
(streams/store.py), without a broker: exact counts, read a chunk at a time while the event
loop runs on."""
import asyncio
import time

import faust
import pytest

from mqstream.streams import gauges
from mqstream.streams.metrics import WorkerMetrics
from mqstream.streams.store import SCHEME
from mqstream.streams.tables import Tables


@pytest.fixture
def tables(tmp_path) -> Tables:
    app = faust.App("census", broker="kafka://127.0.0.1:1", store=f"{SCHEME}://", datadir=str(tmp_path))
    return Tables(*(app.Table(name, partitions=3) for name in ("items", "item-models", "watermarks")))


def fill(table: faust.Table, counts: dict[int, int], size: int) -> int:
    """``counts[p]`` records in partition p; the bytes of their keys and values."""
    total = 0
    for partition, n in counts.items():
        for i in range(n):
            key, value = f"I{partition}-{i:04d}".encode(), bytes(size + i % 5)
            table.data.put_in(partition, key, value)
            total += len(key) + len(value)
    return total


def gauge(metrics: WorkerMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels)


def test_the_census_counts_every_item_and_byte_of_the_partitions_asked_in_chunks(tables, monkeypatch):
    monkeypatch.setattr(gauges, "CENSUS_CHUNK", 7)  # several chunks a partition, one ending exactly on a chunk
    item_bytes = fill(tables.items, {0: 30, 1: 14}, 40)
    model_bytes = fill(tables.item_models, {0: 30, 1: 14}, 900)
    fill(tables.items, {2: 5}, 40)  # a partition not asked for
    metrics, before = WorkerMetrics(), time.time()
    asyncio.run(gauges.sample_state(tables, [0, 1], metrics))
    assert before <= gauge(metrics, "mqstream_state_census_started_seconds") <= time.time()
    assert gauge(metrics, "mqstream_state_items") == 44
    assert gauge(metrics, "mqstream_state_bytes", table="items") == item_bytes
    assert gauge(metrics, "mqstream_state_bytes", table="item-models") == model_bytes


def test_the_event_loop_runs_between_chunks_and_a_partition_taken_away_midway_stops_short(tables, monkeypatch):
    monkeypatch.setattr(gauges, "CENSUS_CHUNK", 10)
    fill(tables.items, {0: 100, 1: 100}, 40)
    metrics, turns = WorkerMetrics(), []

    async def census_beside_a_rebalance():
        async def other_work():
            while True:
                turns.append(gauge(metrics, "mqstream_state_items"))
                if len(turns) == 3:
                    tables.items.data._dbs.pop(1)  # revoked, as faust's store does it
                await asyncio.sleep(0)

        beside = asyncio.create_task(other_work())
        await gauges.sample_state(tables, [1, 0], metrics)
        beside.cancel()

    asyncio.run(census_beside_a_rebalance())
    assert len(turns) >= 10  # at least once between every two of partition 0's ten chunks
    assert 100 <= gauge(metrics, "mqstream_state_items") < 200  # partition 1 cut short, partition 0 whole
