"""The corpus of bad input: every kind the worker must dead-letter, with the reason it must give.

All are for item 22423 on the day after the good events of ``test_faults`` (2011-06-03) unless
the kind is about the key or the time. ``ts_in_future`` is built by the test, because it is
relative to the wall clock.
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

ITEM = "22423"
TS = 1_307_100_000  # 2011-06-03 11:20 UTC


@dataclass(frozen=True)
class BadEvent:
    kind: str
    topic: str  # "sales" or "page-views"
    key: bytes | None
    value: bytes | None
    reason: str  # the dead-letter reason the worker must give


def _sale(**changes) -> bytes:
    body = {"event_id": "bad", "item_id": ITEM, "ts": TS, "quantity": 1, "price": 1.25}
    body.update(changes)
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})


def _view(**changes) -> bytes:
    body = {"event_id": "bad-view", "item_id": ITEM, "ts": TS, "views": 3}
    body.update(changes)
    return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})


_DROP = object()
KEY = ITEM.encode()

CORPUS = [
    BadEvent("truncated_json", "sales", KEY, b'{"event_id": "b1", "item_id": "22423"', "malformed_json"),
    BadEvent("trailing_garbage", "sales", KEY, _sale(event_id="b2") + b" xyz", "malformed_json"),
    BadEvent("invalid_utf8", "sales", KEY, b'{"event_id": "b3\xff\xfe", "item_id": "22423"}', "malformed_json"),
    BadEvent("nan_literal", "sales", KEY, _sale(event_id="b4").replace(b'"quantity":1', b'"quantity":NaN'),
             "malformed_json"),
    BadEvent("infinity_literal", "sales", KEY,
             _sale(event_id="b5").replace(b'"quantity":1', b'"quantity":Infinity'), "malformed_json"),
    BadEvent("utf8_bom", "sales", KEY, b"\xef\xbb\xbf" + _sale(event_id="b6"), "malformed_json"),
    BadEvent("json_array", "sales", KEY, b"[1, 2, 3]", "not_an_object"),
    BadEvent("json_string", "sales", KEY, b'"a sale"', "not_an_object"),
    BadEvent("json_null", "sales", KEY, b"null", "not_an_object"),
    BadEvent("empty_value", "sales", KEY, b"", "empty_value"),
    BadEvent("tombstone", "sales", KEY, None, "empty_value"),
    BadEvent("oversized", "sales", KEY, _sale(event_id="b7", description="X" * 70_000), "oversized"),
    BadEvent("unknown_field", "sales", KEY, _sale(event_id="b8", store="north"), "unknown_field"),
    BadEvent("missing_event_id", "sales", KEY, _sale(event_id=_DROP), "bad_event_id"),
    BadEvent("blank_event_id", "sales", KEY, _sale(event_id="   "), "bad_event_id"),
    BadEvent("numeric_event_id", "sales", KEY, _sale(event_id=17), "bad_event_id"),
    BadEvent("huge_event_id", "sales", KEY, _sale(event_id="e" * 500), "bad_event_id"),
    BadEvent("nested_event_id", "sales", KEY, _sale(event_id={"a": [[[1]]]}), "bad_event_id"),
    BadEvent("missing_item_id", "sales", KEY, _sale(event_id="b9", item_id=_DROP), "bad_item_id"),
    BadEvent("null_item_id", "sales", KEY, _sale(event_id="b10", item_id=None), "bad_item_id"),
    BadEvent("missing_ts", "sales", KEY, _sale(event_id="b11", ts=_DROP), "bad_ts"),
    BadEvent("text_ts", "sales", KEY, _sale(event_id="b12", ts="2011-06-03T11:20:00Z"), "bad_ts"),
    BadEvent("fractional_ts", "sales", KEY, _sale(event_id="b13", ts=TS + 0.5), "bad_ts"),
    BadEvent("boolean_ts", "sales", KEY, _sale(event_id="b14", ts=True), "bad_ts"),
    BadEvent("ts_before_2000", "sales", KEY, _sale(event_id="b15", ts=631_152_000), "ts_too_old"),
    BadEvent("negative_ts", "sales", KEY, _sale(event_id="b16", ts=-5), "ts_too_old"),
    BadEvent("ts_in_milliseconds", "sales", KEY, _sale(event_id="b17", ts=TS * 1000), "ts_too_far_ahead"),
    BadEvent("ts_weeks_ahead", "sales", KEY, _sale(event_id="b18", ts=TS + 30 * 86_400), "ts_too_far_ahead"),
    BadEvent("ts_of_a_closed_day", "sales", KEY, _sale(event_id="b19", ts=1_306_900_000), "too_late"),
    BadEvent("text_quantity", "sales", KEY, _sale(event_id="b20", quantity="two"), "bad_quantity"),
    BadEvent("null_quantity", "sales", KEY, _sale(event_id="b21", quantity=None), "bad_quantity"),
    BadEvent("boolean_quantity", "sales", KEY, _sale(event_id="b22", quantity=True), "bad_quantity"),
    BadEvent("huge_quantity", "sales", KEY, _sale(event_id="b23", quantity=10**12), "bad_quantity"),
    BadEvent("huge_float_quantity", "sales", KEY, _sale(event_id="b24", quantity=1e300), "bad_quantity"),
    BadEvent("negative_price", "sales", KEY, _sale(event_id="b25", price=-1.0), "bad_price"),
    BadEvent("text_price", "sales", KEY, _sale(event_id="b26", price="1.25"), "bad_price"),
    BadEvent("list_invoice", "sales", KEY, _sale(event_id="b27", invoice=["C1"]), "bad_invoice"),
    BadEvent("numeric_description", "sales", KEY, _sale(event_id="b28", description=5), "bad_description"),
    BadEvent("missing_key", "sales", None, _sale(event_id="b29"), "missing_key"),
    BadEvent("empty_key", "sales", b"", _sale(event_id="b30"), "missing_key"),
    BadEvent("key_disagrees_with_body", "sales", b"99999", _sale(event_id="b31"), "key_mismatch"),
    BadEvent("negative_views", "page-views", KEY, _view(event_id="v1", views=-3), "bad_views"),
    BadEvent("text_views", "page-views", KEY, _view(event_id="v2", views="many"), "bad_views"),
    BadEvent("huge_views", "page-views", KEY, _view(event_id="v3", views=10**9), "bad_views"),
    BadEvent("sale_field_on_a_view", "page-views", KEY, _view(event_id="v4", quantity=1), "unknown_field"),
    BadEvent("view_without_item", "page-views", KEY, _view(event_id="v5", item_id=_DROP), "bad_item_id"),
]
