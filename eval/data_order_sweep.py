"""The MQTransformer stage trained in several data orders from one warm start, and their weight average.

How much of a split's MQTransformer score is the order its training visits the series? For
each seed, the MQTransformer stage is trained K times from the same MQ-CNN checkpoint with the
same initialisation of its new parts, differing only in the seed of ``fit`` (the order of the
series and the origins drawn). Order 0 is the default recipe's own run, read from the sweep's
``default-seed{seed}``. Each run is replayed as the worker drives it and scored against the
MQ-CNN; so is the uniform average of the K runs' weights (a "model soup": runs fine-tuned from
one starting point usually sit in one basin, where their average can beat each of them).

  python eval/recipe_sweep.py --split peak --seeds 0,1,2 --only default --out var/sweep
  python eval/data_order_sweep.py --split peak --seeds 0,1,2 --orders 3 --sweep var/sweep --out var/orders

Results: OUT/results.jsonl, one JSON line per run and seed. eval/mqtransformer-training.md
holds a run.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from recipe_sweep import SPLIT_NAMES, backtest_split
from mqstream.models.backtest import StreamingReplay, prepare, run_method
from mqstream.models.dataset import demand_series
from mqstream.models.history import load_history
from mqstream.models.mqtransformer import MQTransformer
from mqstream.models.registry import load_model
from mqstream.models.scores import item_losses, paired_bootstrap, score
from mqstream.models.training import (NEW_DECODER_INPUTS, Split, TrainSettings, fit, load_checkpoint, model_config_of,
                                      recipe_of, save_checkpoint, training_series)

ORDER_STRIDE = 100  # order k trains with fit seed ``seed + 100 k``


def stage_runs(seed: int, orders: int, split, history, sweep: Path) -> tuple[MQTransformer, list[dict]]:
    """The warm-started, initialised MQTransformer and the weights of its stage in each data
    order, set up as ``models.training.train`` sets up the default recipe."""
    s = TrainSettings(seed=seed)
    cadence = split.cadence
    cfg = model_config_of("mqtransformer", cadence, split.horizons, None, False)
    cutoff_day = cadence.last_ending_by(cadence.last_iso(split.cutoff))
    batch, _ = training_series(cutoff_day, history, None, seed, False, cadence)
    cutoff_col = int(cutoff_day - batch.days[0])
    val = cadence.count(s.val_days)
    cols = Split(cutoff_col, cutoff_col - cfg.horizons - val + 1, val)
    val_batch = batch.select(np.sort(np.random.default_rng(seed).choice(len(batch), s.val_items, replace=False)))
    torch.manual_seed(seed)
    start = MQTransformer(cfg)
    _, base = load_checkpoint(sweep / f"mqcnn-seed{seed}")
    start.warm_start(base)
    fast = frozenset(n for n, _ in start.named_parameters() if n not in base.state_dict()) | NEW_DECODER_INPUTS
    runs = [load_checkpoint(sweep / f"default-seed{seed}")[1].state_dict()]
    for k in range(1, orders):
        net, began = copy.deepcopy(start), time.monotonic()
        best, history_k = fit("mqtransformer", net, batch, val_batch, cols, recipe_of("mqtransformer", s),
                              TrainSettings(seed=seed + ORDER_STRIDE * k), False, validate_start=True, fast=fast,
                              fast_factor=s.new_lr_factor)
        print(f"seed {seed} order {k}: validation wQL {best:.4f} by epoch "
              f"{[round(h['val_wql'], 4) for h in history_k]} ({time.monotonic() - began:.0f} s)", flush=True)
        runs.append(net.state_dict())
    return start, runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=SPLIT_NAMES, default="peak")
    p.add_argument("--seeds", default="0")
    p.add_argument("--orders", type=int, default=3)
    p.add_argument("--sweep", type=Path, required=True, help="recipe_sweep.py's OUT, holding mqcnn- and default-seedN")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    history = load_history()
    split = backtest_split(args.split, history)
    data = prepare(demand_series(history.sales, cadence=split.cadence), split)
    scale = np.abs(data.actuals).sum(axis=(1, 2), dtype=np.float64)
    for seed in (int(s) for s in args.seeds.split(",")):
        start, runs = stage_runs(seed, args.orders, split, history, args.sweep)
        soup = {n: torch.stack([r[n].float() for r in runs]).mean(0).to(runs[0][n].dtype) for n in runs[0]}
        mqcnn = load_model("mqcnn", args.sweep / f"mqcnn-seed{seed}", split.cadence)
        reference = item_losses(data.actuals, run_method(StreamingReplay(mqcnn), data, split), split.quantiles)
        for name, weights in [*((f"order{k}", r) for k, r in enumerate(runs)), ("average", soup)]:
            net = copy.deepcopy(start)
            net.load_state_dict(weights)
            path = save_checkpoint(args.out / f"{name}-seed{seed}", "mqtransformer", net, {"learned": True})
            forecasts = run_method(StreamingReplay(load_model("mqtransformer", path, split.cadence)), data, split)
            s = score(data.actuals, forecasts, split.quantiles)
            d = paired_bootstrap(item_losses(data.actuals, forecasts, split.quantiles), reference, scale)
            row = {"split": args.split, "seed": seed, "run": name, "wql": s["wql"], "volatility": s["volatility"],
                   "wql_by_bucket": s["wql_by_bucket"], "minus_mqcnn": d}
            args.out.mkdir(parents=True, exist_ok=True)
            with open(args.out / "results.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{args.split} seed {seed} {name}: wQL {s['wql']:.4f} volatility {s['volatility']:.4f} "
                  f"- mqcnn {d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]", flush=True)


if __name__ == "__main__":
    main()
