"""Incoming events, validated at the edge.

Sales: ``event_id``, ``item_id``, ``ts`` (event time, epoch seconds), ``quantity`` (negative
for returns), ``price``; optional ``invoice`` and ``description``. Page views: ``event_id``,
``item_id``, ``ts``, ``views``. The message key must be the item id. Anything else is a
``Rejection`` with a machine-readable reason, never an exception. A message with the header
``CONTROL_HEADER: b"watermark"`` and the body ``{"ts": ...}`` is a watermark marker instead:
it asserts that no earlier event will follow on its partition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import orjson

MAX_EVENT_BYTES = 64 * 1024
MAX_QUANTITY = 1_000_000  # above any real invoice line (the data's largest is 80,995)
MAX_VIEWS = 10_000_000
MAX_ID_LENGTH = 128
EARLIEST_TS = 946_684_800  # 2000-01-01: older is a unit or clock mistake
CONTROL_HEADER = "mqstream-control"

SALE_FIELDS = {"event_id", "item_id", "ts", "quantity", "price", "invoice", "description"}
VIEW_FIELDS = {"event_id", "item_id", "ts", "views"}


class Sale(NamedTuple):  # a tuple: made for every event, ten times cheaper than a frozen dataclass
    event_id: str
    item_id: str
    ts: int
    quantity: float
    price: float
    invoice: str = ""
    description: str = ""


class PageView(NamedTuple):
    event_id: str
    item_id: str
    ts: int
    views: float


@dataclass(frozen=True)
class Rejection:
    reason: str  # a short snake_case code, counted by metrics
    detail: str


def is_watermark(headers) -> bool:
    if not headers:
        return False  # nearly every message: no generator made for it
    pairs = headers.items() if isinstance(headers, dict) else headers
    return any(k == CONTROL_HEADER and v == b"watermark" for k, v in pairs)


def parse_sale(key: bytes | None, value: bytes | None) -> Sale | Rejection:
    try:
        body = _decode(key, value, SALE_FIELDS)
        return Sale(body["event_id"], body["item_id"], body["ts"],
                    _number(body, "quantity", -MAX_QUANTITY, MAX_QUANTITY), _number(body, "price", 0.0, MAX_QUANTITY),
                    _text(body, "invoice", required=False), _text(body, "description", required=False))
    except _Refused as refused:
        return refused.rejection


def parse_page_view(key: bytes | None, value: bytes | None) -> PageView | Rejection:
    try:
        body = _decode(key, value, VIEW_FIELDS)
        return PageView(body["event_id"], body["item_id"], body["ts"], _number(body, "views", 0.0, MAX_VIEWS))
    except _Refused as refused:
        return refused.rejection


class _Refused(Exception):
    """Raised by the checks below, caught by the parsers: a valid event (nearly every one)
    then costs no test of each field's result."""

    def __init__(self, reason: str, detail: str):
        self.rejection = Rejection(reason, detail[:200])


def _decode(key: bytes | None, value: bytes | None, allowed: set[str]) -> dict:
    if value is None or len(value) == 0:
        raise _Refused("empty_value", "message has no value")
    if len(value) > MAX_EVENT_BYTES:
        raise _Refused("oversized", f"{len(value)} bytes > {MAX_EVENT_BYTES}")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8
        raise _Refused("malformed_json", str(exc)) from None
    if type(body) is not dict:
        raise _Refused("not_an_object", f"JSON {type(body).__name__}, expected an object")
    if not allowed.issuperset(body):
        raise _Refused("unknown_field", ", ".join(sorted(body.keys() - allowed)))
    _text(body, "event_id", required=True)
    item_id = _text(body, "item_id", required=True)
    ts = body.get("ts")
    if type(ts) is not int:
        raise _Refused("bad_ts", f"ts must be integer epoch seconds, got {ts!r}")
    if ts < EARLIEST_TS:
        raise _Refused("ts_too_old", f"ts {ts} before {EARLIEST_TS}")
    if not key:
        raise _Refused("missing_key", "the message key must be the item id")
    if key != item_id.encode():
        raise _Refused("key_mismatch", f"key {key[:64]!r} != item_id {item_id[:64]!r}")
    return body


def _text(body: dict, name: str, required: bool) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if type(value) is not str or (required and not value.strip()):
        raise _Refused(f"bad_{name}", f"{name} must be a non-empty string, got {value!r}")
    if len(value) > (MAX_ID_LENGTH if required else 1024):
        raise _Refused(f"bad_{name}", f"{name} is {len(value)} characters long")
    return value


def _number(body: dict, name: str, low: float, high: float) -> float:
    value = body.get(name)
    if type(value) not in (int, float):  # a bool is no number here
        raise _Refused(f"bad_{name}", f"{name} must be a number, got {value!r}")
    if not low <= value <= high:  # false for NaN too, and the bounds are finite
        raise _Refused(f"bad_{name}", f"{name}={value!r} outside [{low}, {high}]")
    return float(value)
