"""The batch consumer's rules (streams/ingest.py), without Kafka: which fetched batches it hands
on, when it reads a dropped batch again, which acked offsets a close waits to see committed
by the broker, and how a restored changelog batch is written."""
import asyncio
from types import SimpleNamespace

import faust
import pytest
from faust.types import TP

from mqstream.streams.ingest import BatchConsumer, behind_gap, rewinds
from mqstream.streams.store import SCHEME as STORE_SCHEME


def test_a_fetch_asks_for_the_partitions_active_when_it_began():
    active = {TP("sales", 0)}

    class Thread:  # faust's consumer thread, reading the partitions while it waits for records
        async def getmany(self, partitions, timeout):
            active.clear()  # meanwhile a recovery paused them: aiokafka takes an empty set for all
            return {tp: [] for tp in partitions}

    consumer = BatchConsumer.__new__(BatchConsumer)
    consumer._thread = Thread()
    assert asyncio.run(consumer._getmany(active, 1.0)) == {TP("sales", 0): []}


class FetchedConsumer:
    """What ``_handle`` reads of faust's consumer, with a handler that takes every batch."""

    batch_topics = frozenset({"sales"})
    flow_active = True

    def __init__(self):
        self.app = SimpleNamespace(consumer_generation_id=1)
        self._buffered_partitions, self._dropped, self._read_offset, self.handled = set(), {}, {}, []

    async def _fresh(self, tp, records):
        return records

    async def _deliver(self, tp, messages):
        self.handled.append((tp, [m.offset for m in messages]))
        return messages

    _drop = BatchConsumer._drop


def _records(tp: TP, first: int, last: int) -> tuple[TP, list]:
    return tp, [SimpleNamespace(offset=offset) for offset in range(first, last + 1)]


def test_a_batch_of_a_partition_paused_since_the_fetch_is_kept_to_be_read_again():
    paused, active, changelog = TP("sales", 0), TP("sales", 1), TP("items-changelog", 0)
    consumer = FetchedConsumer()
    batches = [_records(paused, 5, 7), _records(active, 3, 4), _records(changelog, 0, 2)]
    asyncio.run(BatchConsumer._handle(consumer, batches, {active}, generation=1))
    assert consumer._dropped == {paused: 5}  # the changelog is faust's: its recovery seeks it
    assert consumer.handled == [(active, [3, 4])] and consumer._read_offset == {active: 4}


def test_batches_fetched_before_a_rebalance_are_all_kept_to_be_read_again():
    consumer = FetchedConsumer()
    consumer.app.consumer_generation_id = 2
    batches = [_records(TP("sales", 0), 5, 7), _records(TP("sales", 1), 3, 4)]
    asyncio.run(BatchConsumer._handle(consumer, batches, {TP("sales", 0), TP("sales", 1)}, generation=1))
    assert consumer._dropped == {TP("sales", 0): 5, TP("sales", 1): 3} and consumer.handled == []


@pytest.mark.parametrize("first, position, committed, expected", [
    (100, 140, None, True),   # fetched under this assignment, no commit yet: nothing else reads it
    (100, 140, 90, True),     # faust's resume seek came before the drop
    (100, 100, None, False),  # the consumer is at the batch: it comes again by itself
    (100, 0, None, False),    # a new assignment restarted at the earliest offset
    (100, 90, 90, False),     # a new assignment restarted at the committed offset
    (100, 140, 120, False),   # another worker handled and committed it
    (100, None, None, False), # no position: the partition is not being read
])
def test_a_dropped_batch_is_read_again_only_where_nothing_else_reads_it(first, position, committed, expected):
    assert rewinds(first, position, committed) is expected


@pytest.mark.parametrize("acked, committed, expected", [
    ([], 100, False),             # nothing acked
    ([5, 6, 7], None, False),     # nothing committed yet: faust commits from the first ack
    ([100, 101], 100, False),     # acks start at the committed offset
    ([500, 501], 100, True),      # a batch finished under an earlier assignment of the partition
    ([90, 91], 100, False),       # acks behind the committed offset: faust's commit discards them
])
def test_acks_wait_behind_a_gap_only_past_the_committed_offset(acked, committed, expected):
    assert behind_gap(acked, committed) is expected


class FakeConsumer:
    """What ``commit_acked`` reads of faust's consumer, with a broker that answers ``accepts``."""

    batch_topics = frozenset({"sales"})
    should_stop, flow_active = False, True

    def __init__(self, acked: list[int], committed: int | None, accepts: bool):
        self.tp = TP("sales", 0)
        self._acked, self._committed_offset = {self.tp: acked}, {self.tp: committed}
        self.accepts, self.sent = accepts, []
        self.app = SimpleNamespace(consumer_generation_id=1)
        self.log = SimpleNamespace(warning=lambda *args: None)

    def assignment(self):
        return {self.tp}

    async def commit(self) -> bool:  # faust's: takes the acks, and counts them committed whatever the broker says
        acked = self._acked[self.tp]
        self._committed_offset[self.tp], acked[:] = acked[-1] + 1, []
        return self.accepts

    async def maybe_wait_for_commit_to_finish(self) -> bool:
        return False

    async def _commit(self, offsets) -> bool:
        self.sent.append(dict(offsets))
        return self.accepts

    _interrupted = BatchConsumer._interrupted


@pytest.mark.parametrize("accepts", [True, False])
def test_a_close_goes_on_only_when_the_broker_confirms_the_commit(accepts):
    consumer = FakeConsumer([100, 101, 102], 100, accepts)
    assert asyncio.run(BatchConsumer.commit_acked(consumer)) is accepts
    assert consumer.sent == [{consumer.tp: 103}]  # the last word is the broker's


def test_a_close_does_not_wait_for_acks_behind_a_gap():
    consumer = FakeConsumer([500, 501], 100, True)
    assert asyncio.run(BatchConsumer.commit_acked(consumer)) is True
    assert consumer._acked[consumer.tp] == [500, 501] and consumer.sent == [{consumer.tp: 100}]


class Recovery:
    """What ``_restore`` reads and calls of faust's recovery: partitions being restored, how far
    each is read, and the end of recovery once the highwaters are reached."""

    def __init__(self, table, highwaters: dict[TP, int]):
        self.in_recovery, self.ended, self.flushed = True, False, 0
        self.active_tps, self.tp_to_table = set(highwaters), {tp: table for tp in highwaters}
        self.active_offsets, self.highwaters = {}, highwaters
        self.signal_recovery_end = asyncio.Event()

    def need_recovery(self) -> bool:
        return any(self.active_offsets.get(tp, -1) < end for tp, end in self.highwaters.items())

    def flush_buffers(self) -> None:
        self.flushed += 1

    def _set_recovery_ended(self) -> None:
        self.in_recovery, self.ended = False, True


@pytest.fixture
def restoring(tmp_path):
    """A consumer over a real table store, restoring partitions 0 and 1 of its changelog up to offset 5."""
    app = faust.App("restore", broker="kafka://127.0.0.1:1", store=f"{STORE_SCHEME}://", datadir=str(tmp_path))
    table = app.Table("items", partitions=2)
    changelog = table.changelog_topic.get_topic_name()
    return restoring_consumer(table, {TP(changelog, 0): 5, TP(changelog, 1): 5}), table, changelog


def restoring_consumer(table, highwaters: dict[TP, int]) -> BatchConsumer:
    consumer = BatchConsumer.__new__(BatchConsumer)
    consumer._through_faust = set()
    consumer.app = SimpleNamespace(tables=SimpleNamespace(recovery=Recovery(table, highwaters)))
    return consumer


def _changes(topic: str, partition: int, first: int, last: int, value=lambda offset: b"v%d" % offset) -> list:
    """Changelog messages writing key k<offset % 3> at each offset."""
    return [SimpleNamespace(topic=topic, partition=partition, tp=TP(topic, partition), offset=offset,
                            key=b"k%d" % (offset % 3), value=value(offset)) for offset in range(first, last + 1)]


def test_a_restored_changelog_batch_is_written_at_once_and_recovery_ends_with_the_last(restoring):
    consumer, table, changelog = restoring
    recovery = consumer.app.tables.recovery
    first, second = TP(changelog, 0), TP(changelog, 1)
    assert consumer._restores(first)
    consumer._restore(first, _changes(changelog, 0, 0, 5))
    assert dict(table.data.partition_items(0)) == {b"k0": b"v3", b"k1": b"v4", b"k2": b"v5"}  # the last of each
    assert recovery.active_offsets == {first: 5} and not recovery.ended  # partition 1 still to read
    consumer._restore(second, _changes(changelog, 1, 0, 3))
    consumer._restore(second, _changes(changelog, 1, 2, 5, value=lambda offset: b"again" if offset < 4 else b"new"))
    assert dict(table.data.partition_items(1)) == {b"k0": b"v3", b"k1": b"new", b"k2": b"new"}  # 2, 3 read before
    assert recovery.ended and recovery.flushed == 1 and recovery.signal_recovery_end.is_set()


def test_a_changelog_partition_that_once_took_fausts_way_keeps_it(restoring):
    consumer, _, changelog = restoring
    consumer._through_faust.add(TP(changelog, 1))  # a standby's messages, maybe still queued there
    assert consumer._restores(TP(changelog, 0)) and not consumer._restores(TP(changelog, 1))
    consumer.app.tables.recovery.in_recovery = False
    assert not consumer._restores(TP(changelog, 0))


def test_a_table_with_a_changelog_callback_is_restored_faust_s_way(tmp_path):
    app = faust.App("callback", broker="kafka://127.0.0.1:1", store=f"{STORE_SCHEME}://", datadir=str(tmp_path))

    async def on_change(event):
        pass

    table = app.Table("items", partitions=1, on_changelog_event=on_change)
    tp = TP(table.changelog_topic.get_topic_name(), 0)
    assert not restoring_consumer(table, {tp: 5})._restores(tp)  # its callback would be skipped
