"""The worker's input path, in batches, around faust's per-message machinery.

faust hands each message to a stream through two tasks, an ``asyncio.wait``, a queue, an event
and an ack (about 230 µs of CPU per message here, FAUST-NOTES.md). The input topics are the
worker's whole load, so their messages skip all that: this consumer passes each fetched batch
of an input partition to one handler and acks it as a whole. Everything else stays faust's:
group membership and rebalances, offset commits (acked offsets only, the producer flushed
first), tables, changelogs, standby replicas and recovery. Only a changelog partition restored
as active skips the per-message path too: each fetched batch is written into its table at once
(``_restore``). The handler gets aiokafka's records as fetched: faust's message object for
each (12.5% of the worker's CPU while it ingests, bench/profile-ingest.md at c24936f) is made
only for the messages that go faust's way. Register with ``broker="mqkafka://..."`` after
importing this module.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, NamedTuple, Sequence

from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

SCHEME = "mqkafka"
BatchHandler = Callable[[TP, Sequence[ConsumerRecord]], Awaitable[int]]  # -> how many it handled


class BatchConsumer(driver.Consumer):
    batch_topics: frozenset[str] = frozenset()  # set by ``route``
    on_batch: BatchHandler | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._dropped: dict[TP, int] = {}  # partition -> first offset of a batch left unhandled
        self._through_faust: set[TP] = set()  # partitions whose messages took faust's per-message path

    def route(self, topics: set[str], handler: BatchHandler) -> None:
        """Messages of ``topics`` go to ``handler`` a fetched batch per partition at a time."""
        self.batch_topics, self.on_batch = frozenset(topics), handler

    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover (runs in the worker)
        while not (self._stopped.is_set() or fetcher._stopped.is_set()):
            if not self.flow_active:
                await self.wait(self.can_resume_flow)
            if self._dropped:
                await self._read_dropped_again()
            generation = self.app.consumer_generation_id  # before the fetch: a rebalance may end during it
            records, active = await self._wait_next_records(timeout=1.0)
            if not records or self.should_stop:
                continue
            await self._handle(list(records.items()), active, generation)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float):
        """faust's fetch, given a copy of the active partitions. The consumer thread reads the
        set for as long as it waits for records, while a recovery here pauses and resumes
        partitions, and aiokafka reads an empty set as every partition: the records of paused
        partitions came back, were skipped, and were lost where no commit let faust's seek at
        the resume find them (the group's lag stayed at the topic's end)."""
        return await super()._getmany(None if active_partitions is None else set(active_partitions), timeout)

    async def _handle(self, batches: list[tuple[TP, list]], active: set[TP] | None, generation: int) -> None:
        """Each fetched batch to its handler, in order, unless the flow stopped since the fetch."""
        for index, (tp, batch) in enumerate(batches):
            if not self.flow_active or self.app.consumer_generation_id != generation:
                self._drop(batches[index:])
                return
            if not (active is None or tp in active or tp in self._buffered_partitions):
                self._drop([(tp, batch)])  # paused since the fetch: read again where resumed
                continue
            records = await self._fresh(tp, batch)
            if not records:
                continue
            if tp.topic in self.batch_topics:
                records = await self._deliver(tp, records)
            elif self._restores(tp):
                self._restore(tp, [self._to_message(tp, record) for record in records])
            else:
                self._through_faust.add(tp)
                for record in records:
                    await self.wait_first(self.callback(self._to_message(tp, record)), self.suspend_flow.wait())
            if records:
                self._read_offset[tp] = records[-1].offset

    def _restores(self, tp: TP) -> bool:
        """Whether a fetched changelog batch goes straight into its table (``_restore``): a
        partition faust is restoring as active, none of whose messages ever went its per-message
        way (still queued there, they could land after the batch and undo it), of a table with
        no ``on_changelog_event`` callback (faust's way calls it for every message; ours never)."""
        recovery = self.app.tables.recovery
        return (recovery.in_recovery and tp in recovery.active_tps and tp not in self._through_faust
                and recovery.tp_to_table[tp]._on_changelog_event is None)

    def _restore(self, tp: TP, messages: list[Message]) -> None:
        """A changelog batch written into the table's store at once, as faust's recovery writes
        its buffers, and counted as read; then faust's own end of recovery, if this was the
        last to read. faust passes each changelog message through a queue to its recovery task
        (a task pair, a queue and a debug line each, then every partition's progress summed):
        ~240 µs a message, a cold start at 100,000 items took 76 s (bench/recovery.py)."""
        recovery = self.app.tables.recovery
        read = recovery.active_offsets.get(tp)
        fresh = [message for message in messages if read is None or message.offset > read]
        if fresh:
            recovery.tp_to_table[tp].apply_changelog_batch([ChangelogEvent(message) for message in fresh])
            recovery.active_offsets[tp] = fresh[-1].offset
        if not recovery.need_recovery():  # as faust's recovery task ends it (its _slurp_changelogs)
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()

    def _drop(self, batches) -> None:
        """Leave fetched batches unhandled: a rebalance has begun, or their partitions were
        paused since the fetch. The first offset of each input partition's batch is kept so
        that ``_read_dropped_again`` can read it once the flow resumes; changelog partitions are
        faust's (its recovery and standbys seek them)."""
        for tp, records in batches:
            if tp.topic not in self.batch_topics:
                continue
            self._dropped[tp] = min(records[0].offset, self._dropped.get(tp, records[0].offset))

    async def _read_dropped_again(self) -> None:
        """Seek back over dropped batches where nothing else will read them again. A new
        assignment restarts each partition at its committed offset, or at the earliest one where
        none is committed: that covers batches fetched before it. A batch fetched under the
        new assignment and dropped before the flow resumed is past the consumer's position, and
        faust's seek at the resume moves only partitions with a committed offset: without this,
        such a batch of a partition no commit had reached yet was never read (the group's lag
        stayed at the topic's end)."""
        for tp, first in list(self._dropped.items()):
            if not self.flow_active:
                return  # another rebalance: its resume comes back here
            del self._dropped[tp]
            try:
                if tp in self.assignment() and rewinds(first, await self.position(tp), self._committed_offset.get(tp)):
                    await self.seek(tp, first)
            except IllegalStateError:
                pass  # revoked while asked: its next owner starts at the committed offset

    async def _fresh(self, tp: TP, records: Sequence[ConsumerRecord]) -> list[ConsumerRecord]:
        """The records not read yet; a gap in offsets (compaction, aborted transactions) is
        recorded so that commits can pass it, as faust does."""
        read = self._read_offset.get(tp)
        out = []
        for record in records:
            if read is not None and record.offset < read:
                continue
            if read and record.offset - read > 1 and self.app.topics.acks_enabled_for(record.topic):
                await self._add_gap(tp, read + 1, record.offset)
            read = record.offset
            out.append(record)
        return out

    async def _deliver(self, tp: TP, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """The records the handler handled, acked; those it left are dropped, to be read
        again after the rebalance that stopped it."""
        # While handled, a rebalance waits for the batch: faust's wait_empty waits while any
        # message is tracked as unacked, so a message of the last record stands for the batch
        # (tracking every message in faust's WeakSet was a twentieth of the worker's CPU).
        last = self._to_message(tp, records[-1])
        self._unacked_messages.add(last)
        try:
            handled = await self.on_batch(tp, records)
        finally:
            self._unacked_messages.discard(last)  # acked below, dropped, or read again after a restart
        self.ack_all(tp, records[:handled])
        if handled < len(records):
            self._drop([(tp, records[handled:])])
        return records[:handled]

    def ack_all(self, tp: TP, records: Sequence[ConsumerRecord]) -> None:
        """faust's ``ack`` of each of one partition's records, in offset order, in one step
        (a call a message was a twentieth of the worker's CPU). The offsets only: no message
        here is tracked as unacked (``_deliver`` stops tracking its batch's before this)."""
        if not records or not self.app.topics.acks_enabled_for(tp.topic):
            return
        with ack_lock:
            committed, index = self._committed_offset[tp], self._acked_index[tp]
            offsets = [r.offset for r in records if (committed is None or r.offset >= committed)
                       and r.offset not in index]
            index.update(offsets)
            self._acked[tp].extend(offsets)
            self._n_acked += len(offsets)
            notify(self._waiting_for_ack)

    async def commit_acked(self) -> bool:
        """Commit every acked offset of the input topics and make sure the broker holds them.
        True then. False, with the batch in hand to be given up and read again, if a rebalance
        (or a stop) begins first, since its revoke waits for that batch. Acks behind a gap are
        not waited for: only the loop that called can read the gap again, and the events they
        stand for are covered by the offsets noted before the close (streams/processor.py).
        faust's ``commit`` returns without committing while another commit is under way, and
        counts offsets as committed even where the broker refused them (a rebalance had begun
        there, not yet here): the last word is a commit of those offsets, whose answer is the
        broker's."""
        generation, attempts = self.app.consumer_generation_id, 0
        while not self._interrupted(generation):
            inputs = [tp for tp in self.assignment() if tp.topic in self.batch_topics]
            pending = [tp for tp in inputs if self._acked.get(tp)
                       and not behind_gap(self._acked[tp], self._committed_offset.get(tp))]
            if not pending:
                await self.maybe_wait_for_commit_to_finish()  # it may have taken the last acks
                held = {tp: self._committed_offset[tp] for tp in inputs if self._committed_offset.get(tp)}
                return not self._interrupted(generation) and (not held or await self._commit(held))
            if not await self.commit():
                attempts += 1
                if attempts % 100 == 0:
                    self.log.warning("acked offsets still not committed after %d attempts", attempts)
                await asyncio.sleep(0.05)
        return False

    def _interrupted(self, generation: int) -> bool:
        return self.should_stop or not self.flow_active or self.app.consumer_generation_id != generation


class ChangelogEvent(NamedTuple):
    """A changelog message as a table's ``apply_changelog_batch`` reads faust's events: their message only."""
    message: Message


def behind_gap(acked: Sequence[int], committed: int | None) -> bool:
    """Whether acked offsets wait behind a gap that faust's commit cannot pass (its
    ``_new_offset`` rule): the acks of a batch finished under an earlier assignment of the
    partition, past offsets read again from the committed one since."""
    return bool(acked) and bool(committed) and min(acked) - committed > 1


def rewinds(first: int, position: int | None, committed: int | None) -> bool:
    """Whether a partition must seek back to ``first``, the first offset of a dropped batch:
    only if the consumer is past it (the batch came under this assignment) and no commit
    covers it (a committed offset past ``first`` means another worker handled it)."""
    return position is not None and position > first and (committed is None or committed <= first)


class Transport(driver.Transport):
    Consumer = BatchConsumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
