"""The items a worker holds decoded between batches (streams/tables.py), without Kafka: the
policy only. That what is held stays what the database holds, through crashes and
rebalances, is the fault suite's (tests/test_faults.py runs with the default held_items)."""
from types import SimpleNamespace

from mqstream.state.refresh import RefreshPolicy, new_item
from mqstream.streams.tables import Tables


def tables_over(rows: dict[tuple[int, bytes], bytes], held_items: int) -> Tables:
    data = SimpleNamespace(get_in=lambda partition, key: rows.get((partition, key)))
    items = SimpleNamespace(data=data)
    return Tables(items, SimpleNamespace(), SimpleNamespace(), held_items=held_items)


def database(n: int) -> dict[tuple[int, bytes], bytes]:
    return {(i % 2, f"I{i}".encode()): new_item(f"I{i}", 15_000 + i, RefreshPolicy()).to_bytes() for i in range(n)}


def test_an_item_read_is_held_and_read_again_without_decoding():
    rows = database(4)
    tables = tables_over(rows, held_items=10)
    first = tables.item(0, b"I0")
    rows[0, b"I0"] = new_item("I0", 1, RefreshPolicy()).to_bytes()  # the database, changed behind its back
    assert tables.item(0, b"I0") is first and first.born == 15_000
    assert tables.item(0, b"nobody") is None


def test_no_more_than_held_items_are_held_the_oldest_leaving_first():
    rows = database(6)
    tables = tables_over(rows, held_items=3)
    held = {key: tables.item(p, key) for p, key in rows}
    assert tables.item(1, b"I5") is held[b"I5"]  # among the last three read
    assert tables.item(0, b"I0") is not held[b"I0"]  # read first, let go: decoded again


def test_a_dropped_partition_is_read_again_from_the_database_and_the_other_kept():
    rows = database(4)
    tables = tables_over(rows, held_items=10)
    before = {key: tables.item(p, key) for p, key in rows}
    rows[0, b"I0"] = new_item("I0", 1, RefreshPolicy()).to_bytes()
    tables.drop_held([0])
    assert tables.item(0, b"I0").born == 1
    assert tables.item(1, b"I1") is before[b"I1"]


def test_none_is_held_when_held_items_is_zero():
    rows = database(2)
    tables = tables_over(rows, held_items=0)
    assert tables.item(0, b"I0") is not tables.item(0, b"I0")
