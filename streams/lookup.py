"""GET /forecasts/{item_id} and /forecasts/{item_id}/errors, answered from the worker's tables.

The answer comes from the item's model side, so it is the forecast of the last close this
worker made, in the `forecasts` message format (``created_at`` is the time of the answer).
Only the worker that owns the item's partition answers; any other redirects (307) to it,
found through faust's partition assignment, whose URLs are the workers' HTTP addresses
(``canonical_url``).
"""
from __future__ import annotations

import asyncio
import re
import urllib.parse
from concurrent.futures import TimeoutError as FutureTimeout

import faust
import orjson

from models.protocol import QuantileForecaster
from state.item import UNITS, ItemModel, ItemState
from state.ledger import ForecastLedger
from state.refresh import IssuedForecast, RefreshPolicy, ScoredDay
from streams import messages

ROUTE = re.compile(r"^/forecasts/(?P<item>[^/?#]+)(?P<errors>/errors)?/?$")
Answer = tuple[int, bytes, dict[str, str]]


class ForecastLookup:
    def __init__(self, app: faust.App, items: faust.Table, sides: faust.Table, model: QuantileForecaster,
                 policy: RefreshPolicy):
        self.app, self.items, self.sides = app, items, sides
        self.model, self.policy = model, policy

    def answer_from_thread(self, path: str, timeout: float = 10.0) -> Answer:
        """For the HTTP server's threads: the answer is made on the worker's event loop, between
        events, so it never reads a table while an event changes it."""
        future = asyncio.run_coroutine_threadsafe(self.answer(path), self.app.loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            return _error(503, "the worker is busy; try again", {"Retry-After": "1"})

    async def answer(self, path: str) -> Answer:
        match = ROUTE.match(path)
        if match is None:
            return _error(404, "use /forecasts/{item_id} or /forecasts/{item_id}/errors")
        item_id = urllib.parse.unquote(match["item"])
        owner = self._owner(item_id.encode())
        if owner is None:
            return _error(503, "partitions are being assigned; try again", {"Retry-After": "2"})
        if owner != self._own_url():
            return _error(307, f"item {item_id} is served by {owner}", {"Location": owner + path})
        raw = self.sides.get(item_id.encode())
        ledger = None if raw is None else self._ledger(ItemModel.from_bytes(raw))
        latest = None if ledger is None else ledger.latest()
        if latest is None:
            return _error(404, f"no forecast of item {item_id} yet")
        if match["errors"]:
            return 200, self._errors(item_id, ItemModel.from_bytes(raw), ledger), {}
        issued = IssuedForecast(item_id, *latest)
        return 200, messages.forecast_message(issued, self.model, messages.utc_now()), {}

    def _errors(self, item_id: str, side: ItemModel, ledger: ForecastLedger) -> bytes:
        """The errors of the forecasts still kept (made within the last horizon), per target day
        already closed, as `forecast-errors` messages."""
        item = ItemState.from_bytes(self.items.get(item_id.encode()))
        now, found = messages.utc_now(), []
        for target in range(side.closed_through - self.model.horizons + 1, side.closed_through + 1):
            actual = float(item.daily(UNITS, target, target)[0])
            records = ledger.score(target, actual)
            if records:
                scored = ScoredDay(item_id, target, actual, records)
                found.append(orjson.loads(messages.error_message(scored, self.model, now, self.policy.decimals)))
        return orjson.dumps({"item_id": item_id, "errors": found})

    def _ledger(self, side: ItemModel) -> ForecastLedger:
        return ForecastLedger.from_bytes(side.ledger, self.model.horizons, len(self.model.quantiles))

    def _owner(self, key: bytes) -> str | None:
        try:
            url = self.app.assignor.key_store(self.items.changelog_topic.get_topic_name(), key)
        except (KeyError, TypeError):  # no assignment yet
            return None
        return str(url).rstrip("/")

    def _own_url(self) -> str:
        return str(self.app.conf.canonical_url).rstrip("/")


def _error(status: int, text: str, headers: dict[str, str] | None = None) -> Answer:
    return status, orjson.dumps({"error": text}), headers or {}
