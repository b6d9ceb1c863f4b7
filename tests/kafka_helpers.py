"""Helpers for tests against the real local broker: workers as processes, reading topics."""
from __future__ import annotations

import signal
import subprocess
import time
import uuid
from dataclasses import replace
from pathlib import Path

import orjson

import numpy as np

from mqstream.config import Settings
from mqstream.state.item import ItemModel, ItemState
from mqstream.streams.offsets import group_lag, partition_lags, read_topic
from mqstream.streams.replay import send
from mqstream.streams.runner import spawn_worker
from mqstream.streams.topics import changelog_name, create_topics


def fresh_settings(base: Settings, tmp: Path, **changes) -> Settings:
    """Settings with topics, consumer group and state of their own."""
    run = uuid.uuid4().hex[:8]
    changes = {"session_timeout": 10.0, **changes}  # a SIGKILLed worker's partitions move within seconds
    return replace(base, topic_prefix=f"t{run}.", app_id=f"mq-{run}", data_dir=str(tmp / run), metrics_port=0,
                   **changes)


def start_worker(settings: Settings, name: str = "w1") -> subprocess.Popen:
    proc = spawn_worker(settings, name, log_path(settings, name))
    proc.name = name
    return proc


def log_path(settings: Settings, name: str) -> Path:
    return Path(settings.data_dir).parent / f"{settings.app_id}-{name}.log"


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_caught_up(settings: Settings, *procs: subprocess.Popen, timeout: float = 600) -> None:
    """Until the group has committed every input message, twice in a row a few seconds apart
    (errors the worker publishes are inputs too); each of ``procs`` must keep running."""
    deadline, zero_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"worker {proc.name} exited with {proc.returncode}: {last_complaint(settings, proc)}")
        if group_lag(settings) == 0:
            zero_since = zero_since or time.monotonic()
            if time.monotonic() - zero_since > 6:
                return
        else:
            zero_since = None
        time.sleep(1)
    lags = ", ".join(f"{tp.topic.rsplit('.', 1)[-1]}[{tp.partition}] {lag}"
                     for tp, lag in sorted(partition_lags(settings).items()) if lag)
    running = "; ".join(f"{p.name} {'running' if p.poll() is None else p.returncode}: {last_complaint(settings, p)}"
                        for p in procs)
    raise AssertionError(f"worker did not catch up within {timeout}s (lag {lags}; {running})")


def last_complaint(settings: Settings, proc: subprocess.Popen) -> str:
    """The worker log's last warning or error (what a one-line failure can say of it)."""
    lines = [line for line in log_path(settings, proc.name).read_text(errors="replace").splitlines()
             if "[WARNING]" in line or "[ERROR]" in line or "Error" in line]
    return lines[-1][-300:] if lines else "no warning logged"


def table_state(settings: Settings, table: str = "items", decode=ItemState.from_bytes) -> dict:
    """A table as its changelog holds it: the last value of every key."""
    latest = {}
    for record in read_topic(settings, changelog_name(settings, table)):
        latest[record.key] = record.value
    return {k.decode(): decode(v) for k, v in latest.items() if v is not None}


def model_state(settings: Settings) -> dict[str, ItemModel]:
    return table_state(settings, "item-models", ItemModel.from_bytes)


def latest_by(records, *fields) -> dict:
    """JSON bodies keyed by ``fields``; a redelivered message (same key) replaces the first."""
    out = {}
    for record in records:
        body = orjson.loads(record.value)
        out[tuple(body[f] for f in fields)] = body
    return out


def run_to_the_end(settings: Settings, events) -> float:
    """Replay ``events`` into fresh topics and run one worker until it has caught up;
    returns the seconds the worker took."""
    create_topics(settings)
    send(events, settings, progress=False)
    started = time.monotonic()
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)
    return time.monotonic() - started


def replay_and_serve(settings: Settings, monkeypatch, replay_args: list[str]) -> tuple[list[dict], list[dict]]:
    """``mqstream replay REPLAY_ARGS`` under these settings' topics and period, then one worker
    until it has caught up: the forecasts and errors it published, each valid for its schema."""
    from mqstream.cli import main
    from mqstream.schemas import validate

    for name in ("topic_prefix", "period"):
        monkeypatch.setenv(f"MQSTREAM_{name.upper()}", str(getattr(settings, name)))
    assert main(["--kafka-port", str(settings.kafka_port), "replay", *replay_args]) == 0
    worker = start_worker(settings)
    try:
        wait_caught_up(settings, worker)
    finally:
        stop_worker(worker)
    return ([validate("forecast", r.value) for r in read_topic(settings, settings.topic("forecasts"))],
            [validate("forecast-error", r.value) for r in read_topic(settings, settings.topic("forecast-errors"))])


def outputs(settings: Settings) -> tuple[dict, dict]:
    """(forecasts by (item, origin), errors by (item, target)), redeliveries collapsed."""
    return (latest_by(read_topic(settings, settings.topic("forecasts")), "item_id", "origin"),
            latest_by(read_topic(settings, settings.topic("forecast-errors")), "item_id", "target"))


def assert_same_run(settings: Settings, reference: Settings) -> None:
    """Item state, model state, forecasts and forecast errors equal those of ``reference``."""
    state, ref_state = table_state(settings), table_state(reference)
    assert state.keys() == ref_state.keys()
    for item, ref in ref_state.items():
        got = state[item]
        assert (got.closed_through, got.open_days) == (ref.closed_through, ref.open_days), item
        assert {d: set(ids) for d, ids in got.seen.items()} == {d: set(ids) for d, ids in ref.seen.items()}
        np.testing.assert_array_equal(got.history, ref.history, err_msg=item)
    item_models, ref_models = model_state(settings), model_state(reference)
    assert item_models.keys() == ref_models.keys()
    differ = sorted(k for k in item_models if item_models[k] != ref_models[k])
    assert not differ, f"{len(differ)} item models differ, e.g. {[(k, item_models[k].closed_through, ref_models[k].closed_through, item_models[k].last_error_target, ref_models[k].last_error_target, item_models[k].model == ref_models[k].model, item_models[k].ledger == ref_models[k].ledger) for k in differ[:5]]}"
    (forecasts, errors), (ref_forecasts, ref_errors) = outputs(settings), outputs(reference)
    assert forecasts.keys() == ref_forecasts.keys()
    assert all(forecasts[k]["values"] == ref_forecasts[k]["values"] for k in forecasts)
    assert errors.keys() == ref_errors.keys()
    assert all(errors[k]["pinball"] == ref_errors[k]["pinball"] for k in errors)
