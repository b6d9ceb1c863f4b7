"""Days: the period of every series, state, message and score, and the names of a day.

A day is an integer, the days since 1970-01-01 (UTC). An event belongs to the day of its
epoch-seconds timestamp; messages, files and the command line name a day by its ISO date.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

DAY_SECONDS = 86_400
EPOCH = dt.date(1970, 1, 1)


def day_of_ts(ts_seconds: np.ndarray | int) -> np.ndarray | int:
    """The day of event times in epoch seconds (arrays and pandas columns too)."""
    return ts_seconds // DAY_SECONDS


def day_of_iso(text: str) -> int:
    """The day an ISO date (``2011-03-01``) names."""
    return (dt.date.fromisoformat(text) - EPOCH).days


def iso_of_day(day: int) -> str:
    """The ISO date of a day."""
    return (EPOCH + dt.timedelta(days=int(day))).isoformat()
