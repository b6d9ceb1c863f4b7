"""Backtest forecasting methods on a named split, or on a retailer's own data, and write the scores.

``mqstream evaluate --split dev|peak`` runs every named method through ``models.backtest``
on the same products, origins, horizons and quantiles (docs/EVALUATION.md). The neural
methods are trained up to the split's cutoff once per seed (``--seeds``, default 0,1,2;
checkpoints are reused when already trained so) and scored per seed; MQTransformer is
compared with MQ-CNN and with the best baseline by the wQL difference and a 95% paired
bootstrap interval over products. Sales, prices and calendar only, unless ``--views`` (a
file's real page views) or ``--simulated-views``; every output says which. With ``--data``
(the format: docs/DATA.md) the split is derived from the data's dates (``derived_split``;
docs/EVALUATION.md) unless ``--cutoff/--start/--end`` say otherwise. For ``--out eval/dev`` it writes:

- ``eval/dev.json``: per method the seed means of wQL (overall, per horizon bucket, per
  quantile), 80% coverage and volatility, their spread and per-seed runs, runtime and
  calibration diagnostics (``models.scores.calibration``), the comparisons, the split and
  the command;
- ``eval/dev.md``: the same as Markdown tables, with the command that regenerates it;
- ``eval/dev-fan-<item>.png``: fan charts (history, actuals, P10–P90 band, P50) of a few
  items from the middle origin, one panel per method (the first seed of a neural method).

Public API: ``SPLITS``, ``METHODS`` (name -> factory(source, seed)), ``configure_parser(p)``,
``run(args) -> int``. An unknown method or a bad seed list stops the run before any work.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from mqstream.periods import DAILY, Cadence
from mqstream.models.backtest import (BacktestData, BacktestSplit, ForecastMethod, StreamingReplay, prepare,
                                      run_method)
from mqstream.models.dataset import demand_series, views_series
from mqstream.models.history import (SHIPPED_DATA_ID, History, add_history_arguments, add_period_arguments,
                                     cadence_from_args, history_flags, history_from_args)
from mqstream.models.scores import HORIZON_BUCKETS, calibration, item_losses, paired_bootstrap, score
from mqstream.models.pageviews import views_label

FAN_ITEMS = 3  # items charted: the largest, one at the 90th and one at the 50th volume percentile
FAN_HISTORY_DAYS = 56  # days of history left of the origin in a fan chart (whole periods)


SPLITS = {  # name -> (cutoff, first origin, last origin); docs/EVALUATION.md
    "dev": ("2011-05-31", "2011-06-01", "2011-08-03"),  # summer: the split of EVALUATION.md
    "peak": ("2010-10-31", "2010-11-01", "2010-11-25"),  # targets run into the Christmas ramp of 2010
}
DERIVED_ORIGINS = 28  # origins of a split derived from a retailer's data: its last four weeks (of days; 4 weeks)
ABLATIONS = {  # MQTransformer without one of its attentions, trained from the same warm start
    "mqt-no-encoder-attention": {"encoder_attention": False},
    "mqt-no-feedback-attention": {"feedback_attention": False},
}
SEEDED = ("mqcnn", "mqtransformer", "nhits", *ABLATIONS)  # trained per seed; the rest are deterministic
BOOTSTRAP_DRAWS = 2000


class MethodUnavailable(Exception):
    """A requested method cannot be built; the message names it and says why."""


@dataclass(frozen=True)
class MethodSource:
    split: BacktestSplit
    checkpoints: Path  # neural method ``name`` at seed k loads or trains ``checkpoints / f"{name}-seed{k}"``
    history: History  # what the neural methods train on
    simulated_views: bool = False
    train_items: int | None = None  # train on a random subset (quick checks, tests)


MethodFactory = Callable[[MethodSource, int], ForecastMethod]


def checkpoint_dir(source: MethodSource, name: str, seed: int) -> Path:
    return source.checkpoints / f"{name}-seed{seed}"


def _trained(name: str) -> MethodFactory:
    """A neural model trained up to the split's cutoff with ``seed`` (reused when its
    checkpoint there was trained so), replayed as the worker drives it."""

    def build(source: MethodSource, seed: int) -> ForecastMethod:
        from mqstream.models.registry import load_model

        path = _ensure_trained(source, name, seed)
        model = load_model(_model_of(name), path, source.split.cadence)
        split = source.split
        if model.horizons != split.horizons or tuple(model.quantiles) != tuple(split.quantiles):
            raise MethodUnavailable(f"{name}: forecasts {model.horizons} horizons at {model.quantiles}; "
                                    f"the split needs {split.horizons} at {split.quantiles}")
        return StreamingReplay(model)

    return build


def _ensure_trained(source: MethodSource, name: str, seed: int) -> Path:
    from mqstream.models.training import TrainSettings, checkpoint_record, holds_config, model_config_of, recipe_of, train

    path = checkpoint_dir(source, name, seed)
    split = source.split
    model = _model_of(name)
    wanted = {"cutoff": split.cadence.last_iso(split.cutoff), "seed": seed, "simulated_views": source.simulated_views,
              "max_items": source.train_items, "data": source.history.data_id, "period": split.cadence.period,
              "horizons": split.horizons, "recipe": asdict(recipe_of(model, TrainSettings()))}
    config = model_config_of(model, split.cadence, split.horizons, ABLATIONS.get(name),
                             source.simulated_views or source.history.views is not None)
    if (path / "config.json").is_file() and _record_matches(checkpoint_record(path), wanted) \
            and holds_config(path, config):
        return path
    warm = _ensure_trained(source, "mqcnn", seed) if model == "mqtransformer" else None
    print(f"training {name} seed {seed} up to {wanted['cutoff']} -> {path}", flush=True)
    # keep_warm_start: the backtest reports a model that did not learn (marked), it does not hide it
    settings = TrainSettings(seed=seed, simulated_views=source.simulated_views, max_items=source.train_items,
                             warm_start=warm, keep_warm_start=True)
    train(model, wanted["cutoff"], path, settings, model_config=ABLATIONS.get(name), data=source.history,
          cadence=split.cadence, horizons=split.horizons)
    return path


def _model_of(method: str) -> str:
    """The model a neural method trains: an ablation is an MQTransformer."""
    return "mqtransformer" if method in ABLATIONS else method


def _record_matches(record: dict, wanted: dict) -> bool:
    s = record.get("settings", {})
    # a checkpoint from before --data existed was trained on the shipped data
    data = record.get("data", {}).get("id", SHIPPED_DATA_ID)
    # a checkpoint of an earlier recipe is trained again, not scored as today's model
    return (record.get("cutoff") == wanted["cutoff"] and s.get("seed") == wanted["seed"]
            and record.get("recipe") == wanted["recipe"]
            and s.get("simulated_views", False) == wanted["simulated_views"]
            and s.get("max_items") == wanted["max_items"] and data == wanted["data"]
            and record.get("period", "day") == wanted["period"]
            and record.get("horizons", wanted["horizons"]) == wanted["horizons"])


def _baselines():
    """``mqstream.models.baselines``, imported on first use: statsforecast, LightGBM and quantile-forest
    take seconds to load, and the CLI imports this module for every command."""
    import mqstream.models.baselines

    return mqstream.models.baselines


def _nhits(source: MethodSource, seed: int) -> ForecastMethod:
    try:
        from mqstream.models.peers import NHITSPeer

        return NHITSPeer(source.split.cutoff, source.split.horizons, source.split.quantiles, seed=seed)
    except ImportError as exc:
        raise MethodUnavailable(f"nhits: {exc}") from exc


def _tree(cls, source: MethodSource) -> ForecastMethod:
    split = source.split
    return cls(split.cutoff, replace(cls.DEFAULT_CONFIG, horizons=split.horizons, quantiles=split.quantiles))


def _autoets(source: MethodSource) -> ForecastMethod:
    """AutoETS with a weekly season for days; with weeks none (ETS takes seasons of up to 24
    periods, and a year is 52), refit every four weeks either way."""
    split, baselines = source.split, _baselines()
    season = 7 if split.cadence.days == 1 else 1
    return baselines.AutoETSBaseline(baselines.AutoETSConfig(split.horizons, split.quantiles, season_length=season,
                                                             refit_every=split.cadence.count(28)))


def _seasonal_naive(source: MethodSource, seed: int) -> ForecastMethod:
    from mqstream.models.registry import load_model

    return StreamingReplay(load_model("seasonal-naive", cadence=source.split.cadence))


METHODS: dict[str, MethodFactory] = {
    "zero": lambda s, seed: _baselines().ZeroForecast(s.split.horizons, s.split.quantiles),
    "seasonal-naive": _seasonal_naive,
    "qrf": lambda s, seed: _tree(_baselines().QuantileForestBaseline, s),
    "lightgbm": lambda s, seed: _tree(_baselines().LightGBMBaseline, s),
    "autoets": lambda s, seed: _autoets(s),
    "nhits": _nhits,  # Nixtla's N-HiTS, the maintained neural peer (the `peers` extra)
    "mqcnn": _trained("mqcnn"),
    "mqtransformer": _trained("mqtransformer"),
    **{name: _trained(name) for name in ABLATIONS},
}
BASELINES = ("zero", "seasonal-naive", "qrf", "lightgbm", "autoets")
DEFAULT_METHODS = tuple(n for n in METHODS if n not in ABLATIONS)


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--split", choices=sorted(SPLITS), default=None,
                   help="named split of the shipped data (default dev): dev = cutoff 2011-05-31, origins "
                        "2011-06-01..08-03; peak = cutoff 2010-10-31, origins 2010-11-01..11-25 (the Christmas "
                        f"ramp). With --data: the last {DERIVED_ORIGINS} origins whose horizons the data covers. "
                        "--cutoff/--start/--end override")
    p.add_argument("--start", help="first origin, YYYY-MM-DD")
    p.add_argument("--end", help="last origin; its 28th horizon must be in the data")
    p.add_argument("--cutoff", help="last day the learned methods train on")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from: {','.join(DEFAULT_METHODS)} (the default), {', '.join(ABLATIONS)}")
    p.add_argument("--seeds", default="0,1,2",
                   help="seeds of the neural methods (%(default)s): each is trained and scored per seed")
    p.add_argument("--checkpoints", default=None,
                   help="where the neural methods' checkpoints are trained to and reused from, one "
                        "directory per method and seed (default checkpoints/eval-<split>; with --data "
                        "the sales file's name instead of the split's)")
    p.add_argument("--simulated-views", action="store_true",
                   help="feed every method simulated page views (models/pageviews.py); every output says so. "
                        "Default: sales, prices and calendar only")
    p.add_argument("--train-items", type=int, default=None,
                   help="train the neural methods on this many random items (quick checks; not for a table)")
    p.add_argument("--out", default=None,
                   help="output path without extension: writes OUT.json, OUT.md and OUT-fan-*.png "
                        "(default eval/<split>, or eval/<sales file's name> with --data)")
    add_history_arguments(p)
    add_period_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        cadence = cadence_from_args(args)
        args.methods = args.methods or ",".join(DEFAULT_METHODS)
        names = _method_names(args.methods)
        seeds = _seeds(args.seeds)
        horizons = args.horizons or cadence.default_horizons
        if args.simulated_views and cadence.days != 1:
            raise MethodUnavailable("--simulated-views: simulated page views are daily")
        history = history_from_args(args)
        split_name, dates = _split_dates(args, history, cadence, horizons)
        cutoff, start, end = (given or default for given, default in zip((args.cutoff, args.start, args.end), dates))
        split = BacktestSplit.from_dates(cutoff, start, end, cadence, horizons=horizons, products=history.products)
        series = demand_series(history.sales, cadence=cadence)
        real = None if history.views is None else \
            views_series(history.views, series.items, series.start_day, int(series.days[-1]), cadence)
        data = prepare(series, split, args.simulated_views, real)
    except (MethodUnavailable, ValueError) as exc:  # HistoryError is a ValueError
        print(f"mqstream evaluate: {exc}", file=sys.stderr)
        return 2
    if cadence.days != 1:
        split_name += f"-{cadence.period}"
    checkpoints = Path(args.checkpoints or f"checkpoints/eval-{split_name}")
    source = MethodSource(split, checkpoints, history, args.simulated_views, args.train_items)
    views = views_label(args.simulated_views, history.views_path)
    iso = cadence.iso
    print(f"{len(data.series.items)} products, {len(data.origins)} origins ({cadence.name(2)}) "
          f"{iso(split.first_origin)}..{iso(split.last_origin)}, cutoff {cadence.last_iso(split.cutoff)}, "
          f"page views: {views}", flush=True)
    fan_rows = _fan_rows(data)
    results, losses, fans = {}, {}, {}
    for name in names:
        runs = []
        for seed in (seeds if name in SEEDED else [None]):
            began = time.perf_counter()
            try:
                method = METHODS[name](source, seed)
            except MethodUnavailable as exc:
                print(f"mqstream evaluate: {exc}", file=sys.stderr)
                return 2
            forecasts = run_method(method, data, split)
            r = score(data.actuals, forecasts, split.quantiles)
            r.update(seed=seed, runtime_s=round(time.perf_counter() - began, 1),
                     calibration=calibration(data.actuals, forecasts, split.quantiles))
            if isinstance(method, StreamingReplay):
                r["version"] = method.model.version
            losses.setdefault(name, []).append(item_losses(data.actuals, forecasts, split.quantiles))
            runs.append(r)
            fans.setdefault(name, forecasts[fan_rows])  # the first seed's; the rest is freed here
            print(f"{name}{'' if seed is None else f' seed {seed}'}: wQL {r['wql']:.4f} "
                  f"in {r['runtime_s']:.0f} s", flush=True)
        results[name] = _over_seeds(runs)
    comparisons = _comparisons(results, losses, data)
    out = Path(args.out or f"eval/{split_name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = _report(results, comparisons, split, data, _command(args), split_name, views, history)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    for path in _fan_charts(out, data, fan_rows, fans, split):
        print(f"wrote {path}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def _split_dates(args: argparse.Namespace, history: History, cadence: Cadence,
                 horizons: int) -> tuple[str, tuple[str, str, str]]:
    """The split's name and its default (cutoff, first origin, last origin): a named split of
    the shipped data, or the one derived from the dates of ``--data``."""
    if args.data is None and cadence.days == 1:
        return args.split or "dev", SPLITS[args.split or "dev"]
    if args.split is not None:
        raise ValueError(f"--split {args.split} is a daily split of the shipped data; with --data or weeks the split "
                         "is derived from the data's dates, or given with --cutoff/--start/--end")
    name = "shipped" if args.data is None else history.name
    return name, derived_split(history.first_day, history.last_day, horizons, cadence=cadence)


def derived_split(first_day: int, last_day: int, horizons: int = 28, origins: int = DERIVED_ORIGINS,
                  cadence: Cadence = DAILY) -> tuple[str, str, str]:
    """(cutoff, first origin, last origin) of data covering days first_day..last_day: the last
    ``origins`` days' worth of periods (at least one horizon's: 13 weeks) whose every horizon
    is in the data (whole periods), trained up to the period before them
    (docs/EVALUATION.md, "A retailer's own data")."""
    n = max(cadence.count(origins), horizons)
    last_origin = int(cadence.of_day(last_day + 1)) - 1 - horizons
    first_origin = last_origin - n + 1
    if first_origin - 1 <= cadence.of_day(first_day):
        raise ValueError(f"the data covers {cadence.iso(cadence.of_day(first_day))}..{cadence.last_iso(cadence.of_day(last_day))}: "
                         f"too short for {n} origins with {horizons} horizons ({cadence.name(2)}) and training before them")
    return cadence.last_iso(first_origin - 1), cadence.iso(first_origin), cadence.iso(last_origin)


def _seeds(spec: str) -> list[int]:
    try:
        seeds = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, not {spec!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must name at least one seed, each once; got {spec!r}")
    return seeds


def _over_seeds(runs: list[dict]) -> dict:
    """One method's scores: the mean over its runs (one per seed) of every score, the runs
    themselves, the spread of wQL and volatility, and the first run's calibration
    diagnostics (shares of cells, shown for one seed)."""
    mean = lambda key: float(np.mean([r[key] for r in runs]))
    out = {
        "wql": mean("wql"),
        "wql_by_bucket": {b: float(np.mean([r["wql_by_bucket"][b] for r in runs])) for b in runs[0]["wql_by_bucket"]},
        "wql_per_quantile": {q: float(np.mean([r["wql_per_quantile"][q] for r in runs]))
                             for q in runs[0]["wql_per_quantile"]},
        "coverage_80": mean("coverage_80"),
        "volatility": mean("volatility"),
        "runtime_s": round(sum(r["runtime_s"] for r in runs), 1),
        "calibration": runs[0]["calibration"],
        "seeds": [r["seed"] for r in runs if r["seed"] is not None],
    }
    if len(runs) > 1:
        out["spread"] = {k: {"min": float(min(r[k] for r in runs)), "max": float(max(r[k] for r in runs)),
                             "std": float(np.std([r[k] for r in runs], ddof=1))} for k in ("wql", "volatility")}
    if runs[0]["seed"] is not None:
        out["runs"] = [{k: r.get(k) for k in ("seed", "wql", "volatility", "coverage_80", "runtime_s", "version")}
                       for r in runs]
    return out


def _comparisons(results: dict, losses: dict[str, list[np.ndarray]], data: BacktestData) -> list[dict]:
    """MQTransformer against MQ-CNN, the best baseline and each ablation run: the wQL
    difference of the seed-mean forecasts' losses with a 95% paired bootstrap interval over
    products, the difference seed by seed, and the verdict (``verdict``)."""
    if "mqtransformer" not in losses:
        return []
    scale = np.abs(data.actuals).sum(axis=(1, 2), dtype=np.float64)  # (N,) each product's Σ|y|
    baselines = [n for n in results if n in BASELINES]
    others = (["mqcnn"] if "mqcnn" in results else []) + \
             ([min(baselines, key=lambda n: results[n]["wql"])] if baselines else []) + \
             [n for n in ABLATIONS if n in results]
    return [compare("mqtransformer", other, results, losses, scale) for other in others]


def compare(a: str, b: str, results: dict[str, dict], losses: dict[str, list[np.ndarray]],
            scale: np.ndarray) -> dict:
    """Method ``a`` against ``b``: the wQL difference of their seed-mean item losses with a 95%
    paired bootstrap interval over products (``scale``: each product's Σ|y|), the difference
    seed by seed (``results`` as ``_over_seeds`` makes them) and the verdict."""
    mean_a, mean_b = (np.mean(losses[name], axis=0) for name in (a, b))
    c = {"a": a, "b": b, **paired_bootstrap(mean_a, mean_b, scale, BOOTSTRAP_DRAWS),
         "per_seed": per_seed_differences(results[a], results[b])}
    return {**c, "verdict": verdict(c)}


def per_seed_differences(a: dict, b: dict) -> list[float]:
    """wQL(a) − wQL(b) seed by seed (a deterministic method's one score pairs with every seed)."""
    wql_a = [r["wql"] for r in a.get("runs", [])] or [a["wql"]]
    wql_b = [r["wql"] for r in b.get("runs", [])] or [b["wql"]]
    if len(wql_b) == 1:
        wql_b = wql_b * len(wql_a)
    return [float(x - y) for x, y in zip(wql_a, wql_b)]


def verdict(comparison: dict) -> str:
    """"better" or "worse" only when the products' interval excludes 0 *and* every seed
    agrees on the sign: a difference that the choice of seed can reverse is a tie."""
    lo, hi = comparison["ci95"]
    seeds = comparison["per_seed"]
    if hi < 0 and all(d < 0 for d in seeds):
        return "better"
    if lo > 0 and all(d > 0 for d in seeds):
        return "worse"
    return "tie"


def _method_names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise MethodUnavailable(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                                f"choose from {', '.join(METHODS)}")
    return names


def _command(args: argparse.Namespace) -> str:
    given = [f"--{k} {v}" for k, v in (("cutoff", args.cutoff), ("start", args.start), ("end", args.end),
                                       ("checkpoints", args.checkpoints), ("train-items", args.train_items),
                                       ("out", args.out)) if v is not None]
    views = ["--simulated-views"] if args.simulated_views else []
    split = [f"--split {args.split or 'dev'}"] if args.data is None and args.period == "day" else []
    return " ".join(["mqstream evaluate", *split, *history_flags(args), *given, f"--methods {args.methods}",
                     f"--seeds {args.seeds}", *views])


def _report(results: dict, comparisons: list[dict], split: BacktestSplit, data: BacktestData, command: str,
            name: str, views: str, history: History) -> dict:
    return {
        "command": command,
        "split": {"name": name, "period": split.cadence.period, "cutoff": split.cadence.last_iso(split.cutoff),
                  "first_origin": split.cadence.iso(split.first_origin),
                  "last_origin": split.cadence.iso(split.last_origin), "horizons": split.horizons,
                  "quantiles": list(split.quantiles), "products": int(len(data.series.items)),
                  "origins": int(len(data.origins)), "page_views": views, "data": history.describe()},
        "methods": results,
        "comparisons": comparisons,
    }


def _bucket_span(bucket: str, horizons: int) -> str:
    lo, hi = HORIZON_BUCKETS[bucket]
    return f"{lo}–{min(hi, horizons)}"


def _markdown(report: dict) -> str:
    split, methods = report["split"], report["methods"]
    buckets = [b for b in HORIZON_BUCKETS if b in next(iter(methods.values()))["wql_by_bucket"]]
    views = ("Inputs: sales, prices and calendar only (no page views)." if split["page_views"] == "none" else
             f"Inputs: sales, prices, calendar and page views {split['page_views']}."
             if split["page_views"].startswith("real") else
             "Page views: **SIMULATED** (models/pageviews.py): not a headline score.")
    lines = [
        f"# Backtest scores: split `{split['name']}`", "",
        f"{split['products']} products, origins {split['first_origin']}..{split['last_origin']} "
        f"({split['origins']} {split.get('period', 'day')}s), horizons 1..{split['horizons']}, training data up to "
        f"{split['cutoff']}; scored as in docs/EVALUATION.md. {views}", "",
        "Regenerate with:", "", "```", report["command"], "```", "",
        "Neural methods: the mean over their seeds (± the standard deviation over seeds, min–max in "
        "the JSON); every other method is deterministic.", "",
        "| method | seeds | wQL | " + " | ".join(f"wQL h{_bucket_span(b, split['horizons'])}" for b in buckets)
        + " | coverage 80% | volatility | runtime (s) |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in buckets) + " | ---: | ---: | ---: |",
    ]
    for name, r in methods.items():
        by_bucket = " | ".join(f"{r['wql_by_bucket'][b]:.4f}" for b in buckets)
        spread = r.get("spread")
        wql = f"{r['wql']:.4f}" + (f" ± {spread['wql']['std']:.4f}" if spread else "")
        vol = f"{r['volatility']:.4f}" + (f" ± {spread['volatility']['std']:.4f}" if spread else "")
        lines.append(f"| {name} | {len(r['seeds']) or '–'} | {wql} | {by_bucket} | {r['coverage_80']:.3f} | "
                     f"{vol} | {r['runtime_s']:.0f} |")
    lines += _comparison_markdown(report["comparisons"])
    lines += _runs_markdown(methods)
    levels = [f"{q:.1f}" for q in split["quantiles"]]
    lines += ["", "wQL per quantile level:", "",
              "| method | " + " | ".join(levels) + " |", "| --- |" + " ---: |" * len(levels)]
    for name, r in methods.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['wql_per_quantile'][q]:.4f}" for q in levels) + " |")
    lines += ["", "Volatility: mean |change| of the P50 forecast of one product and target day between "
              "consecutive origins, pooled over all such pairs, divided by the mean actual of the same "
              "pairs (see `models.scores.volatility`). Runtime: wall seconds on the machine that ran it, "
              "including fitting (and training, where a checkpoint was not there yet).", ""]
    lines += _calibration_markdown(methods)
    return "\n".join(lines)


def _comparison_markdown(comparisons: list[dict]) -> list[str]:
    if not comparisons:
        return []
    lines = ["", "Paired differences (seed-mean forecasts, products resampled with replacement, "
                 f"{comparisons[0]['draws']} draws; below 0: the first method is better). A verdict "
                 "other than tie needs an interval that excludes 0 and every seed's difference of the "
                 "same sign:", "",
             "| comparison | wQL difference | 95% interval | per seed | verdict |",
             "| --- | ---: | ---: | ---: | --- |"]
    for c in comparisons:
        lo, hi = c["ci95"]
        seeds = ", ".join(f"{d:+.4f}" for d in c["per_seed"])
        lines.append(f"| {c['a']} − {c['b']} | {c['difference']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {seeds} | "
                     f"{c['verdict']} |")
    return lines


def _runs_markdown(methods: dict) -> list[str]:
    rows = [(name, run) for name, r in methods.items() for run in r.get("runs", [])]
    if not rows:
        return []
    lines = ["", "Per seed:", "", "| method | seed | wQL | coverage 80% | volatility | version |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, run in rows:
        version = f"`{run['version']}`" if run["version"] else "–"
        lines.append(f"| {name} | {run['seed']} | {run['wql']:.4f} | {run['coverage_80']:.3f} | "
                     f"{run['volatility']:.4f} | {version} |")
    return lines


def _calibration_markdown(methods: dict) -> list[str]:
    """The calibration table: zero share, coverage split by zero and sale days, P10 and P90 brackets."""

    def share(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    def bracket(c: dict, level: str) -> str:
        return f"[{c['below'][level]:.3f}, {c['at_or_below'][level]:.3f}]"

    lines = ["Calibration (a neural method: its first seed):", "",
             "| method | zero share | coverage 80%, y = 0 | coverage 80%, y > 0 | P10 [P(y<f), P(y≤f)] "
             "| P90 [P(y<f), P(y≤f)] |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in methods.items():
        c = r["calibration"]
        lines.append(f"| {name} | {c['zero_share']:.3f} | {share(c['coverage_80_zero_days'])} | "
                     f"{share(c['coverage_80_sale_days'])} | {bracket(c, '0.1')} | {bracket(c, '0.9')} |")
    lines += ["", "A calibrated quantile q lies inside its bracket [P(y<f_q), P(y≤f_q)]; the two ends differ "
              "by the ties y = f_q, and a P10 of 0 ties with every zero day. Coverage 80% is "
              "P(y≤f_0.9) − P(y<f_0.1), so with P90 calibrated (P(y≤f_0.9) ≥ 0.9) it drops below 0.9 only "
              "by the share of actuals under P10 (see `models.scores.calibration`; per level in the JSON).",
              ""]
    return lines


def _fan_rows(data: BacktestData) -> np.ndarray:
    """Rows charted: the largest item by actual volume, and those at the 90th and 50th percentile."""
    by_volume = np.argsort(-data.actuals[:, :, 0].sum(axis=1), kind="stable")
    ranks = [0, len(by_volume) // 10, len(by_volume) // 2][:FAN_ITEMS]
    return by_volume[ranks]


def _fan_charts(out: Path, data: BacktestData, rows: np.ndarray, fans: dict[str, np.ndarray],
                split: BacktestSplit) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    k = len(data.origins) // 2
    origin = int(data.origins[k])
    lo, mid, hi = (list(split.quantiles).index(q) for q in (0.1, 0.5, 0.9))
    cadence = split.cadence
    history = np.arange(origin - cadence.count(FAN_HISTORY_DAYS) + 1, origin + 1)
    future = origin + np.arange(1, split.horizons + 1)
    paths = []
    for j, row in enumerate(rows):
        fig, axes = plt.subplots(1, len(fans), figsize=(4 * len(fans), 3.2), sharey=True, squeeze=False)
        for ax, (name, f) in zip(axes[0], fans.items()):
            ax.plot(history - origin, data.series.units[row, data.series.column(history)], color="0.4", lw=1,
                    label="history")
            ax.plot(future - origin, data.actuals[row, k], "k.", ms=4, label="actual")
            ax.fill_between(future - origin, f[j, k, :, lo], f[j, k, :, hi], alpha=0.3, label="P10–P90")
            ax.plot(future - origin, f[j, k, :, mid], lw=1.5, label="P50")
            ax.axvline(0, color="0.7", lw=0.8)
            ax.set_title(name)
            ax.set_xlabel(f"{cadence.name(2)} from origin {cadence.iso(origin)}")
        axes[0, 0].set_ylabel(f"units/{cadence.period}, item {data.series.items[row]}")
        axes[0, 0].legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = Path(f"{out}-fan-{data.series.items[row]}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
