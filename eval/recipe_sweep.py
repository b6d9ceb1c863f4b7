"""MQTransformer training recipes on a development split, one variant at a time.

Each variant trains the MQTransformer stage from the split's MQ-CNN of the same seed (trained
here first with the default recipe, once per seed), replays it through the backtest as the
worker drives it (``mqstream evaluate``'s path) and scores it against that MQ-CNN: wQL,
volatility, and the paired 95% interval of the difference over products. The MQ-CNN variants
are controls (does the MQ-CNN gain from the same extra work?). Sequential and 2 torch threads:
made for this project's 2-core machine (a variant is 1-8 minutes there).

  python eval/recipe_sweep.py --split dev --seeds 0,1 --only default,no-feedback-attention --out var/sweep

The splits are ``mqstream evaluate``'s daily ``dev`` and ``peak`` and its weekly split of the
shipped data (``week``). Results: OUT/results.jsonl, one JSON line per variant and seed, and a
line printed each; with ``default`` among the variants, OUT/comparisons.json holds each other
variant against it over the seeds, as ``mqstream evaluate`` compares methods; so does each of
``--baselines`` (``mqstream evaluate``'s, fit once) against every variant. ``order1`` and
``order2`` are the default trained in other orders of its series (``TrainSettings.order``);
``orders-averaged`` is one model, the mean of the weights of those and the default.
eval/mqtransformer-training.md and eval/mqtransformer-memory.md hold runs.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mqstream.models.backtest import BacktestSplit, StreamingReplay, prepare, run_method
from mqstream.models.dataset import demand_series
from mqstream.models.evaluate import BASELINES, METHODS, SPLITS, MethodSource, compare, derived_split
from mqstream.models.history import load_history
from mqstream.models.registry import load_model
from mqstream.models.scores import item_losses, paired_bootstrap, score
from mqstream.models.training import (TrainSettings, checkpoint_record, holds_config, load_checkpoint,
                                      model_config_of, recipe_of, save_checkpoint, train)
from mqstream.periods import DAILY, Cadence

WEEKS = Cadence("week", 0)  # ``mqstream evaluate --period week``'s default week
SPLIT_NAMES = (*sorted(SPLITS), "week")

# name -> model, the MQ-CNN variant it starts from ("warm"), TrainSettings and
# MQTransformerConfig overrides; empty: the defaults
VARIANTS: dict[str, dict] = {
    "mqcnn": {"model": "mqcnn"},  # the reference every variant is compared with
    "mqcnn-epochs5": {"model": "mqcnn", "settings": {"epochs": 5}},  # its recipe before 10 epochs
    "default": {},
    "epochs2x24-on-epochs5": {"warm": "mqcnn-epochs5", "settings": {"epochs": 2, "origins_per_item": 24}},  # before
    "on-epochs5": {"warm": "mqcnn-epochs5"},
    "smooth0-on-epochs5": {"warm": "mqcnn-epochs5", "settings": {"epochs": 2, "origins_per_item": 24,
                                                                 "smoothness": 0.0}},
    "no-encoder-attention": {"config": {"encoder_attention": False}},
    "no-feedback-attention": {"config": {"feedback_attention": False}},
    "memory8": {"config": {"memory_dim": 8}},  # the stored encoder states' width: state bytes (days: the default)
    "memory16": {"config": {"memory_dim": 16}},  # (weeks: the default)
    "smooth005": {"settings": {"smoothness": 0.05}},  # a quarter of the revision penalty: a ramp moves faster
    "feedback-1-7": {"config": {"feedback_horizons": (1, 7)}},  # no errors of forecasts made 2-4 weeks before
    "order1": {"settings": {"order": 1}},  # the default in other data orders: same warm start, same init
    "order2": {"settings": {"order": 2}},
    "orders-averaged": {"average_of": ("default", "order1", "order2")},  # one model: the mean of their weights
}


def backtest_split(name: str, history) -> BacktestSplit:
    """``mqstream evaluate``'s daily split of that name, or ("week") the weekly split it derives
    from the shipped data (eval/shipped-week.md)."""
    cadence = WEEKS if name == "week" else DAILY
    dates = derived_split(history.first_day, history.last_day, cadence.default_horizons, cadence=cadence) \
        if name == "week" else SPLITS[name]
    return BacktestSplit.from_dates(*dates, cadence, horizons=cadence.default_horizons, products=history.products)


def trained(name: str, seed: int, split: BacktestSplit, out: Path, history) -> Path:
    """The variant's checkpoint under OUT, trained unless one of today's recipe and config is
    there ("mqcnn" and "default" follow the defaults, which may have changed since)."""
    path = out / f"{name}-seed{seed}"
    v = VARIANTS[name]
    if "average_of" in v:
        return averaged([trained(m, seed, split, out, history) for m in v["average_of"]], path)
    model = v.get("model", "mqtransformer")
    recipe = asdict(recipe_of(model, TrainSettings(**v.get("settings", {}))))
    config = model_config_of(model, split.cadence, split.horizons, v.get("config"), history.views is not None)
    if (path / "config.json").is_file() and checkpoint_record(path).get("recipe") == recipe \
            and holds_config(path, config):
        return path
    warm = trained(v.get("warm", "mqcnn"), seed, split, out, history) if model == "mqtransformer" else None
    settings = TrainSettings(seed=seed, warm_start=warm, keep_warm_start=True, **v.get("settings", {}))
    train(model, split.cadence.last_iso(split.cutoff), path, settings, model_config=v.get("config"), data=history,
          progress=False, cadence=split.cadence, horizons=split.horizons)
    return path


def averaged(members: list[Path], path: Path) -> Path:
    """A checkpoint at ``path`` whose weights are the uniform mean of the members' (runs of one
    model from one starting point: a "model soup")."""
    nets = [load_checkpoint(m)[1] for m in members]
    states = [net.state_dict() for net in nets]
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}
    nets[0].load_state_dict(mean)
    learned = all(checkpoint_record(m).get("learned", True) for m in members)
    return save_checkpoint(path, "mqtransformer", nets[0], {"average_of": [str(m) for m in members],
                                                            "learned": learned})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=SPLIT_NAMES, default="dev")
    p.add_argument("--seeds", default="0")
    p.add_argument("--only", default=",".join(VARIANTS), help=f"comma-separated, from: {','.join(VARIANTS)}")
    p.add_argument("--baselines", default="", help=f"comma-separated, from: {','.join(BASELINES)}")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    unknown = set(args.only.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    baselines = [b for b in args.baselines.split(",") if b]
    if set(baselines) - set(BASELINES):
        p.error(f"unknown baselines {sorted(set(baselines) - set(BASELINES))}; known: {', '.join(BASELINES)}")
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    history = load_history()
    split = backtest_split(args.split, history)
    data = prepare(demand_series(history.sales, cadence=split.cadence), split)
    scale = np.abs(data.actuals).sum(axis=(1, 2), dtype=np.float64)
    runs: dict[str, list[tuple[dict, np.ndarray]]] = {}  # variant -> (row, item losses) per seed
    fixed = {name: baseline_run(name, MethodSource(split, args.out, history), data) for name in baselines}
    for seed in (int(s) for s in args.seeds.split(",")):
        reference = None
        for name in ["mqcnn"] + [n for n in args.only.split(",") if n != "mqcnn"]:
            began = time.monotonic()
            path = trained(name, seed, split, args.out, history)
            model = load_model(VARIANTS[name].get("model", "mqtransformer"), path, split.cadence)
            forecasts = run_method(StreamingReplay(model), data, split)
            losses = item_losses(data.actuals, forecasts, split.quantiles)
            reference = losses if reference is None else reference
            s = score(data.actuals, forecasts, split.quantiles)
            record = checkpoint_record(path)
            row = {"split": args.split, "variant": name, "seed": seed, "wql": s["wql"], "volatility": s["volatility"],
                   "coverage_80": s["coverage_80"], "wql_by_bucket": s["wql_by_bucket"],
                   "minus_mqcnn": paired_bootstrap(losses, reference, scale), "val_wql": record.get("val_wql"),
                   "attention_use": record.get("attention_use"), "version": model.version,
                   "seconds": round(time.monotonic() - began, 1)}
            with open(args.out / "results.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            runs.setdefault(name, []).append((row, losses))
            d = row["minus_mqcnn"]
            print(f"{args.split} {name} seed {seed}: wQL {s['wql']:.4f} volatility {s['volatility']:.4f} "
                  f"- mqcnn {d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] "
                  f"({row['seconds']:.0f} s)", flush=True)
    results = {name: {"runs": [row for row, _ in seeds]} for name, seeds in runs.items()}
    results |= {name: row for name, (row, _) in fixed.items()}  # one run, paired with every seed
    losses = {name: [loss for _, loss in seeds] for name, seeds in runs.items()}
    losses |= {name: [loss] for name, (_, loss) in fixed.items()}
    pairs = [(name, "default") for name in runs if name != "default" and "default" in runs]
    pairs += [(name, baseline) for baseline in baselines for name in runs]
    comparisons = [printed(compare(a, b, results, losses, scale), results) for a, b in pairs]
    if comparisons:
        (args.out / "comparisons.json").write_text(json.dumps(comparisons, indent=1))


def baseline_run(name: str, source: MethodSource, data) -> tuple[dict, np.ndarray]:
    """One of ``mqstream evaluate``'s baselines on the split, fit once (our seeds do not move
    it): its row and item losses."""
    split = source.split
    forecasts = run_method(METHODS[name](source, 0), data, split)
    s = score(data.actuals, forecasts, split.quantiles)
    print(f"{name}: wQL {s['wql']:.4f} volatility {s['volatility']:.4f}", flush=True)
    return {"variant": name, "wql": s["wql"], "volatility": s["volatility"]}, \
        item_losses(data.actuals, forecasts, split.quantiles)


def printed(c: dict, results: dict[str, dict]) -> dict:
    """A comparison (``mqstream evaluate``'s ``compare``) with the seeds and both mean wQLs, printed."""
    runs = {n: results[n].get("runs", [results[n]]) for n in (c["a"], c["b"])}  # a baseline: its one row
    c = {**c, "seeds": [row.get("seed") for row in runs[c["a"]]],
         "wql": [float(np.mean([row["wql"] for row in runs[n]])) for n in (c["a"], c["b"])]}
    print(f"{c['a']} - {c['b']} over seeds {c['seeds']}: {c['difference']:+.4f} [{c['ci95'][0]:+.4f}, "
          f"{c['ci95'][1]:+.4f}], per seed {', '.join(f'{d:+.4f}' for d in c['per_seed'])}: {c['verdict']}", flush=True)
    return c


if __name__ == "__main__":
    main()
