"""What a partition takes in: an event's time against the partition's clock, and what a sale
or a page view adds to its item's day. Plain rules, without Kafka (the worker applies them
in streams/processor.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from mqstream.models.dataset import is_demand
from mqstream.periods import Cadence
from mqstream.state.clock import PartitionClock
from mqstream.state.item import RETURNS, UNITS, VIEWS, ItemState

if TYPE_CHECKING:  # the parsed events; streams/ depends on state/, never the reverse at run time
    from mqstream.streams.events import PageView, Sale

MAX_AHEAD_OF_NEWEST = 7 * 86_400  # an event this far past the partition's newest is refused
MAX_AHEAD_OF_NOW = 86_400


def time_refusal(ts: int, clock: PartitionClock, now: float) -> tuple[str, str] | None:
    """(reason, detail) when an event at ``ts`` cannot be taken in, None when it can."""
    if clock.is_too_late(ts):
        cadence = clock.cadence
        return "too_late", (f"{cadence.period} {cadence.iso(cadence.of_ts(ts))} closed "
                            f"(watermark {clock.watermark}, lateness {clock.lateness}s)")
    if clock.newest and ts > clock.newest + MAX_AHEAD_OF_NEWEST:
        return "ts_too_far_ahead", f"ts {ts} is over a week past the newest event {clock.newest}"
    if ts > now + MAX_AHEAD_OF_NOW:
        return "ts_in_future", f"ts {ts} is more than a day in the future"
    return None


def sale_amounts(invoice: str, quantity: float, price: float) -> list[tuple[int, float]]:
    """The (column, amount) pairs a sale line adds: demand by the rule of docs/EVALUATION.md,
    a return, or nothing (an adjustment)."""
    if is_demand(invoice, quantity, price):
        return [(UNITS, quantity)]
    return [(RETURNS, -quantity)] if quantity < 0 else []


def view_amounts(views: float) -> list[tuple[int, float]]:
    return [(VIEWS, views)]


def take_sales(item: ItemState, source: str, sales: Sequence["Sale"], cadence: Cadence) -> int:
    """Apply one item's admitted sales in the order they came; how many it had seen before."""
    return sum(not item.apply(source, s.event_id, s.ts, sale_amounts(s.invoice, s.quantity, s.price), s.price,
                              s.description, cadence) for s in sales)


def take_views(item: ItemState, source: str, views: Sequence["PageView"], cadence: Cadence) -> int:
    """Apply one item's admitted page views in the order they came; how many it had seen before."""
    return sum(not item.apply(source, v.event_id, v.ts, view_amounts(v.views), cadence=cadence) for v in views)
