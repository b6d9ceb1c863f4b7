"""The explorer's item page as plain functions, without a worker (tests/test_e2e_consumers.py
drives the real pages in headless Chromium)."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

import numpy as np
import orjson

from mqstream.periods import DAILY, Cadence, iso_of_day
from mqstream.models.protocol import DEFAULT_QUANTILES, TargetErrors
from mqstream.state.refresh import IssuedForecast, RefreshPolicy, ScoredDay, new_item
from mqstream.streams.explorer import ItemView, fan_series, item_page
from mqstream.streams.metrics import BucketQuality

DAY, HORIZONS = 15_000, 28
HOSTILE = 'MUG <img src=x onerror="alert(1)"></script><script>alert(2)</script>'


def view_of(description: str = "WHITE MUG") -> ItemView:
    item = new_item("85123A", DAY - 3, RefreshPolicy(28, 56, 1024))
    item.description = description
    values = np.arange(HORIZONS * 9, dtype=np.float64).reshape(HORIZONS, 9)  # every quantile different
    forecast = IssuedForecast(item.item_id, DAY, values)
    scored = ScoredDay(item.item_id, TargetErrors(DAY, 4.0, np.array([DAY - 1]), values[:1]))
    quality = {"1-7": BucketQuality(np.full(9, 0.5), 0.8, 12)}
    return ItemView(item, forecast, DAY - 3, np.array([1.0, 0.0, 2.0, 4.0]), scored, quality, DEFAULT_QUANTILES, DAILY)


def embedded_chart_data(page: bytes) -> dict:
    return orjson.loads(re.search(rb"<script type=application/json id=fan-data>(.*?)</script>", page, re.S)[1])


def test_the_fan_chart_draws_the_band_from_the_outer_quantiles_and_the_line_from_the_median():
    view = view_of()
    fan = fan_series(view)
    gap = [None] * 4
    assert fan["low"] == gap + view.forecast.values[:, 0].tolist()
    assert fan["mid"] == gap + view.forecast.values[:, 4].tolist()
    assert fan["high"] == gap + view.forecast.values[:, 8].tolist()
    assert fan["names"] == {"low": "P10", "mid": "P50", "high": "P90"}


def test_the_fan_chart_shows_the_actuals_up_to_the_origin_and_the_forecast_after_it():
    fan = fan_series(view_of())
    assert fan["labels"] == [iso_of_day(day) for day in range(DAY - 3, DAY + HORIZONS + 1)]  # the origin is DAY
    assert fan["actual"] == [1.0, 0.0, 2.0, 4.0] + [None] * HORIZONS


def test_the_page_embeds_exactly_the_chart_data():
    view = view_of()
    assert embedded_chart_data(item_page(view)) == fan_series(view)


def test_a_description_cannot_put_markup_or_script_into_the_page():
    page = item_page(view_of(HOSTILE))
    assert b"<img" not in page and b"alert(2)</script>" not in page
    assert b"&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert page.count(b"<script") == 3  # the chart's data, Chart.js and the few lines that draw it


def test_a_weekly_item_page_names_weeks_by_their_monday_and_counts_units_a_week():
    weeks = Cadence("week")
    view = replace(view_of(), cadence=weeks)
    fan = fan_series(view)
    assert fan["labels"][:2] == [weeks.iso(DAY - 3), weeks.iso(DAY - 2)]
    assert all(dt.date.fromisoformat(label).weekday() == 0 for label in fan["labels"])
    assert fan["unit"] == "units a week"
    page = item_page(view).decode()
    assert f"Forecast from the week of {weeks.iso(DAY)}" in page and "the last closed week: 4 sold" in page
