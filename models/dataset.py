"""Transactions as events and as demand series of periods (days, or weeks: ``mqstream.periods``).

Demand follows docs/EVALUATION.md: units sold on a calendar day (or week) are the sum of
``Quantity`` over lines whose invoice does not start with ``C`` and whose quantity and
price are both positive. Cancellations and adjustments stay events for the stream.
Any retailer's files are read by ``models.history``; ``load_transactions`` is the shipped file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mqstream.periods import DAILY, Cadence
from mqstream.models.history import DATA_PATH, PRODUCT_CODE, SHIPPED, read_sales


def load_transactions(path: Path = DATA_PATH) -> pd.DataFrame:
    """Every invoice line of the shipped file, in file order (``models.history.read_sales``):
    ``row`` is its 0-based position in the file and ``event_id`` is "orii-<row>" (31,550
    lines are exact copies of another line, and separate sales)."""
    return read_sales(path, SHIPPED).frame


def is_demand(invoice: str, quantity: float, price: float) -> bool:
    """One line counts as demand: the rule of EVALUATION.md for a single event."""
    return quantity > 0 and price > 0 and not invoice.startswith("C")


def demand_mask(tx: pd.DataFrame) -> pd.Series:
    return (tx["quantity"] > 0) & (tx["price"] > 0) & ~tx["invoice"].str.startswith("C")


@dataclass(frozen=True)
class DemandSeries:
    """Dense demand per period for a set of items: row i is ``items[i]``, column t is period
    ``start_day + t`` (a day, or a week: the series' cadence). ``price`` carries the last
    seen unit price forward (0 before any)."""

    items: np.ndarray  # (N,) str
    descriptions: np.ndarray  # (N,) str
    start_day: int
    units: np.ndarray  # (N, T) float32
    price: np.ndarray  # (N, T) float32
    cadence: Cadence = DAILY

    @property
    def days(self) -> np.ndarray:
        return self.start_day + np.arange(self.units.shape[1])

    def column(self, day: int) -> int:
        return day - self.start_day


def demand_series(tx: pd.DataFrame, items: np.ndarray | None = None, start_day: int | None = None,
                  end_day: int | None = None, cadence: Cadence = DAILY) -> DemandSeries:
    """Demand per item and period over periods [start_day, end_day] (defaults: the file's
    first and last)."""
    days = cadence.of_ts(tx["ts"].to_numpy())
    start_day = int(days.min()) if start_day is None else start_day
    end_day = int(days.max()) if end_day is None else end_day
    if items is None:
        items = np.array(sorted(tx["item_id"].unique()))
    index = pd.Index(items)
    row = index.get_indexer(tx["item_id"])
    col = days - start_day
    keep = (row >= 0) & (col >= 0) & (col <= end_day - start_day)
    n, t = len(items), end_day - start_day + 1

    units = np.zeros((n, t), np.float32)
    sold = keep & demand_mask(tx).to_numpy()
    np.add.at(units, (row[sold], col[sold]), tx["quantity"].to_numpy()[sold])

    price = np.full((n, t), np.nan, np.float32)
    priced = keep & (tx["price"].to_numpy() > 0)
    price[row[priced], col[priced]] = tx["price"].to_numpy()[priced]  # last line of a period wins
    price = _forward_fill(price)

    first = tx.drop_duplicates("item_id").set_index("item_id")["description"]
    return DemandSeries(items=np.asarray(items), descriptions=first.reindex(items).fillna("").to_numpy(),
                       start_day=start_day, units=units, price=price, cadence=cadence)


def _forward_fill(a: np.ndarray) -> np.ndarray:
    idx = np.where(np.isnan(a), 0, np.arange(a.shape[1]))
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = a[np.arange(a.shape[0])[:, None], idx]
    return np.nan_to_num(filled, nan=0.0)


MIN_SALE_DAYS = 50  # a product is trained and scored with sales on this many days (docs/EVALUATION.md)


def select_products(series: DemandSeries, before_day: int, min_periods: int = MIN_SALE_DAYS,
                    products: re.Pattern | None = PRODUCT_CODE) -> np.ndarray:
    """Boolean mask of the items scored by EVALUATION.md: ids that ``products`` matches (the
    shipped data's product-like codes; None: every id) with sales in at least ``min_periods``
    distinct periods before period ``before_day``."""
    codes = np.array([products is None or bool(products.match(c)) for c in series.items], bool)
    selling = (series.units[:, : series.column(before_day)] > 0).sum(axis=1)
    return codes & (selling >= min_periods)


def views_series(views: pd.DataFrame, items: np.ndarray, start_day: int, end_day: int,
                 cadence: Cadence = DAILY) -> np.ndarray:
    """(N, T) real page views of ``items`` summed per period over [start_day, end_day]
    (``models.history.read_views`` rows; 0 where an item-period has none)."""
    row = pd.Index(items).get_indexer(views["item_id"])
    col = cadence.of_ts(views["ts"].to_numpy()) - start_day
    keep = (row >= 0) & (col >= 0) & (col <= end_day - start_day)
    out = np.zeros((len(items), end_day - start_day + 1), np.float64)
    np.add.at(out, (row[keep], col[keep]), views["views"].to_numpy()[keep])
    return out
