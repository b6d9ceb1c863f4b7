"""Run one worker process until SIGTERM/SIGINT (faust's own worker loop)."""
from __future__ import annotations

import gc
import logging
import os
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from faust.worker import Worker

from mqstream.config import Settings
from mqstream.local_broker import free_port
from mqstream.streams.explorer import ForecastExplorer
from mqstream.streams.lookup import ForecastLookup
from mqstream.streams.topics import create_topics
from mqstream.streams.metrics import serve
from mqstream.streams.worker import build_app, is_ready, load_model


YOUNG_COLLECTION_ALLOCATIONS = 50_000  # container allocations between young collections (Python's default: 700)


def run_worker(settings: Settings, loglevel: str = "warn") -> int:
    create_topics(settings)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    model = load_model(settings)
    port = settings.metrics_port or free_port()
    # the address other workers redirect lookups to: a wildcard bind is reached by host name
    host = socket.gethostname() if settings.metrics_host in ("0.0.0.0", "::") else settings.metrics_host
    app, processor = build_app(settings, model, f"http://{host}:{port}")
    logging.getLogger("mqstream").setLevel(logging.INFO)
    lookup = ForecastLookup(app, processor.tables, model, processor.policy, processor.cadence)
    processor.serving.append(lookup)
    explorer = ForecastExplorer(lookup, processor.publisher.quality)
    serve(processor.metrics, settings.metrics_host, port, lambda: is_ready(app), lookup.answer_from_thread,
          explorer.answer_from_thread)
    (Path(settings.data_dir) / "metrics.port").write_text(str(port))
    logging.getLogger("mqstream").info("metrics on http://%s:%d/metrics, explorer on /explorer",
                                       settings.metrics_host, port)
    quiet_collector()
    worker = Worker(app, loglevel=loglevel, quiet=True)
    # faust's start-up spinner sets the root logger to DEBUG and spins on every record, so
    # each message sent built a debug record (a tenth of the ingest CPU): no spinner
    worker.spinner = None
    worker.execute_from_commandline()  # returns when the worker is told to stop
    return 0


def quiet_collector() -> None:
    """Keep Python's cycle collector off the worker's hot path. At its default thresholds it ran
    full collections over every object the worker holds (up to ``held_items`` decoded item
    states, the model, faust, torch) and found next to nothing to free: in `bench latency` at
    100,000 items, 34 full collections took 10.0 s of the worker's CPU. What exists once the
    worker is built is frozen (never scanned again), and young collections come every 50,000
    container allocations instead of 700, so full ones are rare. Cycles are still collected.
    Two pairs of those runs: p99 40.0 -> 28.9 s and 65.3 -> 39.6 s (README, Benchmarks)."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, 20, 100)


def spawn_worker(settings: Settings, name: str, log_path: Path, detached: bool = False) -> subprocess.Popen:
    """A worker in its own process with these settings (state under data_dir/name);
    ``detached``: in a session of its own, so it outlives the command that started it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for field in fields(Settings):
        value = getattr(settings, field.name)
        if field.name == "data_dir":
            value = f"{value}/{name}"
        env["MQSTREAM_" + ("KAFKA_BOOTSTRAP" if field.name == "bootstrap" else field.name.upper())] = str(value)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "mqstream", "worker"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=detached)
