"""`mqstream up` leaves a worker and a real Prometheus running over the real broker, with the
README's readers working against them; `mqstream down` stops exactly what `up` started."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import orjson
import pytest

from mqstream.config import Settings
from mqstream.local_broker import alive, free_port, port_open
from mqstream.streams.offsets import end_offsets
from tests.kafka_helpers import read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.slow]


def mqstream(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mqstream", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def prometheus_value(port: int, query: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    result = orjson.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f}s")


def test_up_leaves_the_loop_running_to_explore_and_down_stops_what_it_started(kafka_settings, tmp_path):
    prefix = f"up-{tmp_path.name}."
    metrics_port, prometheus_port = free_port(), free_port()
    env = dict(os.environ, MQSTREAM_DATA_DIR=str(tmp_path), MQSTREAM_KAFKA_PORT=str(kafka_settings.kafka_port),
               MQSTREAM_MODEL="seasonal-naive", MQSTREAM_METRICS_PORT=str(metrics_port),
               MQSTREAM_TOPIC_PREFIX=prefix, MQSTREAM_APP_ID=f"up-{tmp_path.name}")
    settings = Settings(kafka_port=kafka_settings.kafka_port, topic_prefix=prefix)

    up = mqstream(env, "up", "--start", "2011-03-01", "--end", "2011-03-03", "--prometheus-port",
                  str(prometheus_port))
    assert up.returncode == 0, up.stderr
    assert f"http://127.0.0.1:{metrics_port}/explorer" in up.stdout
    assert f"prometheus   http://127.0.0.1:{prometheus_port}" in up.stdout
    stack = orjson.loads((tmp_path / "up.json").read_bytes())
    assert not stack["broker_started"]  # the session's broker answered: up reused it
    again = mqstream(env, "up", "--prometheus-port", str(prometheus_port))
    assert again.returncode == 0 and "already up" in again.stdout

    # the README's readers, right after `up`: show, the HTTP lookup, Prometheus
    item = read_topic(settings, settings.topic("forecasts-latest"))[-1].key.decode()
    show = mqstream(env, "show", item, timeout=60)
    assert show.returncode == 0 and show.stdout.startswith(f"item {item}"), show.stderr
    lookup = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/forecasts/{item}").read())
    assert lookup["item_id"] == item and lookup["origin"] == "2011-03-03"
    published = sum(end_offsets(settings, settings.topic("forecasts")).values())
    wait_for(lambda: prometheus_value(prometheus_port, "mqstream_forecasts_published_total") == published,
             60, f"Prometheus did not scrape the worker's {published} forecasts")

    down = mqstream(env, "down", timeout=120)
    assert down.returncode == 0 and "worker stopped" in down.stdout and "prometheus stopped" in down.stdout
    assert "kafka stopped" not in down.stdout
    assert not alive(stack["worker_pid"]) and not alive(stack["prometheus_pid"])
    assert not port_open(metrics_port) and not port_open(prometheus_port)
    assert port_open(kafka_settings.kafka_port)  # not up's broker: left running
    assert not (tmp_path / "up.json").exists()
    assert "nothing is up" in mqstream(env, "down").stdout
