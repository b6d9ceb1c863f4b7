"""Settings: the one configuration object, read from a TOML file and MQSTREAM_* variables,
validated once where the program starts. An error names the setting and what it accepts."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from mqstream.periods import PERIODS, WEEKDAYS, Cadence

MODELS = ("seasonal-naive", "mqcnn", "mqtransformer")
MODEL_SOURCES = ("checkpoint", "topic")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    bootstrap: str = ""  # external Kafka "host:port[,host:port]"; empty: the local broker
    kafka_port: int = 19092  # port of the local broker (`mqstream kafka start`)
    topic_prefix: str = "mqstream."  # every topic name starts with this
    partitions: int = 4  # of every topic; the unit of parallelism and of state sharding
    app_id: str = "mqstream"  # consumer group and changelog topic prefix
    data_dir: str = "var"  # worker state (RocksDB), local broker logs
    period: str = "day"  # of state, closes, forecasts and scores: day or week (the model must be trained on it)
    week_start: str = "monday"  # the weekday a week starts on
    allowed_lateness: int = 3600  # seconds after a period ends that its events are still applied
    watermark_inputs: str = "sales,page-views"  # inputs every day close waits for ("sales" if no page views)
    active_days: int = 28  # items that sold within this many days get forecasts (whole periods, rounded up)
    history_days: int = 56  # closed buckets kept per item, in days (whole periods, rounded up)
    model: str = "mqtransformer"
    checkpoint: str = ""  # neural model weights (safetensors + JSON config); empty: checkpoints/<model>
    model_source: str = "checkpoint"  # or "topic": the neural model the models topic serves (mqstream models)
    refresh_batch: int = 1024  # items per model call
    held_items: int = 100_000  # item states a worker keeps decoded between batches (~3 kB each); 0: none
    # most bytes one fetch takes from a partition, inputs and changelogs alike (faust's default:
    # 1 MiB). An item's state is written once per batch it is in: larger batches write less per event
    fetch_bytes: int = 8 * 2**20
    change_share: float = 0.25  # a forecast change is material when the next-7-day P50 total moves by more
    stock_level: float = 0.0  # ...or when the next-7-day P90 total crosses this many units (0: off)
    session_timeout: float = 45.0  # seconds before the group gives a silent worker's partitions to others
    # seconds a batch may take, its close included, before the group takes the worker's partitions
    # away (Kafka's max.poll.interval; faust's 1000 s default cut a close of 1,000,000 items short)
    max_poll_interval: float = 3600.0
    standby_replicas: int = 1  # warm copies of each partition's tables on other workers: fast failover, more work
    metrics_host: str = "127.0.0.1"  # /metrics, /healthz, /readyz; 0.0.0.0 only where a network needs it
    metrics_port: int = 9100  # 0: any free port, written to <data_dir>/metrics.port (several workers per host)
    security_protocol: str = "PLAINTEXT"  # to Kafka: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)  # best from MQSTREAM_SASL_PASSWORD; never logged
    sasl_password_file: str = ""  # or a file holding it (a mounted secret)
    ssl_cafile: str = ""  # CA bundle that signed the brokers' certificates; empty: the system's
    ssl_certfile: str = ""  # client certificate and key, for brokers that ask for one (mutual TLS)
    ssl_keyfile: str = ""

    @property
    def kafka_bootstrap(self) -> str:
        return self.bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_local_broker(self) -> bool:
        return not self.bootstrap

    @property
    def checkpoint_path(self) -> Path | None:
        if self.model == "seasonal-naive":
            return None
        return Path(self.checkpoint or f"checkpoints/{self.model}")

    @property
    def cadence(self) -> Cadence:
        return Cadence(self.period, WEEKDAYS.index(self.week_start))

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def watermark_input_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.watermark_inputs.split(",") if name.strip())

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def validate(self) -> "Settings":
        _check(1 <= self.kafka_port <= 65535, "kafka_port", "a TCP port, 1..65535")
        _check(1 <= self.partitions <= 1024, "partitions", "an integer 1..1024")
        _check(0 <= self.standby_replicas <= 8, "standby_replicas", "an integer 0..8")
        _check(self.model in MODELS, "model", ", ".join(MODELS))
        _check(self.model_source in MODEL_SOURCES, "model_source", ", ".join(MODEL_SOURCES))
        _check(self.period in PERIODS, "period", ", ".join(PERIODS))
        _check(self.week_start in WEEKDAYS, "week_start", ", ".join(WEEKDAYS))
        _check(0 <= self.allowed_lateness <= 7 * 86_400, "allowed_lateness", "seconds, 0..604800")
        _check(bool(self.watermark_input_names) and set(self.watermark_input_names) <= {"sales", "page-views"},
               "watermark_inputs", "'sales,page-views' or 'sales' (comma-separated input names)")
        _check(1 <= self.active_days <= 3650, "active_days", "days, 1..3650")
        _check(7 <= self.history_days <= 3650, "history_days", "days, 7..3650")
        _check(1 <= self.refresh_batch <= 65536, "refresh_batch", "items, 1..65536")
        _check(0 <= self.held_items <= 100_000_000, "held_items", "items, 0..100000000")
        _check(2**20 <= self.fetch_bytes <= 2**28, "fetch_bytes", "bytes, 1048576..268435456 (1 to 256 MiB)")
        _check(6 <= self.session_timeout <= 300, "session_timeout", "seconds, 6..300 (the broker's group limits)")
        _check(60 <= self.max_poll_interval <= 86_400, "max_poll_interval", "seconds, 60..86400")
        _check(0 < self.change_share <= 10, "change_share", "a share > 0 and <= 10 (0.25 = 25%)")
        _check(self.stock_level >= 0, "stock_level", "units >= 0 (0 turns the stock rule off)")
        _check(0 <= self.metrics_port <= 65535, "metrics_port", "a TCP port 1..65535, or 0 for any free port")
        _check(self.app_id.replace("-", "").replace("_", "").replace(".", "").isalnum(), "app_id",
               "letters, digits, '.', '-', '_'")
        self._validate_security()
        return self

    def _validate_security(self) -> None:
        _check(self.security_protocol in SECURITY_PROTOCOLS, "security_protocol", ", ".join(SECURITY_PROTOCOLS))
        _check(self.sasl_mechanism in SASL_MECHANISMS, "sasl_mechanism", ", ".join(SASL_MECHANISMS))
        if self.uses_sasl:
            _check(bool(self.sasl_username), "sasl_username", f"a user name (needed for {self.security_protocol})")
            _check(bool(self.sasl_password) != bool(self.sasl_password_file), "sasl_password",
                   "exactly one of sasl_password (MQSTREAM_SASL_PASSWORD) and sasl_password_file")
        for name in ("sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            _check(not path or Path(path).is_file(), name, "the path of a readable file, or empty")


def _check(ok: bool, name: str, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"setting {name!r}: accepted values are {accepted}")


def load_settings(path: str | None = None, **overrides) -> Settings:
    """Defaults, then the TOML file (``--config`` or MQSTREAM_CONFIG), then MQSTREAM_<NAME>
    environment variables, then explicit overrides (command-line flags)."""
    values: dict = {}
    path = path or os.environ.get("MQSTREAM_CONFIG")
    if path:
        try:
            values.update(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"config file {path}: unknown settings {unknown}; known: {sorted(known)}")
    for name, f in known.items():
        env = os.environ.get("MQSTREAM_" + ("KAFKA_BOOTSTRAP" if name == "bootstrap" else name.upper()))
        if env is not None:
            values[name] = _coerce(name, env, type(getattr(Settings, name)))
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, value in values.items():
        expected = type(getattr(Settings, name))
        if expected is float and type(value) is int:
            value = values[name] = float(value)  # TOML's 1 for 1.0
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ConfigError(f"setting {name!r}: expected {expected.__name__}, got {value!r}")
    return replace(Settings(), **values).validate()


def _coerce(name: str, raw: str, kind: type):
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"setting {name!r} (MQSTREAM_{name.upper()}): expected {kind.__name__}, got {raw!r}") from exc
