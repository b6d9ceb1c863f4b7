"""`mqstream tail` and `mqstream show`, run as a user runs them, against the real broker and
(`show`) a worker's HTTP lookup."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from mqstream.periods import iso_of_day
from mqstream.config import Settings
from mqstream.local_broker import free_port
from mqstream.streams.topics import create_topics
from tests.forecast_helpers import MODEL, error_bytes, forecast_bytes, issued, produce
from tests.kafka_helpers import fresh_settings
from tests.lookup_helpers import errors_answer, lookups

pytestmark = pytest.mark.consumers
ROOT = Path(__file__).resolve().parent.parent
ORIGIN = 15_000
P10, P50, P90 = (MODEL.quantiles.index(q) for q in (0.1, 0.5, 0.9))


@pytest.fixture
def topics(kafka_settings, tmp_path):
    settings = fresh_settings(kafka_settings, tmp_path)
    create_topics(settings)
    return settings


def mqstream(settings, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    # metrics_port 0: no worker address in the settings, so `show` reads Kafka unless given --worker
    env = {**os.environ, "MQSTREAM_TOPIC_PREFIX": settings.topic_prefix, "MQSTREAM_METRICS_PORT": "0"}
    env.pop("MQSTREAM_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "mqstream", "--kafka-port", str(settings.kafka_port), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def expected_tail_fields(body: bytes) -> list[str]:
    f = orjson.loads(body)
    week = np.array(f["values"])[:7]
    return [f["item_id"], f["origin"], f"{MODEL.name}/{MODEL.version}", f"{week[:, P10].sum():.2f}",
            f"{week[:, P50].sum():.2f}", f"{week[:, P90].sum():.2f}", f"{week[0, P50]:.2f}"]


def test_tail_prints_a_line_per_forecast_with_its_next_seven_days(topics):
    bodies = [forecast_bytes(issued(item, origin, level=level))
              for item, origin, level in (("85099B", ORIGIN, 4.0), ("22423", ORIGIN, 1.0), ("85099B", ORIGIN + 1, 6.0))]
    produce(topics, "forecasts", [(orjson.loads(b)["item_id"], b) for b in bodies])
    run = mqstream(topics, "tail", "--from-beginning", "--max", "3")
    assert run.returncode == 0, run.stderr
    header, *lines = run.stdout.splitlines()
    assert header.split() == ["item", "origin", "model", "p10_7d", "p50_7d", "p90_7d", "p50_h1"]
    assert sorted(line.split() for line in lines) == sorted(expected_tail_fields(b) for b in bodies)


def test_tail_of_one_item_as_json_prints_the_messages(topics):
    bodies = {item: forecast_bytes(issued(item, ORIGIN)) for item in ("A", "B", "C")}
    produce(topics, "forecasts", list(bodies.items()))
    run = mqstream(topics, "tail", "--from-beginning", "--item", "B", "--format", "json", "--max", "1")
    assert run.returncode == 0, run.stderr
    assert [orjson.loads(line) for line in run.stdout.splitlines()] == [orjson.loads(bodies["B"])]


def test_show_prints_the_current_forecast_at_a_few_horizons(topics):
    produce(topics, "forecasts-latest", [("A", forecast_bytes(issued("A", ORIGIN - 1))),
                                         ("A", forecast_bytes(current := issued("A", ORIGIN, level=5.0)))])
    run = mqstream(topics, "show", "A")
    assert run.returncode == 0, run.stderr
    title, header, *rows, total = run.stdout.splitlines()
    assert title.startswith(f"item A  origin {iso_of_day(ORIGIN)}  model {MODEL.name} {MODEL.version}")
    assert header.split() == ["horizon", "day", "p10", "p50", "p90"]
    v = current.values
    assert [row.split() for row in rows] == [
        [str(h), iso_of_day(ORIGIN + h), f"{v[h - 1, P10]:.2f}", f"{v[h - 1, P50]:.2f}", f"{v[h - 1, P90]:.2f}"]
        for h in (1, 2, 3, 7, 14, 21, 28)]
    assert total.split() == ["7d", "total", *(f"{v[:7, j].sum():.2f}" for j in (P10, P50, P90))]


def test_show_plot_writes_a_fan_chart_with_the_past_actuals(topics, tmp_path):
    history = [issued("A", ORIGIN - d) for d in range(6, 0, -1)]
    produce(topics, "forecasts-latest", [("A", forecast_bytes(issued("A", ORIGIN)))])
    produce(topics, "forecast-errors", [("A", error_bytes("A", ORIGIN - d, float(d), history[:6 - d]))
                                        for d in range(5, -1, -1)])
    png = tmp_path / "fan.png"
    run = mqstream(topics, "show", "A", "--plot", str(png), "--history-days", "14")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == f"fan chart: {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_show_of_an_item_without_a_forecast_says_so_and_exits_2(topics):
    produce(topics, "forecasts-latest", [("A", forecast_bytes(issued("A", ORIGIN)))])
    run = mqstream(topics, "show", "NOSUCH")
    assert run.returncode == 2 and run.stdout == ""
    assert f"no forecast for item 'NOSUCH' in {topics.topic('forecasts-latest')}" in run.stderr


def test_show_plot_without_a_broker_plots_the_workers_last_closed_day_and_says_so(tmp_path):
    history = [issued("A", ORIGIN - d) for d in range(6, 0, -1)]
    answers = {"/forecasts/A": forecast_bytes(issued("A", ORIGIN, level=5.0)),
               "/forecasts/A/errors": errors_answer("A", [error_bytes("A", ORIGIN, 1.0, history)])}
    closed = Settings(kafka_port=free_port())  # no broker
    png = tmp_path / "fan.png"
    with lookups(answers) as (redirecting, _):
        run = mqstream(closed, "show", "A", "--plot", str(png), "--worker", redirecting)
    assert run.returncode == 0, run.stderr
    assert "the plot shows the actual of the last closed day only, from the worker" in run.stderr
    assert run.stdout.startswith(f"item A  origin {iso_of_day(ORIGIN)}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_reads_kafka_when_no_worker_answers_and_says_so(topics):
    produce(topics, "forecasts-latest", [("A", forecast_bytes(issued("A", ORIGIN)))])
    worker = f"http://127.0.0.1:{free_port()}"
    run = mqstream(topics, "show", "A", "--worker", worker)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"item A  origin {iso_of_day(ORIGIN)}")
    assert run.stderr.startswith(f"mqstream: no worker answers at {worker}/forecasts/A ")
    assert run.stderr.rstrip().endswith("reading the item's partitions in Kafka instead")
