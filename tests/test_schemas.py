"""The forecast contract (mqstream/schemas): what the worker's message functions build keeps
it, what breaks it is refused, and what the compatibility rule allows is accepted."""
from __future__ import annotations

import datetime as dt
from importlib.resources import files

import orjson
import pytest
from jsonschema import Draft202012Validator

from mqstream.schemas import KINDS, TOPIC_KINDS, InvalidMessage, schema, validate, validate_headers
from mqstream.streams import messages
from mqstream.streams.topics import TOPICS
from mqstream.periods import Cadence
from tests.forecast_helpers import CREATED_AT, MODEL, error_bytes, forecast_bytes, issued

ORIGIN = 15_000


@pytest.fixture(scope="module")
def forecast() -> dict:
    return orjson.loads(forecast_bytes(issued("85099B", ORIGIN)))


@pytest.fixture(scope="module")
def error() -> dict:
    earlier = [issued("85099B", ORIGIN - 3), issued("85099B", ORIGIN - 1, seed=1)]
    return orjson.loads(error_bytes("85099B", ORIGIN, 4.0, earlier))


def broken(body: dict, **changes) -> dict:
    return {**body, **changes}


def test_schema_files_ship_in_the_package_and_are_valid_draft_2020_12():
    for kind in KINDS:
        for version in (1, 2):
            assert files("mqstream.schemas").joinpath(f"{kind}.v{version}.json").is_file()
            Draft202012Validator.check_schema(schema(kind, version))


def test_every_output_topic_has_a_schema():
    outputs = {spec.name for spec in TOPICS} - {"sales", "page-views", "dead-letters", "models"}  # models: safetensors
    assert set(TOPIC_KINDS) == outputs


def test_forecast_messages_keep_their_schema(forecast):
    assert validate("forecast", forecast_bytes(issued("85099B", ORIGIN))) == forecast


def test_forecast_error_messages_keep_their_schema(error):
    assert validate("forecast-error", orjson.dumps(error))["horizons"] == [3, 1]


def test_headers_carry_schema_and_model_version(forecast):
    validate_headers(messages.headers(MODEL), forecast)
    wrong = [(k, b"0" if k == "model-version" else v) for k, v in messages.headers(MODEL)]
    with pytest.raises(InvalidMessage, match="model-version"):
        validate_headers(wrong, forecast)
    with pytest.raises(InvalidMessage, match="schema-version"):
        validate_headers([], forecast)


def test_an_added_optional_field_is_accepted(forecast, error):
    validate("forecast", broken(forecast, region="EU", model={**forecast["model"], "trained_on": "2011-05-31"}))
    validate("forecast-error", broken(error, note="late"))


@pytest.mark.parametrize("change,fault", [
    (lambda f: {k: v for k, v in f.items() if k != "origin"}, "'origin' is a required property"),
    (lambda f: broken(f, schema_version=3), "no schema version 3"),
    (lambda f: broken(f, schema_version="1"), "schema_version must be an integer"),
    (lambda f: broken(f, item_id=""), "item_id"),
    (lambda f: broken(f, origin="2011-02-30"), "origin"),
    (lambda f: broken(f, origin="15 June 2011"), "origin"),
    (lambda f: broken(f, created_at="yesterday"), "created_at"),
    (lambda f: broken(f, values=[[-1.0] + row[1:] for row in f["values"]]), r"values/\d+/0"),
    (lambda f: broken(f, values=f["values"][:-1]), r"values: must be \(len\(horizons\)"),
    (lambda f: broken(f, values=[row[:-1] for row in f["values"]]), r"values: must be \(len\(horizons\)"),
    (lambda f: broken(f, values=[row[::-1] for row in f["values"]]), "quantiles cross"),
    (lambda f: broken(f, values=[[str(x) for x in row] for row in f["values"]]),
     r"values/\d+/\d+: .[0-9.]+. is not of type"),
    (lambda f: broken(f, quantiles=f["quantiles"][::-1]), "increase strictly"),
    (lambda f: broken(f, quantiles=[0.05] + f["quantiles"][1:]), "quantiles"),  # no 0.1
    (lambda f: broken(f, horizons=list(range(0, 28))), "horizons"),
    (lambda f: broken(f, horizons=[1, 2, 3, 5, 6, 7, 8] + list(range(9, 30))), "horizons: must be 1..H"),
    (lambda f: broken(f, horizons=f["horizons"][:6], values=f["values"][:6]), "fails minItems 7"),
    (lambda f: broken(f, model={"name": "mqcnn"}), "'version' is a required property"),
])
def test_broken_forecasts_are_refused(forecast, change, fault):
    with pytest.raises(InvalidMessage, match=fault):
        validate("forecast", change(forecast))


@pytest.mark.parametrize("change,fault", [
    (lambda e: broken(e, actual=-1.0), "actual"),
    (lambda e: broken(e, origins=e["origins"][:1]), "one entry per origin"),
    (lambda e: broken(e, pinball=[row[:-1] for row in e["pinball"]]), "pinball: every row"),
    (lambda e: broken(e, horizons=[e["horizons"][0] + 1] + e["horizons"][1:]), "is not the days from origin"),
    (lambda e: broken(e, forecasts=[row[::-1] for row in e["forecasts"]]), "quantiles cross"),
    (lambda e: {k: v for k, v in e.items() if k != "target"}, "'target' is a required property"),
])
def test_broken_forecast_errors_are_refused(error, change, fault):
    with pytest.raises(InvalidMessage, match=fault):
        validate("forecast-error", change(error))


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"null"])
def test_non_objects_are_refused(raw):
    with pytest.raises(InvalidMessage):
        validate("forecast", raw)


def test_an_unknown_kind_is_a_programming_error(forecast):
    with pytest.raises(ValueError, match="unknown message kind"):
        validate("forecasts", forecast)


# --- version 2: weeks ---------------------------------------------------------------------
WEEKS = Cadence("week")


def weekly(forecast: dict, horizons: int = 13) -> dict:
    return {**forecast, **messages.contract(WEEKS), "horizons": list(range(1, horizons + 1)),
            "values": forecast["values"][:horizons]}


def test_the_worker_publishes_weeks_in_version_2_with_their_period():
    body = validate("forecast", messages.forecast_message(issued("A", ORIGIN), MODEL, CREATED_AT, WEEKS))
    assert (body["schema_version"], body["period"]) == (2, "week")
    assert body["origin"] == WEEKS.iso(ORIGIN) and dt.date.fromisoformat(body["origin"]).weekday() == 0
    assert dict(messages.headers(MODEL, WEEKS))["schema-version"] == b"2"
    assert validate("forecast", forecast_bytes(issued("A", ORIGIN)))["schema_version"] == 1  # days stay in v1


def test_version_2_needs_its_period_and_seven_horizons_for_days_only(forecast):
    validate("forecast", weekly(forecast, horizons=1))  # the next week covers the next 7 days
    with pytest.raises(InvalidMessage, match="'period' is a required property"):
        validate("forecast", {k: v for k, v in weekly(forecast).items() if k != "period"})
    with pytest.raises(InvalidMessage, match="horizons: .* is too short"):
        validate("forecast", {**weekly(forecast, horizons=6), "period": "day"})
    with pytest.raises(InvalidMessage, match="period"):
        validate("forecast", {**weekly(forecast), "period": "month"})


def test_a_weekly_error_counts_its_horizons_in_weeks(error):
    target = dt.date.fromisoformat(WEEKS.iso(ORIGIN))
    origins = [(target - dt.timedelta(weeks=w)).isoformat() for w in (3, 1)]
    body = {**error, **messages.contract(WEEKS), "target": target.isoformat(), "origins": origins}
    assert validate("forecast-error", body)["horizons"] == [3, 1]
    with pytest.raises(InvalidMessage, match="is not the weeks from origin"):
        validate("forecast-error", {**body, "horizons": [21, 7]})
