"""`mqstream demo`: the whole loop on the local broker, with a live progress line and a summary.

Each run gets topics, a consumer group and worker state of its own, so it can be repeated;
it leaves the broker stopped (if it started it) and nothing running.
"""
from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson

from mqstream.periods import day_of_iso
from mqstream.config import Settings
from mqstream.local_broker import LocalBroker
from mqstream.models.scores import HORIZON_BUCKETS
from mqstream.streams.offsets import end_offsets, group_lag, read_topic
from mqstream.streams.replay import replay_events, send
from mqstream.streams.runner import spawn_worker
from mqstream.streams.topics import create_topics

SETTLE_SECONDS = 6  # the group must stay caught up this long: its errors come back as input
TRAIN_CUTOFF = "2011-05-31"


def run_demo(settings: Settings, start: str, end: str) -> int:
    run = time.strftime("%Y%m%d-%H%M%S")
    demo = replace(settings, topic_prefix=f"demo-{run}.", app_id=f"mqstream-demo-{run}",
                   data_dir=str(Path(settings.data_dir) / "demo" / run), metrics_port=0)
    Path(demo.data_dir).mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(Path(settings.data_dir) / "kafka", settings.kafka_port) if settings.uses_local_broker else None
    started_broker = broker is not None and broker.pid() is None
    worker = None
    ensure_checkpoint(demo)
    try:
        if broker is not None:
            print(f"starting Kafka {broker.bootstrap} ...", flush=True)
            broker.start()
        create_topics(demo)
        events = demo_events(demo, start, end)
        worker = spawn_worker(demo, "worker", Path(demo.data_dir) / "worker.log")
        follow(demo, worker, send(events, demo))
        _stop(worker)
        worker = None
        _summary(demo, len(events))
        return 0
    finally:
        if worker is not None:
            _stop(worker)
        if started_broker:
            broker.stop()
            print("Kafka stopped")


def demo_events(settings: Settings, start: str, end: str) -> list:
    """The shipped sales of start..end with simulated page views, said as such."""
    events = replay_events(day_of_iso(start), day_of_iso(end))
    n_sales = sum(e.topic == "sales" for e in events)
    print(f"replaying {start}..{end}: {n_sales:,} real sales events and "
          f"{len(events) - n_sales:,} SIMULATED page-view events, model {settings.model}")
    return events


def ensure_checkpoint(settings: Settings) -> None:
    """The demo serves a trained model: train it first if its checkpoint is missing (on data up
    to 2011-05-31, before anything the demo replays)."""
    path = settings.checkpoint_path
    if path is None or (path / "config.json").exists():
        return
    from mqstream.models.training import TrainSettings, checkpoint_record, train

    print(f"no checkpoint at {path}: training {settings.model} on data up to {TRAIN_CUTOFF} "
          "(once; under 15 minutes on 2 cores), sales, prices and calendar only")
    # the demo runs whatever training gave; one that did not beat its warm start is served
    # marked as such (its version ends in -warm-start), never silently
    train(model=settings.model, cutoff=TRAIN_CUTOFF, out=path, settings=TrainSettings(keep_warm_start=True))
    if not checkpoint_record(path).get("learned", True):
        print("note: this MQTransformer did not beat its MQ-CNN warm start; it is served marked -warm-start")


def follow(settings: Settings, worker: subprocess.Popen, total: int) -> None:
    """A live line until the worker has committed everything it was sent (``total`` messages,
    watermark markers included) and the errors it published came back."""
    settled_at = None
    begun = time.monotonic()
    while settled_at is None or time.monotonic() - settled_at < SETTLE_SECONDS:
        if worker.poll() is not None:
            sys.exit(f"worker exited with {worker.returncode}; see {settings.data_dir}/worker.log")
        lag = group_lag(settings, inputs=("sales", "page-views"))
        forecasts = sum(end_offsets(settings, settings.topic("forecasts")).values())
        errors = sum(end_offsets(settings, settings.topic("forecast-errors")).values())
        done = total - lag
        elapsed = time.monotonic() - begun
        print(f"\rworker: {done:,}/{total:,} events ({done / max(elapsed, 1e-9):,.0f}/s), "
              f"{forecasts:,} forecasts, {errors:,} error messages   ", end="", flush=True)
        caught_up = group_lag(settings) == 0
        settled_at = (settled_at or time.monotonic()) if caught_up else None
        time.sleep(1)
    print()


def _stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()


def _summary(settings: Settings, n_events: int) -> None:
    letters = collections.Counter(dict(r.headers)["reason"].decode()
                                  for r in read_topic(settings, settings.topic("dead-letters")))
    forecasts = read_topic(settings, settings.topic("forecasts"))
    items = {r.key for r in forecasts}
    losses = collections.defaultdict(list)
    for record in read_topic(settings, settings.topic("forecast-errors")):
        body = orjson.loads(record.value)
        for h, loss in zip(body["horizons"], body["pinball"]):
            losses[h].append(np.mean(loss))
    print("\nsummary")
    print(f"  events in            {n_events:,}")
    print(f"  dead-lettered        {sum(letters.values()):,} {dict(letters) or ''}")
    print(f"  items forecast       {len(items):,}")
    print(f"  forecasts published  {len(forecasts):,}")
    print(f"  errors published     {sum(len(v) for v in losses.values()):,} (item, origin, target) records")
    print("  mean pinball loss by horizon (units, averaged over quantiles 0.1..0.9):")
    for lo, hi in HORIZON_BUCKETS.values():
        values = [v for h in range(lo, hi + 1) for v in losses.get(h, [])]
        shown = f"{np.mean(values):.3f} over {len(values):,} scored forecasts" if values else "no target closed yet"
        print(f"    {lo:>2}-{hi:<2} days  {shown}")
    print(f"  worker log: {settings.data_dir}/worker.log")
