"""Ingest: events per second through one worker with the forecast refresh off, against a bare
aiokafka consumer that reads and decodes the same messages, in the same run on the same broker.

The worker consumes, validates, updates the item's state and writes it to the changelog for
every event. The refresh stays off without touching the worker: every event falls on one
day and nothing later arrives, so the partition's watermark never passes that day's end plus
the allowed lateness and no day closes (the result records that no forecast was published).

Throughput is the worker's own ``mqstream_events_consumed_total`` over the steady window
(10% to 90% of the events in), which leaves out the start (imports, group join) and the
tail. The reference reads every partition of the same topic from the beginning and
orjson-decodes each value, before and after the worker's run; the ratio is to their mean.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench import pyspy, synthetic
from bench.live import bare_consumer_rate, follow, local_broker, running, steady_rate, total, wait_committed
from mqstream.streams.replay import send
from mqstream.streams.topics import create_topics

HERE = Path(__file__).resolve().parent
TARGET_EVENTS_PER_SECOND = 50_000
TARGET_SHARE_OF_BARE = 0.25  # issue 13's target (its moonshot: 0.5)


def run(options) -> dict[str, dict]:
    events = options.events or 300_000
    items = options.items or 50_000
    model = options.model or "seasonal-naive"
    with local_broker(model, options.partitions) as rig:
        settings = rig.fresh()
        create_topics(settings)
        stream = synthetic.sales_in_one_day(synthetic.catalogue(items), events)
        send(stream, settings, close_last_period=False, progress=False)
        topic = settings.topic("sales")
        before = bare_consumer_rate(settings, topic)
        with running(settings) as [worker]:
            profile = Profile(options.profile, events) if options.profile else None
            started = time.monotonic()

            def done(workers) -> bool:
                if profile is not None:
                    profile.start_when_steady(workers[0])
                return total(workers) >= events

            follow([worker], done, timeout=events / 100 + 600, interval=0.25)
            ingest_seconds = time.monotonic() - started
            steady = steady_rate([worker], events)
            committed = wait_committed(settings)
            last = worker.samples[-1].counters
            if profile is not None:
                profile.finish(worker, steady)
        after = bare_consumer_rate(settings, topic)
    bare = (before["events_per_second"] + after["events_per_second"]) / 2
    rate = steady["events_per_second"]
    result = {
        "model": model, "events": events, "items": items, "partitions": settings.partitions,
        "event_bytes": float(np.mean([len(e.value) for e in stream])),
        "worker_events_per_second": rate,
        "worker_events_per_cpu_second": steady["events_per_worker_cpu_second"],
        "window_seconds": steady["window_seconds"], "window_events": steady["window_events"],
        "worker_seconds_start_to_all_consumed": ingest_seconds,
        "bare_events_per_second_before": before["events_per_second"],
        "bare_events_per_second_after": after["events_per_second"],
        "bare_events_per_second": bare,
        "bare_events_per_cpu_second": np.mean([before["events_per_cpu_second"], after["events_per_cpu_second"]]),
        "worker_to_bare": rate / bare,
        "target_events_per_second": TARGET_EVENTS_PER_SECOND, "meets_rate_target": rate >= TARGET_EVENTS_PER_SECOND,
        "target_share_of_bare": TARGET_SHARE_OF_BARE, "meets_share_target": rate / bare >= TARGET_SHARE_OF_BARE,
        "consumed": last.get("mqstream_events_consumed_total", 0.0),
        "dead_letters": last.get("mqstream_dead_letters_total", 0.0),
        "duplicates": last.get("mqstream_duplicate_events_total", 0.0),
        # events per fetched partition batch: the state of an item is written once per batch it is in
        "mean_batch_events": last.get("mqstream_ingest_batch_events_sum", 0.0)
        / max(last.get("mqstream_ingest_batch_events_count", 0.0), 1.0),
        "forecasts_published": last.get("mqstream_forecasts_published_total", 0.0),
        "all_offsets_committed": committed,
        "profiled": bool(options.profile), "worker_start_hangs": worker.hangs,
    }
    if result["dead_letters"] or result["forecasts_published"]:
        raise RuntimeError(f"the run was not pure ingest: {result}")
    return {f"ingest:{model}:{events}" + (":profiled" if options.profile else ""): result}


class Profile:
    """py-spy on the worker for ``seconds`` from the start of the steady window."""

    def __init__(self, seconds: int, events: int):
        self.events = events
        self.recording = pyspy.Recording(seconds, HERE / "profile-ingest.txt")

    def start_when_steady(self, worker) -> None:
        if self.recording.proc is None and worker.consumed() >= 0.1 * self.events:
            self.recording.start(worker.proc.pid)

    def finish(self, worker, steady: dict) -> None:
        summary, covered = self.recording.finish()
        seconds = self.recording.seconds
        context = (f"`nice -n 10 python -m bench ingest --profile {seconds}`: py-spy 100 Hz on the worker "
                   f"process for {seconds} s from the start of the steady window ({covered:.0f} s of it "
                   f"while events were still arriving), {self.events:,} sale events over one open day "
                   f"(no day closes), model {worker.settings.model}, {worker.settings.partitions} partitions. "
                   f"Worker rate in that run: {steady['events_per_second']:,.0f} events/s, "
                   f"{steady['events_per_worker_cpu_second']:,.0f} events per CPU-second (profiling included). "
                   f"Collapsed stacks: `bench/profile-ingest.txt`.")
        (HERE / "profile-ingest.md").write_text(
            pyspy.markdown(summary, "Where the worker's CPU goes while it ingests", context))


def section(results: dict[str, dict]) -> list[str]:
    if not any(k.startswith("ingest:") for k in results):
        return []
    rows = ["## Ingest (refresh off)", "",
            "| model | events | items | partitions | worker events/s | worker events per CPU-s "
            "| bare consumer events/s (before / after) | worker ÷ bare | events a batch | ≥ 50,000/s | ≥ 25% of bare |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for key, r in sorted(results.items()):
        if key.startswith("ingest:"):
            note = " (profiled)" if r.get("profiled") else ""
            rows.append(f"| {r['model']}{note} | {r['events']:,} | {r['items']:,} | {r['partitions']} "
                        f"| {r['worker_events_per_second']:,.0f} | {r['worker_events_per_cpu_second']:,.0f} "
                        f"| {r['bare_events_per_second_before']:,.0f} / {r['bare_events_per_second_after']:,.0f} "
                        f"| {r['worker_to_bare']:.2%} | {_batch(r)} | {_yes(r['meets_rate_target'])} "
                        f"| {_yes(r['worker_to_bare'] >= TARGET_SHARE_OF_BARE)} |")
    return rows


def _batch(result: dict) -> str:
    return f"{result['mean_batch_events']:,.0f}" if "mean_batch_events" in result else "–"  # older entries lack it


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"
