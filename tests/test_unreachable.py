"""A broker that does not answer is reported within 5 s by every command that talks to Kafka,
naming the address tried and what to check (mqstream.bootstrap)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqstream.bootstrap import BrokerUnreachable, addresses, check_bootstrap
from mqstream.local_broker import free_port

ROOT = Path(__file__).resolve().parent.parent
LIMIT_SECONDS = 5.0
LOCAL_HINT = "Is the local broker running (`mqstream kafka start`"
EXTERNAL_HINT = "Is --bootstrap / MQSTREAM_KAFKA_BOOTSTRAP right"


def mqstream(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """The command's run and the seconds it waited beyond starting up: the wall time less that
    of the same interpreter importing what a command imports before the broker check, measured
    just before, so a busy machine's slower start-up is not counted as waiting (on an idle
    machine start-up is a fraction of a second)."""
    # metrics_port 0: `show` finds no worker address in the settings and goes to Kafka
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQSTREAM_")}
    env["MQSTREAM_METRICS_PORT"] = "0"
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import mqstream.cli, mqstream.bootstrap, kafka"], cwd=ROOT, env=env,
                   check=True, timeout=120)
    startup, started = time.monotonic() - started, time.monotonic()
    run = subprocess.run([sys.executable, "-m", "mqstream", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    return run, time.monotonic() - started - startup


COMMANDS = {
    "topics": ["topics", "create"],
    "replay": ["replay", "--start", "2011-06-01", "--end", "2011-06-01"],
    "worker": ["worker"],
    "tail": ["tail"],
    "show": ["show", "85099B"],
    # no worker answers at --worker, so Kafka is read, where no broker answers
    "show --plot": ["show", "85099B", "--plot", "{tmp}/fan.png", "--worker", "http://127.0.0.1:{closed}"],
    "models publish": ["models", "publish", "{tmp}"],
    "models list": ["models", "list"],
    "models promote": ["models", "promote", "mqcnn"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_reports_a_closed_local_port_within_5_s(name, tmp_path):
    port = free_port()
    args = [a.format(tmp=tmp_path, closed=free_port()) for a in COMMANDS[name]]
    run, seconds = mqstream("--kafka-port", str(port), *args)
    assert run.returncode == 2, run.stderr
    assert f"mqstream: kafka at 127.0.0.1:{port}: no broker answers (127.0.0.1:{port}: Connection refused)" \
           in run.stderr
    assert LOCAL_HINT in run.stderr
    assert seconds <= LIMIT_SECONDS, f"{name}: {seconds:.1f} s"


@pytest.mark.parametrize("command", ["demo", "up"])
def test_the_demo_and_up_on_an_external_broker_report_it_within_5_s(command):
    bootstrap = f"127.0.0.1:{free_port()}"
    run, seconds = mqstream("--bootstrap", bootstrap, command)
    assert run.returncode == 2, run.stderr
    assert f"mqstream: kafka at {bootstrap}: no broker answers" in run.stderr and EXTERNAL_HINT in run.stderr
    assert seconds <= LIMIT_SECONDS


def test_a_port_that_accepts_connections_but_is_not_kafka_is_reported_within_5_s():
    with socket.socket() as silent:  # listens, never answers: the kernel completes the handshakes
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        bootstrap = f"127.0.0.1:{silent.getsockname()[1]}"
        run, seconds = mqstream("--bootstrap", bootstrap, "tail")
    assert run.returncode == 2, run.stderr
    assert f"{bootstrap}: accepts connections, but no Kafka broker answered" in run.stderr
    assert seconds <= LIMIT_SECONDS


def test_each_address_of_the_list_is_named_with_its_failure():
    closed = free_port()
    with pytest.raises(BrokerUnreachable) as raised:
        check_bootstrap(f"127.0.0.1:{closed},no-such-host.invalid:9092")
    failures = raised.value.failures
    assert list(failures) == [f"127.0.0.1:{closed}", "no-such-host.invalid:9092"]
    assert failures[f"127.0.0.1:{closed}"] == "Connection refused"
    assert failures["no-such-host.invalid:9092"].startswith("unknown host")


def test_a_bootstrap_list_is_parsed_with_ipv6_and_refused_when_malformed():
    assert addresses(" a:9092,[::1]:9093 ") == [("a", 9092), ("::1", 9093)]
    with pytest.raises(ValueError, match="'a' is not host:port"):
        addresses("a")
