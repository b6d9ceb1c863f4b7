import argparse
import json
from dataclasses import replace
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest

from mqstream.periods import DAILY, day_of_iso
from mqstream.models.backtest import (BacktestSplit, StreamingReplay, history_until, leaked_origins, prepare,
                                      run_method)
from mqstream.models.dataset import DemandSeries
from mqstream.models.evaluate import (_comparisons, _over_seeds, _record_matches, configure_parser, per_seed_differences,
                                      run as evaluate_run, verdict)
from mqstream.models.scores import HORIZON_BUCKETS
from mqstream.models.pageviews import simulate_views
from mqstream.models.seasonal_naive import SeasonalNaive
from mqstream.state.refresh import RefreshPolicy

START = day_of_iso("2011-01-03")


def synthetic_series(n_items: int = 4, days: int = 140, seed: int = 0) -> tuple[DemandSeries, np.ndarray]:
    """Poisson demand with a weekly pattern (no sales on Saturdays), a fixed price per item."""
    rng = np.random.default_rng(seed)
    weekday = np.array([1.0, 1.2, 1.1, 1.0, 1.4, 0.0, 0.6])[(START + np.arange(days) + 3) % 7]
    units = rng.poisson(rng.uniform(1, 8, (n_items, 1)) * weekday).astype(np.float32)
    price = np.repeat(rng.uniform(1, 5, (n_items, 1)), days, axis=1).astype(np.float32)
    items = np.array([str(10001 + i) for i in range(n_items)])
    series = DemandSeries(items=items, descriptions=np.array(["WIDGET"] * n_items), start_day=START,
                         units=units, price=price)
    return series, simulate_views(items, units, START)


def split_of(series: DemandSeries, origins: int = 10, horizons: int = 3) -> BacktestSplit:
    last_origin = int(series.days[-1]) - horizons
    return BacktestSplit(cutoff=last_origin - origins, first_origin=last_origin - origins + 1,
                         last_origin=last_origin, horizons=horizons, quantiles=(0.1, 0.5, 0.9), min_sale_days=5)


class LastValue:
    """Every quantile is the origin day's demand: honest, uses the origin and nothing later."""

    name = "last-value"

    def forecast(self, series, views, origins):
        last = series.units[:, series.column(origins)]  # (N, O)
        return np.broadcast_to(last[:, :, None, None], last.shape + (3, 3)).astype(float)


class NextValue(LastValue):
    """Peeks at the day after the origin: a leak."""

    name = "next-value"

    def forecast(self, series, views, origins):
        return super().forecast(series, views, np.minimum(origins + 1, series.days[-1]))


# --- the split and its data ---------------------------------------------------------------------
def test_scored_products_are_product_codes_with_enough_sale_days_before_the_first_origin():
    series, _ = synthetic_series(n_items=3)
    series = replace(series, items=np.array(["10001", "POST", "10003"]))
    series.units[2, :] = 0.0
    series.units[2, -10:] = 5.0  # sells, but only after the first origin
    data = prepare(series, split_of(series))
    assert list(data.series.items) == ["10001"]


def test_actuals_are_the_demand_of_origin_plus_horizon():
    series, _ = synthetic_series()
    split = split_of(series)
    data = prepare(series, split)
    n, k, h = 1, 4, 2
    assert data.actuals[n, k, h - 1] == series.units[n, series.column(int(split.origins[k])) + h]


def test_a_split_whose_last_target_is_past_the_data_is_rejected():
    series, _ = synthetic_series()
    split = split_of(series)
    late = replace(split, last_origin=split.last_origin + 1)
    with pytest.raises(ValueError, match="up to"):
        prepare(series, late)


def test_every_day_between_the_first_and_last_origin_is_an_origin():
    split = BacktestSplit.from_dates("2011-05-31", "2011-06-01", "2011-08-03")
    assert len(split.origins) == 64 and (np.diff(split.origins) == 1).all()


# --- what a method may see ------------------------------------------------------------------
def test_a_method_is_given_no_day_after_the_last_origin():
    series, _ = synthetic_series()
    split = split_of(series)
    data = prepare(series, split)
    seen = []

    class Recorder(LastValue):
        def forecast(self, series, views, origins):
            seen.append((series.days[-1], views.shape[1]))
            return super().forecast(series, views, origins)

    run_method(Recorder(), data, split)
    assert seen == [(split.last_origin, series.column(split.last_origin) + 1)]


def test_history_until_keeps_the_day_itself():
    series, views = synthetic_series()
    cut, cut_views = history_until(series, views, START + 9)
    assert cut.units.shape[1] == 10 and cut_views.shape[1] == 10


def test_a_method_that_reads_after_its_origin_is_caught():
    series, views = synthetic_series()
    origins = START + np.array([100, 110, 120])
    assert leaked_origins(NextValue(), series, origins) == [int(o) for o in origins]


def test_a_method_that_uses_only_the_origin_and_before_passes():
    series, views = synthetic_series()
    assert leaked_origins(LastValue(), series, START + np.array([100, 110, 120]), simulated_views=True) == []


def test_crossing_quantiles_are_rejected():
    series, _ = synthetic_series()
    split = split_of(series)

    class Crossing(LastValue):
        def forecast(self, series, views, origins):
            return super().forecast(series, views, origins) * np.array([1.0, 3.0, 2.0])

    with pytest.raises(ValueError, match="non-decreasing"):
        run_method(Crossing(), prepare(series, split), split)


# --- the streaming replay ---------------------------------------------------------------------
class FedError(NamedTuple):
    """One forecast's row of the TargetErrors a model was fed."""

    origin: int
    target: int
    actual: float
    forecast: np.ndarray


class SpyModel:
    """A QuantileForecaster that forecasts its last closed day and records what it is fed."""

    name, version, horizons, quantiles, cadence = "spy", "1", 3, (0.1, 0.5, 0.9), DAILY

    def __init__(self):
        self.created: dict[str, int] = {}
        self.errors: list[tuple[str, int, FedError]] = []  # (item, last closed day when fed, row)

    def new_state(self, item, first_day):
        self.created[item.item_id] = first_day
        return json.dumps({"item": item.item_id, "last": first_day - 1}).encode()

    def advance(self, states, periods):
        out = []
        for state, period in zip(states, periods):
            s = json.loads(state)
            assert period.day == s["last"] + 1, "days must close one at a time, in order"
            out.append(json.dumps({**s, "last": period.day}).encode())
        return out

    def observe_errors(self, states, errors):
        for state, e in zip(states, errors):
            s = json.loads(state)
            self.errors += [(s["item"], s["last"], FedError(int(o), e.target, e.actual, f))
                            for o, f in zip(e.origins, e.forecasts)]
        return list(states)

    def forecast(self, states):
        last = np.array([json.loads(s)["last"] for s in states], float)
        return np.broadcast_to(last[:, None, None], (len(states), 3, 3)).copy()


def replay(series, views, origins, warmup=5):
    spy = SpyModel()
    out = StreamingReplay(spy, feedback_warmup=warmup).forecast(series, views, origins)
    return spy, out


def test_replay_forecasts_each_origin_from_states_closed_through_that_origin():
    series, views = synthetic_series()
    origins = START + np.arange(100, 110)
    _, out = replay(series, views, origins)
    assert (out == origins[None, :, None, None]).all()


def test_replay_creates_an_item_on_the_day_of_its_first_priced_event():
    series, views = synthetic_series()
    series.price[1, :12] = 0.0
    series.units[1, :12] = 0.0
    spy, _ = replay(series, views, START + np.arange(100, 103))
    assert spy.created[series.items[1]] == START + 12 and spy.created[series.items[0]] == START


def test_errors_of_a_target_day_are_fed_back_only_once_that_day_has_closed():
    series, views = synthetic_series()
    spy, _ = replay(series, views, START + np.arange(100, 110))
    assert spy.errors
    for item, closed_through, record in spy.errors:
        assert record.target == closed_through
        row = list(series.items).index(item)
        assert record.actual == series.units[row, series.column(record.target)]


def test_each_published_forecast_is_fed_back_once_per_target_with_the_published_values():
    series, views = synthetic_series(n_items=1)
    origins = START + np.arange(100, 110)
    spy, _ = replay(series, views, origins, warmup=5)
    fed = [(r.origin, r.target) for _, _, r in spy.errors]
    expected = [(o, t) for t in range(int(origins[0]) - 4, int(origins[-1]) + 1)
                for o in range(t - 3, t) if o >= origins[0] - 5]
    assert sorted(fed) == sorted(expected)
    assert all((r.forecast == r.origin).all() for _, _, r in spy.errors)  # the spy forecasts its origin


def test_forecasts_of_items_without_a_recent_sale_are_not_published_so_not_fed_back():
    series, views = synthetic_series(n_items=2)
    series.units[1, 60:] = 0.0  # no sale for far longer than the activity window
    spy, out = replay(series, views, START + np.arange(100, 105))
    assert {item for item, _, _ in spy.errors} == {series.items[0]}
    assert np.isfinite(out[1]).all()  # still forecast, and so scored


def test_replay_publishes_as_the_worker_does():
    policy = RefreshPolicy()
    assert StreamingReplay.ACTIVE_DAYS == policy.active_periods
    assert StreamingReplay.PUBLISHED_DECIMALS == policy.decimals


def test_seasonal_naive_through_the_replay_uses_only_the_past():
    series, _ = synthetic_series(n_items=2, days=90)
    assert leaked_origins(StreamingReplay(SeasonalNaive(), feedback_warmup=3), series,
                          START + np.array([60, 61])) == []


# --- the evaluate command ---------------------------------------------------------------------
def evaluate_args(tmp_path, methods: str) -> argparse.Namespace:
    return configure_parser(argparse.ArgumentParser()).parse_args(
        ["--start", "2011-07-01", "--end", "2011-07-03", "--methods", methods,
         "--checkpoints", str(tmp_path / "none"), "--out", str(tmp_path / "split")])


def test_evaluate_writes_scores_tables_and_fan_charts_with_the_command_that_made_them(tmp_path):
    assert evaluate_run(evaluate_args(tmp_path, "zero")) == 0
    report = json.loads((tmp_path / "split.json").read_text())
    assert report["methods"]["zero"]["wql"] == pytest.approx(1.0)
    assert report["split"]["origins"] == 3
    assert report["command"] in (tmp_path / "split.md").read_text()
    assert len(list(tmp_path.glob("split-fan-*.png"))) == 3


def test_evaluate_reports_calibration_per_method_in_the_json_and_a_markdown_table(tmp_path):
    assert evaluate_run(evaluate_args(tmp_path, "zero")) == 0
    calibration = json.loads((tmp_path / "split.json").read_text())["methods"]["zero"]["calibration"]
    assert calibration["coverage_80_zero_days"] == 1.0  # P10 = P90 = 0 holds every zero day
    assert calibration["below"]["0.1"] == 0.0
    markdown = (tmp_path / "split.md").read_text()
    assert "Calibration (" in markdown and f"| zero | {calibration['zero_share']:.3f} | 1.000 |" in markdown


def test_evaluate_stops_on_an_unknown_method_and_names_it(tmp_path, capsys):
    assert evaluate_run(evaluate_args(tmp_path, "zero,nosuch")) == 2
    assert "nosuch" in capsys.readouterr().err
    assert not (tmp_path / "split.json").exists()


def test_evaluate_refuses_a_bad_seed_list_before_any_work(tmp_path, capsys):
    args = evaluate_args(tmp_path, "zero")
    args.seeds = "0,0"
    assert evaluate_run(args) == 2
    assert "--seeds" in capsys.readouterr().err


def test_evaluate_says_that_no_page_views_were_used_unless_simulated(tmp_path):
    assert evaluate_run(evaluate_args(tmp_path, "zero")) == 0
    assert json.loads((tmp_path / "split.json").read_text())["split"]["page_views"] == "none"
    assert "sales, prices and calendar only" in (tmp_path / "split.md").read_text()


def test_seeded_scores_are_means_with_their_spread_and_a_paired_interval():
    runs = [{"seed": k, "wql": w, "volatility": 0.1, "coverage_80": 0.9, "runtime_s": 1.0, "version": "v",
             "wql_by_bucket": {b: w for b in HORIZON_BUCKETS}, "wql_per_quantile": {"0.5": w}, "calibration": {}}
            for k, w in enumerate([0.70, 0.72, 0.74])]
    mean = _over_seeds(runs)
    assert mean["wql"] == pytest.approx(0.72) and mean["spread"]["wql"]["std"] == pytest.approx(0.02)
    assert mean["seeds"] == [0, 1, 2] and len(mean["runs"]) == 3
    data = SimpleNamespace(actuals=np.ones((50, 2, 3)))
    base = np.random.default_rng(0).uniform(4.0, 6.0, 50)
    comparisons = _comparisons({"mqtransformer": {"wql": 0.45}, "mqcnn": {"wql": 0.5}, "zero": {"wql": 1.0}},
                               {"mqtransformer": [base * 0.9], "mqcnn": [base], "zero": [base * 2]}, data)
    assert [(c["a"], c["b"]) for c in comparisons] == [("mqtransformer", "mqcnn"), ("mqtransformer", "zero")]
    assert all(c["ci95"][1] < 0 and c["verdict"] == "better" for c in comparisons)


def test_a_difference_that_a_seed_reverses_is_a_tie_whatever_the_interval():
    mqt = {"wql": 0.73, "runs": [{"wql": w} for w in (0.731, 0.741, 0.726)]}
    lightgbm = {"wql": 0.7377}
    seeds = per_seed_differences(mqt, lightgbm)
    assert seeds == pytest.approx([-0.0067, 0.0033, -0.0117])
    assert verdict({"ci95": [-0.008, -0.002], "per_seed": seeds}) == "tie"
    assert verdict({"ci95": [-0.008, -0.002], "per_seed": [-0.01, -0.002]}) == "better"
    assert verdict({"ci95": [0.002, 0.005], "per_seed": [0.002, 0.004, 0.004]}) == "worse"
    assert verdict({"ci95": [-0.001, 0.005], "per_seed": [0.002, 0.004]}) == "tie"


def test_a_checkpoint_trained_with_another_recipe_is_trained_again_not_scored_as_todays_model():
    wanted = {"cutoff": "2011-05-31", "seed": 0, "simulated_views": False, "max_items": None, "data": "d",
              "period": "day", "horizons": 28, "recipe": {"epochs": 6, "lr": 0.001, "origins_per_item": 48}}
    record = {"cutoff": "2011-05-31", "settings": {"seed": 0, "max_items": None}, "data": {"id": "d"},
              "period": "day", "horizons": 28, "recipe": {"epochs": 6, "lr": 0.001, "origins_per_item": 48}}
    assert _record_matches(record, wanted)
    assert not _record_matches({**record, "recipe": {"epochs": 2, "lr": 0.001, "origins_per_item": 24}}, wanted)
    assert not _record_matches({k: v for k, v in record.items() if k != "recipe"}, wanted)
