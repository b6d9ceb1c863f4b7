"""What the worker writes besides its tables: a close's forecasts, change events and scored
errors, and the dead letters of refused input; with the counters and the rolling quality
window those outputs feed."""
from __future__ import annotations

from collections import defaultdict

import faust
from aiokafka.structs import ConsumerRecord

from mqstream.models.protocol import QuantileForecaster
from mqstream.periods import Cadence
from mqstream.state.refresh import Refresh
from mqstream.streams import messages
from mqstream.streams.blocks import Record, partitioner, send_records
from mqstream.streams.changes import ChangeRule, change_message, material_changes
from mqstream.streams.metrics import QualityWindow, WorkerMetrics


SERVED_OUTPUTS = {"forecasts": "forecasts", "forecasts-latest": "forecasts-latest",
                  "forecast-changes": "forecast-changes", "forecast-errors": "forecast-errors"}
# a candidate's forecasts and errors, on topics of their own: nothing downstream takes them for the served model's
SHADOW_OUTPUTS = {"forecasts": "forecasts-shadow", "forecast-errors": "forecast-errors-shadow"}


class Publisher:
    """The outputs of the served model's closes or, with ``role`` "candidate", of a shadow's
    (streams/shadow.py): forecasts and errors only, on the shadow topics, counted in nothing
    but the candidate's rolling wQL."""

    def __init__(self, app: faust.App, names: dict[str, str], model: QuantileForecaster, change_rule: ChangeRule,
                 decimals: int, metrics: WorkerMetrics, quality: QualityWindow, cadence: Cadence,
                 role: str = "served"):
        self.app, self.names, self.model, self.cadence = app, names, model, cadence
        self.change_rule, self.decimals = change_rule, decimals
        self.metrics, self.quality, self.role = metrics, quality, role
        self.outputs = SERVED_OUTPUTS if role == "served" else SHADOW_OUTPUTS

    async def publish(self, refresh: Refresh) -> None:
        """A close's outputs, flushed: every forecast (to ``forecasts`` and the compacted
        ``forecasts-latest``), its change event where the rule finds one, and every scored day."""
        outputs = self._records(refresh)
        for output, records in outputs.items():
            await self._send_all(self.names[self.outputs[output]], records)
        await self.flush()
        if self.role == "served":
            self.metrics.forecasts.inc(len(refresh.issued))
            self.metrics.changes.inc(len(outputs["forecast-changes"]))
            self.metrics.errors.inc(len(refresh.scored))
        self._track_quality(refresh)

    def _records(self, refresh: Refresh) -> dict[str, list[Record]]:
        now, cadence, model = messages.utc_now(), self.cadence, self.model
        head = messages.headers(model, cadence)
        keys = [issued.item_id.encode() for issued in refresh.issued]
        forecasts = [(key, body, head) for key, body in
                     zip(keys, messages.forecast_messages(refresh.issued, model, now, cadence))]
        errors = [(scored.item_id.encode(), body, head) for scored, body in
                  zip(refresh.scored, messages.error_messages(refresh.scored, model, now, self.decimals, cadence))]
        outputs: dict[str, list[Record]] = {"forecasts": forecasts, "forecast-errors": errors}
        if "forecasts-latest" in self.outputs:
            outputs["forecasts-latest"] = forecasts
        if "forecast-changes" in self.outputs:
            changes = material_changes(refresh.issued, model.quantiles, self.change_rule, cadence)
            outputs["forecast-changes"] = [(key, change_message(change, self.change_rule, model, now, cadence), head)
                                           for key, change in zip(keys, changes) if change is not None]
        return outputs

    async def dead_letter(self, message: ConsumerRecord, reason: str, detail: str) -> None:
        """The refused message's own bytes, its reason and origin in headers, and counted."""
        self.metrics.dead_letters.labels(reason).inc()
        if reason == "too_late":
            self.metrics.late.inc()
        await self._send("dead-letters", message.key, message.value, [
            ("reason", reason.encode()), ("detail", detail.encode()),
            ("source-topic", message.topic.encode()), ("source-partition", str(message.partition).encode()),
            ("source-offset", str(message.offset).encode())])

    async def flush(self) -> None:
        await self.app.producer.flush()

    async def _send(self, output: str, key: bytes, value: bytes, headers) -> None:
        """One record, partitioned by key like the inputs."""
        await self.app.producer.send(self.names[output], key, value, None, None, headers)

    async def _send_all(self, topic: str, records: list[Record]) -> None:
        """Many records, as record batches per partition (streams/blocks.py), partitioned by
        key like the inputs, each partition's in the order given."""
        if not records:
            return
        producer = self.app.producer._ensure_producer()
        partition_for, by_partition = await partitioner(producer, topic), defaultdict(list)
        for record in records:
            by_partition[partition_for(record[0])].append(record)
        for partition, block in by_partition.items():
            await send_records(producer, topic, partition, block)

    def _track_quality(self, refresh: Refresh) -> None:
        self.quality.add([scored.errors for scored in refresh.scored])
        if self.role == "served":
            self.quality.publish(self.metrics)
        wql = self.quality.wql()
        if wql is not None:
            self.metrics.rolling_wql.labels(self.role).set(wql)
