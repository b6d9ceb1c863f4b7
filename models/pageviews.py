"""Simulated product page views, for exercising the page-view path (the demo's replay, the
tests) when no real views exist (a retailer's own come from a file: ``models.history``). No public data pairs page views with these sales, so every
output that shows or uses them says they are simulated, and no headline score or default
model uses them (``--simulated-views`` asks for them).

The simulator is causal: the views of day t are drawn from the demand of days t, t-1 and
t-2 and an interest level averaged over the days up to t, never from later days. So it
carries no information the sales do not already carry, and a forecast that reads the views
up to its origin has seen nothing after the origin. Noise is log-normal and seeded per item
and absolute day; the interest level averages the days given, from the window's first day.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

ECHO_WEIGHTS = np.array([0.5, 0.3, 0.2])  # share of the demand of t, t-1, t-2 browsed on day t
VIEWS_PER_UNIT = 3.0
INTEREST_PER_UNIT = 0.05  # standing interest: views per unit of the item's mean demand so far
NOISE_SIGMA = 0.4
NOISE_EPOCH_DAY = 14_000  # noise is drawn per absolute day from here, so any window agrees


def page_views(item_ids: np.ndarray, units: np.ndarray, start_day: int, simulated: bool,
               real: np.ndarray | None = None) -> np.ndarray:
    """(N, T) the page views a model reads: ``real`` ones (a file's, per day) when given, else
    simulated when asked, else 0."""
    if real is not None:
        if simulated:
            raise ValueError("real page views and simulated ones exclude each other")
        return real
    return simulate_views(item_ids, units, start_day) if simulated else np.zeros(units.shape, np.int64)


def views_label(simulated: bool, real: Path | str | None = None) -> str:
    """Which page views a run read, as its outputs say it: real ones may enter a score,
    simulated ones never a headline."""
    if real is not None:
        return f"real ({real})"
    return "simulated (models/pageviews.py)" if simulated else "none"


def simulate_views(item_ids: np.ndarray, units: np.ndarray, start_day: int) -> np.ndarray:
    """(N, T) integer page views for (N, T) daily demand of ``item_ids`` from ``start_day``;
    column t depends on columns <= t only."""
    n, t = units.shape
    units = units.astype(np.float64)
    echo = np.zeros_like(units)
    for k, w in enumerate(ECHO_WEIGHTS):
        echo[:, k:] += w * units[:, : t - k]
    mean_so_far = np.cumsum(units, axis=1) / np.arange(1, t + 1)  # (N, T) expanding mean
    interest = 1.0 + INTEREST_PER_UNIT * mean_so_far
    views = np.empty((n, t))
    for i, item in enumerate(item_ids):
        rng = np.random.default_rng(zlib.crc32(str(item).encode()))
        offset = start_day - NOISE_EPOCH_DAY
        noise = rng.lognormal(0.0, NOISE_SIGMA, size=offset + t)[offset:]
        views[i] = (interest[i] + VIEWS_PER_UNIT * echo[i]) * noise
    return np.floor(views).astype(np.int64)
