"""Prometheus metrics of one worker, and the HTTP endpoint that serves them with its probes.

Names follow Prometheus conventions: base units, counters ending ``_total``, no per-item
labels (items are millions; partitions, topics, reasons and quantiles are few). Each worker
serves its own registry on its own port (``metrics_port``), so several workers on one host
never collide: give each a different port, or 0 to pick a free one (logged at start).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from mqstream.models.protocol import TargetErrors, error_rows
from mqstream.models.scores import BUCKET_NAMES, bucket_indices, pinball_loss

QUALITY_WINDOW_DAYS = 7  # rolling forecast quality is computed over the last week of targets


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.consumed = Counter("mqstream_events_consumed_total", "Messages consumed, by input topic",
                                ["topic"], registry=r)
        self.dead_letters = Counter("mqstream_dead_letters_total", "Messages sent to dead-letters, by reason",
                                    ["reason"], registry=r)
        self.late = Counter("mqstream_late_events_total", "Events for days already closed (dead-lettered)",
                            registry=r)
        self.duplicates = Counter("mqstream_duplicate_events_total", "Events whose id was already applied",
                                  registry=r)
        self.processing = Histogram("mqstream_event_processing_seconds",
                                    "Time to handle one input event, averaged over its batch (one observation a batch)",
                                    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1, 5),
                                    registry=r)
        self.batch_events = Histogram("mqstream_ingest_batch_events", "Events in one fetched input batch",
                                      buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000), registry=r)
        self.refresh_seconds = Histogram("mqstream_refresh_batch_seconds",
                                         "Time to close days and forecast one partition's batch of items",
                                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.refresh_items = Histogram("mqstream_refresh_batch_items", "Items in one refresh batch",
                                       buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000), registry=r)
        self.forecasts = Counter("mqstream_forecasts_published_total", "Forecast messages published",
                                 registry=r)
        self.rebuilt = Counter("mqstream_model_states_rebuilt_total",
                               "Item model states made again for the served model (a partition another version wrote)",
                               registry=r)
        self.changes = Counter("mqstream_forecast_changes_published_total",
                               "Material forecast revisions published to forecast-changes", registry=r)
        self.errors = Counter("mqstream_forecast_errors_published_total",
                              "Forecast-error messages published (one per item and target day)", registry=r)
        self.lag = Gauge("mqstream_consumer_lag_messages", "Broker end offset minus this worker's position",
                         ["topic", "partition"], registry=r)
        self.watermark_age = Gauge("mqstream_watermark_age_seconds",
                                   "Partition event-time watermark behind wall-clock now or the newest event",
                                   ["partition", "against"], registry=r)
        self.items = Gauge("mqstream_state_items", "Items held in this worker's state", registry=r)
        self.state_bytes = Gauge("mqstream_state_bytes", "Bytes of table keys and values held by this worker",
                                 ["table"], registry=r)
        self.census_started = Gauge("mqstream_state_census_started_seconds",
                                    "Unix time the pass that gave the state gauges began", registry=r)
        self.quantile_loss = Gauge("mqstream_quantile_loss",
                                   "Rolling weighted quantile loss (wQL) of the worker's own forecasts",
                                   ["quantile", "horizon_bucket"], registry=r)
        self.coverage = Gauge("mqstream_interval_coverage_80",
                              "Rolling share of actuals inside the forecast P10..P90 interval",
                              ["horizon_bucket"], registry=r)
        self.model = Info("mqstream_model", "The model the worker serves", registry=r)
        self.rolling_wql = Gauge("mqstream_rolling_wql",
                                 "Rolling wQL over every horizon, of the served model and of a candidate run in shadow",
                                 ["role"], registry=r)
        self.shadow = Info("mqstream_shadow_model", "The candidate the worker runs in shadow (version '' when none)",
                           registry=r)
        self.switches = Counter("mqstream_model_switches_total",
                                "Times the worker took another version that the models topic served", registry=r)
        self.refused = Counter("mqstream_models_refused_total",
                               "Models served on the models topic that the worker refused, keeping the one it serves",
                               registry=r)


@dataclass(frozen=True)
class BucketQuality:
    wql: np.ndarray  # (Q,) weighted quantile loss of each quantile
    coverage: float  # share of actuals inside P10..P90
    forecasts: int  # scored forecasts in the window


class QualityWindow:
    """Rolling wQL and coverage from the worker's own scored forecasts, per horizon bucket."""

    def __init__(self, quantiles: tuple[float, ...]):
        self.quantiles = np.asarray(quantiles)
        self.days: dict[int, dict[str, np.ndarray]] = {}  # target day -> bucket -> sums

    def add(self, scored: Sequence[TargetErrors]) -> None:
        """A close's scored forecasts, summed per target period and horizon bucket in one pass:
        pinball per quantile, |actual|, covered by P10..P90, count."""
        if not scored:
            return
        rows = error_rows(scored)
        targets, actuals, forecasts = rows.targets, rows.actuals, rows.forecasts
        cells = np.column_stack([pinball_loss(actuals[:, None], forecasts, self.quantiles), np.abs(actuals),
                                 (forecasts[:, 0] <= actuals) & (actuals <= forecasts[:, -1]), np.ones(len(actuals))])
        first, n_buckets = int(targets.min()), len(BUCKET_NAMES)
        groups, group_of = np.unique((targets - first) * n_buckets + bucket_indices(rows.horizons), return_inverse=True)
        sums = np.stack([np.bincount(group_of, weights=column, minlength=len(groups)) for column in cells.T], 1)
        for group, row in zip(groups.tolist(), sums):
            target, bucket = divmod(group, n_buckets)
            per_bucket = self.days.setdefault(first + target, {})
            name = BUCKET_NAMES[bucket]
            per_bucket[name] = per_bucket.get(name, 0) + row

    def by_bucket(self) -> dict[str, BucketQuality]:
        """Quality over the target days of the last ``QUALITY_WINDOW_DAYS`` up to the newest, in
        ``BUCKET_NAMES`` order (older days are dropped here)."""
        if not self.days:
            return {}
        newest = max(self.days)
        for day in [d for d in self.days if d <= newest - QUALITY_WINDOW_DAYS]:
            del self.days[day]
        totals: dict[str, np.ndarray] = {}
        for per_bucket in self.days.values():
            for bucket, sums in per_bucket.items():
                totals[bucket] = totals.get(bucket, 0) + sums
        return {bucket: BucketQuality(2 * sums[: len(self.quantiles)] / max(sums[-3], 1e-9),
                                      sums[-2] / max(sums[-1], 1), int(sums[-1]))
                for bucket, sums in sorted(totals.items(), key=lambda pair: BUCKET_NAMES.index(pair[0]))}

    def wql(self) -> float | None:
        """wQL over every horizon of the window (the mean over quantiles of each one's pooled
        wQL); None before anything is scored."""
        self.by_bucket()  # drops the days that left the window
        totals = sum((sums for per_bucket in self.days.values() for sums in per_bucket.values()),
                     np.zeros(len(self.quantiles) + 3))
        if totals[-1] == 0:
            return None
        return float((2 * totals[: len(self.quantiles)] / max(totals[-3], 1e-9)).mean())

    def publish(self, metrics: WorkerMetrics) -> None:
        for bucket, quality in self.by_bucket().items():
            for q, loss in zip(self.quantiles, quality.wql):
                metrics.quantile_loss.labels(f"{q:g}", bucket).set(loss)
            metrics.coverage.labels(bucket).set(quality.coverage)


Lookup = Callable[[str], tuple[int, bytes, dict[str, str]]]  # path -> (status, body, headers)


def serve(metrics: WorkerMetrics, host: str, port: int, ready: Callable[[], bool],
          lookup: Lookup | None = None, explorer: Lookup | None = None) -> ThreadingHTTPServer:
    """/metrics, /healthz (the process answers), /readyz (partitions recovered and consuming),
    with ``lookup`` /forecasts/... (an item's latest forecast and recent errors) and with
    ``explorer`` /explorer... (HTML pages; ``explorer`` names any other content type)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/metrics":
                self._reply(200, generate_latest(metrics.registry), {"Content-Type": CONTENT_TYPE_LATEST})
            elif self.path == "/healthz":
                self._reply(200, b"ok\n")
            elif self.path == "/readyz":
                ok = ready()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"recovering\n")
            elif lookup is not None and self.path.startswith("/forecasts/"):
                status, body, headers = lookup(self.path)
                self._reply(status, body, {"Content-Type": "application/json", **headers})
            elif explorer is not None and (self.path == "/explorer"
                                           or self.path.startswith(("/explorer/", "/explorer?"))):
                status, body, headers = explorer(self.path)
                self._reply(status, body, {"Content-Type": "text/html; charset=utf-8", **headers})
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "text/plain", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes every few seconds: keep the log quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
