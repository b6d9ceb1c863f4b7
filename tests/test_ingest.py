"""The batch consumer's rules (streams/ingest.py), without Kafka: when it reads a dropped batch
again, and which acked offsets a close waits to see committed."""
import pytest

from mqstream.streams.ingest import committable, rewinds


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
    ([], 100, False),             # nothing to commit
    (None, None, False),          # a partition never acked
    ([5, 6, 7], None, True),      # nothing committed yet
    ([100, 101], 100, True),      # acks start at the committed offset
    ([500, 501], 100, False),     # a batch finished after a rebalance gave the partition back
    ([90, 91], 100, True),        # acks behind the committed offset: faust's commit discards them
])
def test_a_close_waits_only_for_acks_a_commit_can_take(acked, committed, expected):
    assert committable(acked, committed) is expected
