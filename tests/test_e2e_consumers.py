"""What readers get from two real workers over the real broker: every message valid against
its schema (read with kcat, an independent client), one current forecast per item on the
compacted topic, change events exactly where the rule puts them, HTTP lookups routed to the
worker that owns the item, and the explorer pages as headless Chromium shows them."""
from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from mqstream.periods import day_of_iso, day_of_ts
from mqstream.models.dataset import demand_series, load_transactions
from mqstream.client import ForecastClient
from mqstream.schemas import validate, validate_headers
from mqstream.state.refresh import IssuedForecast
from mqstream.streams.changes import ChangeRule, material_change
from mqstream.streams.offsets import end_offsets
from mqstream.streams.replay import replay_events, send
from mqstream.streams.topics import create_topics
from tests.kafka_helpers import fresh_settings, latest_by, read_topic, start_worker, stop_worker, wait_caught_up

pytestmark = [pytest.mark.e2e, pytest.mark.consumers, pytest.mark.slow]
FIRST, LAST = day_of_iso("2011-03-01"), day_of_iso("2011-03-06")
HORIZONS = 28


@pytest.fixture(scope="module")
def served(kafka_settings, tmp_path_factory):
    """(settings, {worker name: HTTP base URL}) with two workers of one group, caught up and
    still running."""
    settings = fresh_settings(kafka_settings, tmp_path_factory.mktemp("consumers"), change_share=0.25,
                              stock_level=5.0)
    create_topics(settings)
    workers = {name: start_worker(settings, name) for name in ("w1", "w2")}
    try:
        send(replay_events(FIRST, LAST, load_transactions()), settings, progress=False)
        wait_caught_up(settings, *workers.values())
        urls = {name: f"http://127.0.0.1:{(Path(settings.data_dir) / name / 'metrics.port').read_text()}"
                for name in workers}
        yield settings, urls
    finally:
        for proc in workers.values():
            stop_worker(proc)


def forecasts_by_item(settings) -> dict[str, dict[int, np.ndarray]]:
    out: dict[str, dict[int, np.ndarray]] = {}
    for (item, origin), body in latest_by(read_topic(settings, settings.topic("forecasts")), "item_id", "origin").items():
        out.setdefault(item, {})[day_of_iso(origin)] = np.array(body["values"])
    return out


def test_every_published_message_read_by_kcat_is_valid_against_its_schema(served):
    settings, _ = served
    for name, kind in (("forecasts", "forecast"), ("forecasts-latest", "forecast"),
                       ("forecast-errors", "forecast-error"), ("forecast-changes", "forecast-change")):
        topic = settings.topic(name)
        out = subprocess.run(["kcat", "-b", settings.kafka_bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
                              "-q", "-f", "%s\n"], capture_output=True, check=True, timeout=120).stdout
        bodies = [line for line in out.split(b"\n") if line]
        assert len(bodies) == sum(end_offsets(settings, topic).values()) > 0, name
        for body in bodies:
            validate(kind, body)
    for record in read_topic(settings, settings.topic("forecasts"))[:500]:
        validate_headers(record.headers, orjson.loads(record.value))


def test_a_new_reader_of_the_compacted_topic_gets_exactly_the_current_forecast_of_every_item(served):
    settings, _ = served
    latest = ForecastClient(settings.kafka_bootstrap, settings.topic_prefix, validate=True).latest()
    published = forecasts_by_item(settings)
    assert latest.keys() == published.keys()
    for item, forecast in latest.items():
        newest = max(published[item])
        assert day_of_iso(forecast.origin.isoformat()) == newest
        np.testing.assert_allclose(forecast.values, published[item][newest])


def test_change_events_are_exactly_those_the_rule_gives_for_the_published_forecasts(served):
    settings, _ = served
    rule = ChangeRule(settings.change_share, settings.stock_level)
    quantiles = tuple(np.arange(1, 10) / 10)
    expected = {}
    for item, by_origin in forecasts_by_item(settings).items():
        previous = None
        for origin in sorted(by_origin):
            current = IssuedForecast(item, origin, by_origin[origin])
            kept = previous if previous is not None and previous.origin >= origin - HORIZONS else None
            change = material_change(kept, current, quantiles, rule)
            if change is not None:
                expected[(item, origin)] = sorted(change.reasons)
            previous = current
    got = {(item, day_of_iso(after)): sorted(body["reasons"]) for (item, after), body in
           latest_by_after(read_topic(settings, settings.topic("forecast-changes"))).items()}
    assert got == expected
    assert {r for reasons in got.values() for r in reasons} == {"p50_7d_moved", "p90_7d_crossed_stock"}


def latest_by_after(records) -> dict:
    out = {}
    for record in records:
        body = orjson.loads(record.value)
        out[(body["item_id"], body["after"]["origin"])] = body
    return out


def get(url: str) -> tuple[int, dict, str]:
    """(status, JSON body, URL that answered), following redirects."""
    try:
        with urllib.request.urlopen(url, timeout=15) as reply:
            return reply.status, orjson.loads(reply.read()), reply.url
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read()), err.url


def test_each_worker_answers_for_its_items_and_redirects_to_the_owner_of_the_others(served):
    settings, urls = served
    latest = ForecastClient(settings.kafka_bootstrap, settings.topic_prefix).latest()
    answered_by = set()
    for item in sorted(latest)[:40]:
        for base in urls.values():
            status, body, answered = get(f"{base}/forecasts/{item}")
            assert status == 200, body
            assert (body["item_id"], body["origin"]) == (item, latest[item].origin.isoformat())
            np.testing.assert_allclose(body["values"], latest[item].values)
            validate("forecast", body)
            answered_by.add(answered.rsplit("/forecasts/", 1)[0])
    assert answered_by == set(urls.values())  # both own items; each redirected to the other
    status, body, _ = get(f"{urls['w1']}/forecasts/NO-SUCH-ITEM")
    assert status == 404 and "NO-SUCH-ITEM" in body["error"]


def test_the_errors_lookup_equals_the_published_errors_of_the_last_closed_day(served):
    settings, urls = served
    errors = latest_by(read_topic(settings, settings.topic("forecast-errors")), "item_id", "target")
    last_target = max(day_of_iso(target) for _, target in errors)
    items = sorted(item for item, target in errors if day_of_iso(target) == last_target)[:10]
    for item in items:
        status, body, _ = get(f"{urls['w1']}/forecasts/{item}/errors")
        assert status == 200
        assert len(body["errors"]) == 1  # a worker keeps no earlier target's forecasts
        by_target = {e["target"]: e for e in body["errors"]}
        published = errors[(item, max(by_target))]
        served_error = by_target[max(by_target)]
        assert served_error["origins"] == published["origins"]
        assert served_error["actual"] == published["actual"]
        np.testing.assert_allclose(served_error["pinball"], published["pinball"], atol=1e-6)
        for e in body["errors"]:
            validate("forecast-error", e)


# --- the explorer in a real browser -----------------------------------------------------------
CHART_SERIES = """const chart = Chart.getChart("fan");
return {labels: chart.data.labels, series: Object.fromEntries(chart.data.datasets.map(d => [d.label, d.data]))};"""


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through its own chromedriver: nothing is downloaded."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1500"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options, webdriver.ChromeService(shutil.which("chromedriver")))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def window_sales():
    tx = load_transactions()
    return tx[day_of_ts(tx["ts"]).between(FIRST, LAST)]


def test_the_explorer_charts_an_items_forecast_and_actuals_and_redirects_to_its_owner(served, browser, window_sales):
    settings, urls = served
    series = demand_series(window_sales, start_day=FIRST, end_day=LAST)
    item = str(series.items[np.argmax(series.units.sum(axis=1))])  # the best seller: a chart worth seeing
    status, forecast, owner = get(f"{urls['w1']}/forecasts/{item}")
    assert status == 200
    owner = owner.rsplit("/forecasts/", 1)[0]
    values, origin = np.array(forecast["values"]), day_of_iso(forecast["origin"])
    for base in urls.values():  # one of them redirects
        browser.get(f"{base}/explorer/items/{item}")
        assert browser.current_url == f"{owner}/explorer/items/{item}"
        assert browser.find_element(By.TAG_NAME, "h1").text == item
        chart = browser.execute_script(CHART_SERIES)
        days = [day_of_iso(label) for label in chart["labels"]]
        assert days == list(range(FIRST, origin + HORIZONS + 1))  # the item sold on FIRST
        n_actual = origin - FIRST + 1
        for label, column in (("P10", 0), ("P50", 4), ("P90", 8)):
            assert chart["series"][label] == [None] * n_actual + values[:, column].tolist()
        sold = demand_series(window_sales, np.array([item]), FIRST, origin).units[0]
        assert chart["series"]["actual"] == sold.tolist() + [None] * HORIZONS
        assert browser.find_elements(By.CSS_SELECTOR, "#scored tbody tr")
        assert browser.find_elements(By.CSS_SELECTOR, "#quality tbody tr")


def test_the_explorer_page_of_an_unknown_item_says_so_with_a_404(served, browser):
    _, urls = served
    for base in urls.values():
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{base}/explorer/items/NO-SUCH-ITEM", timeout=15)
        assert answer.value.code == 404
        browser.get(f"{base}/explorer/items/NO-SUCH-ITEM")
        assert "No item NO-SUCH-ITEM" in browser.find_element(By.ID, "message").text


def found_items(browser, base: str, query: str) -> dict[str, str]:
    """{item id: description} listed by the explorer's search page."""
    browser.get(f"{base}/explorer?q={urllib.parse.quote(query)}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#matches tbody tr")
    return dict(tuple(cell.text for cell in row.find_elements(By.TAG_NAME, "td")) for row in rows)


def test_the_explorer_search_by_description_finds_the_matching_items_of_every_worker(served, browser, window_sales):
    _, urls = served
    # each of these items has one description in the window, so which one its state keeps is moot
    matching = window_sales[window_sales["description"].str.casefold().str.contains("jumbo bag")]
    expected = dict(zip(matching["item_id"], matching["description"]))
    owners = {get(f"{urls['w1']}/forecasts/{item}")[2].rsplit("/forecasts/", 1)[0] for item in expected}
    assert owners == set(urls.values())  # the answer needs both workers' items
    for base in urls.values():
        assert found_items(browser, base, "Jumbo BAG") == expected


def test_the_explorer_search_by_id_finds_the_item_and_its_page(served, browser, window_sales):
    _, urls = served
    item = str(window_sales["item_id"].iloc[0])
    assert item in found_items(browser, urls["w2"], item.lower())
    browser.find_element(By.LINK_TEXT, item).click()
    assert browser.find_element(By.TAG_NAME, "h1").text == item


def test_a_search_lists_at_most_50_items_and_says_that_there_are_more(served, browser):
    _, urls = served
    assert len(found_items(browser, urls["w1"], "a")) == 50
    assert "more exist" in browser.find_element(By.TAG_NAME, "body").text
