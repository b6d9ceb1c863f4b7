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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from safetensors.torch import load_file, save

from mqstream.config import Settings
from mqstream.kafka_auth import kafka_options
from mqstream.models.protocol import QuantileForecaster
from mqstream.models.registry import load_model
from mqstream.models.scores import wql
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


@dataclass(frozen=True)
class Comparison:
    """The served and the candidate model's wQL on the forecasts both made (same item, origin
    and target), over the last target periods the candidate's were scored on."""
    targets: list[str]
    forecasts: int
    served_wql: float
    candidate_wql: float

    def __str__(self) -> str:
        span = f"{self.targets[0]}..{self.targets[-1]}" if self.targets else "no period"
        return (f"wQL over {len(self.targets)} periods ({span}), {self.forecasts} forecasts of both: "
                f"served {self.served_wql:.4f}, candidate {self.candidate_wql:.4f}")


def compare(settings: Settings, served: str, candidate: str, periods: int) -> Comparison:
    """``served`` (from ``forecast-errors``) against ``candidate`` run in shadow (from
    ``forecast-errors-shadow``) over the last ``periods`` targets the candidate was scored on."""
    by_served, by_candidate = _scored(settings, "forecast-errors", served), _scored(settings, "forecast-errors-shadow",
                                                                                    candidate)
    targets = sorted({target for _, target, _ in by_candidate})[-periods:]
    pairs = [key for key in by_candidate if key[1] in targets and key in by_served]
    if not pairs:
        return Comparison(targets, 0, float("nan"), float("nan"))
    quantiles = by_candidate[pairs[0]][2]
    actuals = np.array([by_served[key][0] for key in pairs])
    try:
        return Comparison(targets, len(pairs), *(wql(actuals, np.array([scored[key][1] for key in pairs]), quantiles)
                                                 for scored in (by_served, by_candidate)))
    except ValueError:  # every actual zero: wQL says nothing
        return Comparison(targets, len(pairs), float("nan"), float("nan"))


def _scored(settings: Settings, topic: str, version: str) -> dict[tuple[str, str, str], tuple[float, list, list]]:
    """(item, target, origin) -> (actual, forecast, quantiles) of the errors ``version`` scored."""
    scored = {}
    for record in read_topic(settings, settings.topic(topic)):
        body = orjson.loads(record.value)
        if body["model"]["version"] == version:
            for origin, forecast in zip(body["origins"], body["forecasts"]):
                scored[(body["item_id"], body["target"], origin)] = (body["actual"], forecast, body["quantiles"])
    return scored


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



@dataclass
class Look:
    """What a look at the topic found: a version to serve instead, and the candidate to run in
    shadow where it changed (``shadow_changed``; None: no candidate to run)."""
    serve: QuantileForecaster | None = None
    shadow_changed: bool = False
    shadow: QuantileForecaster | None = None
    refused: list[ModelRefused] = field(default_factory=list)


class ModelsWatch:
    """The topic followed by a running worker: one consumer kept on its partition, each look
    reading on from where the last stopped. A message that cannot stand in for the served
    model is refused once, with its reason."""

    def __init__(self, settings: Settings, into: Path):
        self.settings, self.into, self.consumer = settings, into, None
        self.latest: dict[str, tuple[int, PublishedModel | ModelRefused]] = {}  # role -> (offset, entry)
        self.refused: set[int] = set()  # offsets of the messages refused
        self.loaded: dict[str, QuantileForecaster] = {}  # version -> model, for a candidate seen again

    def look(self, serving: QuantileForecaster, shadowing: str | None) -> Look:
        """Against the version ``serving`` and the candidate version ``shadowing`` (None: none)."""
        self._read_on()
        look = Look()
        served = self._entry("served", look)
        if served is not None and served.version != serving.version:
            look.serve = self._model(served, serving, look)
        serving_version = (look.serve or serving).version
        candidate = self._entry("candidate", look)
        wanted = candidate.version if candidate is not None and candidate.version != serving_version else None
        if wanted != shadowing:
            look.shadow_changed = True
            look.shadow = None if wanted is None else self._model(candidate, serving, look)
        return look

    def _entry(self, role: str, look: Look) -> PublishedModel | None:
        offset, entry = self.latest.get(role, (-1, None))
        if isinstance(entry, ModelRefused):
            if offset not in self.refused:
                self.refused.add(offset)
                look.refused.append(ModelRefused(f"the {role} {self.settings.model}: {entry}"))
            return None
        return None if offset in self.refused else entry

    def _model(self, entry: PublishedModel, serving: QuantileForecaster, look: Look) -> QuantileForecaster | None:
        if entry.version not in self.loaded:
            try:
                self.loaded[entry.version] = self._load(entry, serving)
            except ModelRefused as exc:
                self.refused.add(entry.offset)
                look.refused.append(ModelRefused(f"the {entry.role} {entry.name} {entry.version}: {exc}"))
                return None
        return self.loaded[entry.version]

    def _load(self, entry: PublishedModel, serving: QuantileForecaster) -> QuantileForecaster:
        checkpoint = unpack(entry.payload, self.into / entry.version, self.settings)
        try:
            model = load_model(self.settings.model, checkpoint, self.settings.cadence)
        except (ValueError, FileNotFoundError) as exc:  # a checkpoint of another model, published under this name
            raise ModelRefused(str(exc)) from exc
        if (model.horizons, tuple(model.quantiles)) != (serving.horizons, tuple(serving.quantiles)):
            raise ModelRefused(f"it forecasts {model.horizons} periods at quantiles {list(model.quantiles)}, the "
                               f"served one {serving.horizons} at {list(serving.quantiles)}: its consumers would break")
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
                if name == self.settings.model:
                    self.latest[role] = (record.offset, _entry(name, role, record))
