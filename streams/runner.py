"""Run one worker process until SIGTERM/SIGINT (faust's own worker loop)."""
from __future__ import annotations

import logging

from faust.worker import Worker

from mqstream.config import Settings
from streams.topics import create_topics
from streams.worker import build_app, load_model


def run_worker(settings: Settings, loglevel: str = "warn") -> int:
    create_topics(settings)
    model = load_model(settings)
    app, processor = build_app(settings, model)
    logging.getLogger("mqstream").setLevel(logging.INFO)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()  # returns when the worker is told to stop
    return 0
