"""Weeks end to end: the shipped data written out as another retailer's file, trained, backtested
and served with period = week on the real broker (weekly closes, 13 weekly horizons, errors
scored per week), and the rules a week follows."""
from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mqstream.config import ConfigError, Settings
from mqstream.models import evaluate, training
from mqstream.models.dataset import demand_series, load_transactions
from mqstream.models.features import calendar
from mqstream.models.history import HistoryFormat, load_history, parse_columns
from mqstream.models.protocol import ItemInfo, Period
from mqstream.models.registry import load_model
from mqstream.periods import DAILY, Cadence, day_of_iso
from mqstream.state.clock import PartitionClock
from mqstream.streams.worker import load_model as worker_model
from tests.kafka_helpers import fresh_settings, replay_and_serve
from tests.model_helpers import torch_one_thread  # noqa: F401 (fixture)

WEEKS = Cadence("week")
COLUMNS = "item_id=product,ts=when,quantity=units,price=unit_price,invoice=ticket,description=title"
DATE_FORMAT = "%Y/%m/%d %H:%M"
SERVED = ("2011-03-07", "2011-04-03")  # four whole weeks, Monday to Sunday


# --- the rules ------------------------------------------------------------------------------
def test_a_week_starts_on_its_week_start_and_dates_name_the_week_that_holds_them():
    assert WEEKS.iso(WEEKS.of_iso("2011-03-09")) == "2011-03-07"  # a Wednesday's week starts on Monday
    assert WEEKS.last_iso(WEEKS.of_iso("2011-03-09")) == "2011-03-13"
    sunday = Cadence("week", week_start=6)
    assert sunday.iso(sunday.of_iso("2011-03-09")) == "2011-03-06"
    assert WEEKS.last_ending_by("2011-03-12") == WEEKS.of_iso("2011-03-06")  # the week of the 12th has not ended
    assert WEEKS.last_ending_by("2011-03-13") == WEEKS.of_iso("2011-03-13")
    ts = np.array([day_of_iso("2011-03-07") * 86_400, day_of_iso("2011-03-14") * 86_400 - 1])
    assert WEEKS.of_ts(ts).tolist() == [WEEKS.of_iso("2011-03-07")] * 2
    assert DAILY.of_ts(ts).tolist() == [day_of_iso("2011-03-07"), day_of_iso("2011-03-13")]
    assert (WEEKS.count(28), WEEKS.year, WEEKS.default_horizons) == (4, 52, 13)


def test_a_week_closes_when_the_watermark_passes_its_end_plus_the_lateness():
    clock = PartitionClock(3600, ("sales",), cadence=WEEKS)
    week = WEEKS.of_iso("2011-03-07")
    clock.observe("sales", day_of_iso("2011-03-13") * 86_400)  # Sunday: the week is open
    assert clock.closed_through == week - 1 and not clock.is_too_late(day_of_iso("2011-03-08") * 86_400)
    assert clock.observe("sales", WEEKS.end_ts(week) + 3600)
    assert clock.closed_through == week and clock.is_too_late(day_of_iso("2011-03-13") * 86_400 + 80_000)


def test_a_weekly_seasonal_naive_repeats_the_same_week_a_year_before():
    model = load_model("seasonal-naive", cadence=WEEKS)
    assert (model.horizons, model.season) == (13, 52)

    state = model.new_state(ItemInfo("A"), 0)
    for week in range(60):
        state = model.advance([state], [Period(week, float(week), 0.0, 1.0)])[0]
    median = model.forecast([state])[0][:, list(model.quantiles).index(0.5)]
    # week 59 + h repeats week 7 + h, plus the rule's error at lag 52 (always 52 here)
    assert np.allclose(median, 7 + np.arange(1, 14) + 52)


def test_a_weekly_calendar_is_the_mean_of_its_days():
    week = WEEKS.of_iso("2010-12-20")  # holds the shop's Christmas closure from the 24th
    days = np.arange(day_of_iso("2010-12-20"), day_of_iso("2010-12-27"))
    assert np.allclose(calendar(np.array([week]), WEEKS)[0], calendar(days).mean(0))


# --- end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weekly_file(tmp_path_factory) -> Path:
    """The shipped transactions of the 40 items with the most lines, in a retailer's own
    column names and date format."""
    tx = load_transactions()
    items = tx["item_id"].value_counts().index[:40]
    tx = tx[tx["item_id"].isin(items)]
    out = tmp_path_factory.mktemp("weekly") / "shop-weekly.csv.gz"
    pd.DataFrame({"product": tx["item_id"], "when": pd.to_datetime(tx["ts"], unit="s").dt.strftime(DATE_FORMAT),
                  "units": tx["quantity"], "unit_price": tx["price"], "ticket": tx["invoice"],
                  "title": tx["description"]}).to_csv(out, index=False)
    return out


def flags(path: Path) -> list[str]:
    return ["--data", str(path), "--columns", COLUMNS, "--date-format", DATE_FORMAT]


@pytest.fixture(scope="module")
def weekly_checkpoint(weekly_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("weekly-ckpt") / "mqcnn"
    args = training.configure_parser(argparse.ArgumentParser()).parse_args(
        ["--model", "mqcnn", "--out", str(out), "--epochs", "2", "--threads", "1", "--no-progress",
         "--cutoff", "2011-02-28", "--period", "week", *flags(weekly_file)])
    threads = torch.get_num_threads()
    try:
        assert training.run(args) == 0
    finally:
        torch.set_num_threads(threads)  # run() sets the process's
    return out


@pytest.mark.slow
def test_a_weekly_model_trains_on_whole_weeks_up_to_its_cutoff(weekly_checkpoint):
    meta = json.loads((weekly_checkpoint / "config.json").read_text())
    assert (meta["config"]["period"], meta["config"]["horizons"], meta["train"]["period"]) == ("week", 13, "week")
    model = load_model("mqcnn", weekly_checkpoint, WEEKS)
    assert model.cadence == WEEKS and model.horizons == 13
    with pytest.raises(ValueError, match="trained on weeks; this run's period is day"):
        load_model("mqcnn", weekly_checkpoint)
    with pytest.raises(ConfigError, match="setting 'model' / 'checkpoint': .* trained on weeks"):
        worker_model(Settings(model="mqcnn", checkpoint=str(weekly_checkpoint)))  # a worker stops, named, exit 2


@pytest.mark.slow
def test_a_weekly_backtest_scores_13_weekly_horizons_against_the_baselines(weekly_file, tmp_path, torch_one_thread):
    out = tmp_path / "eval" / "shop-weekly"
    args = evaluate.configure_parser(argparse.ArgumentParser()).parse_args(
        ["--methods", "zero,seasonal-naive,autoets,mqcnn", "--seeds", "0", "--train-items", "32", "--out", str(out),
         "--checkpoints", str(tmp_path / "ckpt"), "--period", "week", *flags(weekly_file)])
    assert evaluate.run(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    split = report["split"]
    assert (split["period"], split["horizons"], split["origins"]) == ("week", 13, 13)
    assert (split["cutoff"], split["first_origin"], split["last_origin"]) == ("2011-02-27", "2011-02-28", "2011-05-23")
    methods = report["methods"]
    assert methods["zero"]["wql"] == pytest.approx(1.0) and set(methods["zero"]["wql_by_bucket"]) == {"1-7", "8-14"}
    assert methods["mqcnn"]["wql"] < methods["zero"]["wql"] and methods["autoets"]["wql"] < methods["zero"]["wql"]
    assert "--period week" in report["command"] and "h8–13" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        evaluate.configure_parser(argparse.ArgumentParser()).parse_args(["--period", "month"])
    refused = evaluate.configure_parser(argparse.ArgumentParser()).parse_args(
        ["--simulated-views", "--period", "week", *flags(weekly_file)])
    assert evaluate.run(refused) == 2  # simulated views are daily


@pytest.mark.e2e
@pytest.mark.slow
def test_a_weekly_worker_closes_weeks_and_scores_every_forecast_per_week(weekly_file, weekly_checkpoint,
                                                                         kafka_settings, tmp_path, monkeypatch):
    settings = fresh_settings(kafka_settings, tmp_path, model="mqcnn", checkpoint=str(weekly_checkpoint),
                              period="week", watermark_inputs="sales")
    # the replay widens a window to whole weeks: Wednesday to Saturday still sends four weeks
    forecasts, errors = replay_and_serve(settings, monkeypatch, ["--start", "2011-03-09", "--end", "2011-04-02",
                                                                 "--no-views", *flags(weekly_file)])
    weeks = [WEEKS.iso(WEEKS.of_iso(SERVED[0]) + k) for k in range(4)]
    assert {f["origin"] for f in forecasts} == set(weeks)  # one close a week, named by its Monday
    assert all(f["schema_version"] == 2 and f["period"] == "week" and f["horizons"] == list(range(1, 14))
               for f in forecasts)

    history = load_history(weekly_file, fmt=HistoryFormat(parse_columns(COLUMNS), DATE_FORMAT))
    series = demand_series(history.sales, cadence=WEEKS)
    assert {e["target"] for e in errors} == set(weeks[1:])  # each week scores the forecasts made before it
    for e in errors:
        row = list(series.items).index(e["item_id"])
        assert e["actual"] == series.units[row, series.column(WEEKS.of_iso(e["target"]))]  # the week's demand
        target = dt.date.fromisoformat(e["target"])
        assert e["horizons"] == [(target - dt.date.fromisoformat(o)).days // 7 for o in e["origins"]]
