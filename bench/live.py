"""The real local broker and stream workers as processes, for the benchmarks that run against them.

One broker per benchmark, in a temporary directory that is removed afterwards (a benchmark
of 100,000 items leaves gigabytes of changelog behind). Workers are ``streams.runner``'s
processes; what they did is read from their Prometheus endpoint (counters) and from /proc
(CPU seconds, resident memory), never from their logs.
"""
from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import orjson

from mqstream.config import Settings
from mqstream.local_broker import LocalBroker, free_port
from mqstream.streams.offsets import group_lag
from mqstream.streams.runner import spawn_worker

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = 100  # /proc/<pid>/stat counts CPU time in USER_HZ ticks, 100 on Linux
PROBE_DELAY = 1.0  # seconds after a worker writes metrics.port before /readyz may be asked (see is_ready)


@dataclass(frozen=True)
class Rig:
    """A running local broker and the directory that holds it and the workers' state."""

    broker: LocalBroker
    home: Path
    settings: Settings  # connects to the broker; topics and group are per run (``fresh``)

    def fresh(self, **changes) -> Settings:
        """Settings with topics, consumer group and state of their own (as tests/kafka_helpers)."""
        run = uuid.uuid4().hex[:8]
        values = dict(topic_prefix=f"b{run}.", app_id=f"bench-{run}", data_dir=str(self.home / run), metrics_port=0)
        values.update(changes)
        return replace(self.settings, **values).validate()


@contextmanager
def local_broker(model: str = "seasonal-naive", partitions: int = 4) -> Iterator[Rig]:
    home = Path(tempfile.mkdtemp(prefix="mqstream-bench-"))
    broker = LocalBroker(home / "kafka", free_port())
    try:
        broker.start()
        checkpoint = "" if model == "seasonal-naive" else str(ROOT / "checkpoints" / model)
        settings = Settings(kafka_port=broker.port, partitions=partitions, model=model, checkpoint=checkpoint)
        if hasattr(settings, "watermark_inputs"):  # the benchmarks send sales only: closes wait for nothing else
            settings = replace(settings, watermark_inputs="sales")
        settings = settings.validate()
        yield Rig(broker, home, settings)
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


def model_for_bench(preferred: str = "mqtransformer") -> tuple[str, str]:
    """(model, note): the served default when its checkpoint exists, else seasonal-naive."""
    if (ROOT / "checkpoints" / preferred / "config.json").exists():
        return preferred, f"checkpoints/{preferred}"
    return "seasonal-naive", f"no checkpoint in checkpoints/{preferred}: seasonal-naive instead"


# --- workers ------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float  # time.monotonic()
    counters: dict[str, float]  # metric name -> value summed over its labels
    cpu: float  # CPU seconds of the process so far (user + system)
    rss: int  # resident bytes
    ready: bool


@dataclass
class Worker:
    settings: Settings
    name: str = "w1"
    proc: subprocess.Popen | None = None
    started: float = 0.0  # time.monotonic() at spawn
    samples: list[Sample] = field(default_factory=list)
    hangs: int = 0  # starts that never became ready and were retried
    ready_after: float | None = None  # seconds from the last spawn to /readyz answering 200

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.data_dir) / self.name

    @property
    def log(self) -> Path:
        return Path(self.settings.data_dir) / f"{self.name}.log"

    def start(self) -> "Worker":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "metrics.port").unlink(missing_ok=True)  # a restart must not read the last port
        self.started, self.ready_after = time.monotonic(), None
        self.proc = spawn_worker(self.settings, self.name, self.log)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}; log tail:\n{tail}")

    def _url(self, path: str) -> str | None:
        try:
            port = int((self.state_dir / "metrics.port").read_text())
        except (OSError, ValueError):
            return None
        return f"http://127.0.0.1:{port}{path}"

    def _get(self, path: str) -> tuple[int, bytes] | None:
        url = self._url(path)
        if url is None:
            return None
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except (urllib.error.URLError, OSError):
            return None

    def is_ready(self) -> bool:
        """/readyz answers 200. Never asked within PROBE_DELAY of the worker writing its port: a
        probe that arrives before faust has made its consumer hangs the worker's start-up for
        good (9 of 9 starts probed every 50 ms from spawn hung; none probed 1 s after the port
        file appeared), a bug of the worker's /readyz to fix there; the bench keeps clear of it."""
        try:
            written = (self.state_dir / "metrics.port").stat().st_mtime
        except OSError:
            return False
        if time.time() - written < PROBE_DELAY:
            return False
        got = self._get("/readyz")
        return got is not None and got[0] == 200

    def counters(self) -> dict[str, float]:
        got = self._get("/metrics")
        return parse_metrics(got[1].decode()) if got is not None and got[0] == 200 else {}

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) in bytes."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
        return out

    def sample(self) -> Sample:
        self.check_alive()
        counters = self.counters()
        s = Sample(time.monotonic(), counters, self.cpu_seconds(), self.memory().get("VmRSS", 0),
                   self.is_ready() if counters else False)
        self.samples.append(s)
        return s

    def consumed(self) -> float:
        return self.samples[-1].counters.get("mqstream_events_consumed_total", 0.0) if self.samples else 0.0

    def wait_ready(self, timeout: float = 300.0, poll: float = 0.1) -> float:
        """Seconds from spawn to /readyz answering 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.is_ready():
                self.ready_after = time.monotonic() - self.started
                return self.ready_after
            time.sleep(poll)
        raise TimeoutError(f"worker {self.name} not ready within {timeout:.0f}s; see {self.log}")


@contextmanager
def running(settings: Settings, *names: str, ready_within: float | None = 240.0) -> Iterator[list[Worker]]:
    """Workers started together and always stopped, whatever happens in between. With
    ``ready_within``, each must answer /readyz within that many seconds; one that does not is
    killed and started once more (faust's start-up can hang: the count is kept in ``hangs``)."""
    workers = [Worker(settings, name) for name in (names or ("w1",))]
    try:
        for w in workers:
            w.start()
        for w in workers if ready_within else ():
            try:
                w.wait_ready(ready_within)
            except TimeoutError:
                w.hangs += 1
                w.stop(timeout=5)
                w.start().wait_ready(ready_within)
        yield workers
    finally:
        for w in workers:
            w.stop()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: each metric name's value, summed over its label sets."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def follow(workers: list[Worker], done, timeout: float, interval: float = 0.5) -> None:
    """Sample every worker every ``interval`` seconds until ``done(workers)`` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            w.sample()
        if done(workers):
            return
        time.sleep(interval)
    raise TimeoutError(f"not done within {timeout:.0f}s: consumed {[w.consumed() for w in workers]}")


def total(workers: list[Worker], metric: str = "mqstream_events_consumed_total") -> float:
    return sum(w.samples[-1].counters.get(metric, 0.0) for w in workers if w.samples)


# --- throughput from the samples ----------------------------------------------------------
def steady_rate(workers: list[Worker], events: int, low: float = 0.1, high: float = 0.9) -> dict:
    """Events per second over the steady part of a run: from when every worker consumes and
    ``low`` of the events are in, to when the first worker has consumed ``high`` of its own
    final count (after that the group is finishing, not streaming). Also CPU seconds per
    event of the workers over the same window."""
    times = sorted({round(s.t, 6) for w in workers for s in w.samples})

    def at(w: Worker, t: float) -> Sample:
        return max((s for s in w.samples if s.t <= t + 1e-6), key=lambda s: s.t, default=w.samples[0])

    def consumed(s: Sample) -> float:
        return s.counters.get("mqstream_events_consumed_total", 0.0)

    finals = [consumed(w.samples[-1]) for w in workers]
    start = next((t for t in times if all(consumed(at(w, t)) > 0 for w in workers)
                  and sum(consumed(at(w, t)) for w in workers) >= low * events), None)
    if start is None:
        raise RuntimeError(f"never did every worker consume: final counts {finals}")
    end = min(next(s.t for s in w.samples if consumed(s) >= high * f) for w, f in zip(workers, finals))
    if end <= start:
        raise RuntimeError("no steady window: the run is too short for the sampling interval")
    n = sum(consumed(at(w, end)) - consumed(at(w, start)) for w in workers)
    cpu = sum(at(w, end).cpu - at(w, start).cpu for w in workers)
    return {"events_per_second": n / (end - start), "window_seconds": end - start, "window_events": n,
            "worker_cpu_seconds_per_event": cpu / n if n else None,
            "events_per_worker_cpu_second": n / cpu if cpu else None,
            "final_consumed": finals}


def wait_committed(settings: Settings, timeout: float = 60.0) -> bool:
    """The broker's word that the group committed every event (faust commits every few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group_lag(settings, ("sales",)) == 0:
            return True
        time.sleep(1)
    return False


# --- the reference: a bare consumer -------------------------------------------------------
def bare_consumer_rate(settings: Settings, topic: str, min_seconds: float = 5.0) -> dict:
    """A bare aiokafka consumer on every partition of ``topic`` that only reads and orjson-decodes
    each value: one untimed pass, then whole passes from the beginning until ``min_seconds``."""
    return asyncio.run(_bare(settings, topic, min_seconds))


async def _bare(settings: Settings, topic: str, min_seconds: float) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        size = sum(ends.values())

        async def one_pass() -> int:
            await consumer.seek_to_beginning(*parts)
            got = 0
            while got < size:
                for records in (await consumer.getmany(*parts, timeout_ms=1000, max_records=5000)).values():
                    for record in records:
                        orjson.loads(record.value)
                    got += len(records)
            return got

        await one_pass()  # connections, metadata and the page cache warm
        events, passes = 0, 0
        wall, cpu = time.perf_counter(), time.process_time()
        while passes == 0 or time.perf_counter() - wall < min_seconds:
            events += await one_pass()
            passes += 1
        seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await consumer.stop()
    return {"events_per_second": events / seconds, "events": events, "passes": passes, "seconds": seconds,
            "events_per_cpu_second": events / cpu_seconds if cpu_seconds else None}


# --- the broker's side --------------------------------------------------------------------
def topic_bytes(rig: Rig, topic: str) -> int:
    """Bytes the broker holds on disk for every partition of ``topic``."""
    return sum(f.stat().st_size for d in (rig.broker.home / "data").glob(f"{topic}-*") if d.is_dir()
               for f in d.iterdir() if f.suffix == ".log")


def describe_run() -> dict:
    """What the numbers were measured on: the tree, the machine and how busy it was."""
    import os
    import platform

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    # the code measured is the commit's, dirty when anything outside bench/ differs from it
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench")
    # (bench's own outputs excepted: a run rewrites them as it goes)
    bench_changed = git("status", "--porcelain", "--untracked-files=no", "--", "bench", ":!bench/results.*",
                        ":!bench/profile-*")
    return {"commit": git("rev-parse", "--short", "HEAD") + ("-dirty" if changed else ""),
            "bench_differs_from_commit": bool(bench_changed),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
