"""A day close in-process: what the worker does per item around the model, against the model.

N synthetic items are brought to a steady state (``WARM_DAYS`` closed days, so each ledger
holds its 28 forecasts and every close scores 28 of them and issues one), then the next
day's close is timed phase by phase, as ``streams.close.PartitionClose`` runs it without a
broker: the items' and item models' table values decoded, ``close_items`` (the model's
``advance`` and ``forecast`` inside it), the output messages encoded
(``Publisher._records``), the rolling quality window, the new table values encoded. The
reference in the same run is the model alone on the same states (``advance`` then
``forecast``, in the close's batches). Rounds alternate the two, best of ``ROUNDS`` each,
one thread, the cycle collector set as the worker sets it: the close's share of time
outside the model is what the issue's "close at >= 70% of the model-only rate" target is
about. Kafka (the changelog, the outputs' sends) is not in it: `latency` measures that end
to end.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from bench import synthetic
from bench.refresh import bench_model
from mqstream.models.protocol import Period
from mqstream.periods import DAILY, DAY_SECONDS
from mqstream.state.item import UNITS, ItemModel, ItemState
from mqstream.state.refresh import RefreshPolicy, close_items, new_item, new_model
from mqstream.streams.changes import ChangeRule
from mqstream.streams.metrics import QualityWindow, WorkerMetrics
from mqstream.streams.publisher import SERVED_OUTPUTS, Publisher
from mqstream.streams.runner import quiet_collector

WARM_DAYS = 40  # > 28: every ledger full
ROUNDS = 5
PHASES = ("decode", "close_items", "messages", "quality", "encode")


def run(options) -> dict[str, dict]:
    models = [options.model] if options.model else ["mqcnn", "mqtransformer"]
    if "seasonal-naive" in models:
        raise SystemExit("close: --model mqcnn or mqtransformer")
    return {f"close:{name}:{options.items or 4000}": measure(name, options.items or 4000) for name in models}


def measure(model_name: str, items: int, seed: int = 0) -> dict:
    torch.set_num_threads(1)
    model, policy = bench_model(model_name), RefreshPolicy()
    items_raw, models_raw, day = steady_state(model, policy, items, seed)
    publisher = Publisher(None, {name: name for name in SERVED_OUTPUTS}, model, ChangeRule(), policy.decimals,
                          WorkerMetrics(), QualityWindow(model.quantiles), DAILY)
    quiet_collector()  # as the worker runs its closes
    best = dict.fromkeys((*PHASES, "close", "model_only"), float("inf"))
    for _ in tqdm(range(ROUNDS), desc=f"close {model_name}", leave=False):
        for phase, seconds in timed_close(items_raw, models_raw, day, model, policy, publisher).items():
            best[phase] = min(best[phase], seconds)
        best["model_only"] = min(best["model_only"], timed_model(models_raw, day, model, policy.batch_size))
    per_item = {f"{phase}_us_per_item": best[phase] / items * 1e6 for phase in best}
    return {"model": model.name, "items": items, "threads": 1, **per_item,
            "model_share_of_close": best["model_only"] / best["close"],
            "item_models_bytes_per_item": float(np.mean([len(m) for m in models_raw]))}


def steady_state(model, policy: RefreshPolicy, n: int, seed: int) -> tuple[list[bytes], list[bytes], int]:
    """Table values of ``n`` items closed through day ``WARM_DAYS - 1`` past the start, each
    with sales on the day about to close; and that day."""
    rng = np.random.default_rng(seed)
    catalogue = synthetic.catalogue(n, seed)
    first = synthetic.DAY
    items = [new_item(item_id, first, policy) for item_id in catalogue.ids]
    events = 0

    def sell(day: int) -> None:
        nonlocal events
        for i, item in enumerate(items):
            for _ in range(int(rng.geometric(0.5))):
                item.apply("sales", f"e{events}", day * DAY_SECONDS + 3600, [(UNITS, float(rng.geometric(0.4)))],
                           float(catalogue.prices[i]), catalogue.descriptions[i])
                events += 1

    item_models = [new_model(item.launch_info(first), item.born, model) for item in items]
    for day in tqdm(range(first, first + WARM_DAYS), desc="warm", leave=False):
        sell(day)
        close_items(items, item_models, day, model, policy)
    sell(first + WARM_DAYS)
    return [i.to_bytes() for i in items], [m.to_bytes() for m in item_models], first + WARM_DAYS


def timed_close(items_raw, models_raw, day, model, policy, publisher) -> dict[str, float]:
    clock, took = time.perf_counter(), {}

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        took[phase], clock = now - clock, now

    items = [ItemState.from_bytes(raw) for raw in items_raw]
    item_models = [ItemModel.from_bytes(raw) for raw in models_raw]
    lap("decode")
    refresh = close_items(items, item_models, day, model, policy)
    lap("close_items")
    publisher._records(refresh)
    lap("messages")
    publisher._track_quality(refresh)
    lap("quality")
    [m.to_bytes() for m in item_models], [i.to_bytes() for i in items]
    lap("encode")
    took["close"] = sum(took.values())
    return took


def timed_model(models_raw: list[bytes], day: int, model, batch_size: int) -> float:
    """``advance`` then ``forecast`` of the same states, as close_items calls them: the day's
    states advanced together, forecast ``batch_size`` at a time. The batches matter: one
    forecast of 4,000 states costs twice as much an item as four of 1,000."""
    states = [ItemModel.from_bytes(raw).model for raw in models_raw]
    start = time.perf_counter()
    advanced = model.advance(states, [Period(day, 1.0, 0.0, 1.0)] * len(states))
    for first in range(0, len(advanced), batch_size):
        model.forecast(advanced[first : first + batch_size])
    return time.perf_counter() - start


def section(results: dict[str, dict]) -> list[str]:
    found = {k: r for k, r in sorted(results.items()) if k.startswith("close:")}
    if not found:
        return []
    rows = ["## A day close in-process (one thread, no broker)", "",
            "µs per item, best of 5 rounds; the model alone on the same states in the same rounds.", "",
            "| model | items | decode | close_items | messages | quality | encode | close | model only "
            "| model ÷ close | ≥ 70% |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in found.values():
        cells = " | ".join(f"{r[f'{phase}_us_per_item']:.1f}" for phase in (*PHASES, "close", "model_only"))
        met = "yes" if r["model_share_of_close"] >= 0.7 else "**no**"
        rows.append(f"| {r['model']} | {r['items']:,} | {cells} | {r['model_share_of_close']:.0%} | {met} |")
    return rows
