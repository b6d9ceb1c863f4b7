"""Memory: bytes of state per item, as table values and as the worker's resident memory.

Two measurements:

- **A real worker** (``--items``, default 20,000): every item sells once on day D, then one
  sale per partition closes D, and so on for ``--closes`` days (default ``STEADY_CLOSES``;
  fewer leave ledgers that hold fewer forecasts than a steady state's): each item has both
  table values (``items`` and ``item-models``), forecast daily until its ledger holds all it
  will (an item stays active for 28 days after its sale). Table bytes come from the worker's
  own ``mqstream_state_bytes`` gauge (key + value of everything it holds), from a census begun after the close had finished;
  resident memory (VmRSS) is read from /proc when the worker is ready and idle with no
  state, while the events stream in, and after the close. RSS per item is the growth over
  the idle worker divided by the items.
- **Table values built in-process** (``--table-items``, default 100,000 and 1,000,000;
  ``--items 0`` measures only these): items made by ``state.refresh.new_item`` with a day of
  sales applied and then closed with the model (``new_model`` + ``close_items``: advanced,
  forecast, ledger written) and a sale on the next, still open, day; each item's ledger then
  as it is after H daily closes (``steady_ledgers``); their ``to_bytes`` sizes plus the key,
  in batches, so nothing at that scale is held in memory at once.

Results: ``memory:<model>:<items>`` (the worker) and ``memory-values:<model>:<items>``.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from bench import synthetic
from bench.live import ROOT, follow, local_broker, model_for_bench, running, total
from mqstream.periods import DAY_SECONDS
from mqstream.models.registry import load_model
from mqstream.state.item import UNITS, ItemModel
from mqstream.state.ledger import Ledgers
from mqstream.state.refresh import RefreshPolicy, close_items, new_item, new_model
from mqstream.streams.offsets import group_lag
from mqstream.streams.replay import send

BATCH = 10_000
STEADY_CLOSES = 28  # days closed by the worker: every item forecast daily until its ledger is full (H = 28)
CENSUS_SECONDS = 60  # the worker's sample_state timer: a census begins a minute after the last one ended


def run(options) -> dict[str, dict]:
    """``memory:<model>:<items>`` for the real worker (skipped with ``--items 0``) and
    ``memory-values:<model>:<items>`` for each size of ``--table-items``."""
    items = 20_000 if options.items is None else options.items
    model, note = (options.model, "as asked") if options.model else model_for_bench()
    out = {}
    if items:
        out[f"memory:{model}:{items}"] = {"model": model, "model_note": note,
                                          **measure_worker(model, items, options.partitions,
                                                           options.closes or STEADY_CLOSES)}
    for n in [int(s) for s in str(options.table_items).split(",") if s]:
        out[f"memory-values:{model}:{n}"] = {"model": model, "model_note": note, **measure_tables(model, n)}
    return out


def measure_worker(model: str, items: int, partitions: int, closes: int) -> dict:
    with local_broker(model, partitions) as rig:
        settings = rig.fresh()
        catalogue = synthetic.catalogue(items)
        with running(settings) as [worker]:
            worker.wait_ready()
            time.sleep(5)
            idle = worker.memory()["VmRSS"]
            send(synthetic.one_sale_each(catalogue), settings, close_last_period=False, progress=False)
            rss_while = []  # (events in, RSS) as they stream in

            def consumed_all(ws) -> bool:
                rss_while.append((ws[0].consumed(), ws[0].samples[-1].rss))
                return total(ws) >= items

            follow([worker], consumed_all, timeout=items / 100 + 600, interval=1.0)
            before_close = worker.memory()["VmRSS"]
            close_seconds = []  # each close: its closing events sent -> every item's forecast published
            for closed in range(1, closes + 1):  # D, then every day its forecasts wait for
                started = time.monotonic()
                send(synthetic.closers(catalogue, settings.partitions, synthetic.DAY + closed, settings.allowed_lateness),
                     settings, close_last_period=False, progress=False)
                follow([worker], lambda ws: total(ws, "mqstream_forecasts_published_total") >= closed * items,
                       timeout=items / 50 + 600)
                close_seconds.append(time.monotonic() - started)
            while group_lag(settings):
                time.sleep(1)
            memory = worker.memory()  # before the gauges' census, which reads every value once
            closed_at = time.time()
            follow([worker], lambda ws: _census_since(ws[0], closed_at), timeout=CENSUS_SECONDS + items / 2_000,
                   interval=2.0)
            worker.sample()
            counters = worker.samples[-1].counters
            split = _gauge_split(worker)
    held = counters["mqstream_state_items"]
    items_bytes = counters.get("mqstream_state_bytes", 0.0)  # summed over both tables; split below
    rss = memory["VmRSS"]
    grow = np.polyfit([c for c, _ in rss_while if c > 0], [r for c, r in rss_while if c > 0], 1)[0] \
        if sum(1 for c, _ in rss_while if c > 0) >= 3 else None
    return {
        "worker_items": int(held), "partitions": partitions, "closes": closes, "worker_start_hangs": worker.hangs,
        "worker_items_table_bytes_per_item": split.get("items", 0.0) / held,
        "worker_item_models_table_bytes_per_item": split.get("item-models", 0.0) / held,
        "worker_table_bytes_per_item": items_bytes / held,
        "worker_rss_idle_bytes": idle, "worker_rss_before_close_bytes": before_close,
        "worker_rss_after_close_bytes": rss, "worker_rss_peak_bytes": memory["VmHWM"],
        "worker_rss_per_item_bytes": (rss - idle) / held,
        "worker_rss_per_item_while_ingesting_bytes": grow,
        "worker_rss_per_item_before_close_bytes": (before_close - idle) / held,
        "extrapolated_rss_at_1000000_bytes": idle + 1_000_000 * (rss - idle) / held,
        "close_seconds_first": close_seconds[0], "close_seconds_last": close_seconds[-1],
    }


def _census_since(worker, since: float) -> bool:
    """Whether the state gauges come from a census begun after ``since`` (unix time)."""
    return worker.samples[-1].counters.get("mqstream_state_census_started_seconds", 0.0) > since


def _gauge_split(worker) -> dict[str, float]:
    """mqstream_state_bytes by table (parse_metrics sums labels, so read the lines again)."""
    got = worker._get("/metrics")
    out = {}
    for line in got[1].decode().splitlines() if got else ():
        if line.startswith("mqstream_state_bytes{"):
            table = line.split('table="', 1)[1].split('"', 1)[0]
            out[table] = float(line.rsplit(" ", 1)[1])
    return out


def measure_tables(model_name: str, items: int, seed: int = 3) -> dict:
    """Mean and spread of the serialized table values (key included) of ``items`` realistic items."""
    torch.set_num_threads(1)
    checkpoint = None if model_name == "seasonal-naive" else ROOT / "checkpoints" / model_name
    model = load_model(model_name, checkpoint)
    policy = RefreshPolicy()
    rng = np.random.default_rng(seed)
    catalogue = synthetic.catalogue(min(items, 100_000), seed)
    day = synthetic.DAY
    item_sizes, model_sizes = [], []
    started = time.perf_counter()
    for first in range(0, items, BATCH):
        batch, events = [], 0
        for n in range(first, min(items, first + BATCH)):
            i = n % len(catalogue)
            item_id = f"S{n:07d}"
            state = new_item(item_id, day, policy)
            for d in (day, day + 1):  # D is closed below; D+1 stays open, as in a live worker
                for _ in range(int(rng.geometric(0.4))):  # invoice lines that day: 1, 2, 3...
                    ts = d * DAY_SECONDS + int(rng.integers(0, 23 * 3600))
                    state.apply("sales", f"e{d % 100}-{events}", ts, [(UNITS, float(rng.geometric(0.4)))],
                                float(catalogue.prices[i]), catalogue.descriptions[i])
                    events += 1
            batch.append(state)
        item_models = [new_model(s.launch_info(day), s.born, model) for s in batch]
        close_items(batch, item_models, day, model, policy)
        for item_model, ledger in zip(item_models, steady_ledgers(item_models, day, model)):
            item_model.ledger = ledger
        item_sizes += [len(s.item_id) + len(s.to_bytes()) for s in batch]
        model_sizes += [len(s.item_id) + len(m.to_bytes()) for s, m in zip(batch, item_models)]
    item_sizes, model_sizes = np.asarray(item_sizes), np.asarray(model_sizes)
    return {"items": items, "seconds": time.perf_counter() - started,
            "items_value_bytes_mean": float(item_sizes.mean()), "items_value_bytes_max": int(item_sizes.max()),
            "item_models_value_bytes_mean": float(model_sizes.mean()),
            "item_models_value_bytes_min": int(model_sizes.min()), "item_models_value_bytes_max": int(model_sizes.max()),
            "model_state_bytes": len(item_models[0].model), "ledger_bytes": len(item_models[0].ledger),
            "total_bytes_per_item": float(item_sizes.mean() + model_sizes.mean()),
            "total_bytes": int(item_sizes.sum() + model_sizes.sum())}


def steady_ledgers(item_models: list[ItemModel], day: int, model) -> list[bytes]:
    """The item models' ledgers as after a forecast on each of the H days up to ``day``
    (each item's forecast from ``day`` repeated for the origins before it): a ledger's size
    once it holds all it will hold for an item forecast daily."""
    h, q = model.horizons, len(model.quantiles)
    latest = Ledgers.from_bytes([m.ledger for m in item_models], h, q).latest(range(len(item_models)))
    values = np.stack([v for _, v in latest])
    ledgers, rows = Ledgers.empty(len(item_models), h, q), range(len(item_models))
    for origin in range(day - h + 1, day + 1):
        ledgers.score(rows, origin, [0.0] * len(item_models))
        ledgers.record(rows, origin, values)
    return ledgers.to_bytes()


def section(results: dict[str, dict]) -> list[str]:
    workers = {k: r for k, r in sorted(results.items(), key=_by_size) if k.startswith("memory:")}
    values = {k: r for k, r in sorted(results.items(), key=_by_size) if k.startswith("memory-values:")}
    if not workers and not values:
        return []
    rows = ["## Memory: bytes of state per item", "",
            "| measured on | model | items | `items` B/item | `item-models` B/item (model state + ledger) "
            "| RSS growth B/item | RSS after the closes (peak) | close s, first / last |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in workers.values():
        closes = r.get("closes", 1)  # entries before the steady state closed one day
        rows.append(f"| real worker after {closes} close{'s' * (closes > 1)}, gauge and /proc | {r['model']} "
                    f"| {r['worker_items']:,} "
                    f"| {r['worker_items_table_bytes_per_item']:,.0f} | {r['worker_item_models_table_bytes_per_item']:,.0f} "
                    f"| {r['worker_rss_per_item_bytes']:,.0f} | {r['worker_rss_after_close_bytes'] / 2**30:,.2f} GiB "
                    f"({r['worker_rss_peak_bytes'] / 2**30:,.2f}; idle {r['worker_rss_idle_bytes'] / 2**30:,.2f}) "
                    f"| {_close_times(r)} |")
    for r in values.values():
        rows.append(f"| values built in-process | {r['model']} | {r['items']:,} | {r['items_value_bytes_mean']:,.0f} "
                    f"| {r['item_models_value_bytes_mean']:,.0f} ({r['model_state_bytes']:,} + {r['ledger_bytes']:,}) "
                    f"| — | {r['total_bytes'] / 2**30:,.2f} GiB of values | — |")
    if workers:
        largest = max(workers.values(), key=lambda r: r["worker_items"])
        if largest["worker_items"] < 1_000_000:
            rows.append(f"| **extrapolated** linearly from the real worker at {largest['worker_items']:,} "
                        f"| {largest['model']} | 1,000,000 | | | {largest['worker_rss_per_item_bytes']:,.0f} "
                        f"| {largest['extrapolated_rss_at_1000000_bytes'] / 2**30:,.1f} GiB (not run) | |")
    return rows


def _close_times(r: dict) -> str:
    if "close_seconds_first" not in r:  # entries from before closes were timed
        return "—"
    return f"{r['close_seconds_first']:,.1f} / {r['close_seconds_last']:,.1f}"


def _by_size(kv) -> tuple:
    key, r = kv
    return key.split(":")[0], r.get("model", ""), r.get("worker_items", r.get("items", 0))
