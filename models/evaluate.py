"""Backtest forecasting methods on the development split and write the scores.

``mqstream evaluate`` runs every named method through ``models.backtest`` on the same
products, origins, horizons and quantiles (../shared/EVALUATION.md) and writes, for
``--out eval/dev-split``:

- ``eval/dev-split.json``: per method wQL (overall, per horizon bucket, per quantile),
  80% coverage, volatility, runtime and calibration diagnostics
  (``models.metrics.calibration``), with the split and the command;
- ``eval/dev-split.md``: the same as Markdown tables, with the command that regenerates it;
- ``eval/dev-split-fan-<item>.png``: fan charts (history, actuals, P10–P90 band, P50) of a
  few items from the middle origin, one panel per method.

Public API: ``METHODS`` (name -> factory), ``configure_parser(p)``, ``run(args) -> int``.
A method that cannot be built (no checkpoint, no module) stops the run with an error that
names it: nothing is skipped silently.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.backtest import (BacktestData, BacktestSplit, ForecastMethod, StreamingReplay, iso_of,
                             prepare, run_method)
from models.dataset import daily_series, load_transactions
from models.metrics import HORIZON_BUCKETS, calibration, score

FAN_ITEMS = 3  # items charted: the largest, one at the 90th and one at the 50th volume percentile
FAN_HISTORY_DAYS = 56  # days of history left of the origin in a fan chart


class MethodUnavailable(Exception):
    """A requested method cannot be built; the message names it and says why."""


@dataclass(frozen=True)
class MethodSource:
    split: BacktestSplit
    checkpoints: Path  # a neural method ``name`` loads ``checkpoints / name``


MethodFactory = Callable[[MethodSource], ForecastMethod]


def _protocol_model(name: str, needs_checkpoint: bool) -> MethodFactory:
    """A ``QuantileForecaster`` from ``models.registry``, replayed as the worker drives it."""

    def build(source: MethodSource) -> ForecastMethod:
        try:
            from models.registry import load_model
        except ImportError as exc:
            raise MethodUnavailable(f"{name}: models.registry cannot be imported ({exc})") from exc
        checkpoint = source.checkpoints / name if needs_checkpoint else None
        if checkpoint is not None and not checkpoint.is_dir():
            raise MethodUnavailable(f"{name}: no checkpoint at {checkpoint} (train one with "
                                    f"`mqstream train --model {name} --out {checkpoint}`)")
        model = load_model(name, checkpoint)
        split = source.split
        if model.horizons != split.horizons or tuple(model.quantiles) != tuple(split.quantiles):
            raise MethodUnavailable(f"{name}: forecasts {model.horizons} horizons at {model.quantiles}; "
                                    f"the split needs {split.horizons} at {split.quantiles}")
        return StreamingReplay(model)

    return build


def _baselines():
    """``models.baselines``, imported on first use: statsforecast, LightGBM and quantile-forest
    take seconds to load, and the CLI imports this module for every command."""
    import models.baselines

    return models.baselines


METHODS: dict[str, MethodFactory] = {
    "zero": lambda s: _baselines().ZeroForecast(s.split.horizons, s.split.quantiles),
    "seasonal-naive": _protocol_model("seasonal-naive", needs_checkpoint=False),
    "qrf": lambda s: _baselines().QuantileForestBaseline(s.split.cutoff),
    "lightgbm": lambda s: _baselines().LightGBMBaseline(s.split.cutoff),
    "autoets": lambda s: _baselines().AutoETSBaseline(),
    "mqcnn": _protocol_model("mqcnn", needs_checkpoint=True),
    "mqtransformer": _protocol_model("mqtransformer", needs_checkpoint=True),
}


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--start", default="2011-06-01", help="first origin, YYYY-MM-DD (default %(default)s)")
    p.add_argument("--end", default="2011-08-03", help="last origin; its 28th horizon must be in the data (default %(default)s)")
    p.add_argument("--cutoff", default="2011-05-31", help="last day the learned methods train on (default %(default)s)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated, from: %(default)s (the default: all)")
    p.add_argument("--checkpoints", default="checkpoints",
                   help="directory with one checkpoint directory per neural method, named after it "
                        "(default %(default)s)")
    p.add_argument("--out", default="eval/dev-split",
                   help="output path without extension: writes OUT.json, OUT.md and OUT-fan-*.png "
                        "(default %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        names = _method_names(args.methods)
        split = BacktestSplit.from_dates(args.cutoff, args.start, args.end)
        source = MethodSource(split, Path(args.checkpoints))
        methods = {name: METHODS[name](source) for name in names}  # fail before hours of work
    except (MethodUnavailable, ValueError) as exc:
        print(f"mqstream evaluate: {exc}", file=sys.stderr)
        return 2
    data = prepare(daily_series(load_transactions()), split)
    print(f"{len(data.series.items)} products, {len(data.origins)} origins "
          f"{iso_of(split.first_origin)}..{iso_of(split.last_origin)}, cutoff {iso_of(split.cutoff)}")
    fan_rows = _fan_rows(data)
    results, fans = {}, {}
    for name, method in methods.items():
        began = time.perf_counter()
        forecasts = run_method(method, data, split)
        results[name] = score(data.actuals, forecasts, split.quantiles)
        results[name]["runtime_s"] = round(time.perf_counter() - began, 1)
        results[name]["calibration"] = calibration(data.actuals, forecasts, split.quantiles)
        fans[name] = forecasts[fan_rows]  # (F, O, H, Q): the rest is freed with this loop
        print(f"{name}: wQL {results[name]['wql']:.4f} in {results[name]['runtime_s']:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = _report(results, split, data, _command(args))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    for path in _fan_charts(out, data, fan_rows, fans, split):
        print(f"wrote {path}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def _method_names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise MethodUnavailable(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                                f"choose from {', '.join(METHODS)}")
    return names


def _command(args: argparse.Namespace) -> str:
    return (f"mqstream evaluate --start {args.start} --end {args.end} --cutoff {args.cutoff} "
            f"--methods {args.methods} --checkpoints {args.checkpoints} --out {args.out}")


def _report(results: dict, split: BacktestSplit, data: BacktestData, command: str) -> dict:
    return {
        "command": command,
        "split": {"cutoff": iso_of(split.cutoff), "first_origin": iso_of(split.first_origin),
                  "last_origin": iso_of(split.last_origin), "horizons": split.horizons,
                  "quantiles": list(split.quantiles), "products": int(len(data.series.items)),
                  "origins": int(len(data.origins))},
        "methods": results,
    }


def _markdown(report: dict) -> str:
    split, methods = report["split"], report["methods"]
    buckets = list(HORIZON_BUCKETS)
    lines = [
        "# Development split: backtest scores", "",
        f"{split['products']} products, origins {split['first_origin']}..{split['last_origin']} "
        f"({split['origins']} days), horizons 1..{split['horizons']}, training data up to "
        f"{split['cutoff']}; scored as in shared/EVALUATION.md. Page views used as inputs are "
        "**simulated** (models/pageviews.py).", "",
        "Regenerate with:", "", "```", report["command"], "```", "",
        "| method | wQL | wQL h1–7 | wQL h8–14 | wQL h15–28 | coverage 80% | volatility | runtime (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in methods.items():
        by_bucket = " | ".join(f"{r['wql_by_bucket'][b]:.4f}" for b in buckets)
        lines.append(f"| {name} | {r['wql']:.4f} | {by_bucket} | {r['coverage_80']:.3f} | "
                     f"{r['volatility']:.4f} | {r['runtime_s']:.0f} |")
    levels = [f"{q:.1f}" for q in split["quantiles"]]
    lines += ["", "wQL per quantile level:", "",
              "| method | " + " | ".join(levels) + " |", "| --- |" + " ---: |" * len(levels)]
    for name, r in methods.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['wql_per_quantile'][q]:.4f}" for q in levels) + " |")
    lines += ["", "Volatility: mean |change| of the P50 forecast of one product and target day between "
              "consecutive origins, pooled over all such pairs, divided by the mean actual of the same "
              "pairs (see `models.metrics.volatility`). Runtime: wall seconds on the machine that ran it, "
              "including fitting.", ""]
    lines += _calibration_markdown(methods)
    return "\n".join(lines)


def _calibration_markdown(methods: dict) -> list[str]:
    """The calibration table: zero share, coverage split by zero and sale days, P10 and P90 brackets."""

    def share(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    def bracket(c: dict, level: str) -> str:
        return f"[{c['below'][level]:.3f}, {c['at_or_below'][level]:.3f}]"

    lines = ["Calibration:", "",
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
              "by the share of actuals under P10 (see `models.metrics.calibration`; per level in the JSON).",
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
    history = np.arange(origin - FAN_HISTORY_DAYS + 1, origin + 1)
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
            ax.set_xlabel(f"days from origin {iso_of(origin)}")
        axes[0, 0].set_ylabel(f"units/day, item {data.series.items[row]}")
        axes[0, 0].legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = Path(f"{out}-fan-{data.series.items[row]}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
