"""The faust worker, declared: the app, its topics, tables and timers, and the parts that do
the work (streams/processor.py: batches in; streams/close.py: day closes; streams/publisher.py:
outputs; streams/gauges.py: the sampled gauges).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import faust
from kafka.errors import KafkaError

import mqstream.streams.store  # noqa: F401  registers the partitioned-rocksdb store
from mqstream.config import ConfigError, Settings
from mqstream.kafka_auth import faust_credentials
from mqstream.models.protocol import QuantileForecaster
from mqstream.models.registry import load_model as from_registry
from mqstream.state.refresh import RefreshPolicy
from mqstream.streams import gauges, ingest
from mqstream.streams.changes import ChangeRule
from mqstream.streams.metrics import QualityWindow, WorkerMetrics
from mqstream.streams.processor import Processor
from mqstream.streams.publisher import Publisher
from mqstream.streams.shadow import Shadow
from mqstream.streams.store import SCHEME
from mqstream.streams.tables import Tables
from mqstream.streams.topics import TABLES, topic_names

RAW = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
INPUTS = ("sales", "page-views", "forecast-errors")
MODEL_WAIT_S = 600.0  # how long a worker serving the models topic waits for a first model to be published
MODEL_LOOK_S = 5.0  # how often a worker serving the models topic looks for another served version
log = logging.getLogger("mqstream")


# faust opens every partition's database with a 2 GiB block cache and three 64 MiB memtables:
# a worker closing 20,000 items daily grew to 10.6 GB of RSS in 28 closes (bench memory).
# A close reads each item model once a day, so a cache buys little; memtables bound the rest.
ROCKSDB_OPTIONS = {"block_cache_size": 32 * 2**20, "write_buffer_size": 32 * 2**20, "max_write_buffer_number": 2}


def load_model(settings: Settings) -> QuantileForecaster:
    """The model the settings name, for their period: from its checkpoint, or as the models
    topic serves it (waiting for one to be published). A missing, mismatched or refused
    checkpoint is a settings error (named, exit 2), not a crash."""
    from mqstream.streams.models_topic import ModelRefused, served_checkpoint

    try:
        checkpoint = settings.checkpoint_path
        if settings.model_source == "topic" and checkpoint is not None:
            checkpoint = served_checkpoint(settings, Path(settings.data_dir) / "models", MODEL_WAIT_S)
        return from_registry(settings.model, checkpoint, settings.cadence)
    except ModelRefused as exc:
        raise ConfigError(f"setting 'model_source' topic: {exc}") from exc
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"setting 'model' / 'checkpoint': {exc}") from exc


def build_app(settings: Settings, model: QuantileForecaster, url: str = "") -> tuple[faust.App, Processor]:
    """The app and its processor; ``url`` is this worker's HTTP address, which faust tells the
    other workers of the group (lookups of their items are redirected there)."""
    app = faust.App(
        settings.app_id,
        broker=f"{ingest.SCHEME}://" + settings.kafka_bootstrap.replace(",", ";"),
        broker_credentials=faust_credentials(settings),
        store=f"{SCHEME}://",  # RocksDB (rocksdict), recovered from the changelogs
        datadir=str(Path(settings.data_dir) / "worker"),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_enabled=False,
        canonical_url=url or None,
        broker_session_timeout=settings.session_timeout,
        broker_max_poll_interval=settings.max_poll_interval,
        table_standby_replicas=settings.standby_replicas,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 4),
        producer_linger=0.05,  # batches changelog writes: a tenth of the broker CPU (FAUST-NOTES)
        producer_max_batch_size=512 * 1024,  # 16 kB by default: under one item model, so one per request
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=settings.fetch_bytes,  # bench ingest: 8 MiB took 1.2-1.8x the events/s of 1 MiB
        autodiscover=False,
    )
    names = topic_names(settings)
    tables = Tables(*(app.Table(name, partitions=settings.partitions, key_type=bytes, value_type=bytes,
                                options=dict(ROCKSDB_OPTIONS)) for name in TABLES), held_items=settings.held_items)
    policy = RefreshPolicy(settings.cadence.count(settings.active_days), settings.cadence.count(settings.history_days),
                           settings.refresh_batch)
    metrics, quality = WorkerMetrics(), QualityWindow(model.quantiles)
    announce(model, policy, metrics)
    change_rule = ChangeRule(settings.change_share, settings.stock_level, decimals=policy.decimals)
    publisher = Publisher(app, names, model, change_rule, policy.decimals, metrics, quality, settings.cadence)
    processor = Processor(settings, model, policy, tables, names, publisher, metrics)

    inputs = {names[name] for name in INPUTS}
    for name in inputs:  # subscribed by the consumer; no agent: see streams/ingest.py
        app.topics.add(app.topic(name, schema=RAW, partitions=settings.partitions))
    app.consumer.route(inputs, processor.on_batch)

    @app.on_partitions_revoked.connect
    async def forget_clocks(app, revoked, **kwargs):
        processor.forget({tp.partition for tp in revoked})

    @app.timer(interval=5.0)
    async def sample_gauges():
        await gauges.sample_lag(app, inputs, metrics)
        gauges.sample_watermarks(processor.clocks, metrics)

    @app.timer(interval=60.0)
    async def sample_state():
        await gauges.sample_state(tables, sorted({tp.partition for tp in gauges.assigned_inputs(app, inputs)}),
                                  metrics)

    if settings.model_source == "topic":
        def shadow_of(candidate: QuantileForecaster) -> Shadow:
            quality = QualityWindow(candidate.quantiles)
            return Shadow(candidate, policy, Publisher(app, names, candidate, change_rule, policy.decimals, metrics,
                                                       quality, settings.cadence, role="candidate"), settings.cadence)

        follow_models_topic(app, settings, processor, metrics, shadow_of)
    return app, processor


def follow_models_topic(app: faust.App, settings: Settings, processor: Processor, metrics: WorkerMetrics,
                        shadow_of: Callable[[QuantileForecaster], Shadow]) -> None:
    """At a look every MODEL_LOOK_S: switch to each version the models topic serves, and run
    its candidate in shadow. A model that cannot stand in for the served one is refused with
    its reason, and the served model goes on serving."""
    from mqstream.streams.models_topic import ModelsWatch

    watch = ModelsWatch(settings, Path(settings.data_dir) / "models")
    metrics.shadow.info({"version": ""})

    @app.timer(interval=MODEL_LOOK_S)
    async def look_at_the_models_topic():
        serving, shadow = processor.model, processor.closer.shadow
        try:
            look = await app.loop.run_in_executor(None, watch.look, serving, shadow and shadow.model.version)
        except KafkaError as exc:  # the broker away for a moment: the next look tries again
            log.warning("could not read %s: %s", settings.topic("models"), exc)
            return
        for refusal in look.refused:
            metrics.refused.inc()
            log.warning("refused %s (still serving %s %s)", refusal, serving.name, serving.version)
        if look.serve is not None:
            await processor.switch(look.serve)
            metrics.switches.inc()
            announce(look.serve, processor.policy, metrics)
            log.info("serving %s %s (was %s) from each partition's next close", look.serve.name, look.serve.version,
                     serving.version)
        if look.shadow_changed:
            await processor.run_in_shadow(None if look.shadow is None else shadow_of(look.shadow))
            metrics.shadow.info({"version": "" if look.shadow is None else look.shadow.version})
            metrics.rolling_wql.remove("candidate")  # the last candidate's: no longer measured
            log.info("running %s in shadow", "no candidate" if look.shadow is None else look.shadow.version)


def announce(model: QuantileForecaster, policy: RefreshPolicy, metrics: WorkerMetrics) -> None:
    """``mqstream_model_info`` of the model served, with the history its states depend on and
    the history the worker keeps; a warning where it keeps less: a state made again from the
    kept history (a new version, a promotion) is then not the one the model would have made."""
    metrics.model.info({"name": model.name, "version": model.version, "history_needed": str(model.history_needed),
                        "history_kept": str(policy.history_periods)})
    if policy.history_periods < model.history_needed:
        log.warning("%s %s reads %d periods back; the worker keeps %d (history_days): states it makes again "
                    "for a new version see only those", model.name, model.version, model.history_needed,
                    policy.history_periods)


def is_ready(app: faust.App) -> bool:
    """Assigned partitions recovered and consuming (faust's recovery has finished). Asked from
    the HTTP thread, so it must not make the consumer (``app.consumer`` would, before faust
    does: a probe at start-up then hung the worker for good)."""
    consumer = app._consumer
    if consumer is None:
        return False
    return bool(consumer.assignment()) and app.tables.recovery.completed.is_set() and not app.rebalancing
