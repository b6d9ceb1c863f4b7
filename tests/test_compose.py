"""docker/compose.yaml's own commands, run as compose runs them: every mqstream service in
compose's order, with its environment, against the local broker (the broker's address, the
state directory and the names made fresh for the test). The one-shot model job trains on the
shipped data and publishes; its second start trains nothing; a worker serves what it published."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import yaml

from mqstream.periods import day_of_iso
from mqstream.streams.models_topic import published
from mqstream.streams.offsets import read_topic
from mqstream.streams.replay import replay_events, send
from tests.kafka_helpers import log_path, stop_worker, wait_caught_up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
IMAGE = "mqstream:latest"
STATE_DIR = "/var/lib/mqstream"  # the image's MQSTREAM_DATA_DIR (docker/Dockerfile)
QUICK = ["--epochs", "1", "--max-items", "60"]  # the job's training, cut short: what it trains is not tested here


def compose_order(services: dict) -> list[str]:
    """Service names in the order compose starts them: each after those it depends on."""
    done: list[str] = []

    def visit(name: str) -> None:
        for needed in services[name].get("depends_on", {}):
            visit(needed)
        if name not in done:
            done.append(name)

    for name in services:
        visit(name)
    return done


def mqstream_services() -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, command, environment) of each service that runs the mqstream image, in order."""
    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    return [(name, services[name]["command"], {k: str(v) for k, v in services[name]["environment"].items()})
            for name in compose_order(services) if services[name].get("image") == IMAGE]


def test_the_services_run_in_order_topics_then_the_model_job_then_the_workers():
    assert [name for name, _, _ in mqstream_services()] == ["topics", "model", "worker"]


def test_every_mqstream_service_runs_as_compose_runs_it(kafka_settings, tmp_path):
    run_id = tmp_path.name[-24:].replace("_", "-")
    local = {"MQSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_settings.kafka_port}",
             "MQSTREAM_TOPIC_PREFIX": f"c{run_id}.", "MQSTREAM_APP_ID": f"compose-{run_id}",
             "MQSTREAM_DATA_DIR": str(tmp_path), "MQSTREAM_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
    workers, settings = [], None
    try:
        for name, command, environment in mqstream_services():
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("MQSTREAM_")}, **environment, **local}
            argv = [sys.executable, "-m", "mqstream", *(a.replace(STATE_DIR, str(tmp_path)) for a in command)]
            if name == "worker":
                settings = replace(kafka_settings, topic_prefix=local["MQSTREAM_TOPIC_PREFIX"],
                                   app_id=local["MQSTREAM_APP_ID"], partitions=int(environment["MQSTREAM_PARTITIONS"]),
                                   data_dir=str(tmp_path), model=environment["MQSTREAM_MODEL"])
                workers.append(start(argv, env, log_path(settings, name)))
                continue
            first = run(argv + (QUICK if name == "model" else []), env)
            if name == "model":
                assert "published mqcnn" in first.stdout
                again = run(argv, env)  # a second start: the model is served, nothing is trained
                assert "nothing to train" in again.stdout
        served = published(settings)[("mqcnn", "served")]
        events = replay_events(day_of_iso("2010-11-08"), day_of_iso("2010-11-09"))
        items = set(sorted({e.key for e in events})[::40])
        send([e for e in events if e.key in items], settings, progress=False)
        wait_caught_up(settings, *workers)
    finally:
        for worker in workers:
            stop_worker(worker)
    forecasts = [orjson.loads(r.value) for r in read_topic(settings, settings.topic("forecasts"))]
    assert forecasts and {(f["model"]["name"], f["model"]["version"]) for f in forecasts} == {("mqcnn", served.version)}


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc.name = "worker"
    return proc
