"""Model inputs shared by MQ-CNN and MQTransformer: calendar, per-day past inputs, item
features, and dense training batches.

Public API
----------
- ``calendar(periods, cadence) -> (..., N_CALENDAR)``: calendar/event features of period
  indices (``mqstream.periods``): weekday, annual cycle, UK bank holidays, Christmas
  closure, the Saturday closure, distance to the previous/next holiday; a week's are the
  mean of its days' (the share of its days that are holidays, ...).
- ``past_inputs(units, views, price, periods, cadence) -> (..., N_PAST)``: what the encoder
  reads for one closed period: log1p(units), log1p(views), log1p(price) and its calendar.
- ``item_tokens(description) -> (MAX_TOKENS,) int`` and ``price_band(price) -> int``: the
  item features that let a new item (no history) get a forecast.
- ``SeriesBatch`` / ``series_batch(...)``: dense daily series of a set of items as tensors,
  the input of the models' full (training / recompute) path.

Known future inputs per horizon are the calendar of the target day and the planned price,
which is the last known price (there is no price plan in the data).
"""
from __future__ import annotations

import re
import zlib
from functools import lru_cache
from dataclasses import dataclass

import numpy as np
import torch

from mqstream.periods import DAILY, Cadence, day_of_iso

# England & Wales bank holidays 2009-2012, from https://www.gov.uk/bank-holidays (the
# 2009-2011 dates from the archived copies of that page). 2011-04-29 is the royal wedding,
# 2012-06-04/05 the moved spring holiday and the Diamond Jubilee.
BANK_HOLIDAYS = np.array(sorted(day_of_iso(d) for d in [
    "2009-01-01", "2009-04-10", "2009-04-13", "2009-05-04", "2009-05-25", "2009-08-31",
    "2009-12-25", "2009-12-28",
    "2010-01-01", "2010-04-02", "2010-04-05", "2010-05-03", "2010-05-31", "2010-08-30",
    "2010-12-27", "2010-12-28",
    "2011-01-03", "2011-04-22", "2011-04-25", "2011-04-29", "2011-05-02", "2011-05-30",
    "2011-08-29", "2011-12-26", "2011-12-27",
    "2012-01-02", "2012-04-06", "2012-04-09", "2012-05-07", "2012-06-04", "2012-06-05",
    "2012-08-27", "2012-12-25", "2012-12-26",
]))
# The shop closes from Christmas Eve to the New Year holiday: seen in the data for 2009/10
# and 2010/11 (no sales at all on those days); 2011/12 and 2012/13 assume the same rule.
CHRISTMAS_CLOSURES = [("2009-12-24", "2010-01-03"), ("2010-12-24", "2011-01-03"),
                      ("2011-12-24", "2012-01-02"), ("2012-12-24", "2013-01-01")]
CLOSED_DAYS = np.array(sorted({d for a, b in CHRISTMAS_CLOSURES for d in range(day_of_iso(a), day_of_iso(b) + 1)}))
HOLIDAYS = np.union1d(BANK_HOLIDAYS, CLOSED_DAYS)  # what "distance to a holiday" measures
HOLIDAY_HORIZON = 366  # distances saturate at a year; read on a log scale, so the Christmas ramp
# (weeks to months ahead) is as visible as the last days before a bank holiday
SATURDAY = 5  # Monday = 0; the shop does not trade on Saturdays
YEAR_DAYS = 365.2425

N_CALENDAR = 16
N_PAST = 3 + N_CALENDAR
VIEWS_INPUT = 1  # column of log1p(views) in past_inputs


def calendar(periods: np.ndarray, cadence: Cadence = DAILY) -> np.ndarray:
    """(..., N_CALENDAR) float32 features of integer period indices: a day's, or the mean
    over a week's days. Outside 2009-2012 the holiday flags are 0 and the distances saturate
    at HOLIDAY_HORIZON."""
    periods = np.asarray(periods, dtype=np.int64)
    if cadence.days == 1:
        return _day_calendar(periods)
    days = cadence.first_day(periods)[..., None] + np.arange(cadence.days)
    return _day_calendar(days).mean(-2)


def _day_calendar(days: np.ndarray) -> np.ndarray:
    lo, table = _calendar_table()
    if days.size and days.min() >= lo and days.max() < lo + len(table):
        return table[days - lo]  # the serving path asks for the same few days again and again
    return _calendar(days)


@lru_cache(maxsize=1)
def _calendar_table() -> tuple[int, np.ndarray]:
    lo = day_of_iso("2000-01-01")
    return lo, _calendar(np.arange(lo, day_of_iso("2040-01-01")))


def _calendar(days: np.ndarray) -> np.ndarray:
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    phase = 2 * np.pi * days / YEAR_DAYS  # annual cycle; a constant offset from day-of-year
    nxt = np.searchsorted(HOLIDAYS, days, side="left")  # first holiday >= day
    prv = np.searchsorted(HOLIDAYS, days, side="right") - 1  # last holiday <= day
    big = np.int64(10**6)
    to_next = np.where(nxt < len(HOLIDAYS), HOLIDAYS[np.minimum(nxt, len(HOLIDAYS) - 1)] - days, big)
    since_prev = np.where(prv >= 0, days - HOLIDAYS[np.maximum(prv, 0)], big)
    feats = [np.eye(7)[weekday],  # (..., 7)
             np.stack([np.sin(phase), np.cos(phase), np.sin(2 * phase), np.cos(2 * phase)], -1),
             np.isin(days, BANK_HOLIDAYS)[..., None],
             np.isin(days, CLOSED_DAYS)[..., None],
             (weekday == SATURDAY)[..., None],
             _log_distance(to_next)[..., None],
             _log_distance(since_prev)[..., None]]
    return np.concatenate(feats, axis=-1).astype(np.float32)


def _log_distance(days: np.ndarray) -> np.ndarray:
    """Days to or from a holiday in [0, 1]: log1p(d) / log1p(HOLIDAY_HORIZON), saturating there."""
    return np.log1p(np.minimum(days, HOLIDAY_HORIZON)) / np.log1p(HOLIDAY_HORIZON)


def past_inputs(units: np.ndarray, views: np.ndarray, price: np.ndarray, periods: np.ndarray,
                cadence: Cadence = DAILY) -> np.ndarray:
    """(..., N_PAST) float32: the encoder's input for closed periods (arrays broadcast)."""
    log = lambda a: np.log1p(np.maximum(np.asarray(a, np.float64), 0))
    logs = np.stack(np.broadcast_arrays(log(units), log(views), log(price)), axis=-1)
    cal = np.broadcast_to(calendar(periods, cadence), logs.shape[:-1] + (N_CALENDAR,))
    return np.concatenate([logs.astype(np.float32), cal], axis=-1)


def encoder_inputs(past: torch.Tensor, use_views: bool) -> torch.Tensor:
    """(..., N_PAST) past inputs as a model reads them: without page views unless it uses them."""
    return past if use_views else past.index_fill(-1, torch.tensor([VIEWS_INPUT]), 0.0)


# --- item features (cold start) ---------------------------------------------------------
MAX_TOKENS = 8  # descriptions are short ("WHITE HANGING HEART T-LIGHT HOLDER")
TOKEN_BUCKETS = 1024  # hashed vocabulary; id 0 is padding
PRICE_BAND_EDGES = np.array([0.01, 0.5, 1.0, 2.0, 3.5, 6.0, 10.0, 20.0])  # GBP per unit
N_PRICE_BANDS = len(PRICE_BAND_EDGES) + 1  # band 0: price unknown (0)
WORD = re.compile(r"[a-z]+")


def item_tokens(description: str) -> np.ndarray:
    """(MAX_TOKENS,) int32 hashed word ids in 1..TOKEN_BUCKETS-1, 0-padded."""
    words = WORD.findall(description.lower())[:MAX_TOKENS]
    ids = [1 + zlib.crc32(w.encode()) % (TOKEN_BUCKETS - 1) for w in words]
    return np.array(ids + [0] * (MAX_TOKENS - len(ids)), dtype=np.int32)


def price_band(price: float) -> int:
    return int(np.searchsorted(PRICE_BAND_EDGES, price, side="right"))


# --- dense batches for the full path ----------------------------------------------------
@dataclass
class SeriesBatch:
    """B items over T common periods; an item exists from its first column on (its state was
    created the period before). ``price`` is back-filled before that with the item's known
    price, so the origin "day before the first day" (a cold start) has a planned price."""

    days: torch.Tensor  # (T,) int64 period index of each column
    past: torch.Tensor  # (B, T, N_PAST) float32 encoder inputs (zero where the item does not exist)
    units: torch.Tensor  # (B, T) float32 demand, the target
    price: torch.Tensor  # (B, T) float32 last known price (planned price at an origin)
    exists: torch.Tensor  # (B, T) bool
    tokens: torch.Tensor  # (B, MAX_TOKENS) int64
    band: torch.Tensor  # (B,) int64

    def __len__(self) -> int:
        return self.units.shape[0]

    def select(self, rows: np.ndarray) -> "SeriesBatch":
        r = torch.as_tensor(rows)
        return SeriesBatch(self.days, self.past[r], self.units[r], self.price[r], self.exists[r],
                           self.tokens[r], self.band[r])


def series_batch(units: np.ndarray, views: np.ndarray, price: np.ndarray, start_day: int,
                 first_col: np.ndarray, descriptions: np.ndarray, item_price: np.ndarray,
                 cadence: Cadence = DAILY) -> SeriesBatch:
    """Tensors of (N, T) dense series of periods from ``start_day``; ``first_col[i]`` is item
    i's first closed period (column), ``item_price[i]`` its price as known at creation
    (``ItemInfo.price``)."""
    n, t = units.shape
    days = start_day + np.arange(t)
    exists = np.arange(t)[None, :] >= np.asarray(first_col)[:, None]  # (N, T)
    past = past_inputs(units, views, price, days, cadence) * exists[..., None]  # (N, T, N_PAST)
    planned = np.where(exists & (price > 0), price, np.asarray(item_price, np.float32)[:, None])
    return SeriesBatch(
        days=torch.as_tensor(days, dtype=torch.int64),
        past=torch.as_tensor(past, dtype=torch.float32),
        units=torch.as_tensor(units * exists, dtype=torch.float32),
        price=torch.as_tensor(planned, dtype=torch.float32),
        exists=torch.as_tensor(exists),
        tokens=torch.as_tensor(np.stack([item_tokens(d) for d in descriptions]), dtype=torch.int64),
        band=torch.as_tensor([price_band(p) for p in item_price], dtype=torch.int64),
    )
