"""A single-node Apache Kafka broker (KRaft) on 127.0.0.1, run with the machine's Java.

The broker's jars come from Maven Central through ``kafka/pom.xml`` (``mvn
dependency:copy-dependencies``) into a cache outside the repository; nothing downloaded is
committed. Its log dir, log file and pid file live under one directory of the caller's.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mqstream.bootstrap import kafka_answers

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).parent / "kafka" / "pom.xml"
LOG4J = Path(__file__).parent / "kafka" / "log4j2.yaml"
CACHE = Path(os.environ.get("MQSTREAM_CACHE", Path.home() / ".cache" / "mqstream"))


class BrokerError(RuntimeError):
    pass


@dataclass(frozen=True)
class SecureListener:
    """A second listener that speaks SASL_SSL with SCRAM-SHA-512 (the plaintext one stays for
    the broker's own traffic): for testing the clients' security settings."""

    port: int
    keystore: Path  # PEM: the server's unencrypted PKCS#8 key, then its certificate chain
    scram_users: tuple[tuple[str, str], ...]  # (name, password), registered when formatting


@dataclass(frozen=True)
class LocalBroker:
    home: Path  # holds data/, broker.log, broker.pid, server.properties
    port: int
    controller_port: int | None = None
    secure: SecureListener | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker unless it already runs; return once it accepts connections."""
        if self.pid() is not None:
            return
        if port_open(self.port):
            raise BrokerError(f"port {self.port} is taken by another process; choose another kafka_port")
        libs = fetch_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        properties = self._write_properties()
        if not (self.home / "data" / "meta.properties").exists():
            users = [f"SCRAM-SHA-512=[name={name},password={password}]"
                     for name, password in (self.secure.scram_users if self.secure else ())]
            _java(libs, "kafka.tools.StorageTool", "format", "-t", str(uuid.uuid4()), "-c", str(properties),
                  *(arg for user in users for arg in ("--add-scram", user)))
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                _java_command(libs, "kafka.Kafka", str(properties)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the CLI; `stop` ends it
            )
        self.pid_file.write_text(str(proc.pid))
        self._wait_ready(proc, timeout)

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``); False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        terminate(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return True

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def _wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"broker exited with {proc.returncode}; see {self.log_file}")
            if port_open(self.port) and kafka_answers(self.bootstrap):
                return
            time.sleep(0.3)
        raise BrokerError(f"broker did not answer on {self.bootstrap} within {timeout:.0f}s; see {self.log_file}")

    def _write_properties(self) -> Path:
        path = self.home / "server.properties"
        controller = self.controller_port or _controller_port_of(path) or free_port()
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        if self.secure:
            listeners.append(f"SASL_SSL://127.0.0.1:{self.secure.port}")
        path.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners={','.join(listeners)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            f"log.dirs={self.home / 'data'}",
            "num.partitions=4",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            *(self._secure_properties() if self.secure else []),
            "",
        ]))
        return path

    def _secure_properties(self) -> list[str]:
        return [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={self.secure.keystore}",
        ]


def _controller_port_of(properties: Path) -> int | None:
    """The controller port of an earlier start: a restarted broker must keep its quorum's address."""
    try:
        lines = properties.read_text().splitlines()
    except OSError:
        return None
    voters = next((line for line in lines if line.startswith("controller.quorum.voters=")), "")
    return int(voters.rsplit(":", 1)[1]) if voters else None


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """The broker's classpath folder, fetched with Maven on first use."""
    libs = CACHE / f"kafka-{version}" / "libs"
    if (libs / f"kafka_2.13-{version}.jar").exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is needed once to fetch the Kafka broker jars")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}",
         "dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
        check=True,
    )
    tmp.rename(libs)
    return libs


def _java_command(libs: Path, main: str, *args: str) -> list[str]:
    return ["java", "-Xms256m", "-Xmx1g", f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp", f"{libs}/*", main, *args]


def _java(libs: Path, main: str, *args: str) -> None:
    done = subprocess.run(_java_command(libs, main, *args), capture_output=True, text=True)
    if done.returncode != 0:
        raise BrokerError(f"{main} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; False if it was not running."""
    if not alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")
    except OSError:
        return True
