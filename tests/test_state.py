"""Per-item state, clocks, ledger and the day close, without Kafka."""
import struct

import orjson
import pytest
import numpy as np

from mqstream.periods import DAY_SECONDS, Cadence
from mqstream.models.protocol import ItemInfo, TargetErrors
from mqstream.models.seasonal_naive import SeasonalNaive
from mqstream.state.clock import PartitionClock, closed_through, recovered_clock
from mqstream.state.item import UNITS, VIEWS, ItemModel, ItemState
from mqstream.state.ledger import MAX_UNITS, Ledgers, published
from mqstream.state.refresh import (RefreshPolicy, close_items, is_active, is_dormant, needs_close, new_item, new_model,
                                    take_errors)

DAY = 15_000
POLICY = RefreshPolicy()


def sale_ts(day: int, hour: int = 10) -> int:
    return day * DAY_SECONDS + hour * 3600


def test_item_state_round_trips_through_bytes():
    item = new_item("85123A", DAY, POLICY)
    item.apply("sales", "e1", sale_ts(DAY), [(UNITS, 6.0)])
    item.apply("views", "v1", sale_ts(DAY, 12), [(VIEWS, 40.0)])
    again = ItemState.from_bytes(item.to_bytes())
    assert again.open_days == item.open_days and again.seen == item.seen
    assert again.last_event_ts == {"sales": sale_ts(DAY), "views": sale_ts(DAY, 12)}
    np.testing.assert_array_equal(again.history, item.history)


def test_an_event_id_applied_to_its_day_before_changes_nothing_again():
    item = new_item("85123A", DAY, POLICY)
    assert item.apply("sales", "e1", sale_ts(DAY), [(UNITS, 6.0)], price=2.5)
    before = item.to_bytes()
    assert not item.apply("sales", "e1", sale_ts(DAY, 11), [(UNITS, 6.0)], price=3.0, description="LATER")
    assert item.to_bytes() == before
    assert item.apply("sales", "e1", sale_ts(DAY + 1), [(UNITS, 1.0)])  # ids are told apart within a day
    assert item.open_days[DAY][UNITS] == 6.0 and item.open_days[DAY + 1][UNITS] == 1.0


def test_a_decoded_item_closes_a_day_and_encodes_again_without_changing_its_bytes():
    item = new_item("85123A", DAY, POLICY)
    item.apply("sales", "e1", sale_ts(DAY), [(UNITS, 6.0)])
    raw = item.to_bytes()
    decoded = ItemState.from_bytes(raw)  # its history a read-only view of raw
    assert decoded.to_bytes() == raw
    decoded.close_next_day()
    assert decoded.history[-1, UNITS] == 6.0 and ItemState.from_bytes(raw).history[-1, UNITS] == 0.0


def test_an_item_state_in_the_earlier_object_format_is_still_read():
    item = new_item("85123A", DAY, POLICY)
    item.apply("sales", "e1", sale_ts(DAY), [(UNITS, 6.0)], price=2.5, description="HEART")
    item.apply("views", "v1", sale_ts(DAY + 1), [(VIEWS, 4.0)])
    meta = orjson.dumps({"i": item.item_id, "d": item.description, "dt": item.description_ts, "b": item.born,
                         "c": item.closed_through, "p": item.price, "t": item.last_event_ts,
                         "o": [[day, *bucket] for day, bucket in sorted(item.open_days.items())],
                         "n": [[day, ids] for day, ids in sorted(item.seen.items())]})
    history = item.history.tobytes()
    again = ItemState.from_bytes(struct.pack("<II", len(meta), len(history)) + meta + history)
    now = ItemState.from_bytes(item.to_bytes())
    assert vars(again).keys() == vars(now).keys()
    for name, value in vars(now).items():
        np.testing.assert_equal(getattr(again, name), value, err_msg=name)
    assert again.seen == {DAY: ["e1"], DAY + 1: ["v1"]} and again.description == "HEART"


def test_item_model_round_trips_through_bytes():
    item_model = ItemModel(DAY, b"model-bytes", b"ledger-bytes", DAY - 2)
    assert ItemModel.from_bytes(item_model.to_bytes()) == item_model


def test_a_day_closes_when_every_input_has_passed_it_plus_the_lateness():
    clock = PartitionClock(lateness=3600)
    clock.observe("sales", sale_ts(DAY + 1, 2))
    assert clock.closed_through == DAY
    assert not clock.observe("views", sale_ts(DAY, 12))  # the slower input holds it back
    assert clock.closed_through == DAY - 1
    assert clock.observe("views", sale_ts(DAY + 1, 1))
    assert clock.is_too_late(sale_ts(DAY, 23)) and not clock.is_too_late(sale_ts(DAY + 1))


def test_no_day_closes_before_every_required_input_has_spoken():
    clock = PartitionClock(lateness=3600, required=("sales", "views"))
    assert not clock.observe("sales", sale_ts(DAY + 3))  # a whole batch of sales came first
    assert not clock.is_too_late(sale_ts(DAY, 12))  # the views of DAY are still in time
    assert clock.observe("views", sale_ts(DAY + 1, 12))
    assert clock.closed_through == DAY


@pytest.mark.parametrize("period", ["day", "week"])
def test_a_clock_closes_what_its_least_input_says_after_every_event(period):
    cadence = Cadence(period)
    clock = PartitionClock(lateness=3600, required=("sales", "views"), cadence=cadence)
    rng, times = np.random.default_rng(3), {}
    for _ in range(3000):
        source = ("sales", "views")[rng.integers(2)]
        ts = times.get(source, sale_ts(DAY)) + int(rng.integers(-4000, 30_000))  # mostly forward
        closed_before = clock.closed_through
        closed_now = clock.observe(source, ts)
        times[source] = max(times.get(source, 0), ts)
        watermark = min(times.values()) if len(times) == 2 else 0  # 0 until both have spoken
        expected = closed_through(watermark, 3600, cadence)
        assert clock.closed_through == expected and closed_now == (expected > closed_before)
        assert clock.newest == max(times.values())


def test_a_recovered_clock_takes_the_newest_time_of_each_input_and_never_reopens_a_closed_day():
    remembered = [{"sales": sale_ts(DAY)}, {"sales": sale_ts(DAY - 2), "views": sale_ts(DAY, 20)}]
    clock = recovered_clock(3600, ("sales", "views"), iter(remembered), closed=-1)
    assert clock.inputs == {"sales": sale_ts(DAY), "views": sale_ts(DAY, 20)}
    assert clock.closed_through == DAY - 1
    assert recovered_clock(3600, ("sales", "views"), iter(remembered), closed=DAY + 3).closed_through == DAY + 3


def test_ledger_hands_back_every_earlier_forecast_of_a_target():
    ledgers = Ledgers.empty(1, horizons=3, n_quantiles=2)
    for origin in (10, 11, 12):
        ledgers.record([0], origin, np.full((1, 3, 2), origin, np.float32))
    (scored,) = ledgers.score([0], 13, [4.0])
    assert (scored.target, scored.actual) == (13, 4.0)
    assert scored.origins.tolist() == [10, 11, 12] and scored.horizons.tolist() == [3, 2, 1]
    assert scored.forecasts.tolist() == [[10, 10], [11, 11], [12, 12]]
    ledgers.record([0], 13, np.zeros((1, 3, 2), np.float32))  # overwrites origin 10's slot
    assert ledgers.score([0], 13, [4.0])[0].origins.tolist() == [11, 12]
    assert ledgers.score([0], 17, [4.0]) == [None]  # nothing kept reaches that far


@pytest.mark.parametrize("tops", [(65.535,), (2_000.0,), (-1.5,), (3e6,), (5.0, 5.0, 900.0, 5.0)])
def test_ledger_bytes_give_back_exactly_what_was_published(tops):
    """16-bit increments, 32-bit, negative values, clipped ones, and a ledger widened by one
    large forecast among small ones."""
    rng = np.random.default_rng(7)
    ledgers, issued = Ledgers.empty(1, horizons=28, n_quantiles=9), {}
    for origin in range(100, 128):
        top = tops[origin % len(tops)]
        issued[origin] = published(np.sort(rng.uniform(0, 1, (28, 9)) * top, axis=1))
        ledgers.record([0], origin, issued[origin][None])
    assert np.abs(issued[127]).max() <= MAX_UNITS
    back = Ledgers.from_bytes(ledgers.to_bytes(), 28, 9)
    (scored,) = back.score([0], 128, [0.0])
    for origin, values in zip(scored.origins.tolist(), scored.forecasts):
        assert np.array_equal(values, issued[origin][128 - origin - 1])
    ((origin, latest),) = back.latest([0])
    assert origin == 127 and np.array_equal(latest, issued[127])
    assert Ledgers.last_origin_of(ledgers.to_bytes()[0], 28) == 127


def closed_daily(ledgers: Ledgers, rows: list[int], day: int, values: np.ndarray, actuals: list[float]):
    """Day ``day`` closed as a close does it: its earlier forecasts scored, then a forecast from it kept."""
    scored = ledgers.score(rows, day, actuals)
    ledgers.record(rows, day, values)
    return scored


def test_a_written_ledger_keeps_what_is_still_to_score_and_scores_as_one_never_written():
    """Written each day, a ledger keeps the cells of targets not yet closed, the last closed
    target's (433 of 784 cells at 16 bits: 7,915 bytes) and the newest forecast whole; it
    scores every later target exactly as a ledger kept in memory throughout."""
    rng = np.random.default_rng(11)
    kept, written = Ledgers.empty(1, 28, 9), Ledgers.empty(1, 28, 9)
    for day in range(300, 360):
        values = published(np.sort(rng.uniform(0, 40, (1, 28, 9)), axis=-1))
        actual = [float(rng.poisson(5))]
        want, got = closed_daily(kept, [0], day, values, actual), closed_daily(written, [0], day, values, actual)
        assert (want[0] is None) == (got[0] is None)
        if want[0] is not None:
            assert np.array_equal(want[0].origins, got[0].origins) and np.array_equal(want[0].forecasts, got[0].forecasts)
        written = Ledgers.from_bytes(written.to_bytes(), 28, 9)
    assert len(written.to_bytes()[0]) == 4 + 28 * 4 + 4 + 1 + 433 * 9 * 2
    assert np.array_equal(written.latest([0])[0][1], kept.latest([0])[0][1])
    (last,) = written.score([0], 359, [3.0])  # the last closed target's errors are still there
    assert last.origins.tolist() == list(range(332, 359))
    assert written.score([0], 358, [3.0]) == [None]  # an earlier target's are gone


def test_an_idle_ledger_still_holds_its_newest_forecast_whole():
    ledgers = Ledgers.empty(1, horizons=3, n_quantiles=2)
    ledgers.record([0], 10, np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]))
    for day in range(11, 20):  # closed without forecasts: every target of origin 10 is past
        ledgers.score([0], day, [0.0])
    back = Ledgers.from_bytes(ledgers.to_bytes(), 3, 2)
    ((origin, values),) = back.latest([0])
    assert origin == 10 and values.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def test_a_batch_of_ledgers_is_each_ledger_alone_whatever_the_widths_beside_it():
    """Rows of 16, 32 and 64 bits, closed, written and read in one batch, each equal to its
    ledger kept alone; each row is written in the narrowest width of its own cells, so a
    wide neighbour never widens it, nor the 16-bit block of the others."""
    rng, tops = np.random.default_rng(3), [5.0, 2_000.0, 60.0, 3e6, -1.5, 9.0, 0.0]
    crossing = np.where(np.arange(9) < 4, -3e6, 3e6)  # -MAX_UNITS then +MAX_UNITS: a step past 32 bits
    batch, alone = Ledgers.empty(len(tops), 28, 9), [Ledgers.empty(1, 28, 9) for _ in tops]
    for origin in range(200, 240):
        rows = [r for r in range(len(tops)) if (origin + r) % 5]  # some rows skip some days
        values = np.sort(rng.uniform(0, 1, (len(rows), 28, 9)), axis=-1) * np.array(tops)[rows, None, None]
        values = published(np.where(np.array(tops)[rows, None, None] == 0.0, crossing, values))
        actuals = rng.poisson(3.0, len(rows)).astype(float).tolist()
        closed_daily(batch, rows, origin, values, actuals)
        for r, v, actual in zip(rows, values, actuals):
            closed_daily(alone[r], [0], origin, v[None], [actual])
        batch = Ledgers.from_bytes(batch.to_bytes(), 28, 9)
    assert batch.to_bytes() == [ledger.to_bytes()[0] for ledger in alone]
    assert [raw[4 + 28 * 4 + 4] for raw in batch.to_bytes()] == [2, 4, 2, 4, 4, 2, 8]
    assert batch.increments.dtype == np.uint16
    actuals = rng.poisson(3.0, len(tops)).astype(float).tolist()
    for got, ledger, actual in zip(batch.score(range(len(tops)), 240, actuals), alone, actuals):
        (want,) = ledger.score([0], 240, [actual])
        assert np.array_equal(got.origins, want.origins) and np.array_equal(got.forecasts, want.forecasts)
    for (origin, got), ledger in zip(batch.latest(range(len(tops))), alone):
        ((want_origin, want),) = ledger.latest([0])
        assert origin == want_origin and np.array_equal(got, want)
    (crossed,) = batch.latest([6])
    assert np.array_equal(crossed[1][0], published(crossing))


def test_a_ledger_is_written_packed_and_one_written_whole_before_still_reads():
    """``PACKED``, origins (int32), the last closed target (int32), one byte of width, the
    kept cells' increments over the quantile below in that width. A ledger written whole,
    as before (origins, width, every cell), reads back with every cell."""
    ledgers = Ledgers.empty(1, horizons=2, n_quantiles=2)
    ledgers.record([0], 6, np.array([[[0.25, 0.5], [1.0, 1.0]]]))
    ledgers.score([0], 7, [1.0])
    ledgers.record([0], 7, np.array([[[0.5, 1.25], [2.0, 2.0]]]))
    ledgers.score([0], 8, [1.0])
    raw = ledgers.to_bytes()[0]
    assert raw == np.array([-2, 6, 7, 8], np.int32).tobytes() + bytes([2]) + np.array(
        [[1000, 0], [500, 750], [2000, 0]], np.uint16).tobytes()  # origin 6's target 8, all of origin 7's
    assert Ledgers.from_bytes([raw], 2, 2).to_bytes() == [raw]
    whole = np.array([6, 7], np.int32).tobytes() + bytes([2]) + np.array(
        [[[250, 250], [1000, 0]], [[500, 750], [2000, 0]]], np.uint16).tobytes()
    (scored,) = Ledgers.from_bytes([whole], 2, 2).score([0], 7, [1.0])
    assert scored.origins.tolist() == [6] and scored.forecasts.tolist() == [[0.25, 0.5]]
    assert Ledgers.last_origin_of(whole, 2) == Ledgers.last_origin_of(raw, 2) == 7


def test_closing_days_scores_earlier_forecasts_and_issues_new_ones():
    model = SeasonalNaive()
    item = new_item("A", DAY, POLICY)
    item_model = new_model(ItemInfo("A"), DAY, model)
    for day in range(DAY, DAY + 10):
        item.apply("sales", f"e{day}", sale_ts(day), [(UNITS, 3.0)])
        refresh = close_items([item], [item_model], day, model, POLICY)
        assert [f.origin for f in refresh.issued] == [day]
    assert refresh.scored[0].errors.horizons.tolist() == list(range(9, 0, -1))
    assert refresh.scored[0].errors.actual == 3.0
    assert item_model.closed_through == item.closed_through == DAY + 9


def test_an_item_model_ahead_of_its_item_is_not_advanced_twice():
    model = SeasonalNaive()
    item = new_item("A", DAY, POLICY)
    item_model = new_model(ItemInfo("A"), DAY, model)
    item.apply("sales", "e1", sale_ts(DAY), [(UNITS, 3.0)])
    snapshot = ItemState.from_bytes(item.to_bytes())  # the item as a crash left it
    close_items([item], [item_model], DAY, model, POLICY)
    model_bytes = item_model.model
    refresh = close_items([snapshot], [item_model], DAY, model, POLICY)  # the redone close
    assert item_model.model == model_bytes and snapshot.closed_through == DAY
    assert refresh.issued == []  # published before the item_model was written


def test_closing_days_together_equals_closing_them_one_by_one():
    model = SeasonalNaive()
    runs = []
    for steps in ([DAY + 3, DAY + 5, DAY + 6, DAY + 9], list(range(DAY, DAY + 10)), [DAY + 9]):
        item, item_model = new_item("A", DAY, POLICY), new_model(ItemInfo("A"), DAY, model)
        for day in (DAY, DAY + 1, DAY + 4, DAY + 5, DAY + 8):  # no sales on some days
            item.apply("sales", f"e{day}", sale_ts(day), [(UNITS, float(day - DAY + 1))])
        viewed, viewed_model = new_item("B", DAY + 1, POLICY), new_model(ItemInfo("B"), DAY + 1, model)
        viewed.apply("views", "v1", sale_ts(DAY + 1), [(VIEWS, 3.0)])  # then nothing: it stops at DAY + 1
        issued = []
        for through in steps:
            refresh = close_items([item, viewed], [item_model, viewed_model], through, model, POLICY)
            issued += [(f.origin, f.values.tolist()) for f in refresh.issued]
        runs.append((issued, item_model.to_bytes(), item.to_bytes(), viewed.to_bytes(), viewed_model.to_bytes()))
        assert viewed.closed_through == DAY + 1
    assert runs[0] == runs[1] == runs[2]
    assert [origin for origin, _ in runs[0][0]] == list(range(DAY, DAY + 10))


def test_dormant_items_wait_and_items_with_pending_forecasts_do_not():
    model = SeasonalNaive()
    item = new_item("A", DAY, POLICY)
    item_model = new_model(ItemInfo("A"), DAY, model)
    item.apply("sales", "e1", sale_ts(DAY), [(UNITS, 1.0)])
    close_items([item], [item_model], DAY, model, POLICY)
    assert needs_close(item, item_model, DAY + 40, POLICY, model.horizons)  # forecasts still open
    close_items([item], [item_model], DAY + 40, model, POLICY)
    # forecast daily while active (through DAY + 27), so waiting until DAY + 27 + 28
    assert needs_close(item, item_model, DAY + 41, POLICY, model.horizons)
    close_items([item], [item_model], DAY + 55, model, POLICY)
    assert not needs_close(item, item_model, DAY + 56, POLICY, model.horizons)


def test_the_day_price_is_that_of_its_latest_priced_line_whatever_the_arrival_order():
    lines = [("e1", sale_ts(DAY, 9), 2.0), ("e2", sale_ts(DAY, 10), 1.5), ("e3", sale_ts(DAY, 10), 1.25),
             ("e4", sale_ts(DAY + 2, 10), 9.0)]  # a later day, already here
    for order in (lines, lines[::-1]):
        item = new_item("A", DAY, POLICY)
        for event_id, ts, price in order:
            item.apply("sales", event_id, ts, [(UNITS, 1.0)], price=price)
        item.close_next_day()
        assert item.price == 1.5  # latest line; at a tie, the higher price
        item.close_next_day()
        assert item.price == 1.5  # carried over a day without lines


def test_an_item_starts_at_its_earliest_event_and_is_described_by_its_earliest_sale():
    item = new_item("A", DAY + 1, POLICY)
    item.apply("views", "v1", sale_ts(DAY + 1, 12), [(VIEWS, 5.0)])
    item.apply("sales", "e2", sale_ts(DAY + 2), [(UNITS, 1.0)], price=3.0, description="LATER LINE")
    item.apply("sales", "e1", sale_ts(DAY), [(UNITS, 1.0)], price=2.5, description="FIRST LINE")  # late, in time
    assert (item.born, item.closed_through) == (DAY, DAY - 1)
    assert item.launch_info(DAY) == ItemInfo("A", "FIRST LINE", 2.5)
    quiet = new_item("B", DAY, POLICY)
    quiet.apply("views", "v1", sale_ts(DAY, 12), [(VIEWS, 5.0)])
    quiet.apply("sales", "e1", sale_ts(DAY + 3), [(UNITS, 1.0)], price=2.0, description="LATER")
    assert quiet.launch_info(DAY) == ItemInfo("B", "", 0.0)  # a day not closed yet tells nothing


def test_activity_at_an_origin_ignores_sales_of_later_days_already_applied():
    item = new_item("A", DAY, POLICY)
    item.apply("views", "v1", sale_ts(DAY, 12), [(VIEWS, 5.0)])
    item.apply("sales", "e1", sale_ts(DAY + 1), [(UNITS, 1.0)])
    assert not is_active(item, DAY, POLICY)
    assert is_active(item, DAY + 1, POLICY)


def test_an_item_up_to_date_but_active_or_with_open_days_is_not_dormant():
    model = SeasonalNaive()
    item = new_item("A", DAY, POLICY)
    item_model = new_model(ItemInfo("A"), DAY, model)
    item.apply("sales", "e1", sale_ts(DAY), [(UNITS, 1.0)])
    close_items([item], [item_model], DAY, model, POLICY)
    assert not needs_close(item, item_model, DAY, POLICY, model.horizons)  # up to date...
    assert not is_dormant(item, item_model, DAY, POLICY, model.horizons)  # ...but sold: stays tracked
    quiet = new_item("B", DAY, POLICY)
    quiet.apply("views", "v1", sale_ts(DAY + 2), [(VIEWS, 1.0)])  # a later open day only
    assert not is_dormant(quiet, new_model(ItemInfo("B"), DAY, model), DAY, POLICY, model.horizons)
    quiet.close_next_day(), quiet.close_next_day(), quiet.close_next_day()
    assert is_dormant(quiet, new_model(ItemInfo("B"), DAY, model), DAY + 2, POLICY, model.horizons)


class CountingErrors:
    """A model whose state records how many errors it was shown, call by call."""

    def observe_errors(self, states, errors) -> list[bytes]:
        return [state + b"|%d" % len(e.origins) for state, e in zip(states, errors)]


def test_errors_read_back_are_taken_in_once_and_only_for_a_closed_day():
    item_model = ItemModel(DAY, b"m", b"", last_error_target=DAY - 2).to_bytes()
    def errors(target: int) -> TargetErrors:
        return TargetErrors(target, 3.0, np.array([target - 2, target - 1]), np.zeros((2, 9)))

    once = take_errors(item_model, errors(DAY - 1), CountingErrors())
    assert ItemModel.from_bytes(once).model == b"m|2" and ItemModel.days_of(once) == (DAY, DAY - 1)
    assert take_errors(once, errors(DAY - 1), CountingErrors()) is None  # read back a second time
    assert take_errors(item_model, errors(DAY - 2), CountingErrors()) is None  # taken in at its close
    assert take_errors(item_model, errors(DAY + 1), CountingErrors()) is None  # its close has not run
    assert take_errors(None, errors(DAY - 1), CountingErrors()) is None  # no item model yet
