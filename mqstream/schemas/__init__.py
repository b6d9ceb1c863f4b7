"""The message contract: JSON Schemas of what the worker publishes, and checking a message
against them. The schema files sit beside this module (package data), so an installed
mqstream finds them; the compatibility rule is in README.md here."""
from __future__ import annotations

import datetime as dt
import json
from functools import cache, partial
from importlib.resources import files
from typing import Sequence

import fastjsonschema
import numpy as np
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

KINDS = ("forecast", "forecast-error", "forecast-change")
TOPIC_KINDS = {"forecasts": "forecast", "forecasts-latest": "forecast",
               "forecast-errors": "forecast-error", "forecast-changes": "forecast-change",
               "forecasts-shadow": "forecast", "forecast-errors-shadow": "forecast-error"}
VERSIONS = {kind: (1, 2) for kind in KINDS}  # the schema versions this code knows, per kind
PERIOD_DAYS = {"day": 1, "week": 7}  # version 2's ``period``; version 1 counts days


class InvalidMessage(ValueError):
    pass


@cache
def schema(kind: str, version: int = 1) -> dict:
    if version not in _versions(kind):
        raise InvalidMessage(f"{kind}: no schema version {version!r}; this code knows {_versions(kind)}")
    return json.loads(files(__name__).joinpath(f"{kind}.v{version}.json").read_text())


@cache
def _validator(kind: str, version: int) -> Draft202012Validator:
    return Draft202012Validator(schema(kind, version), format_checker=Draft202012Validator.FORMAT_CHECKER)


@cache
def _compiled(kind: str, version: int):
    """The same schema compiled to Python code (fastjsonschema, about 20 times faster): the
    check every message passes through. jsonschema runs only on a message this refuses, to
    name the fault, and stays the reference: what it accepts is accepted."""
    checker = Draft202012Validator.FORMAT_CHECKER
    formats = {name: partial(checker.conforms, format=name) for name in ("date", "date-time")}
    return fastjsonschema.compile(_as_draft7(schema(kind, version)), formats=formats)


def _as_draft7(node):
    """fastjsonschema knows drafts up to 7: 2020-12's ``prefixItems`` + ``items`` are draft 7's
    ``items`` (a list) + ``additionalItems``; ``$defs`` are reached by JSON pointer either way."""
    if isinstance(node, list):
        return [_as_draft7(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _as_draft7(v) for k, v in node.items() if k != "$schema"}
    if "prefixItems" in node:
        node["additionalItems"] = node.pop("items", True)
        node["items"] = node.pop("prefixItems")
    return node


def validate(kind: str, body: bytes | str | dict) -> dict:
    """The message as a dict, if it keeps the schema of the version its ``schema_version``
    names and the array shapes that JSON Schema cannot state; raises InvalidMessage naming
    the fault otherwise."""
    if not isinstance(body, dict):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage(f"{kind}: not JSON ({exc})") from exc
        if not isinstance(body, dict):
            raise InvalidMessage(f"{kind}: expected a JSON object, got {type(body).__name__}")
    version = body.get("schema_version")
    if type(version) is not int:
        raise InvalidMessage(f"{kind}: schema_version must be an integer, got {version!r}")
    try:
        _compiled(kind, version)(body)  # schema() rejects unknown versions
        error = None
    except fastjsonschema.JsonSchemaException:
        error = best_match(_validator(kind, version).iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        # a message names the whole offending value; a short one is clearer than 28 rows of numbers
        what = error.message if len(error.message) <= 200 else f"fails {error.validator} {error.validator_value!r}"
        raise InvalidMessage(f"{kind} v{version}: {where}: {what}")
    fault = _SHAPES[kind](body)
    if fault:
        raise InvalidMessage(f"{kind} v{version}: {fault}")
    return body


def _versions(kind: str) -> tuple[int, ...]:
    if kind not in VERSIONS:
        raise ValueError(f"unknown message kind {kind!r}; kinds: {', '.join(KINDS)}")
    return VERSIONS[kind]


def validate_headers(headers: Sequence[tuple[str, bytes]], body: dict) -> None:
    """The headers every output message carries agree with its body: ``schema-version``,
    ``model`` and ``model-version``."""
    got = {k: v.decode() for k, v in headers or ()}
    want = {"schema-version": str(body["schema_version"]), "model": body["model"]["name"],
            "model-version": body["model"]["version"]}
    wrong = {k: got.get(k) for k, v in want.items() if got.get(k) != v}
    if wrong:
        raise InvalidMessage(f"headers {wrong} do not match the body's {want}")


def _forecast_shape(body: dict) -> str | None:
    horizons, quantiles, values = body["horizons"], body["quantiles"], body["values"]
    if horizons != list(range(1, len(horizons) + 1)):
        return "horizons: must be 1..H, consecutive"
    if len(values) != len(horizons) or any(len(row) != len(quantiles) for row in values):
        return f"values: must be (len(horizons), len(quantiles)) = ({len(horizons)}, {len(quantiles)})"
    return _quantile_order(quantiles, values, "values")


def _error_shape(body: dict) -> str | None:
    n, q = len(body["origins"]), len(body["quantiles"])
    for name in ("horizons", "forecasts", "pinball"):
        if len(body[name]) != n:
            return f"{name}: one entry per origin ({n}), got {len(body[name])}"
        if name != "horizons" and any(len(row) != q for row in body[name]):
            return f"{name}: every row needs one entry per quantile ({q})"
    target, days = dt.date.fromisoformat(body["target"]), PERIOD_DAYS[body.get("period", "day")]
    for origin, horizon in zip(body["origins"], body["horizons"]):
        if (target - dt.date.fromisoformat(origin)).days != horizon * days:
            return f"horizons: {horizon} is not the {body.get('period', 'day')}s from origin {origin} to target {body['target']}"
    return _quantile_order(body["quantiles"], body["forecasts"], "forecasts")


def _quantile_order(quantiles: list, rows: list, name: str) -> str | None:
    if np.any(np.diff(quantiles) <= 0):
        return "quantiles: must increase strictly"
    if np.any(np.diff(np.asarray(rows, np.float64), axis=1) < 0):
        return f"{name}: quantiles cross (a row decreases)"
    return None


_SHAPES = {"forecast": _forecast_shape, "forecast-error": _error_shape, "forecast-change": lambda body: None}
