"""When the batch consumer reads a dropped batch again (streams/ingest.py), without Kafka."""
import pytest

from mqstream.streams.ingest import rewinds


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
