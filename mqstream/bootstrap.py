"""A Kafka bootstrap list (``host:port[,host:port]``) and whether any of its brokers answers.

kafka-python waits ``bootstrap_timeout_ms`` (30 s) before it says that no broker answered;
faust retries for longer. ``check_bootstrap`` says it within seconds and names what was tried:
a TCP connect to each address tells a broker that is down, a wrong port and a wrong host
apart; where one connects, a Kafka bootstrap with a short timeout tells a Kafka broker from
anything else that accepts connections there (another service, a proxy, a TLS listener
spoken to in plaintext).
"""
from __future__ import annotations

import socket

from kafka import KafkaConsumer
from kafka.errors import KafkaError

CONNECT_SECONDS = 2.0  # TCP, for the whole list: a reachable broker accepts a connection in milliseconds
ANSWER_SECONDS = 2.5  # Kafka bootstrap (TLS, SASL, metadata) once an address connects


class BrokerUnreachable(ConnectionError):
    """No broker of a bootstrap list answered, by TCP or by Kafka; ``failures``: address -> why."""

    def __init__(self, bootstrap: str, failures: dict[str, str]):
        self.bootstrap, self.failures = bootstrap, failures
        tried = "; ".join(f"{address}: {why}" for address, why in failures.items())
        super().__init__(f"no broker answers ({tried})")


def addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``"a:9092,[::1]:9093"`` -> [("a", 9092), ("::1", 9093)]; ValueError names a bad entry."""
    out = []
    for entry in (e.strip() for e in bootstrap.split(",") if e.strip()):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bootstrap entry {entry!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("the bootstrap list is empty")
    return out


def check_bootstrap(bootstrap_servers: str, **kafka_kwargs) -> None:
    """Returns once a Kafka broker of ``bootstrap_servers`` answers; raises BrokerUnreachable,
    with each address's failure, within CONNECT_SECONDS + ANSWER_SECONDS if none does.
    ``kafka_kwargs``: kafka-python's security settings, so a TLS or SASL listener is spoken
    to as the clients will."""
    listed = addresses(bootstrap_servers)
    failures, connected = {}, False
    for host, port in listed:
        try:
            # create_connection, not a bare AF_INET socket: host names and IPv6 addresses too
            socket.create_connection((host, port), timeout=CONNECT_SECONDS / len(listed)).close()
            connected = True
        except OSError as exc:
            failures[f"{host}:{port}"] = _reason(exc)
    if connected and kafka_answers(bootstrap_servers, **kafka_kwargs):
        return
    silent = (f"accepts connections, but no Kafka broker answered within {ANSWER_SECONDS:g} s (another "
              "service on that port, or TLS/SASL settings that do not match the listener)")
    tried = [f"{host}:{port}" for host, port in listed]
    raise BrokerUnreachable(bootstrap_servers, {address: failures.get(address, silent) for address in tried})


def kafka_answers(bootstrap_servers: str, **kafka_kwargs) -> bool:
    """A Kafka broker of the list completes a bootstrap within ANSWER_SECONDS."""
    try:
        KafkaConsumer(bootstrap_servers=bootstrap_servers, client_id="mqstream-check",
                      bootstrap_timeout_ms=int(ANSWER_SECONDS * 1000), **kafka_kwargs).close()
        return True
    except KafkaError:
        return False


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return exc.strerror or str(exc)
