"""Refresh cost on the incremental path, and against a full recompute from the whole history.

For a batch of real products the model's states are warmed to 100 and to 1,000 days of
history; one refresh (``advance`` by the closed day, then ``forecast``) is timed at each, one
thread, so items per second is per core. The full recompute rebuilds every state from
``new_state`` over the whole history, as a system without incremental state would have to.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mqstream.models.dataset import demand_series, load_transactions, select_products
from mqstream.models.pageviews import simulate_views
from mqstream.models.protocol import ItemInfo, Period, QuantileForecaster
from mqstream.models.registry import load_model

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
HISTORIES = (100, 1000)  # days of history before the timed refresh
ROUNDS = 25  # ~4 s of alternating refreshes: one background burst cannot tilt the ratio


def bench_model(name: str) -> QuantileForecaster:
    """The trained checkpoint when there is one; else the default architecture untrained
    (weights do not change the cost)."""
    if (CHECKPOINTS / name / "config.json").exists():
        return load_model(name, CHECKPOINTS / name)
    from mqstream.models.mqcnn import MQCNN, MQCNNConfig, MQCNNForecaster
    from mqstream.models.mqtransformer import MQTransformer, MQTransformerConfig, MQTransformerForecaster

    if name == "mqtransformer":
        return MQTransformerForecaster(MQTransformer(MQTransformerConfig()))
    return MQCNNForecaster(MQCNN(MQCNNConfig()))


def periods_of(units: np.ndarray, views: np.ndarray, price: np.ndarray, first_day: int, t: int) -> list[Period]:
    """Day t of every item; series are tiled when t runs past the data (1,000 days > 639)."""
    col = t % units.shape[1]
    return [Period(first_day + t, float(u), float(v), float(p))
            for u, v, p in zip(units[:, col], views[:, col], price[:, col])]


def warm(model, infos, series, first_day: int, days: int) -> list[bytes]:
    states = [model.new_state(info, first_day) for info in infos]
    for t in tqdm(range(days), desc=f"warm {days} days", leave=False):
        states = model.advance(states, periods_of(*series, first_day, t))
    return states


def time_refresh(model, states, series, first_day: int, day: int) -> float:
    """Seconds of one refresh of the batch."""
    start = time.perf_counter()
    model.forecast(model.advance(states, periods_of(*series, first_day, day)))
    return time.perf_counter() - start


def run(options) -> dict[str, dict]:
    model = options.model or "mqtransformer"
    if model not in ("mqtransformer", "mqcnn"):
        raise SystemExit("refresh: --model mqtransformer or mqcnn (seasonal-naive has no incremental path to time)")
    return {f"refresh:{model}": measure(model, options.items or 1000)}


def measure(model_name: str = "mqtransformer", items: int = 1000) -> dict:
    torch.set_num_threads(1)
    model = bench_model(model_name)
    tx = load_transactions()
    series = demand_series(tx)
    keep = np.flatnonzero(select_products(series, series.start_day + 400))[:items]
    units, price = series.units[keep], series.price[keep]
    views = simulate_views(series.items[keep], units, series.start_day).astype(np.float32)
    infos = [ItemInfo(str(i), str(d)) for i, d in zip(series.items[keep], series.descriptions[keep])]
    data = (units, views, price)
    result = {"model": model.name, "items": len(keep), "threads": 1}
    warmed = {}
    for days in HISTORIES:
        start = time.perf_counter()
        warmed[days] = warm(model, infos, data, series.start_day, days)
        model.forecast(warmed[days])  # a full recompute: every state rebuilt from the whole history
        result[f"full_recompute_seconds_per_item_at_{days}"] = (time.perf_counter() - start) / len(keep)
        result[f"state_bytes_per_item_at_{days}"] = float(np.mean([len(s) for s in warmed[days]]))
    # the two histories' refreshes alternate, best of ROUNDS each, so that both see the machine alike
    best = {days: float("inf") for days in HISTORIES}
    for _ in range(ROUNDS):
        for days in HISTORIES:
            best[days] = min(best[days], time_refresh(model, warmed[days], data, series.start_day, days))
    for days in HISTORIES:
        result[f"refresh_seconds_per_item_at_{days}"] = best[days] / len(keep)
    result["items_per_second_per_core"] = 1.0 / result["refresh_seconds_per_item_at_100"]
    result["cost_ratio_1000_vs_100"] = (result["refresh_seconds_per_item_at_1000"]
                                        / result["refresh_seconds_per_item_at_100"])
    for days in HISTORIES:
        result[f"incremental_speedup_at_{days}"] = (result[f"full_recompute_seconds_per_item_at_{days}"]
                                                    / result[f"refresh_seconds_per_item_at_{days}"])
    return result


def section(results: dict[str, dict]) -> list[str]:
    found = {k: r for k, r in sorted(results.items()) if k.startswith("refresh:")}
    if not found:
        return []
    rows = ["## Refresh (one thread, no broker)", "",
            "| benchmark | model | items | items/s per core (incremental) | s/item at 100 days "
            "| s/item at 1,000 days | 1,000 ÷ 100 | full recompute s/item at 100 / 1,000 days "
            "| incremental speed-up at 100 / 1,000 | state bytes/item |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in found.values():
        rows.append(f"| refresh | {r['model']} | {r['items']:,} | {r['items_per_second_per_core']:,.0f} "
                    f"| {r['refresh_seconds_per_item_at_100']:.2e} | {r['refresh_seconds_per_item_at_1000']:.2e} "
                    f"| {r['cost_ratio_1000_vs_100']:.2f} | {r['full_recompute_seconds_per_item_at_100']:.2e} / "
                    f"{r['full_recompute_seconds_per_item_at_1000']:.2e} | {r['incremental_speedup_at_100']:.0f}× / "
                    f"{r['incremental_speedup_at_1000']:.0f}× | {r['state_bytes_per_item_at_100']:,.0f} |")
    return rows
