"""Which events a partition takes in, and what they add (state/admission.py), without Kafka."""
from mqstream.periods import DAILY, DAY_SECONDS
from mqstream.state.admission import (MAX_AHEAD_OF_NEWEST, sale_amounts, take_sales, take_views, time_refusal,
                                      view_amounts)
from mqstream.state.clock import PartitionClock
from mqstream.state.item import RETURNS, UNITS, VIEWS
from mqstream.state.refresh import RefreshPolicy, new_item
from mqstream.streams.events import PageView, Sale

DAY = 15_000
NOW = (DAY + 30) * DAY_SECONDS


def clock_at(ts: int) -> PartitionClock:
    clock = PartitionClock(lateness=3600)
    clock.observe("sales", ts)
    return clock


def test_an_event_of_an_open_day_is_taken_in():
    assert time_refusal(DAY * DAY_SECONDS + 100, clock_at((DAY + 1) * DAY_SECONDS), NOW) is None


def test_an_event_of_a_closed_day_is_too_late_and_names_the_day():
    clock = clock_at((DAY + 1) * DAY_SECONDS + 3600)  # the end of DAY plus the lateness
    reason, detail = time_refusal(DAY * DAY_SECONDS + 100, clock, NOW)
    assert reason == "too_late" and "closed" in detail


def test_an_event_far_past_the_partitions_newest_or_ahead_of_now_is_refused():
    newest = DAY * DAY_SECONDS
    assert time_refusal(newest + MAX_AHEAD_OF_NEWEST + 1, clock_at(newest), NOW + 10**9)[0] == "ts_too_far_ahead"
    assert time_refusal(newest + MAX_AHEAD_OF_NEWEST, clock_at(newest), NOW + 10**9) is None
    assert time_refusal(NOW + 2 * DAY_SECONDS, PartitionClock(lateness=3600), NOW)[0] == "ts_in_future"


def test_a_sale_adds_demand_a_return_or_nothing():
    assert sale_amounts("536365", 6, 2.55) == [(UNITS, 6)]
    assert sale_amounts("C536379", -1, 27.5) == [(RETURNS, 1)]  # a cancellation
    assert sale_amounts("536380", -3, 0.0) == [(RETURNS, 3)]
    assert sale_amounts("536381", 5, 0.0) == []  # unpriced: not demand (docs/EVALUATION.md)
    assert view_amounts(40.0) == [(VIEWS, 40.0)]


def test_an_items_sales_and_views_are_taken_in_order_and_repeats_counted():
    ts = DAY * DAY_SECONDS + 3600
    item = new_item("A", DAY, RefreshPolicy())
    sales = [Sale("e1", "A", ts, 4.0, 2.5, "536365"), Sale("e2", "A", ts + 1, -1.0, 2.5, "C536379"),
             Sale("e1", "A", ts + 2, 4.0, 2.5, "536365")]  # e1 again: a duplicate
    assert take_sales(item, "sales", sales, DAILY) == 1
    assert take_views(item, "views", [PageView("v1", "A", ts, 7.0), PageView("v1", "A", ts, 7.0)], DAILY) == 1
    assert item.open_days[DAY][UNITS] == 4.0 and item.open_days[DAY][RETURNS] == 1.0
    assert item.open_days[DAY][VIEWS] == 7.0
