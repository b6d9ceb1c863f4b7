"""Operations: a real Prometheus scraping a real worker, and the docker/ files checked by their tools."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest

from mqstream.periods import day_of_iso
from mqstream.local_broker import free_port
from mqstream.streams.metrics import WorkerMetrics
from mqstream.streams.offsets import end_offsets, read_topic
from mqstream.streams.replay import replay_events, send
from mqstream.streams.topics import create_topics
from tests.kafka_helpers import fresh_settings, start_worker, stop_worker, wait_caught_up

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def exported_names() -> set[str]:
    """Every sample name the worker exports (counters' _total, histograms' _bucket, ...)."""
    metrics = WorkerMetrics()
    metrics.consumed.labels("t").inc()
    metrics.dead_letters.labels("r").inc()
    metrics.lag.labels("t", "0").set(0)
    metrics.watermark_age.labels("0", "now").set(0)
    metrics.state_bytes.labels("items").set(0)
    metrics.quantile_loss.labels("0.5", "1-7").set(0)
    metrics.coverage.labels("1-7").set(0)
    metrics.model.info({"name": "m", "version": "1"})
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def promql(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(query)}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]["result"]


def value(port: int, query: str) -> float:
    result = promql(port, query)
    assert len(result) == 1, (query, result)
    return float(result[0]["value"][1])


def eventually(port: int, query: str, expected: float, timeout: float = 120.0) -> None:
    """Wait until the query's one value equals ``expected`` (a scrape that saw the end)."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        result = promql(port, query)
        seen = float(result[0]["value"][1]) if len(result) == 1 else result
        if seen == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{query}: {seen} after {timeout:.0f}s, expected {expected}")


@pytest.fixture
def prometheus_for(tmp_path):
    """Start a real Prometheus scraping one target every second; yields its API port."""
    procs = []

    def start(target_port: int) -> int:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{DOCKER / 'alerts.yml'}]
scrape_configs:
  - job_name: mqstream-worker
    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]
""")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
                return port
            except OSError:
                time.sleep(0.3)
        raise AssertionError("prometheus did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.mark.prometheus
@pytest.mark.e2e
def test_prometheus_sees_what_the_worker_did_during_a_replay(kafka_settings, tmp_path, prometheus_for):
    settings = fresh_settings(kafka_settings, tmp_path)
    create_topics(settings)
    events = replay_events(day_of_iso("2010-11-08"), day_of_iso("2010-11-10"))
    send(events, settings, progress=False)
    worker = start_worker(settings)
    try:
        port_file = Path(settings.data_dir) / "w1" / "metrics.port"
        while not port_file.exists():
            time.sleep(0.2)
        metrics_port = int(port_file.read_text())
        prom = prometheus_for(metrics_port)
        wait_caught_up(settings, worker)
        markers = 2 * settings.partitions  # the replay's closing watermark markers, one per partition and topic
        inputs = f'{settings.topic_prefix.replace(".", "[.]")}(sales|page-views)'
        forecasts = sum(end_offsets(settings, settings.topic("forecasts")).values())
        # the worker is done; each value reaches Prometheus at a later scrape (lag: a sample every 5 s)
        eventually(prom, f'sum(mqstream_events_consumed_total{{topic=~"{inputs}"}})', len(events) + markers)
        eventually(prom, "mqstream_forecasts_published_total", forecasts)
        eventually(prom, "sum(mqstream_consumer_lag_messages)", 0)
        assert value(prom, "sum(mqstream_dead_letters_total) or vector(0)") == 0
        assert value(prom, 'count(mqstream_model_info{name="seasonal-naive"})') == 1
        wql = value(prom, 'mqstream_quantile_loss{quantile="0.5", horizon_bucket="1-7"}')
        assert wql == pytest.approx(offline_p50_wql(settings), rel=1e-6)
        assert 0 < value(prom, 'mqstream_interval_coverage_80{horizon_bucket="1-7"}') <= 1
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz") as ready:
            assert ready.status == 200
    finally:
        stop_worker(worker)


def offline_p50_wql(settings) -> float:
    """Rolling P50 wQL of the last 7 target days, horizons 1-7, from the forecast-errors topic."""
    bodies = [orjson.loads(r.value) for r in read_topic(settings, settings.topic("forecast-errors"))]
    newest = max(day_of_iso(b["target"]) for b in bodies)
    loss = actual = 0.0
    for body in bodies:
        if day_of_iso(body["target"]) > newest - 7:
            for h, pinball in zip(body["horizons"], body["pinball"]):
                if h <= 7:
                    loss += pinball[4]
                    actual += abs(body["actual"])
    return 2 * loss / actual


def test_promtool_accepts_the_prometheus_config_and_alert_rules(tmp_path):
    config = (DOCKER / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", str(DOCKER / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    for args in (["check", "config", str(tmp_path / "prometheus.yml")], ["check", "rules", str(DOCKER / "alerts.yml")]):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_and_dashboard_query_only_metrics_the_worker_exports(tmp_path):
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "mqstream.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    alerts = (DOCKER / "alerts.yml").read_text()
    used = set(re.findall(r"\bmqstream_[a-z0-9_]+", " ".join(exprs) + alerts))
    assert used and used <= exported_names(), used - exported_names()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    (tmp_path / "dashboard-rules.yml").write_text(json.dumps(rules))  # JSON is YAML: promtool parses the PromQL
    done = subprocess.run(["promtool", "check", "rules", str(tmp_path / "dashboard-rules.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_file_parses():
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose (Debian package) is installed by .ci/run"
    done = subprocess.run([compose, "-f", str(DOCKER / "compose.yaml"), "config", "--services"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {"kafka", "topics", "model", "worker", "prometheus", "grafana"}
