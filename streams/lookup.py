"""GET /forecasts/{item_id} and /forecasts/{item_id}/errors (the scored forecasts of the last closed
day), answered from the worker's tables.

The answer comes from the item's model state (its ``ItemModel``), so it is the forecast of the last close this
worker made, in the `forecasts` message format (``created_at`` is the time of the answer).
Only the worker that owns the item's partition answers; any other redirects (307) to it,
found through faust's partition assignment, whose URLs are the workers' HTTP addresses
(``canonical_url``). The explorer pages (streams/explorer.py) read through the same rules.
"""
from __future__ import annotations

import asyncio
import re
import urllib.parse
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Coroutine, Iterator, TypeVar

import faust
import orjson

from mqstream.models.protocol import QuantileForecaster
from mqstream.periods import Cadence
from mqstream.state.item import UNITS, ItemModel, ItemState
from mqstream.state.ledger import Ledgers
from mqstream.state.refresh import IssuedForecast, RefreshPolicy, ScoredDay
from mqstream.streams import messages
from mqstream.streams.tables import Tables

ROUTE = re.compile(r"^/forecasts/(?P<item>[^/?#]+)(?P<errors>/errors)?/?$")
Answer = tuple[int, bytes, dict[str, str]]
Say = Callable[[int, str, dict[str, str]], Answer]  # (status, text, headers) -> an answer in the route's format
T = TypeVar("T")


def on_loop(app: faust.App, work: Coroutine[None, None, T], timeout: float) -> T:
    """For the HTTP server's threads: ``work`` runs on the worker's event loop, between events,
    so it never reads a table while an event changes it. Raises concurrent.futures'
    TimeoutError when the loop does not finish it in time."""
    future = asyncio.run_coroutine_threadsafe(work, app.loop)
    try:
        return future.result(timeout)
    except FutureTimeout:
        future.cancel()
        raise


class ForecastLookup:
    def __init__(self, app: faust.App, tables: Tables, model: QuantileForecaster, policy: RefreshPolicy,
                 cadence: Cadence):
        self.app, self.items, self.item_models = app, tables.items, tables.item_models
        self.model, self.policy, self.cadence = model, policy, cadence

    def answer_from_thread(self, path: str, timeout: float = 10.0) -> Answer:
        try:
            return on_loop(self.app, self.answer(path), timeout)
        except FutureTimeout:
            return _error(503, "the worker is busy; try again", {"Retry-After": "1"})

    async def answer(self, path: str) -> Answer:
        match = ROUTE.match(path)
        if match is None:
            return _error(404, "use /forecasts/{item_id} or /forecasts/{item_id}/errors")
        item_id = urllib.parse.unquote(match["item"])
        elsewhere = self.elsewhere(item_id, path, _error)
        if elsewhere is not None:
            return elsewhere
        item_model = self.item_model(item_id)
        ledger = None if item_model is None else self.ledger(item_model)
        latest = None if ledger is None else ledger.latest([0])[0]
        if latest is None:
            return _error(404, f"no forecast of item {item_id} yet")
        if match["errors"]:
            now = messages.utc_now()
            scored = self.last_scored(self.item(item_id), item_model, ledger)
            found = [] if scored is None else [orjson.loads(
                messages.error_message(scored, self.model, now, self.policy.decimals, self.cadence))]
            return 200, orjson.dumps({"item_id": item_id, "errors": found}), {}
        issued = IssuedForecast(item_id, *latest)
        return 200, messages.forecast_message(issued, self.model, messages.utc_now(), self.cadence), {}

    def elsewhere(self, item_id: str, path: str, say: Say) -> Answer | None:
        """The answer where this worker does not own the item's partition: a redirect (307) to
        the worker that does, or 503 while partitions are being assigned. None where it owns it."""
        owner = self._owner(item_id.encode())
        if owner is None:
            return say(503, "partitions are being assigned; try again", {"Retry-After": "2"})
        if owner != self.own_url():
            return say(307, f"item {item_id} is served by {owner}", {"Location": owner + path})
        return None

    def item(self, item_id: str) -> ItemState | None:
        raw = self.items.get(item_id.encode())
        return None if raw is None else ItemState.from_bytes(raw)

    def item_model(self, item_id: str) -> ItemModel | None:
        raw = self.item_models.get(item_id.encode())
        return None if raw is None else ItemModel.from_bytes(raw)

    def ledger(self, item_model: ItemModel) -> Ledgers:
        """The item's ledger, as row 0."""
        return Ledgers.from_bytes([item_model.ledger], self.model.horizons, len(self.model.quantiles))

    def last_scored(self, item: ItemState, item_model: ItemModel, ledger: Ledgers) -> ScoredDay | None:
        """The forecasts of the item's last closed target day, scored: what its `forecast-errors`
        message said. The ledger keeps no earlier target's (`forecast-errors` has them)."""
        target = item_model.closed_through
        (errors,) = ledger.score([0], target, [float(item.daily(UNITS, target, target)[0])])
        return None if errors is None else ScoredDay(item.item_id, errors)

    def own_items(self) -> Iterator[ItemState]:
        """The items of the partitions this worker owns (not those it keeps as a standby)."""
        topic = self._items_topic()
        for tp in sorted(self.app.assignor.assigned_actives()):
            if tp.topic == topic:
                for _, raw in self.items.data.partition_items(tp.partition):
                    yield ItemState.from_bytes(raw)

    def item_owner_urls(self) -> list[str]:
        """The HTTP addresses of the workers that own partitions of items, this one included if
        it does (none before the group's first assignment)."""
        owners = self.app.assignor.table_metadata(self._items_topic())
        return sorted({str(url).rstrip("/") for url, partitions in owners.items() if any(partitions.values())})

    def own_url(self) -> str:
        return str(self.app.conf.canonical_url).rstrip("/")

    def _owner(self, key: bytes) -> str | None:
        try:
            url = self.app.assignor.key_store(self._items_topic(), key)
        except (KeyError, TypeError):  # no assignment yet
            return None
        return str(url).rstrip("/")

    def _items_topic(self) -> str:
        return self.items.changelog_topic.get_topic_name()


def _error(status: int, text: str, headers: dict[str, str] | None = None) -> Answer:
    return status, orjson.dumps({"error": text}), headers or {}
