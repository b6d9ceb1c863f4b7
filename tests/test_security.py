"""The worker over SASL_SSL (SCRAM-SHA-512 on TLS) against a local broker configured for it,
with a CA and server certificate made here; the password never reaches a log."""
from __future__ import annotations

import json
import pickle
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from mqstream.periods import day_of_iso
from mqstream.models.dataset import demand_series, load_transactions
from mqstream.models.training import load_checkpoint
from mqstream.config import ConfigError, Settings, load_settings
from mqstream.kafka_auth import kafka_options
from mqstream.local_broker import LocalBroker, SecureListener, free_port
from mqstream.state.item import UNITS
from mqstream.streams.replay import replay_events
from tests.kafka_helpers import fresh_settings, outputs, run_to_the_end, table_state

pytestmark = pytest.mark.fault
USER, PASSWORD = "mqstream-worker", "s3cret-never-logged-7f2c"
FIRST, LAST = day_of_iso("2011-03-01"), day_of_iso("2011-03-02")


def make_certificates(folder: Path) -> tuple[Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem
    holding the server's key and certificate)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=mqstream test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8")
    keystore = folder / "server.pem"
    keystore.write_text((folder / "server.pk8").read_text() + (folder / "server.crt").read_text())
    return folder / "ca.pem", keystore


@pytest.fixture(scope="module")
def secure_settings(tmp_path_factory):
    """Settings that reach a SASL_SSL-only listener of a broker of this module's own."""
    home = tmp_path_factory.mktemp("secure-kafka")
    ca, keystore = make_certificates(home)
    listener = SecureListener(port=free_port(), keystore=keystore, scram_users=((USER, PASSWORD),))
    broker = LocalBroker(home, free_port(), secure=listener)
    broker.start()
    secret = home / "password"
    secret.write_text(PASSWORD + "\n")
    yield Settings(bootstrap=f"127.0.0.1:{listener.port}", partitions=2, model="seasonal-naive",
                   security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username=USER,
                   sasl_password_file=str(secret), ssl_cafile=str(ca)).validate()
    broker.stop()


@pytest.mark.slow
def test_the_worker_runs_the_whole_loop_over_sasl_ssl_and_never_logs_the_password(secure_settings, tmp_path):
    settings = fresh_settings(secure_settings, tmp_path)
    tx = load_transactions()
    events = replay_events(FIRST, LAST, tx)
    run_to_the_end(settings, events)
    forecasts, errors = outputs(settings)
    assert forecasts and errors
    state = table_state(settings)
    expected = demand_series(tx, np.array(sorted(state)), FIRST, LAST)
    for i, item in enumerate(expected.items):
        np.testing.assert_allclose(state[item].daily(UNITS, FIRST, LAST), expected.units[i], err_msg=item)
    log_files = list(Path(settings.data_dir).parent.glob("*.log"))
    assert log_files and not any(PASSWORD in p.read_text(errors="replace") for p in log_files)
    assert PASSWORD not in repr(settings)


@pytest.mark.slow
def test_a_wrong_password_or_plaintext_is_refused(secure_settings):
    wrong = replace(secure_settings, sasl_password_file="", sasl_password="not-it")
    with pytest.raises(KafkaError):
        KafkaAdminClient(**kafka_options(wrong), request_timeout_ms=5000, api_version_auto_timeout_ms=3000).close()
    plaintext = replace(secure_settings, security_protocol="PLAINTEXT")
    with pytest.raises(KafkaError):
        KafkaAdminClient(**kafka_options(plaintext), request_timeout_ms=5000, api_version_auto_timeout_ms=3000).close()


def test_security_settings_are_checked_where_the_program_starts(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="security_protocol.*SASL_SSL"):
        load_settings(security_protocol="KERBEROS")
    with pytest.raises(ConfigError, match="sasl_username"):
        load_settings(security_protocol="SASL_SSL")
    with pytest.raises(ConfigError, match="ssl_cafile"):
        load_settings(security_protocol="SSL", ssl_cafile=str(tmp_path / "missing.pem"))
    monkeypatch.setenv("MQSTREAM_SASL_PASSWORD", "from-the-environment")
    settings = load_settings(security_protocol="SASL_SSL", sasl_username="u")
    assert kafka_options(settings)["sasl_plain_password"] == "from-the-environment"
    assert "from-the-environment" not in repr(settings)


class _Payload:
    """Unpickling this would write a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_checkpoint_is_loaded_without_running_any_code_in_it(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "config.json").write_text(json.dumps({"model": "mqcnn", "config": {}, "train": {}}))
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(Exception):
        load_checkpoint(tmp_path)
    assert not marker.exists()
