"""The forecast explorer: plain HTML pages that each worker serves beside /metrics.

- ``/explorer?q=TEXT``: items whose id or description holds TEXT (case-insensitive), from
  the whole group, at most ``MAX_RESULTS``, each linked to its page.
- ``/explorer/items/{item_id}``: the item's fan chart (P10–P90 band, P50 and the actuals so
  far), its forecasts of the last closed day, scored, and this worker's rolling quality by
  horizon bucket.
  Only the worker that owns the item's partition renders it; any other redirects (307) to
  it by the rule of the forecast lookups (``ForecastLookup.elsewhere``). An item the group
  does not hold is a 404 page that says so.
- ``/explorer/own-items?q=TEXT``: JSON, the matches among this worker's own items: what a
  search asks of every other worker.
- ``/explorer/static/chart.umd.min.js``: Chart.js 4.6.1 (MIT, licence beside it in
  ``streams/static``), vendored: the pages fetch nothing from the internet.

Search across the group: a worker holds only its partitions' items, so the worker asked
scans its own (on the event loop, yielding to events every ``SCAN_SLICE`` items) and asks
every other worker that owns partitions of items (their canonical URLs, from faust's
partition assignment) for theirs over HTTP, from the request's thread and never from the
event loop, each with ``PEER_TIMEOUT``. Each worker returns at most ``MAX_RESULTS``; the page
merges them by item id and keeps ``MAX_RESULTS``. A worker that does not answer is named on
the page, above the others' results. The scan reads every item the worker owns, so a search
costs each worker about 10 µs an item (seconds for a million items).

Every value from data is escaped; the chart is drawn by a few lines of inline JS from JSON
embedded in the page (``<`` escaped, so no value can end the script).
"""
from __future__ import annotations

import asyncio
import html
import re
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Coroutine, NamedTuple, TypeVar

import numpy as np
import orjson

from mqstream.periods import Cadence
from mqstream.state.item import UNITS, ItemState
from mqstream.models.scores import pinball_loss
from mqstream.state.refresh import IssuedForecast, ScoredDay
from mqstream.streams.lookup import Answer, ForecastLookup, on_loop
from mqstream.streams.metrics import BucketQuality, QualityWindow

MAX_RESULTS = 50  # a search lists at most this many items
SCAN_SLICE = 1000  # items scanned between two yields to the event loop
PEER_TIMEOUT = 5.0  # seconds a search waits for another worker's matches
LOOP_TIMEOUT = 10.0  # seconds a page waits for the event loop
STATIC = Path(__file__).parent / "static"
CHART_JS = "chart.umd.min.js"
ITEM_ROUTE = re.compile(r"^/explorer/items/(?P<item>[^/?#]+)/?$")
HTML_TYPE = {"Content-Type": "text/html; charset=utf-8"}
JSON_TYPE = {"Content-Type": "application/json"}
T = TypeVar("T")


class Match(NamedTuple):  # one search result
    item_id: str
    description: str


@dataclass(frozen=True)
class ItemView:
    """What the item page shows, read on the event loop in one go."""

    item: ItemState
    forecast: IssuedForecast | None
    first_actual: int  # first period of ``actuals``
    actuals: np.ndarray  # (periods,) units sold per period, first_actual..origin (or closed_through): a horizon's worth
    last_scored: ScoredDay | None  # the forecasts of the last closed period, scored
    quality: dict[str, BucketQuality]
    quantiles: tuple[float, ...]
    cadence: Cadence


class ForecastExplorer:
    def __init__(self, lookup: ForecastLookup, quality: QualityWindow):
        self.lookup, self.quality = lookup, quality
        self.chart_js = (STATIC / CHART_JS).read_bytes()

    def answer_from_thread(self, path: str) -> Answer:
        """For the HTTP server's threads (streams/metrics.py ``serve``)."""
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query).get("q", [""])[0].strip()
        try:
            if url.path in ("/explorer", "/explorer/"):
                return self._search_page(query)
            if url.path == "/explorer/own-items":
                matches, more = self._on_loop(self._own_matches(query))
                body = {"items": [[m.item_id, m.description] for m in matches], "more": more}
                return 200, orjson.dumps(body), JSON_TYPE
            if url.path == f"/explorer/static/{CHART_JS}":
                return 200, self.chart_js, {"Content-Type": "text/javascript; charset=utf-8",
                                            "Cache-Control": "max-age=86400"}
            match = ITEM_ROUTE.match(url.path)
            if match is not None:
                return self._on_loop(self._item_answer(urllib.parse.unquote(match["item"]), path))
        except FutureTimeout:
            return _message(503, "The worker is busy; try again.", {"Retry-After": "1"})
        return _message(404, "No such page: use /explorer?q=… or /explorer/items/{item_id}.")

    def _on_loop(self, work: Coroutine[None, None, T]) -> T:
        return on_loop(self.lookup.app, work, LOOP_TIMEOUT)

    # --- search ---------------------------------------------------------------------------
    def _search_page(self, query: str) -> Answer:
        if not query:
            return 200, _page("Forecast explorer", _search_form("")), HTML_TYPE
        (matches, more), owners = self._on_loop(self._own_matches_and_owners(query))
        if not owners:
            return _message(503, "Partitions are being assigned; try again.", {"Retry-After": "2"})
        peers = [url for url in owners if url != self.lookup.own_url()]
        with ThreadPoolExecutor(max(len(peers), 1)) as pool:
            answers = list(pool.map(lambda peer: _peer_matches(peer, query), peers))
        silent = [peer for peer, answer in zip(peers, answers) if answer is None]
        for answer in answers:
            if answer is not None:
                matches += answer[0]
                more = more or answer[1]
        matches.sort(key=lambda m: m.item_id)
        more = more or len(matches) > MAX_RESULTS
        return 200, _page(f"Items matching {query}", _search_form(query) + _results(
            query, matches[:MAX_RESULTS], more, silent)), HTML_TYPE

    async def _own_matches_and_owners(self, query: str) -> tuple[tuple[list[Match], bool], list[str]]:
        return await self._own_matches(query), self.lookup.item_owner_urls()

    async def _own_matches(self, query: str) -> tuple[list[Match], bool]:
        """Up to ``MAX_RESULTS`` of this worker's items matching ``query``, and whether there were more."""
        wanted, found = query.casefold(), []
        for scanned, item in enumerate(self.lookup.own_items(), 1):
            if wanted and (wanted in item.item_id.casefold() or wanted in item.description.casefold()):
                if len(found) == MAX_RESULTS:
                    return found, True
                found.append(Match(item.item_id, item.description))
            if scanned % SCAN_SLICE == 0:
                await asyncio.sleep(0)  # let events through: a scan may take seconds
        return found, False

    # --- one item -------------------------------------------------------------------------
    async def _item_answer(self, item_id: str, path: str) -> Answer:
        elsewhere = self.lookup.elsewhere(item_id, path, _message)
        if elsewhere is not None:
            return elsewhere
        view = self._view(item_id)
        if view is None:
            return _message(404, f"No item {item_id} in this group's state.")
        return 200, item_page(view), HTML_TYPE

    def _view(self, item_id: str) -> ItemView | None:
        lookup = self.lookup
        item = lookup.item(item_id)
        if item is None:
            return None
        item_model = lookup.item_model(item_id)
        ledger = None if item_model is None else lookup.ledger(item_model)
        latest = None if ledger is None else ledger.latest([0])[0]
        forecast = None if latest is None else IssuedForecast(item_id, *latest)
        last = item.closed_through if forecast is None else forecast.origin
        first = max(item.born, last - lookup.model.horizons + 1)
        scored = None if ledger is None else lookup.last_scored(item, item_model, ledger)
        return ItemView(item, forecast, first, item.daily(UNITS, first, last), scored, self.quality.by_bucket(),
                        tuple(lookup.model.quantiles), lookup.cadence)


def _peer_matches(peer: str, query: str) -> tuple[list[Match], bool] | None:
    """Another worker's own matches, or None where it did not answer in time."""
    url = f"{peer}/explorer/own-items?q={urllib.parse.quote(query)}"
    try:
        with urllib.request.urlopen(url, timeout=PEER_TIMEOUT) as reply:
            body = orjson.loads(reply.read())
    except (OSError, orjson.JSONDecodeError):  # URLError, HTTPError and timeouts are OSErrors
        return None
    return [Match(item_id, description) for item_id, description in body["items"]], body["more"]


# --- HTML ---------------------------------------------------------------------------------
def item_page(view: ItemView) -> bytes:
    item, e, period = view.item, html.escape, view.cadence.period
    head = (f"<h1>{e(item.item_id)}</h1><p class=description>{e(item.description or '(no description)')}</p>")
    if view.forecast is None:
        chart = f"<p>No forecast yet: the item's first {period} has not closed.</p>"
    else:
        chart = (f"<h2>Forecast from the {period} of {view.cadence.iso(view.forecast.origin)}</h2>"
                 "<div class=chart><canvas id=fan></canvas></div>"
                 f"<script type=application/json id=fan-data>{_script_json(fan_series(view))}</script>"
                 f"<script src=\"/explorer/static/{CHART_JS}\"></script><script>{FAN_JS}</script>")
    body = head + chart + _scored_table(view) + _quality_table(view.quality, view.quantiles, period)
    return _page(f"Item {item.item_id}", _search_form("") + body)


def _bands(quantiles: tuple[float, ...]) -> tuple[int, int, int]:
    """Columns of the band's edges (the outer quantiles) and of the median."""
    return 0, int(np.argmin(np.abs(np.asarray(quantiles) - 0.5))), len(quantiles) - 1


def _level(q: float) -> str:
    return f"P{round(q * 100)}"


def fan_series(view: ItemView) -> dict:
    """The chart's series over one axis of periods: actuals up to the origin, quantiles after it."""
    forecast, n_actual = view.forecast, len(view.actuals)
    horizons = len(forecast.values)
    low, mid, high = _bands(view.quantiles)
    periods = range(view.first_actual, forecast.origin + horizons + 1)
    gap = [None] * n_actual
    return {
        "labels": [view.cadence.iso(period) for period in periods],
        "unit": f"units a {view.cadence.period}",
        "actual": view.actuals.tolist() + [None] * horizons,
        "low": gap + forecast.values[:, low].tolist(),
        "mid": gap + forecast.values[:, mid].tolist(),
        "high": gap + forecast.values[:, high].tolist(),
        "names": {"low": _level(view.quantiles[low]), "mid": _level(view.quantiles[mid]),
                  "high": _level(view.quantiles[high])},
    }


def _scored_table(view: ItemView) -> str:
    """The last closed period's forecasts, newest first: how the forecast of one period moved
    as it neared, beside what sold."""
    period = view.cadence.period
    if view.last_scored is None:
        return f"<h2>Scored forecasts</h2><p>None yet: no forecast of this item has reached its {period}.</p>"
    e = view.last_scored.errors
    low, mid, high = _bands(view.quantiles)
    names = " · ".join(_level(view.quantiles[i]) for i in (low, mid, high))
    losses = pinball_loss(e.actual, e.forecasts, np.asarray(view.quantiles)).mean(axis=-1)
    rows = [f"<tr><td>{view.cadence.iso(origin)}</td><td>{horizon}</td>"
            f"<td>{' · '.join(_num(values[i]) for i in (low, mid, high))}</td><td>{loss:.3f}</td></tr>"
            for origin, horizon, values, loss in reversed(list(zip(e.origins, e.horizons, e.forecasts, losses)))]
    return (f"<h2>Forecasts of {view.cadence.iso(e.target)}, the last closed {period}: {_num(e.actual)} sold</h2>"
            f"<table id=scored><thead><tr><th>Made on</th><th>Horizon</th><th>{names}</th>"
            f"<th>Mean pinball loss</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _quality_table(quality: dict[str, BucketQuality], quantiles: tuple[float, ...], period: str) -> str:
    title = "<h2>This worker's rolling quality by horizon</h2>"
    if not quality:
        return title + "<p>No forecast of this worker has been scored yet.</p>"
    mid = _bands(quantiles)[1]
    rows = "".join(f"<tr><td>{bucket} {period}s</td><td>{q.forecasts:,}</td><td>{q.wql.mean():.3f}</td>"
                   f"<td>{q.wql[mid]:.3f}</td><td>{q.coverage:.1%}</td></tr>" for bucket, q in quality.items())
    return (title + "<p>Over its own partitions' items, for the target days of the last week.</p>"
            "<table id=quality><thead><tr><th>Horizon</th><th>Forecasts scored</th><th>Mean wQL</th>"
            f"<th>wQL {_level(quantiles[mid])}</th><th>Actuals inside the band</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _results(query: str, matches: list[Match], more: bool, silent: list[str]) -> str:
    e = html.escape
    notes = "".join(f"<p class=warning>Worker {e(peer)} did not answer: its items are missing.</p>"
                    for peer in silent)
    if not matches:
        return notes + f"<p id=no-match>No item matches “{e(query)}”.</p>"
    rows = "".join(f"<tr><td><a href=\"/explorer/items/{e(urllib.parse.quote(m.item_id, safe=''))}\">"
                   f"{e(m.item_id)}</a></td><td>{e(m.description)}</td></tr>" for m in matches)
    count = f"The first {len(matches)} matches (more exist: narrow the search)." if more else f"{len(matches)} matches."
    return (notes + f"<p>{count}</p><table id=matches><thead><tr><th>Item</th><th>Description</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _search_form(query: str) -> str:
    return ("<form action=/explorer method=get><input name=q size=40 placeholder=\"item id or description\" "
            f"value=\"{html.escape(query)}\"> <button>Find</button></form>")


def _message(status: int, text: str, headers: dict[str, str] | None = None) -> Answer:
    return status, _page(text, _search_form("") + f"<p id=message>{html.escape(text)}</p>"), {**HTML_TYPE,
                                                                                               **(headers or {})}


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><p><a href=/explorer>Forecast explorer</a></p>{body}"
            "</body></html>").encode()


def _script_json(value: dict) -> str:
    """JSON safe inside a <script> element: no ``<``, so no value can close it."""
    return orjson.dumps(value).decode().replace("<", "\\u003c")


def _num(value: float) -> str:
    return f"{value:,.3f}".rstrip("0").rstrip(".")


CSS = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1000px; color: #222; }
h1 { margin-bottom: 0; } .description { margin-top: .2em; color: #555; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { padding: .25em .8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.chart { position: relative; height: 360px; } .warning { color: #a40; }
"""

# Draws the fan chart from the page's JSON; the band is the high series filled down to the low one.
FAN_JS = """
const fan = JSON.parse(document.getElementById("fan-data").textContent);
const series = (label, data, extra) => ({label, data, pointRadius: 0, borderWidth: 2, spanGaps: false, ...extra});
new Chart(document.getElementById("fan"), {
  type: "line",
  data: {labels: fan.labels, datasets: [
    series(fan.names.low, fan.low, {borderColor: "rgba(54,112,198,.35)", borderWidth: 1}),
    series(fan.names.high, fan.high, {borderColor: "rgba(54,112,198,.35)", borderWidth: 1, fill: "-1",
                                      backgroundColor: "rgba(54,112,198,.2)"}),
    series(fan.names.mid, fan.mid, {borderColor: "rgb(54,112,198)"}),
    series("actual", fan.actual, {borderColor: "#222", pointRadius: 2}),
  ]},
  options: {animation: false, maintainAspectRatio: false, interaction: {mode: "index", intersect: false},
            scales: {y: {beginAtZero: true, title: {display: true, text: fan.unit}}}},
});
"""
