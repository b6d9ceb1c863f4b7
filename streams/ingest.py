"""The worker's input path, in batches, around faust's per-message machinery.

faust hands each message to a stream through two tasks, an ``asyncio.wait``, a queue, an event
and an ack (about 230 µs of CPU per message here, FAUST-NOTES.md). The input topics are the
worker's whole load, so their messages skip all that: this consumer passes each fetched batch
of an input partition to one handler and acks it as a whole. Everything else stays faust's:
group membership and rebalances, offset commits (acked offsets only, the producer flushed
first), tables, changelogs, standby replicas and recovery, whose changelog messages still take
the per-message path. Register with ``broker="mqkafka://..."`` after importing this module.
"""
from __future__ import annotations

from typing import Awaitable, Callable, Sequence

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

SCHEME = "mqkafka"
BatchHandler = Callable[[TP, Sequence[Message]], Awaitable[None]]


class BatchConsumer(driver.Consumer):
    batch_topics: frozenset[str] = frozenset()  # set by ``route``
    on_batch: BatchHandler | None = None

    def route(self, topics: set[str], handler: BatchHandler) -> None:
        """Messages of ``topics`` go to ``handler`` a fetched batch per partition at a time."""
        self.batch_topics, self.on_batch = frozenset(topics), handler

    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover (runs in the worker)
        while not (self._stopped.is_set() or fetcher._stopped.is_set()):
            records, _ = await self._wait_next_records(timeout=1.0)
            if not records or self.should_stop:
                continue
            generation = self.app.consumer_generation_id
            for tp, batch in records.items():
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    break  # a rebalance began: the rest is fetched again from committed offsets
                messages = await self._fresh(tp, batch)
                if not messages:
                    continue
                if tp.topic in self.batch_topics:
                    await self._deliver(tp, messages)
                else:
                    for message in messages:
                        await self.wait_first(self.callback(message), self.suspend_flow.wait())
                self._read_offset[tp] = messages[-1].offset
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()

    async def _fresh(self, tp: TP, records) -> list[Message]:
        """Messages not read yet, as faust messages; a gap in offsets (compaction, aborted
        transactions) is recorded so that commits can pass it, as faust does."""
        read = self._read_offset.get(tp)
        out = []
        for record in records:
            if read is not None and record.offset < read:
                continue
            if read and record.offset - read > 1 and self.app.topics.acks_enabled_for(record.topic):
                await self._add_gap(tp, read + 1, record.offset)
            read = record.offset
            out.append(self._to_message(tp, record))
        return out

    async def _deliver(self, tp: TP, messages: list[Message]) -> None:
        # tracked as unacked while handled, so a rebalance waits for the batch (wait_empty)
        self._unacked_messages.update(messages)
        try:
            await self.on_batch(tp, messages)
        except BaseException:
            self._unacked_messages.difference_update(messages)  # redelivered after the restart
            raise
        for message in messages:
            self.ack(message)


class Transport(driver.Transport):
    Consumer = BatchConsumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
