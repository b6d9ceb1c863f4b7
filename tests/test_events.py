"""Validation at the edge: every bad event becomes a Rejection with a reason, never an exception."""
import pytest

from mqstream.streams.events import PageView, Rejection, Sale, parse_page_view, parse_sale

GOOD = b'{"event_id": "e1", "item_id": "85123A", "ts": 1307000000, "quantity": -2, "price": 2.55, "invoice": "C1"}'


def test_a_valid_sale_parses_with_returns_as_negative_quantities():
    sale = parse_sale(b"85123A", GOOD)
    assert sale == Sale("e1", "85123A", 1307000000, -2.0, 2.55, "C1", "")


def test_a_valid_page_view_parses():
    view = parse_page_view(b"1", b'{"event_id": "v", "item_id": "1", "ts": 1307000000, "views": 3}')
    assert view == PageView("v", "1", 1307000000, 3.0)


@pytest.mark.parametrize("key,value,reason", [
    (b"A", None, "empty_value"),
    (b"A", b"", "empty_value"),
    (b"A", b"x" * 70_000, "oversized"),
    (b"A", b'{"event_id": ', "malformed_json"),
    (b"A", b'\xff\xfe{"a": 1}', "malformed_json"),
    (b"A", b'{"event_id": "e", "item_id": "A", "ts": 1307000000, "quantity": NaN, "price": 1}', "malformed_json"),
    (b"A", b'"a string"', "not_an_object"),
    (b"A", b'{"event_id": "e", "item_id": "A", "ts": 1307000000, "quantity": 1, "price": 1, "color": 1}',
     "unknown_field"),
    (b"A", b'{"item_id": "A", "ts": 1307000000, "quantity": 1, "price": 1}', "bad_event_id"),
    (b"A", b'{"event_id": "e", "item_id": "", "ts": 1307000000, "quantity": 1, "price": 1}', "bad_item_id"),
    (b"A", b'{"event_id": "e", "item_id": "A", "ts": "2011-06-01", "quantity": 1, "price": 1}', "bad_ts"),
    (b"A", b'{"event_id": "e", "item_id": "A", "ts": 1307000000.5, "quantity": 1, "price": 1}', "bad_ts"),
    (b"A", b'{"event_id": "e", "item_id": "A", "ts": 5, "quantity": 1, "price": 1}', "ts_too_old"),
    (b"A", b'{"event_id": "e", "item_id": "A", "ts": 1307000000, "quantity": true, "price": 1}', "bad_quantity"),
    (b"A", b'{"event_id": "e", "item_id": "A", "ts": 1307000000, "quantity": 1e12, "price": 1}', "bad_quantity"),
    (b"A", b'{"event_id": "e", "item_id": "A", "ts": 1307000000, "quantity": 1, "price": -1}', "bad_price"),
    (None, b'{"event_id": "e", "item_id": "A", "ts": 1307000000, "quantity": 1, "price": 1}', "missing_key"),
    (b"B", b'{"event_id": "e", "item_id": "A", "ts": 1307000000, "quantity": 1, "price": 1}', "key_mismatch"),
])
def test_a_bad_sale_is_rejected_with_its_reason(key, value, reason):
    result = parse_sale(key, value)
    assert isinstance(result, Rejection) and result.reason == reason


def test_negative_page_views_are_rejected():
    result = parse_page_view(b"A", b'{"event_id": "v", "item_id": "A", "ts": 1307000000, "views": -1}')
    assert isinstance(result, Rejection) and result.reason == "bad_views"
