"""Simulated product page views. No public data pairs page views with these sales, so every
output that shows views must say they are simulated.

The simulator makes views a leading signal of demand: shoppers browse in the days before
they buy. Views on day t are a baseline interest plus a multiple of the demand of the next
three days, with multiplicative log-normal noise, seeded per item so a replay and a training
run see the same numbers.
"""
from __future__ import annotations

import zlib

import numpy as np

LEAD_WEIGHTS = np.array([0.5, 0.3, 0.2])  # share of demand on t+1, t+2, t+3 browsed on day t
VIEWS_PER_UNIT = 3.0
NOISE_SIGMA = 0.4


NOISE_EPOCH_DAY = 14_000  # noise is drawn per absolute day from here, so any window agrees


def simulate_views(item_ids: np.ndarray, units: np.ndarray, start_day: int) -> np.ndarray:
    """(N, T) integer page views for (N, T) daily demand of ``item_ids`` from ``start_day``."""
    n, t = units.shape
    lead = np.zeros_like(units, dtype=np.float64)
    for k, w in enumerate(LEAD_WEIGHTS, start=1):
        lead[:, : t - k] += w * units[:, k:]
    baseline = 1.0 + 0.05 * units.mean(axis=1, keepdims=True)
    views = np.empty((n, t))
    for i, item in enumerate(item_ids):
        rng = np.random.default_rng(zlib.crc32(str(item).encode()))
        offset = start_day - NOISE_EPOCH_DAY
        noise = rng.lognormal(0.0, NOISE_SIGMA, size=offset + t)[offset:]
        views[i] = (baseline[i] + VIEWS_PER_UNIT * lead[i]) * noise
    return np.floor(views).astype(np.int64)
