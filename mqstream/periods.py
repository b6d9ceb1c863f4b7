"""Periods: the unit of every series, state, message and score, and the names of a period.

A period is a day or a week (the setting ``period``; ``Cadence`` holds it). Series, states,
ledgers and horizons count periods as integers: with days, the days since 1970-01-01
(UTC); with weeks, the weeks since the first ``week_start`` weekday on or after that date
(a Monday unless set otherwise). An event belongs to the period of its epoch-seconds
timestamp; messages, files and the command line name a period by the ISO date of its
first day, and a date given on the command line names the period that contains it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DAY_SECONDS = 86_400
EPOCH = dt.date(1970, 1, 1)
PERIODS = ("day", "week")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FIRST_MONDAY = 4  # 1970-01-05, the first Monday after the epoch (a Thursday)


def day_of_ts(ts_seconds: np.ndarray | int) -> np.ndarray | int:
    """The day of event times in epoch seconds (arrays and pandas columns too)."""
    return ts_seconds // DAY_SECONDS


def day_of_iso(text: str) -> int:
    """The day an ISO date (``2011-03-01``) names."""
    return (dt.date.fromisoformat(text) - EPOCH).days


@lru_cache(maxsize=8192)
def iso_of_day(day: int) -> str:
    """The ISO date of a day (cached: a close names the same few dozen days for every item)."""
    return (EPOCH + dt.timedelta(days=int(day))).isoformat()


@dataclass(frozen=True)
class Cadence:
    """How long a period is, and where weeks start (``week_start``: 0 = Monday .. 6 = Sunday)."""

    period: str = "day"
    week_start: int = 0

    def __post_init__(self):
        if self.period not in PERIODS or not 0 <= self.week_start <= 6:
            raise ValueError(f"a period is one of {PERIODS} with week_start 0..6, got {self.period!r}, {self.week_start}")
        # of_ts runs a few times for every event a worker takes in: its constants, computed once
        object.__setattr__(self, "_ts_offset", self._anchor * DAY_SECONDS)
        object.__setattr__(self, "_period_seconds", self.seconds)

    @property
    def days(self) -> int:
        """Days in one period."""
        return 7 if self.period == "week" else 1

    @property
    def seconds(self) -> int:
        return self.days * DAY_SECONDS

    @property
    def year(self) -> int:
        """Periods from a period to the same one a year before: 364 days (the same weekday), 52 weeks."""
        return 364 // self.days

    @property
    def week(self) -> int:
        """Periods in a week: the cycle a seasonal-naive forecast repeats (52 for weeks: a year)."""
        return 7 if self.period == "day" else self.year

    @property
    def default_horizons(self) -> int:
        """28 days or 13 weeks: four weeks, or a quarter."""
        return 28 if self.period == "day" else 13

    @property
    def _anchor(self) -> int:
        """Day number of period 0's first day."""
        return 0 if self.period == "day" else FIRST_MONDAY + self.week_start

    def of_ts(self, ts_seconds: np.ndarray | int) -> np.ndarray | int:
        """The period of event times in epoch seconds (arrays and pandas columns too)."""
        return (ts_seconds - self._ts_offset) // self._period_seconds

    def of_day(self, day: np.ndarray | int) -> np.ndarray | int:
        return (day - self._anchor) // self.days

    def first_day(self, period: np.ndarray | int) -> np.ndarray | int:
        return period * self.days + self._anchor

    def end_ts(self, period: int) -> int:
        """The first second after ``period``."""
        return int(self.first_day(period + 1)) * DAY_SECONDS

    @lru_cache(maxsize=8192)
    def iso(self, period: int) -> str:
        """The ISO date of the period's first day."""
        return iso_of_day(self.first_day(int(period)))

    def last_iso(self, period: int) -> str:
        """The ISO date of the period's last day."""
        return iso_of_day(self.first_day(int(period) + 1) - 1)

    def of_iso(self, text: str) -> int:
        """The period that contains an ISO date."""
        return int(self.of_day(day_of_iso(text)))

    def last_ending_by(self, text: str) -> int:
        """The last period that ends on or before an ISO date (the date's own day, for days)."""
        return int(self.of_day(day_of_iso(text) + 1)) - 1

    def count(self, days: int) -> int:
        """A span of days as whole periods, rounded up."""
        return -(-days // self.days)

    def name(self, n: int = 1) -> str:
        return f"{self.period}{'' if n == 1 else 's'}"


DAILY = Cadence()
