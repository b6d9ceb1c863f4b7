"""`mqstream up` and `mqstream down`: the demo's loop left running, to look around.

`up` starts the local broker (unless a broker answers already), creates the topics, starts a
worker whose HTTP port (`/metrics`, the lookups, the explorer) is `metrics_port`, and a
Prometheus server (Debian's) scraping it; replays the demo's days unless `sales` already
holds events; waits until the worker has caught up; prints the addresses and returns with
everything still running. What it started is written to ``<data_dir>/up.json``; `down` reads
it and stops those processes, the broker last. State stays on disk, so a later `up` resumes.
"""
from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from mqstream.config import Settings
from mqstream.demo import demo_events, ensure_checkpoint, follow
from mqstream.local_broker import LocalBroker, alive, port_open, terminate
from mqstream.streams.offsets import end_offsets
from mqstream.streams.replay import send
from mqstream.streams.runner import spawn_worker
from mqstream.streams.topics import create_topics

RULES = Path(__file__).resolve().parents[1] / "docker" / "alerts.yml"  # the deployment's alert rules
STOP_SECONDS = 60.0  # a worker flushes its state on SIGTERM; past this it is killed


class StackError(RuntimeError):
    pass


@dataclass
class Stack:
    """What `up` started (pids) and where it answers."""

    worker_pid: int
    prometheus_pid: int | None
    broker_started: bool
    addresses: dict[str, str]

    @staticmethod
    def path(settings: Settings) -> Path:
        return Path(settings.data_dir) / "up.json"

    @classmethod
    def read(cls, settings: Settings) -> "Stack | None":
        try:
            return cls(**orjson.loads(cls.path(settings).read_bytes()))
        except FileNotFoundError:
            return None

    def write(self, settings: Settings) -> None:
        self.path(settings).write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))


def run_up(settings: Settings, start: str, end: str, prometheus_port: int, wait: bool = True) -> int:
    running = Stack.read(settings)
    if running is not None and alive(running.worker_pid):
        print("already up (mqstream down stops it)")
        _print_addresses(running)
        return 0
    if port_open(settings.metrics_port, settings.metrics_host):
        print(f"mqstream: port {settings.metrics_port} (metrics_port) is taken: stop what holds it or set "
              "MQSTREAM_METRICS_PORT")
        return 2
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    ensure_checkpoint(settings)
    broker_started = _start_broker(settings)
    create_topics(settings)
    worker = spawn_worker(settings, "worker", Path(settings.data_dir) / "worker.log", detached=True)
    worker_url = f"http://{settings.metrics_host}:{settings.metrics_port}"
    stack = Stack(worker.pid, None, broker_started, {
        "kafka": settings.kafka_bootstrap, "worker": worker_url, "metrics": worker_url + "/metrics",
        "explorer": worker_url + "/explorer", "worker log": f"{settings.data_dir}/worker.log"})
    stack.write(settings)  # from here on `down` can stop what was started, whatever fails next
    prometheus = _start_prometheus(settings, prometheus_port)
    if prometheus is not None:
        stack.prometheus_pid = prometheus.pid
        stack.addresses["prometheus"] = f"http://127.0.0.1:{prometheus_port}"
        stack.write(settings)
    total = _replay_once(settings, start, end)
    if wait:
        follow(settings, worker, total)
    print("up: left running (mqstream down stops it)")
    _print_addresses(stack)
    return 0


def run_down(settings: Settings) -> int:
    stack = Stack.read(settings)
    if stack is None:
        print(f"nothing is up (no {Stack.path(settings)})")
        return 0
    for name, pid in (("worker", stack.worker_pid), ("prometheus", stack.prometheus_pid)):
        if pid is not None and terminate(pid, STOP_SECONDS):
            print(f"{name} stopped")
    if stack.broker_started and LocalBroker(Path(settings.data_dir) / "kafka", settings.kafka_port).stop():
        print("kafka stopped")
    Stack.path(settings).unlink()
    return 0


def _start_broker(settings: Settings) -> bool:
    """Start the local broker unless one answers on its port; True if this call started it."""
    if not settings.uses_local_broker or port_open(settings.kafka_port):
        return False
    broker = LocalBroker(Path(settings.data_dir) / "kafka", settings.kafka_port)
    print(f"starting Kafka {broker.bootstrap} ...", flush=True)
    broker.start()
    return True


def _replay_once(settings: Settings, start: str, end: str) -> int:
    """Replay start..end unless `sales` holds events already (an earlier `up`): the days it
    closed would only come back as too late. Returns the messages the worker has to take."""
    held = sum(end_offsets(settings, settings.topic("sales")).values())
    if held:
        print(f"{settings.topic('sales')} holds {held:,} events already: not replaying (resuming)")
        return held + sum(end_offsets(settings, settings.topic("page-views")).values())
    return send(demo_events(settings, start, end), settings)


def _start_prometheus(settings: Settings, port: int) -> subprocess.Popen | None:
    """Debian's Prometheus scraping the worker every 5 s, with the deployment's alert rules."""
    binary = shutil.which("prometheus")
    if binary is None:
        print("note: no prometheus on PATH (apt-get install prometheus, or make system): not started")
        return None
    if port_open(port):
        print(f"note: port {port} is taken: Prometheus not started (--prometheus-port picks another)")
        return None
    home = Path(settings.data_dir) / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    rules = f"rule_files: [{RULES}]\n" if RULES.exists() else ""
    (home / "prometheus.yml").write_text(
        "global: {scrape_interval: 5s, evaluation_interval: 5s}\n" + rules
        + "scrape_configs:\n  - job_name: mqstream-worker\n"
        + f"    static_configs: [{{targets: ['{settings.metrics_host}:{settings.metrics_port}']}}]\n")
    with open(home / "prometheus.log", "ab") as log:
        proc = subprocess.Popen([binary, f"--config.file={home / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={home / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _wait_ready(f"http://127.0.0.1:{port}/-/ready", proc, home / "prometheus.log")
    return proc


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"prometheus exited with {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    raise StackError(f"prometheus did not answer on {url} within {timeout:.0f}s; see {log}")


def _print_addresses(stack: Stack) -> None:
    for name, address in stack.addresses.items():
        print(f"  {name:<12} {address}")
