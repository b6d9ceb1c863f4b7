"""Incoming events, validated at the edge.

Sales: ``event_id``, ``item_id``, ``ts`` (event time, epoch seconds), ``quantity`` (negative
for returns), ``price``; optional ``invoice`` and ``description``. Page views: ``event_id``,
``item_id``, ``ts``, ``views``. The message key must be the item id. Anything else is a
``Rejection`` with a machine-readable reason, never an exception. A message with the header
``CONTROL_HEADER: b"watermark"`` and the body ``{"ts": ...}`` is a watermark marker instead:
it asserts that no earlier event will follow on its partition.
"""
from __future__ import annotations

import math
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
    body = _decode(key, value, SALE_FIELDS)
    if isinstance(body, Rejection):
        return body
    quantity = _number(body, "quantity", -MAX_QUANTITY, MAX_QUANTITY)
    price = _number(body, "price", 0.0, MAX_QUANTITY)
    for checked in (quantity, price):
        if isinstance(checked, Rejection):
            return checked
    extras = [_text(body, name, required=False) for name in ("invoice", "description")]
    for extra in extras:
        if isinstance(extra, Rejection):
            return extra
    return Sale(body["event_id"], body["item_id"], body["ts"], quantity, price, *extras)


def parse_page_view(key: bytes | None, value: bytes | None) -> PageView | Rejection:
    body = _decode(key, value, VIEW_FIELDS)
    if isinstance(body, Rejection):
        return body
    views = _number(body, "views", 0.0, MAX_VIEWS)
    if isinstance(views, Rejection):
        return views
    return PageView(body["event_id"], body["item_id"], body["ts"], views)


def _decode(key: bytes | None, value: bytes | None, allowed: set[str]) -> dict | Rejection:
    if value is None or len(value) == 0:
        return Rejection("empty_value", "message has no value")
    if len(value) > MAX_EVENT_BYTES:
        return Rejection("oversized", f"{len(value)} bytes > {MAX_EVENT_BYTES}")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8
        return Rejection("malformed_json", str(exc)[:200])
    if not isinstance(body, dict):
        return Rejection("not_an_object", f"JSON {type(body).__name__}, expected an object")
    if not body.keys() <= allowed:
        return Rejection("unknown_field", ", ".join(sorted(body.keys() - allowed))[:200])
    for name in ("event_id", "item_id"):
        checked = _text(body, name, required=True)
        if isinstance(checked, Rejection):
            return checked
    ts = body.get("ts")
    if type(ts) is not int:
        return Rejection("bad_ts", f"ts must be integer epoch seconds, got {ts!r}"[:200])
    if ts < EARLIEST_TS:
        return Rejection("ts_too_old", f"ts {ts} before {EARLIEST_TS}")
    if not key:
        return Rejection("missing_key", "the message key must be the item id")
    if key != body["item_id"].encode():
        return Rejection("key_mismatch", f"key {key[:64]!r} != item_id {body['item_id'][:64]!r}")
    return body


def _text(body: dict, name: str, required: bool) -> str | Rejection:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        return Rejection(f"bad_{name}", f"{name} must be a non-empty string, got {value!r}"[:200])
    if len(value) > (MAX_ID_LENGTH if required else 1024):
        return Rejection(f"bad_{name}", f"{name} is {len(value)} characters long")
    return value


def _number(body: dict, name: str, low: float, high: float) -> float | Rejection:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return Rejection(f"bad_{name}", f"{name} must be a number, got {value!r}"[:200])
    if not math.isfinite(value) or not low <= value <= high:
        return Rejection(f"bad_{name}", f"{name}={value!r} outside [{low}, {high}]")
    return float(value)
