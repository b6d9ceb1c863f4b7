"""Any retailer's history: the documented input format (docs/DATA.md), its errors, and a second
retailer, shaped unlike the shipped data, trained, backtested and replayed through the commands."""
import argparse
import json
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from mqstream.periods import DAY_SECONDS
from mqstream.models import evaluate, training
from mqstream.models.dataset import demand_series
from mqstream.models.history import (HistoryError, HistoryFormat, load_history, parse_columns, read_items, read_sales,
                                     read_views)
from mqstream.cli import main
from mqstream.streams.offsets import read_topic
from mqstream.streams.events import CONTROL_HEADER
from tests.kafka_helpers import fresh_settings, replay_and_serve
from tests.model_helpers import torch_one_thread  # noqa: F401 (fixture)

SALES = pd.DataFrame({
    "item_id": ["00123", "00123", "B-7", "B-7"],
    "ts": ["2011-06-01", "2011-06-01T09:30:00", "2011-06-02 17:05", "2011-06-03"],
    "quantity": [2, 1, -1, 4],  # -1: a return
    "price": [2.5, 2.5, 10.0, 9.5],
    "invoice": ["i1", "i2", "i3", "i4"],
    "description": [" MUG ", "MUG", "LAMP", "LAMP"],
})
EXPECTED_TS = [1306886400, 1306886400 + 9 * 3600 + 1800, 1306886400 + DAY_SECONDS + 17 * 3600 + 300,
               1306886400 + 2 * DAY_SECONDS]


# --- the format ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sales.csv", "sales.csv.gz", "sales.csv.xz", "sales.tsv.bz2", "sales.parquet"])
def test_a_sales_file_reads_the_same_as_csv_compressed_csv_or_parquet(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".parquet"):
        SALES.to_parquet(path)
    else:
        SALES.to_csv(path, index=False, sep="\t" if ".tsv" in name else ",")
    tx, summary = read_sales(path)
    assert tx["item_id"].tolist() == ["00123", "00123", "B-7", "B-7"]  # ids stay text
    assert tx["ts"].tolist() == EXPECTED_TS  # a date alone is midnight
    assert tx["quantity"].tolist() == [2, 1, -1, 4] and tx["price"].tolist() == [2.5, 2.5, 10.0, 9.5]
    assert tx["description"].tolist() == ["MUG", "MUG", "LAMP", "LAMP"]
    assert tx["event_id"].tolist() == ["sales-0", "sales-1", "sales-2", "sales-3"]  # stable: the file's rows
    assert (summary.rows_read, summary.rows_used, summary.items, summary.last_day - summary.first_day) == (4, 4, 2, 2)
    assert str(summary).endswith("4 rows read, 4 used, 2 items, 3 days 2011-06-01..2011-06-03")


def test_parquet_times_and_integer_ids_are_read_as_the_stream_sends_them(tmp_path):
    frame = SALES.assign(item_id=[123, 123, 7, 7], ts=pd.to_datetime(SALES["ts"], format="ISO8601"),
                         event_id=["a", "b", "c", "d"])
    frame.to_parquet(tmp_path / "s.parquet")
    tx, _ = read_sales(tmp_path / "s.parquet")
    assert tx["item_id"].tolist() == ["123", "123", "7", "7"] and tx["ts"].tolist() == EXPECTED_TS
    assert tx["event_id"].tolist() == ["a", "b", "c", "d"]


def test_other_column_names_and_date_formats_are_mapped(tmp_path):
    SALES.rename(columns={"item_id": "StockCode", "ts": "InvoiceDate", "quantity": "Qty"}).assign(
        InvoiceDate=["01/06/2011 00:00", "01/06/2011 09:30", "02/06/2011 17:05", "03/06/2011 00:00"]
    ).to_csv(tmp_path / "s.csv", index=False)
    fmt = HistoryFormat(parse_columns("item_id=StockCode, ts=InvoiceDate,quantity=Qty"), "%d/%m/%Y %H:%M")
    tx, _ = read_sales(tmp_path / "s.csv", fmt)
    assert tx["ts"].tolist() == EXPECTED_TS and tx["quantity"].sum() == 6


def test_a_column_name_can_be_scoped_to_one_kind_of_file():
    fmt = HistoryFormat(parse_columns("item_id=sku,views.ts=day,items.description=title"))
    assert (fmt.column("sales", "ts"), fmt.column("views", "ts"), fmt.column("views", "item_id")) == ("ts", "day", "sku")
    assert fmt.column("items", "description") == "title" and fmt.column("sales", "description") == "description"


@pytest.mark.parametrize("spec, says", [("qty=Quantity", "unknown field 'qty'"), ("item_id", "expected FIELD=COLUMN"),
                                        ("views.price=P", "unknown field 'views.price'")])
def test_a_bad_column_mapping_is_named(spec, says):
    with pytest.raises(HistoryError, match=says):
        parse_columns(spec)


def test_a_file_without_prices_prices_every_line_at_one_and_says_so(tmp_path):
    SALES.drop(columns="price").to_csv(tmp_path / "s.csv", index=False)
    tx, summary = read_sales(tmp_path / "s.csv")
    assert (tx["price"] == 1.0).all() and "no price column" in str(summary)


def test_items_file_descriptions_replace_the_sales_lines_and_attributes_are_kept(tmp_path):
    SALES.to_csv(tmp_path / "s.csv", index=False)
    pd.DataFrame({"item_id": ["00123", "NEW"], "description": ["RED SPOTTY MUG", "NEW LAMP"],
                  "category": ["kitchen", "lights"]}).to_csv(tmp_path / "items.csv", index=False)
    history = load_history(tmp_path / "s.csv", items=tmp_path / "items.csv")
    assert history.sales["description"].tolist() == ["RED SPOTTY MUG"] * 2 + ["LAMP"] * 2
    assert history.items["category"].tolist() == ["kitchen", "lights"]
    assert "no model reads them yet" in str(history.summaries[1])


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("column, value, says", [
    ("ts", "2011-02-30", "line 4, column ts: '2011-02-30' is not a date"),
    ("quantity", "two", "line 4, column quantity: 'two' is not a number"),
    ("price", "-1.5", "line 4, column price: -1.5 is negative"),
    ("item_id", " ", "line 4, column item_id: ' ' is empty"),
])
def test_a_bad_value_stops_the_load_naming_file_line_and_column(tmp_path, column, value, says):
    bad = SALES.astype(str)
    bad.loc[2, column] = value
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(HistoryError) as raised:
        read_sales(tmp_path / "bad.csv")
    assert f"sales file {tmp_path / 'bad.csv'} {says}" in str(raised.value)


def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path):
    SALES.drop(columns="quantity").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(HistoryError, match=r"bad.csv: no column 'quantity' for quantity \(columns: item_id, ts, "
                                           r"price, invoice, description\); map it with --columns"):
        read_sales(tmp_path / "bad.csv")


def test_a_parquet_file_names_the_row(tmp_path):
    SALES.assign(quantity=["1", "2", "3", "x"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(HistoryError, match="row 4, column quantity: 'x' is not a number"):
        read_sales(tmp_path / "bad.parquet")


def test_skip_bad_rows_leaves_them_out_and_counts_them_by_reason(tmp_path):
    bad = pd.concat([SALES] * 3, ignore_index=True).astype(str)
    bad.loc[1, "ts"], bad.loc[4, "quantity"], bad.loc[5, "price"], bad.loc[7, "price"] = "soon", "", "-2", "-3"
    bad.loc[9, "ts"], bad.loc[9, "quantity"] = "never", "many"  # counted once, under its first reason
    bad.to_csv(tmp_path / "bad.csv", index=False)
    tx, summary = read_sales(tmp_path / "bad.csv", skip_bad_rows=True)
    assert summary.skipped == {"unparsable date": 2, "non-numeric quantity": 1, "negative price": 2}
    assert (summary.rows_read, summary.rows_used, len(tx)) == (12, 7, 7)
    assert tx["row"].tolist() == [0, 2, 3, 6, 8, 10, 11] and tx["quantity"].dtype == np.int64
    assert "(skipped: 2 unparsable date, 1 non-numeric quantity, 2 negative price)" in str(summary)


def test_bad_page_views_and_items_are_named_too(tmp_path):
    pd.DataFrame({"item_id": ["a", "a"], "ts": ["2011-06-01", "2011-06-02"], "views": [3, -1]}).to_csv(
        tmp_path / "views.csv", index=False)
    with pytest.raises(HistoryError, match="views file .* line 3, column views: -1 is negative"):
        read_views(tmp_path / "views.csv")
    pd.DataFrame({"item_id": ["a", "b", "a"]}).to_csv(tmp_path / "items.csv", index=False)
    with pytest.raises(HistoryError, match="items file .* line 4, column item_id: 'a' is an item_id seen on"):
        read_items(tmp_path / "items.csv")


def test_a_repeated_event_id_is_refused_because_the_stream_would_drop_it(tmp_path):
    SALES.assign(event_id=["e1", "e2", "e1", "e3"]).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(HistoryError, match="line 4, column event_id: 'e1' is an event_id seen on an earlier row"):
        read_sales(tmp_path / "s.csv")


@pytest.mark.parametrize("command", ["train", "evaluate", "replay"])
def test_every_command_stops_on_a_bad_file_and_names_it(tmp_path, capsys, request, command):
    bad = SALES.astype(str)
    bad.loc[1, "quantity"] = "two"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    broker = ["--kafka-port", str(request.getfixturevalue("kafka_settings").kafka_port)] if command == "replay" else []
    out = [] if command == "replay" else ["--out", str(tmp_path / "out")]  # replay checks the broker first
    assert main([*broker, command, "--data", str(tmp_path / "bad.csv"), *out]) == 2
    assert f"mqstream {command}: sales file {tmp_path / 'bad.csv'} line 3, column quantity: 'two' is not a number" \
        in capsys.readouterr().err


# --- a second retailer: own ids, prices, dates, a holiday effect ---------------------------------
FIRST, LAST = "2010-01-04", "2011-02-28"
COLUMNS = "item_id=sku,ts=sold_at,quantity=qty,price=unit_price,invoice=order,views=hits,items.description=title"
DATE_FORMAT = "%d.%m.%Y %H:%M"


@pytest.fixture(scope="module")
def retailer(tmp_path_factory) -> dict[str, Path]:
    """Daily sales of 12 items ``SKU-xx`` (ids the shipped data's product rule would drop), each at its
    own price, three times the usual demand in the two weeks before Christmas and none on
    Christmas Day; page views that follow demand; an items file with titles and categories."""
    rng = np.random.default_rng(7)
    days = pd.date_range(FIRST, LAST, freq="D")
    holiday = np.where((days >= "2010-12-11") & (days <= "2010-12-24"), 3.0, 1.0) * (days != "2010-12-25")
    items = [f"SKU-{k:02d}" for k in range(12)]
    rates = rng.uniform(2, 9, len(items))
    units = rng.poisson(rates[:, None] * holiday[None, :] * (1 + 0.3 * (days.dayofweek < 5)))  # (N, T)
    i, t = np.nonzero(units)
    when = days[t] + pd.to_timedelta(rng.integers(8 * 60, 20 * 60, len(t)), unit="min")
    sales = pd.DataFrame({"order": [f"o{k}" for k in range(len(t))], "sku": np.array(items)[i],
                          "sold_at": when.strftime(DATE_FORMAT), "qty": units[i, t],
                          "unit_price": np.round(1.5 + 2 * i + 0.1 * (t // 90), 2)}).sort_values("sold_at", kind="stable")
    views = pd.DataFrame({"sku": np.array(items)[i], "sold_at": days[t].strftime(DATE_FORMAT),
                          "hits": units[i, t] * 4 + rng.integers(0, 5, len(t))})
    out = tmp_path_factory.mktemp("retailer")
    sales.to_csv(out / "shop.csv.gz", index=False)
    views.to_parquet(out / "views.parquet")
    pd.DataFrame({"sku": items, "title": [f"GADGET {k}" for k in range(12)],
                  "category": ["a", "b"] * 6}).to_csv(out / "items.csv", index=False)
    return {"data": out / "shop.csv.gz", "views": out / "views.parquet", "items": out / "items.csv", "dir": out}


def retailer_flags(files: dict[str, Path], *kinds: str) -> list[str]:
    return [*(a for k in kinds for a in (f"--{k}", str(files[k]))), "--columns", COLUMNS, "--date-format", DATE_FORMAT]


def test_the_retailer_loads_with_every_day_a_period_and_its_holiday_effect(retailer):
    history = load_history(retailer["data"], fmt=HistoryFormat(parse_columns(COLUMNS), DATE_FORMAT))
    series = demand_series(history.sales)
    assert history.products is None and len(series.items) == 12 and series.units.shape[1] == 421
    day = lambda iso: series.column(pd.Timestamp(iso).value // (DAY_SECONDS * 10**9))
    assert series.units[:, day("2010-12-25")].sum() == 0
    assert series.units[:, day("2010-12-11"):day("2010-12-25")].mean() > 2 * series.units[:, day("2010-11-01"):day("2010-12-01")].mean()


def test_the_retailer_trains_with_its_real_views_and_item_titles(retailer, tmp_path, capsys, torch_one_thread):
    out = tmp_path / "ckpt"
    args = training.configure_parser(argparse.ArgumentParser()).parse_args(
        ["--model", "mqcnn", "--out", str(out), "--epochs", "1", "--max-items", "8", "--batch-items", "8",
         "--threads", "1", "--no-progress", *retailer_flags(retailer, "data", "views", "items")])
    assert training.run(args) == 0
    printed = capsys.readouterr().out
    assert "sales " + str(retailer["data"]) + ": " in printed and "12 items, 421 days 2010-01-04..2011-02-28" in printed
    assert "views " + str(retailer["views"]) in printed and "attributes category" in printed
    assert "on 8 items up to 2011-02-28" in printed  # default cutoff: the data's last day
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["use_views"] and meta["train"]["page_views"] == f"real ({retailer['views']})"
    assert meta["train"]["data"]["id"].startswith("sha256:") and meta["train"]["cutoff"] == "2011-02-28"


def test_the_retailer_is_backtested_on_a_split_derived_from_its_dates(retailer, tmp_path, torch_one_thread):
    out = tmp_path / "eval" / "shop"
    args = evaluate.configure_parser(argparse.ArgumentParser()).parse_args(
        ["--methods", "zero,seasonal-naive,mqcnn", "--seeds", "0", "--train-items", "8", "--out", str(out),
         "--checkpoints", str(tmp_path / "ckpt"), *retailer_flags(retailer, "data", "views")])
    assert evaluate.run(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    split = report["split"]
    assert (split["name"], split["cutoff"], split["first_origin"], split["last_origin"]) == \
        ("shop", "2011-01-03", "2011-01-04", "2011-01-31")  # the last 28 origins the data's horizons cover
    assert split["products"] == 12 and split["page_views"] == f"real ({retailer['views']})"
    assert split["data"]["sales"] == str(retailer["data"]) and "--data" in report["command"]
    assert report["methods"]["zero"]["wql"] == pytest.approx(1.0)
    assert report["methods"]["seasonal-naive"]["wql"] < 1.0 and np.isfinite(report["methods"]["mqcnn"]["wql"])
    record = json.loads((tmp_path / "ckpt" / "mqcnn-seed0" / "config.json").read_text())["train"]
    assert record["data"]["id"] == split["data"]["id"]  # reused only for the same data


def test_named_splits_and_simulated_views_are_refused_with_the_retailers_data(retailer, tmp_path, capsys):
    parse = evaluate.configure_parser(argparse.ArgumentParser()).parse_args
    assert evaluate.run(parse(["--split", "dev", *retailer_flags(retailer, "data")])) == 2
    assert "--split dev is a daily split of the shipped data" in capsys.readouterr().err
    assert evaluate.run(parse(["--simulated-views", *retailer_flags(retailer, "data", "views")])) == 2
    assert "--views gives real page views" in capsys.readouterr().err


def test_the_retailer_replays_into_kafka_in_event_time_order_with_watermarks(retailer, kafka_settings, monkeypatch):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("MQSTREAM_TOPIC_PREFIX", prefix)
    assert main(["--kafka-port", str(kafka_settings.kafka_port), "replay", "--start", "2010-12-23",
                 "--end", "2010-12-26", *retailer_flags(retailer, "data", "views", "items")]) == 0
    settings = replace(kafka_settings, topic_prefix=prefix)
    history = load_history(retailer["data"], retailer["views"], retailer["items"],
                           HistoryFormat(parse_columns(COLUMNS), DATE_FORMAT))
    in_window = lambda frame: frame[(frame["ts"] >= 1293062400) & (frame["ts"] < 1293062400 + 4 * DAY_SECONDS)]
    for topic, expected in (("sales", in_window(history.sales)), ("page-views", in_window(history.views))):
        records = read_topic(settings, settings.topic(topic))
        markers = [r for r in records if (CONTROL_HEADER, b"watermark") in r.headers]
        events = [orjson.loads(r.value) for r in records if r not in markers]
        assert sorted(e["event_id"] for e in events) == sorted(expected["event_id"])
        assert len(markers) == settings.partitions  # each partition's last day is closed
        for partition in range(settings.partitions):  # sent in event-time order
            ts = [orjson.loads(r.value)["ts"] for r in records if r.partition == partition and r not in markers]
            assert ts == sorted(ts)
    sale = orjson.loads(read_topic(settings, settings.topic("sales"))[0].value)
    assert sale["description"].startswith("GADGET") and sale["event_id"].startswith("shop-")


@pytest.mark.e2e
@pytest.mark.slow
def test_the_retailer_is_served_daily_by_a_worker_of_its_own_model(retailer, kafka_settings, tmp_path, monkeypatch,
                                                                  torch_one_thread):
    checkpoint = tmp_path / "shop-mqcnn"
    args = training.configure_parser(argparse.ArgumentParser()).parse_args(
        ["--model", "mqcnn", "--out", str(checkpoint), "--epochs", "1", "--threads", "1", "--no-progress",
         "--cutoff", "2010-12-31", *retailer_flags(retailer, "data", "views", "items")])
    assert training.run(args) == 0
    settings = fresh_settings(kafka_settings, tmp_path, model="mqcnn", checkpoint=str(checkpoint))
    forecasts, errors = replay_and_serve(settings, monkeypatch, ["--start", "2011-01-04", "--end", "2011-01-17",
                                                                 *retailer_flags(retailer, "data", "views", "items")])
    assert {f["origin"] for f in forecasts} == {str(d.date()) for d in pd.date_range("2011-01-04", "2011-01-17")}
    assert {f["item_id"] for f in forecasts} == {f"SKU-{k:02d}" for k in range(12)}
    assert all(f["schema_version"] == 1 and len(f["horizons"]) == 28 for f in forecasts)
    series = demand_series(load_history(retailer["data"], fmt=HistoryFormat(parse_columns(COLUMNS), DATE_FORMAT)).sales)
    assert errors
    for e in errors:
        day = pd.Timestamp(e["target"]).value // (DAY_SECONDS * 10**9)
        assert e["actual"] == series.units[list(series.items).index(e["item_id"]), series.column(day)]
