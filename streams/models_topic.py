"""The models topic: checkpoints published to Kafka, read back without trusting them.

A message holds one checkpoint as one safetensors file: the weights, and in its header's
metadata the checkpoint's ``config.json`` (model name, network config, training record) and its
version. The key is ``<model>:<role>`` and the topic is log-compacted, so the latest message of
a key is the model in that role: ``served`` (what workers load), ``candidate`` (published to be
compared, not served) and ``previous`` (the served one before the last promotion, for a
rollback). Nothing in a payload is executed: safetensors holds tensors and strings only, the
config is JSON, and a network is built from it only after its model name is known, then loaded
strictly (every weight present, of its shape) and its version recomputed from what was loaded.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from safetensors.torch import load_file, save

from mqstream.config import Settings
from mqstream.kafka_auth import kafka_options
from mqstream.models.protocol import QuantileForecaster
from mqstream.models.registry import load_model
from mqstream.streams.offsets import read_topic
from mqstream.streams.topics import MAX_MODEL_BYTES, partition_count

ROLES = ("served", "candidate", "previous")
CONFIG_KEY, VERSION_KEY = "mqstream.config", "mqstream.version"
VERSION = re.compile(r"[0-9A-Za-z_-]{1,64}")  # a version names a directory: nothing else passes


class ModelRefused(ValueError):
    """A payload that is not a checkpoint of a model this worker serves; the message says why."""


@dataclass(frozen=True)
class PublishedModel:
    name: str
    role: str
    version: str
    record: dict  # the training record: cutoff, data, validation scores
    offset: int
    published_ms: int
    payload: bytes


def payload_of(checkpoint: Path, settings: Settings) -> tuple[str, str, bytes]:
    """(model name, version, payload) of a checkpoint directory, loaded first as a worker would."""
    config = json.loads((checkpoint / "config.json").read_text())
    model = load_model(config.get("model", ""), checkpoint, settings.cadence)
    metadata = {CONFIG_KEY: json.dumps(config), VERSION_KEY: model.version}
    return model.name, model.version, save(load_file(str(checkpoint / "model.safetensors")), metadata=metadata)


def unpack(payload: bytes, into: Path, settings: Settings) -> Path:
    """Write a payload out as a checkpoint directory and load it; ModelRefused if it is not one
    this worker can serve, or if the weights are not those of the version it claims."""
    metadata = _metadata(payload)
    name, claimed, config = _claims(metadata)
    into.mkdir(parents=True, exist_ok=True)
    (into / "model.safetensors").write_bytes(payload)
    (into / "config.json").write_text(json.dumps(config))
    try:
        model = load_model(name, into, settings.cadence)
    except Exception as exc:  # the network, its config or its weights: whatever a bad payload breaks
        raise ModelRefused(f"not a servable {name!r} checkpoint ({type(exc).__name__}: {exc})") from exc
    if model.version != claimed:
        raise ModelRefused(f"weights are version {model.version}, the payload claims {claimed}")
    return into


def _claims(metadata: dict) -> tuple[str, str, dict]:
    """(model name, version, config) that the metadata claims, checked for form only."""
    try:
        config, version = json.loads(metadata[CONFIG_KEY]), metadata[VERSION_KEY]
        name = config["model"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelRefused(f"no mqstream checkpoint config in the payload ({type(exc).__name__}: {exc})") from exc
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise ModelRefused(f"version {str(version)[:80]!r} is not a model version")
    return name, version, config


def _metadata(payload: bytes) -> dict:
    """The safetensors header's metadata, read by hand so that nothing else of it is trusted."""
    if len(payload) < 8:
        raise ModelRefused(f"{len(payload)} bytes: not a safetensors payload")
    size = int.from_bytes(payload[:8], "little")
    if size > len(payload) - 8:
        raise ModelRefused(f"a header of {size} bytes in a payload of {len(payload)}: not a safetensors payload")
    try:
        header = json.loads(payload[8:8 + size])
        return dict(header["__metadata__"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelRefused(f"unreadable safetensors header ({type(exc).__name__})") from exc


def publish(settings: Settings, name: str, role: str, payload: bytes) -> None:
    _write(settings, [(name, role, payload)])


def promote(settings: Settings, name: str, scratch: Path) -> str:
    """The candidate becomes served and the served one previous; the version now served. A
    candidate that cannot be served (``unpack`` under ``scratch`` says why) is not promoted."""
    latest = published(settings)
    candidate = _readable(latest, name, "candidate", settings)
    unpack(candidate.payload, scratch / candidate.version, settings)
    _move(settings, name, candidate, latest.get((name, "served")))
    return candidate.version


def rollback(settings: Settings, name: str) -> str:
    """The previous model is served again and the served one becomes previous (a second
    rollback undoes the first); the version now served."""
    latest = published(settings)
    previous = _readable(latest, name, "previous", settings)
    _move(settings, name, previous, latest.get((name, "served")))
    return previous.version


def _readable(latest: dict, name: str, role: str, settings: Settings) -> PublishedModel:
    entry = latest.get((name, role))
    if not isinstance(entry, PublishedModel):
        raise ModelRefused(f"no {name} {role} on {settings.topic('models')}" + (f" ({entry})" if entry else ""))
    return entry


def _move(settings: Settings, name: str, incoming: PublishedModel, served) -> None:
    # previous first: a stop between the two writes leaves the served model where it was
    writes = [(name, "previous", served.payload)] if isinstance(served, PublishedModel) else []
    _write(settings, writes + [(name, "served", incoming.payload)])


def _write(settings: Settings, messages: list[tuple[str, str, bytes]]) -> None:
    """In order, each acknowledged by the broker before the next is sent."""
    producer = KafkaProducer(**kafka_options(settings), max_request_size=MAX_MODEL_BYTES, acks="all")
    try:
        for name, role, payload in messages:
            if role not in ROLES:
                raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
            producer.send(settings.topic("models"), key=f"{name}:{role}".encode(), value=payload).get(timeout=30)
    finally:
        producer.close()


def published(settings: Settings) -> dict[tuple[str, str], PublishedModel | ModelRefused]:
    """The latest message of each (model, role) on the topic; one that cannot be read is there as
    the ModelRefused that says why."""
    latest = {}
    for record in read_topic(settings, settings.topic("models"), partition_count(settings, "models")):
        name, _, role = (record.key or b"").decode(errors="replace").partition(":")
        latest[(name, role)] = _entry(name, role, record)
    return latest


def _entry(name: str, role: str, record) -> PublishedModel | ModelRefused:
    try:
        _, version, config = _claims(_metadata(record.value or b""))
    except ModelRefused as exc:
        return exc
    train = config.get("train") if isinstance(config, dict) else None
    return PublishedModel(name, role, version, train if isinstance(train, dict) else {}, record.offset,
                          record.timestamp, record.value)


def served_checkpoint(settings: Settings, into: Path, wait_s: float, log=print) -> Path:
    """The checkpoint the topic serves for the settings' model, unpacked under ``into`` once it
    is published (waiting up to ``wait_s``); ModelRefused if what is served cannot be."""
    key, deadline, said = (settings.model, "served"), time.monotonic() + wait_s, False
    while True:
        entry = published(settings).get(key)
        if isinstance(entry, ModelRefused):
            raise ModelRefused(f"the served {settings.model} on {settings.topic('models')}: {entry}")
        if entry is not None:
            return unpack(entry.payload, into / entry.version, settings)
        if time.monotonic() > deadline:
            raise ModelRefused(f"no {settings.model} served on {settings.topic('models')} after {wait_s:.0f} s "
                               f"(publish one: mqstream models publish CHECKPOINT --role served)")
        if not said:
            log(f"waiting for a served {settings.model} on {settings.topic('models')} ...")
            said = True
        time.sleep(1.0)


class ServedWatch:
    """What the topic serves for the settings' model, followed by a running worker: one consumer
    kept on the topic's partition, each look reading on from where the last one stopped."""

    def __init__(self, settings: Settings, into: Path):
        self.settings, self.into, self.consumer = settings, into, None
        self.served: tuple[int, PublishedModel | ModelRefused] | None = None  # (offset, entry) of the latest
        self.seen_offset = -1  # of the served entry last looked at

    def next_model(self, serving: QuantileForecaster) -> QuantileForecaster | None:
        """The model newly served, if the topic serves another version than ``serving`` since the
        last look; ModelRefused (once per message) if what it serves cannot replace it."""
        self._read_on()
        if self.served is None or self.served[0] == self.seen_offset:
            return None
        self.seen_offset, entry = self.served
        if isinstance(entry, ModelRefused):
            raise entry
        if entry.version == serving.version:
            return None
        checkpoint = unpack(entry.payload, self.into / entry.version, self.settings)
        try:
            model = load_model(self.settings.model, checkpoint, self.settings.cadence)
        except (ValueError, FileNotFoundError) as exc:  # a checkpoint of another model, published under this name
            raise ModelRefused(f"version {entry.version}: {exc}") from exc
        if (model.horizons, tuple(model.quantiles)) != (serving.horizons, tuple(serving.quantiles)):
            raise ModelRefused(f"version {entry.version} forecasts {model.horizons} periods at quantiles "
                               f"{list(model.quantiles)}; the served one {serving.horizons} at "
                               f"{list(serving.quantiles)}: its consumers would break")
        return model

    def _read_on(self) -> None:
        if self.consumer is None:
            self.consumer = KafkaConsumer(**kafka_options(self.settings), enable_auto_commit=False,
                                          max_partition_fetch_bytes=MAX_MODEL_BYTES, fetch_max_bytes=MAX_MODEL_BYTES)
            self.consumer.assign([TopicPartition(self.settings.topic("models"), 0)])
            self.consumer.seek_to_beginning()
        while batches := self.consumer.poll(timeout_ms=500):
            for record in (r for records in batches.values() for r in records):
                name, _, role = (record.key or b"").decode(errors="replace").partition(":")
                if (name, role) == (self.settings.model, "served"):
                    self.served = (record.offset, _entry(name, role, record))

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
