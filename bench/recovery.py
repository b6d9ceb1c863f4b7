"""Recovery: seconds from worker start to ready with N items of state in the changelog.

A first worker takes every item's sale on day D and closes D (one sale per partition past its
end plus the lateness), so both ``items`` and ``item-models`` hold every item in their
changelogs; then it stops. After one close a ledger holds one forecast (625 bytes against the
7.9 kB of an item forecast daily for H days), so the changelog is smaller than a steady
state's by that much an item, and recovery, which goes by bytes, faster. Timed, each from spawn to ``/readyz`` answering 200 (partitions
assigned, tables recovered, not rebalancing):

- **reference**: a worker of a new group with no state, in the same run (imports, model load,
  group join: what every start costs);
- **cold**: a worker with no local RocksDB, which restores every table from its changelog;
- **warm**: that worker restarted over its own RocksDB (faust reads only the changelog's tail).

Ready is not the whole story: after a restart each partition rebuilds its clock from every
item it holds at its first event (``Processor._clock``). So after each start one sale per
partition is sent and the seconds until the worker has handled all of them are reported too.
"""
from __future__ import annotations

import time

from bench import synthetic
from bench.live import follow, local_broker, model_for_bench, running, topic_bytes, total
from mqstream.periods import DAY_SECONDS
from mqstream.streams.offsets import end_offsets, group_lag
from mqstream.streams.replay import send
from mqstream.streams.topics import TABLES, changelog_name


def run(options) -> dict[str, dict]:
    items = options.items or 20_000
    model, note = (options.model, "as asked") if options.model else model_for_bench()
    with local_broker(model, options.partitions) as rig:
        settings = rig.fresh()
        reference = rig.fresh()  # topics, group and state of its own, all empty
        catalogue = synthetic.catalogue(items)
        day = synthetic.DAY
        with running(settings, "loader") as [loader]:
            send(synthetic.one_sale_each(catalogue, day), settings, close_last_period=False, progress=False)
            follow([loader], lambda ws: total(ws) >= items, timeout=items / 100 + 600, interval=1.0)
            send(synthetic.closers(catalogue, settings.partitions, day + 1, settings.allowed_lateness),
                 settings, close_last_period=False, progress=False)
            follow([loader], lambda ws: total(ws, "mqstream_forecasts_published_total") >= items,
                   timeout=items / 50 + 600, interval=1.0)
            while group_lag(settings):
                time.sleep(1)
            time.sleep(5)  # the last table writes reach the changelog
        changelog = {}
        for table in TABLES:
            topic = changelog_name(settings, table)
            changelog[table] = {"messages": sum(end_offsets(settings, topic).values()),
                                "bytes": topic_bytes(rig, topic)}
        base = start_to_ready(reference, "reference", within=240)
        after_close = (day + 1) * DAY_SECONDS + settings.allowed_lateness  # later on D+1: closes nothing
        cold = start_to_ready(settings, "restored", synthetic.one_per_partition(
            catalogue, settings.partitions, after_close + 60, "after-cold-start"))
        warm = start_to_ready(settings, "restored", synthetic.one_per_partition(
            catalogue, settings.partitions, after_close + 120, "after-warm-start"))
    result = {
        "model": model, "model_note": note, "items": items, "partitions": settings.partitions,
        "changelog": changelog,
        "changelog_bytes": sum(c["bytes"] for c in changelog.values()),
        "reference_start_to_ready_seconds": base["ready"],
        "cold_start_to_ready_seconds": cold["ready"], "cold_first_events_seconds": cold["first_events"],
        "warm_start_to_ready_seconds": warm["ready"], "warm_first_events_seconds": warm["first_events"],
        "cold_recovery_seconds": cold["ready"] - base["ready"],
        "worker_start_hangs": base["hangs"] + cold["hangs"] + warm["hangs"],
    }
    return {f"recovery:{model}:{items}": result}


def start_to_ready(settings, name: str, events=(), within: float = 1800) -> dict:
    """Seconds from spawn to ready; then, with ``events`` (one per partition, closing nothing),
    seconds from sending them until the worker has handled them all."""
    with running(settings, name, ready_within=within) as [worker]:
        first = None
        if events:
            worker.sample()
            before = worker.consumed()
            sent = time.monotonic()
            send(list(events), settings, close_last_period=False, progress=False)
            follow([worker], lambda ws: ws[0].consumed() >= before + len(events), timeout=1800, interval=0.2)
            first = time.monotonic() - sent
    return {"ready": worker.ready_after, "first_events": first, "hangs": worker.hangs}


def section(results: dict[str, dict]) -> list[str]:
    found = {k: r for k, r in sorted(results.items(), key=lambda kv: (kv[1]["model"], kv[1].get("items", 0)))
             if k.startswith("recovery:")}
    if not found:
        return []
    rows = ["## Recovery: worker start → ready", "",
            "| model | items | changelog | no state (reference) s | from changelog (cold) s "
            "| + first event per partition s | own RocksDB (warm) s | + first event per partition s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in found.values():
        rows.append(f"| {r['model']} | {r['items']:,} | {r['changelog_bytes'] / 2**20:,.0f} MiB "
                    f"| {r['reference_start_to_ready_seconds']:.1f} | {r['cold_start_to_ready_seconds']:.1f} "
                    f"| {r['cold_first_events_seconds']:.1f} | {r['warm_start_to_ready_seconds']:.1f} "
                    f"| {r['warm_first_events_seconds']:.1f} |")
    return rows
