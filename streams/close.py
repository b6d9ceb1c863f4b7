"""A partition's close: every tracked item whose periods up to ``through`` are complete gets
its model advanced, its forecasts issued and its earlier forecasts scored
(``state.refresh.close_items``), then the outputs and the state are written in the order that
makes a crash at any point safe."""
from __future__ import annotations

import ctypes
import ctypes.util
import time

from mqstream.models.protocol import QuantileForecaster
from mqstream.periods import Cadence
from mqstream.state.item import ItemModel, ItemState
from mqstream.state.refresh import RefreshPolicy, close_items, is_dormant, new_model, rebuild_states
from mqstream.streams.metrics import WorkerMetrics
from mqstream.streams.publisher import Publisher
from mqstream.streams.shadow import Shadow
from mqstream.streams.tables import MODEL_VERSION, Tables


CHUNK_BATCHES = 8  # model batches (``refresh_batch`` items each) in a chunk of a partition's close
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


class PartitionClose:
    def __init__(self, tables: Tables, model: QuantileForecaster, policy: RefreshPolicy, publisher: Publisher,
                 metrics: WorkerMetrics, cadence: Cadence):
        self.tables, self.model, self.policy, self.cadence = tables, model, policy, cadence
        self.publisher, self.metrics = publisher, metrics
        self.shadow: Shadow | None = None  # a candidate run beside the served model

    async def close(self, partition: int, tracked: set[bytes], through: int) -> None:
        """Close the periods up to ``through`` for the ``tracked`` items of ``partition``; items
        left dormant by it leave ``tracked`` (they come back at their next event). A chunk of
        items at a time, each written before the next is read: a partition's item models
        (~25 kB each) are never all in memory at once."""
        keys, size = list(tracked), self.policy.batch_size * CHUNK_BATCHES
        for start in range(0, len(keys), size):
            await self._close_chunk(partition, keys[start:start + size], tracked, through)
        if keys:
            release_free_memory()

    async def _close_chunk(self, partition: int, keys: list[bytes], tracked: set[bytes], through: int) -> None:
        items, item_models = self._due(partition, keys, through)
        if not items:
            return
        started = time.perf_counter()
        shadow_items = [ItemState.from_bytes(item.to_bytes()) for item in items] if self.shadow else []
        before = [item.closed_through for item in items]
        refresh = close_items(items, item_models, through, self.model, self.policy)
        closed = [i for i, item in enumerate(items) if item.closed_through != before[i]]
        self.metrics.refresh_items.observe(len(closed))
        # Outputs first, then item models, then items, each flushed: after a crash the close
        # is redone (outputs repeat, never go missing) and an item model is never behind its item.
        tables = self.tables
        await self.publisher.publish(refresh)
        await tables.put(tables.item_models, partition,
                         [(items[i].item_id.encode(), item_models[i].to_bytes()) for i in closed])
        await self.publisher.flush()
        await tables.put_items(partition, {items[i].item_id.encode(): items[i] for i in closed})
        for item, item_model in zip(items, item_models):
            if is_dormant(item, item_model, through, self.policy, self.model.horizons):
                tracked.discard(item.item_id.encode())
        if self.shadow is not None:  # after the served model's outputs and state: a shadow is never in their way
            await self.shadow.close(partition, shadow_items, through)
        self.metrics.refresh_seconds.observe(time.perf_counter() - started)

    async def claim(self, partition: int, rebuild: bool) -> None:
        """Mark the partition's item models as this model version's, first making every one
        again from its item's kept history (``rebuild_states``) where another version wrote
        them. Marked last: a crash during the rebuild repeats it, from the same histories."""
        tables, batch = self.tables, self.policy.batch_size
        keys = [key for key, _ in tables.scan(tables.item_models, partition)] if rebuild else []
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            items = [tables.item(partition, key) for key in chunk]
            item_models = [ItemModel.from_bytes(tables.get(tables.item_models, partition, key)) for key in chunk]
            rebuild_states(items, item_models, self.model, self.cadence)
            await tables.put(tables.item_models, partition,
                             [(key, item_model.to_bytes()) for key, item_model in zip(chunk, item_models)])
            self.metrics.rebuilt.inc(len(chunk))
        await tables.put(tables.watermarks, partition, [(MODEL_VERSION, self.model.version.encode())])

    def _due(self, partition: int, keys: list[bytes], through: int) -> tuple[list[ItemState], list[ItemModel]]:
        """The items of ``keys`` not closed through ``through`` yet, with their item models (a
        new one for an item's first close)."""
        items, item_models = [], []
        for key in keys:
            item = self.tables.item(partition, key)
            raw_model = self.tables.get(self.tables.item_models, partition, key)
            if raw_model is None:  # the item's first close: its model starts now
                if item.born > through:
                    continue
                item_model = new_model(item.launch_info(item.born, self.cadence), item.born, self.model)
            else:
                item_model = ItemModel.from_bytes(raw_model)
            if item.closed_through < through:
                items.append(item)
                item_models.append(item_model)
        return items, item_models


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system; True if any were. A close allocates and
    frees ~200 MB of values a chunk, and glibc's malloc keeps freed memory it cannot return
    from the top of its heap: bench memory, 100,000 items, one close, 2.00 GB resident after
    the close without this and 1.56 GB with it; the call takes ~0.1 s on a 2 GB heap. Where
    the C library has no ``malloc_trim`` (not glibc) there is nothing to do."""
    trim = getattr(_LIBC, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False
