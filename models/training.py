"""Train MQ-CNN or MQTransformer on the shipped transactions and write a checkpoint.

Public API
----------
- ``TrainSettings``, ``DEFAULTS`` (per model ``Recipe``: a fixed number of epochs, so a run
  does the same work on a busy machine as on an idle one; each default run < 10 minutes on
  2 CPU cores).
- ``train(model, cutoff, out, settings, model_config, data, progress) -> TrainResult``:
  daily series of the products of ``data`` (a ``models.history.History``; default the shipped
  data, whose products are its product-like codes) up to ``cutoff`` (nothing later is read), sales, prices and calendar (page views only with ``simulated_views``, and the
  checkpoint then says so), a validation block of the last ``val_days`` origins whose
  28 horizons end by the cutoff (training targets stop before it); the weights of the best
  validation epoch, then optionally per-quantile calibration factors fitted on the validation
  block (``fit_calibration``, off by default); seeded and deterministic for a given thread count. MQTransformer
  starts from a trained MQ-CNN (``MQTransformer.warm_start``); the parts the MQ-CNN lacks
  learn at ``new_lr_factor`` times the step. If no epoch beats that start, ``train`` raises
  ``WarmStartKept`` unless ``keep_warm_start`` is set, and then the checkpoint says
  ``"learned": false`` and its forecaster's version ends in ``-warm-start``.
- ``save_checkpoint(dir, name, model, extra)`` / ``load_checkpoint(dir) -> (name, module)``:
  ``model.safetensors`` (weights) + ``config.json`` (model name, config, training record);
  loading executes no code from the checkpoint.
- ``configure_parser(p)`` and ``run(args) -> int``: the ``mqstream train`` command, e.g.
  ``mqstream train --model mqtransformer --cutoff 2011-05-31 --out checkpoints/mqtransformer``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mqstream.models.dataset import MIN_SALE_DAYS, demand_series, select_products, views_series
from mqstream.models.features import SeriesBatch, series_batch
from mqstream.models.history import (History, HistoryError, add_history_arguments, add_period_arguments,
                                     cadence_from_args, history_from_args, load_history)
from mqstream.models.mqcnn import MQCNN, MQCNNConfig, pinball_loss
from mqstream.models.mqtransformer import MQTransformer, MQTransformerConfig, asdict_base
from mqstream.models.pageviews import page_views, views_label
from mqstream.models.scores import coverage_80, wql
from mqstream.periods import DAILY, Cadence

ORDER_STRIDE = 100  # fit's draws for TrainSettings.order k are seeded seed + 100 k
MODELS = {"mqcnn": (MQCNN, MQCNNConfig), "mqtransformer": (MQTransformer, MQTransformerConfig)}
SHIPPED_CUTOFF = "2011-05-31"  # the dev split's (docs/EVALUATION.md)


@dataclass
class TrainSettings:
    epochs: int | None = None  # an epoch visits every training series once; None: DEFAULTS[model]
    lr: float | None = None  # peak Adam step, cosine-decayed to 0 over the run; None: DEFAULTS[model]
    origins_per_item: int | None = None  # consecutive forking origins per series; None: DEFAULTS[model]
    batch_items: int = 32  # series per step
    val_days: int = 28  # validation origins: the last 28 days' worth of periods whose horizons all end by the cutoff
    seed: int = 0
    order: int = 0  # data order: the series and origins ``fit`` draws, seeded seed + 100 * order; init stays seed's
    max_items: int | None = None  # train on a random subset (tests, quick checks)
    val_items: int | None = 1024  # validate on a fixed random subset: validation is a forward pass per epoch
    calibrate: bool = False  # fit per-quantile factors on the validation block (``fit_calibration``): off,
    # the April-May validation block wants factors of 1.2-2.1 that made June-August worse (0.793 -> 0.801)
    max_coverage: float | None = None  # and shrink the upper levels until validation coverage <= this
    warm_start: Path | None = None  # mqtransformer: MQ-CNN checkpoint to start from; None: train it here
    smoothness: float | None = None  # None: DEFAULTS[model]
    simulated_views: bool = False  # read simulated page views (models/pageviews.py); never a default
    keep_warm_start: bool = False  # mqtransformer: write a checkpoint even if no epoch beat the warm start
    new_lr_factor: float = 5.0  # mqtransformer: step of the parts not taken from the MQ-CNN, times lr


@dataclass(frozen=True)
class Recipe:
    epochs: int
    lr: float
    origins_per_item: int
    smoothness: float = 0.0  # weight of ``revision`` in the loss: steadier forecasts from one origin to the next


# Fixed work, so that a run gives the same weights whatever the machine's load (70 steps an
# epoch on the dev split). On 2 idle cores MQ-CNN trains in ~110 s and the MQTransformer
# stage in ~300 s (2-3x that on busy cores). The MQTransformer recipe first trains the MQ-CNN
# recipe (same seed: the same weights as ``--model mqcnn``), then its own epochs from there,
# with a revision penalty that keeps its feedback-driven updates steady. The lengths are
# measured (eval/mqtransformer-training.md): on the dev split 10 MQ-CNN epochs beat 5 (0.8098
# against 0.8110 over three seeds; on the peak split 0.7320 against 0.7306, no better), and
# the MQTransformer stage needs 6 epochs of 48 origins before its decoder reads the attention.
DEFAULTS = {"mqcnn": Recipe(epochs=10, lr=2e-3, origins_per_item=128),
            "mqtransformer": Recipe(epochs=6, lr=1e-3, origins_per_item=48, smoothness=0.2)}


@dataclass
class TrainResult:
    name: str
    model: torch.nn.Module
    val_loss: float  # best validation wQL before calibration
    epochs: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    path: Path | None = None
    items: int = 0  # series trained on


class WarmStartKept(Exception):
    """MQTransformer training ended with its MQ-CNN warm start as the best checkpoint."""


def training_series(cutoff_day: int, data: History | None = None, max_items: int | None = None,
                    seed: int = 0, simulated_views: bool = False,
                    cadence: Cadence = DAILY) -> tuple[SeriesBatch, np.ndarray]:
    """Products of ``data`` (``History.products``) with sales in >= 50 days' worth of periods up
    to the cutoff period, as a batch of dense series (an item exists from its first priced
    period); page views: the data's real ones, else simulated if asked, else 0. Returns the
    batch and item ids."""
    data = load_history() if data is None else data
    series = demand_series(data.sales, end_day=cutoff_day, cadence=cadence)
    min_periods = cadence.count(MIN_SALE_DAYS)
    keep = np.flatnonzero(select_products(series, cutoff_day + 1, min_periods, data.products))
    if not len(keep):
        raise HistoryError(f"no item sold in {min_periods} {cadence.name(2)} up to the cutoff "
                           f"{cadence.iso(cutoff_day)}: nothing to train on")
    if max_items is not None and max_items < len(keep):
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_items, replace=False))
    units, price, items = series.units[keep], series.price[keep], series.items[keep]
    real = None if data.views is None else views_series(data.views, items, series.start_day, cutoff_day, cadence)
    if simulated_views and cadence.days != 1:
        raise HistoryError("simulated page views are daily; with weeks, give real ones (--views) or none")
    views = page_views(items, units, series.start_day, simulated_views, real)
    first_col = np.argmax((price > 0) | (units > 0), axis=1)
    item_price = price[np.arange(len(keep)), first_col]
    return series_batch(units, views, price, series.start_day, first_col, series.descriptions[keep],
                        item_price, cadence), items


def period_config(model: str, cadence: Cadence, horizons: int | None = None) -> dict:
    """What a model config needs for a cadence: its period, its horizons (28 days or 13 weeks
    unless given) and, for weeks, the spans the daily defaults set in days, in weeks: the
    demand scale's memory (a month), and MQTransformer's recent window (8 weeks), last year's
    window (a week either side) and error memory (4 weeks at horizons 1, 2, 4 and H). Weeks
    keep 16 numbers a stored week, not the daily 8: 8 would save 848 bytes an item there, and
    scored no better (eval/mqtransformer-memory.md)."""
    h = horizons or cadence.default_horizons
    config = {"period": cadence.period, "week_start": cadence.week_start, "horizons": h}
    if cadence.days != 1:
        config["scale_alpha"] = 1 / 4
        if model == "mqtransformer":
            config.update(recent_days=8, year_window=1, feedback_days=4, memory_dim=16,
                          feedback_horizons=tuple(sorted({k for k in (1, 2, 4) if k <= h} | {h})))
    elif model == "mqtransformer" and h != 28:
        config["feedback_horizons"] = tuple(sorted({k for k in (1, 7, 14) if k <= h} | {h}))
    return config


def targets(batch: SeriesBatch, origins: torch.Tensor, horizons: int, last_col: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Actuals (B, S, H) of origin columns and the mask of usable (origin, horizon): the origin
    is a day of the item or its cold start, and the target is a column <= last_col."""
    B, T = batch.units.shape
    cols = origins[..., None] + torch.arange(1, horizons + 1)  # (B, S, H)
    rows = torch.arange(B)[:, None, None]
    y = batch.units[rows, cols.clamp(max=T - 1)]
    usable = batch.exists | torch.roll(batch.exists, -1, 1)  # exists, or exists tomorrow
    mask = (cols <= last_col) & torch.take_along_dim(usable, origins, 1)[..., None]
    return y, mask.float()


def predict(model: torch.nn.Module, batch: SeriesBatch, origins: torch.Tensor) -> torch.Tensor:
    return model.two_pass(batch, origins) if isinstance(model, MQTransformer) else model(batch, origins)


def revision(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much forecasts of one target day move between consecutive origins (the volatility
    of docs/EVALUATION.md, all levels): forecasts (B, S, H, Q) at consecutive origin
    columns, actuals and mask (B, S, H) -> sum |f(o+1, h-1) - f(o, h)| / sum |y|, mean over Q."""
    both = (mask[:, 1:, :-1] * mask[:, :-1, 1:]).unsqueeze(-1)  # (B, S-1, H-1, 1)
    moved = (pred[:, 1:, :-1] - pred[:, :-1, 1:]).abs() * both
    return moved.sum() / (y.abs() * mask).sum().clamp(min=1.0) / pred.shape[-1]


@torch.no_grad()
def validation_forecasts(model: torch.nn.Module, batch: SeriesBatch, first: int, days: int, last_col: int,
                         chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Forecasts (M, Q) and actuals (M,) of every usable cell at origin columns
    first..first+days-1 of every item."""
    was_training = model.training
    model.eval()
    preds, ys = [], []
    for lo in range(0, len(batch), chunk):
        b = batch.select(np.arange(lo, min(lo + chunk, len(batch))))
        origins = (first + torch.arange(days)).expand(len(b), days)
        y, mask = targets(b, origins, model.cfg.horizons, last_col)
        keep = mask.bool()
        preds.append(predict(model, b, origins)[keep].numpy())
        ys.append(y[keep].numpy())
    model.train(was_training)
    return np.concatenate(preds), np.concatenate(ys)


def fit_calibration(pred: np.ndarray, y: np.ndarray, quantiles, max_coverage: float | None = None) -> np.ndarray:
    """(Q,) factors for ``mqcnn.calibrate`` from validation forecasts (M, Q) and actuals (M,).

    Level by level, the factor minimising the pinball loss: sum_i rho_q(y_i - s f_i) equals
    sum_i f_i rho_q(y_i / f_i - s) over cells with f_i > 0, so s is the f-weighted q-quantile
    of y / f.

    Demand is a count and mostly 0 (78% of validation cells), so a calibrated P10 is 0 and a
    calibrated P90 covers well over 80%: the pinball-optimal forecasts cover ~0.93. With
    ``max_coverage``, the levels above the median are shrunk by a common factor until
    validation coverage is at most ``max_coverage``; that costs wQL (about +0.03 for 0.88).
    Never used: moving P10 just above 0, which "uncovers" zero actuals almost for free in
    wQL but misstates P(demand = 0)."""
    factors = np.ones(len(quantiles))
    pos = pred > 0
    for k, q in enumerate(quantiles):
        f, r = pred[pos[:, k], k], y[pos[:, k]] / pred[pos[:, k], k]
        order = np.argsort(r, kind="stable")
        cum = np.cumsum(f[order]) / f.sum()
        factors[k] = r[order][min(np.searchsorted(cum, q), len(r) - 1)] if len(r) else 1.0
    if max_coverage is None:
        return factors
    upper = np.asarray(quantiles) > 0.5
    for shrink in np.linspace(1.0, 0.2, 81):
        fac = np.where(upper, factors * shrink, factors)
        if coverage_80(y, np.maximum.accumulate(pred * fac, axis=-1), quantiles) <= max_coverage:
            break
    return fac


def sample_origins(batch: SeriesBatch, rng: np.random.Generator, n: int, last_col: int) -> torch.Tensor:
    """(B, n) consecutive origin columns per series, starting at a random usable origin."""
    first = np.maximum(batch.exists.float().argmax(1).numpy() - 1, 0)  # cold-start origin
    hi = np.maximum(last_col - n, first + 1)
    start = rng.integers(first, hi)
    return torch.from_numpy(np.minimum(start[:, None] + np.arange(n), last_col - 1))


@dataclass(frozen=True)
class Split:
    """Columns of the training series: training targets end at ``train_last``; validation
    origins are ``val_first``.. ``val_first + val_days - 1``, their targets end at ``cutoff_col``."""

    cutoff_col: int
    val_first: int
    val_days: int

    @property
    def train_last(self) -> int:
        return self.val_first  # training targets stop where validation targets start


def fit(name: str, net: torch.nn.Module, batch: SeriesBatch, val_batch: SeriesBatch, split: Split,
        recipe: Recipe, s: TrainSettings, progress: bool, validate_start: bool = False,
        fast: frozenset[str] = frozenset(), fast_factor: float = 1.0) -> tuple[float, list[dict]]:
    """``recipe.epochs`` epochs of Adam with a cosine-decayed step (``fast_factor`` times larger
    for the parameters named in ``fast``); keeps (loads) the weights of the epoch with the
    best validation wQL (the starting weights count when ``validate_start``). Deterministic
    for a seed, an order and a thread count."""
    order_seed = s.seed + ORDER_STRIDE * s.order
    torch.manual_seed(order_seed)
    rng = np.random.default_rng(order_seed)
    cfg = net.cfg
    steps_per_epoch = -(-len(batch) // s.batch_items)
    named = list(net.named_parameters())
    opt = torch.optim.Adam([{"params": [p for n, p in named if n not in fast], "lr": recipe.lr},
                            {"params": [p for n, p in named if n in fast], "lr": recipe.lr * fast_factor}])
    total = recipe.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * min(i, total) / total)))
    t0 = time.monotonic()

    def validate() -> float:
        pred, y = validation_forecasts(net, val_batch, split.val_first, split.val_days, split.cutoff_col)
        return wql(y, pred, cfg.quantiles)

    best, best_state, history = np.inf, None, []
    if validate_start:
        best, best_state = validate(), {k: v.clone() for k, v in net.state_dict().items()}
        history.append({"epoch": -1, "val_wql": best, "seconds": round(time.monotonic() - t0, 1)})
    net.train()
    for epoch in range(recipe.epochs):
        order = rng.permutation(len(batch))
        bar = tqdm(range(0, len(order), s.batch_items), desc=f"{name} epoch {epoch}", disable=not progress, leave=False)
        losses = []
        for lo in bar:
            b = batch.select(order[lo: lo + s.batch_items])
            origins = sample_origins(b, rng, recipe.origins_per_item, split.train_last)
            y, mask = targets(b, origins, cfg.horizons, split.train_last)
            pred = predict(net, b, origins)  # (B, S, H, Q)
            loss = pinball_loss(pred, y, mask, cfg.quantiles) + recipe.smoothness * revision(pred, y, mask)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        val = validate()
        history.append({"epoch": epoch, "steps": len(losses), "train_loss": float(np.mean(losses)), "val_wql": val,
                        "seconds": round(time.monotonic() - t0, 1)})
        if progress:
            tqdm.write(f"{name} epoch {epoch}: train {np.mean(losses):.4f} val wQL {val:.4f} "
                       f"({history[-1]['seconds']:.0f} s)")
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    net.eval()
    return best, history


NEW_DECODER_INPUTS = frozenset({"decoder.local_mlp.0.weight"})  # its attention columns start at 0


def _beat_warm_start(history: list[dict], best: float, keep: bool) -> bool:
    """Whether an epoch beat the warm start; raises ``WarmStartKept`` if none did, unless ``keep``."""
    learned = next(h["epoch"] for h in history if h["val_wql"] == best) >= 0
    if not learned and not keep:
        start = history[0]["val_wql"]
        epochs = ", ".join(f"{h['val_wql']:.4f}" for h in history[1:])
        raise WarmStartKept(f"no MQTransformer epoch beat its MQ-CNN warm start on validation (wQL {start:.4f}; "
                            f"epochs {epochs}): its attention did not learn, and the checkpoint would be the "
                            "MQ-CNN's forecasts under another name. Train longer or otherwise, or pass "
                            "--keep-warm-start to write it anyway (marked as not learned).")
    return learned


def recipe_of(model: str, s: TrainSettings) -> Recipe:
    d = DEFAULTS[model]
    return Recipe(s.epochs or d.epochs, s.lr or d.lr, s.origins_per_item or d.origins_per_item,
                  d.smoothness if s.smoothness is None else s.smoothness)


def train(model: str = "mqtransformer", cutoff: str = SHIPPED_CUTOFF, out: Path | None = None,
          settings: TrainSettings | None = None, model_config: dict | None = None,
          data: History | None = None, progress: bool = True, cadence: Cadence = DAILY,
          horizons: int | None = None) -> TrainResult:
    """Train ``model`` on ``data`` (default: the shipped data) up to ``cutoff`` (inclusive) for a fixed number of epochs; keep
    the weights of the best validation epoch; with ``settings.calibrate``, fit calibration
    factors on the validation block; write a checkpoint to ``out`` when given. Deterministic for a seed and a
    ``torch.get_num_threads()``. An MQTransformer starts from an MQ-CNN with the shared
    hyper-parameters: ``settings.warm_start`` (a checkpoint) or one trained here with the
    MQ-CNN defaults (``settings.epochs``/``lr``/``origins_per_item`` apply to the
    MQTransformer stage only). The model steps through periods of ``cadence``; with weeks,
    the cutoff is the last week that ends by it."""
    if model not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS)}, not {model!r}")
    s = settings or TrainSettings()
    t_start = time.monotonic()
    torch.use_deterministic_algorithms(True)
    module_cls, _ = MODELS[model]
    data = load_history() if data is None else data
    cfg = model_config_of(model, cadence, horizons, model_config, s.simulated_views or data.views is not None)

    cutoff_day = cadence.last_ending_by(cutoff)
    batch, _ = training_series(cutoff_day, data, s.max_items, s.seed, s.simulated_views, cadence)
    cutoff_col = int(cutoff_day - batch.days[0])
    val = cadence.count(s.val_days)
    split = Split(cutoff_col, cutoff_col - cfg.horizons - val + 1, val)
    if split.val_first < 1:
        raise HistoryError(f"the data up to {cutoff} holds {cutoff_col + 1} {cadence.name(2)}: too few for "
                           f"{val} validation origins with {cfg.horizons} horizons and training before them")
    rng = np.random.default_rng(s.seed)
    val_batch = batch if s.val_items is None or s.val_items >= len(batch) else \
        batch.select(np.sort(rng.choice(len(batch), s.val_items, replace=False)))

    record: dict = {"cutoff": cutoff, "period": cadence.period, "horizons": cfg.horizons, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                   for k, v in asdict(s).items()},
                    "page_views": views_label(s.simulated_views, data.views_path), "data": data.describe()}
    torch.manual_seed(s.seed)
    net = module_cls(cfg)
    history: list[dict] = []
    if model == "mqtransformer":
        base_cfg = MQCNNConfig(**asdict_base(cfg))
        if s.warm_start is not None:
            base_name, base = load_checkpoint(Path(s.warm_start))
            if base_name != "mqcnn":
                raise ValueError(f"--warm-start needs an mqcnn checkpoint; {s.warm_start} holds {base_name!r}")
            record["warm_start"] = {"checkpoint": str(s.warm_start)}
        else:
            torch.manual_seed(s.seed)
            base = MQCNN(base_cfg)
            base_recipe = recipe_of("mqcnn", TrainSettings())
            base_val, base_history = fit("mqcnn", base, batch, val_batch, split, base_recipe, s, progress)
            record["warm_start"] = {"recipe": asdict(base_recipe), "val_wql": base_val, "history": base_history}
        if base.cfg.use_views != cfg.use_views:
            raise ValueError("the warm start and this run must agree on page views (--simulated-views, --views)")
        net.warm_start(base)
        fast = frozenset(n for n, _ in net.named_parameters() if n not in base.state_dict()) | NEW_DECODER_INPUTS
    else:
        fast = frozenset()
    recipe = recipe_of(model, s)
    best, history = fit(model, net, batch, val_batch, split, recipe, s, progress,
                        validate_start=model == "mqtransformer", fast=fast, fast_factor=s.new_lr_factor)
    if model == "mqtransformer":
        record["learned"] = _beat_warm_start(history, best, s.keep_warm_start)
        record["attention_use"] = net.attention_use()
    if s.calibrate:
        pred, y = validation_forecasts(net, val_batch, split.val_first, split.val_days, split.cutoff_col)
        factors = fit_calibration(pred, y, cfg.quantiles, s.max_coverage)
        net.decoder.calibration.copy_(torch.from_numpy(factors).float())
        cal, _ = validation_forecasts(net, val_batch, split.val_first, split.val_days, split.cutoff_col)
        record["calibration"] = {"factors": factors.tolist(), "val_wql_before": wql(y, pred, cfg.quantiles),
                                 "val_wql": wql(y, cal, cfg.quantiles), "val_coverage_before": coverage_80(y, pred, cfg.quantiles),
                                 "val_coverage": coverage_80(y, cal, cfg.quantiles)}
        if progress:
            tqdm.write(f"{model} calibration: {record['calibration']}")
    seconds = time.monotonic() - t_start
    result = TrainResult(model, net, best, len([h for h in history if h["epoch"] >= 0]), seconds, history,
                         items=len(batch))
    if out is not None:
        record.update({"recipe": asdict(recipe), "val_wql": best, "history": history, "seconds": round(seconds, 1),
                       "threads": torch.get_num_threads(), "items": len(batch)})
        result.path = save_checkpoint(Path(out), model, net, record)
    return result


def save_checkpoint(path: Path, name: str, model: torch.nn.Module, record: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model": name, "config": asdict(model.cfg),
                                                  "train": record}, indent=2))
    return path


def model_config_of(model: str, cadence: Cadence, horizons: int | None, overrides: dict | None,
                    use_views: bool) -> MQCNNConfig:
    """The config ``train`` builds ``model`` with: the cadence's (``period_config``), then the
    overrides, and whether it reads page views."""
    _, cfg_cls = MODELS[model]
    return cfg_cls(**{**period_config(model, cadence, horizons), **(overrides or {}), "use_views": use_views})


def holds_config(path: Path, cfg: MQCNNConfig) -> bool:
    """Whether the checkpoint at ``path`` is a model of exactly ``cfg``: one trained before a
    default changed (say the memory's width) is not today's model."""
    stored = json.loads((Path(path) / "config.json").read_text())["config"]
    return stored == json.loads(json.dumps(asdict(cfg)))


def checkpoint_record(path: Path) -> dict:
    """The training record of a checkpoint (cutoff, settings, scores, ``learned``)."""
    return json.loads((Path(path) / "config.json").read_text()).get("train", {})


def load_checkpoint(path: Path) -> tuple[str, torch.nn.Module]:
    """(model name, eval-mode module) from a checkpoint directory."""
    meta = json.loads((Path(path) / "config.json").read_text())
    name = meta["model"]
    if name not in MODELS:
        raise ValueError(f"checkpoint {path} holds unknown model {name!r}")
    module_cls, cfg_cls = MODELS[name]
    known = {f.name for f in fields(cfg_cls)}
    net = module_cls(cfg_cls(**{k: v for k, v in meta["config"].items() if k in known}))
    net.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
    return name, net.eval()


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = TrainSettings()
    p.add_argument("--model", choices=sorted(MODELS), default="mqtransformer")
    p.add_argument("--cutoff", default=None, help="last day of training data (YYYY-MM-DD); default "
                                                  f"{SHIPPED_CUTOFF} for the shipped data, the last day of --data")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=None,
                   help="default: " + ", ".join(f"{k} {r.epochs}" for k, r in DEFAULTS.items()))
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate; default: " + ", ".join(f"{k} {r.lr}" for k, r in DEFAULTS.items()))
    p.add_argument("--batch-items", type=int, default=d.batch_items)
    p.add_argument("--val-days", type=int, default=d.val_days)
    p.add_argument("--calibrate", action="store_true",
                   help="fit per-quantile factors on the validation block (off: they did not carry over to the dev split)")
    p.add_argument("--max-coverage", type=float, default=None,
                   help="with --calibrate, also shrink the upper quantiles until validation 80%% coverage "
                        "is at most this (costs wQL: see fit_calibration)")
    p.add_argument("--warm-start", type=Path, default=None,
                   help="mqtransformer: start from this mqcnn checkpoint instead of training one "
                        "(one trained with the defaults gives the same result, faster)")
    p.add_argument("--smoothness", type=float, default=None,
                   help="weight of the revision penalty; default: " + ", ".join(f"{k} {r.smoothness}" for k, r in DEFAULTS.items()))
    p.add_argument("--simulated-views", action="store_true",
                   help="train on simulated page views (models/pageviews.py); the checkpoint says so. "
                        "Default: sales, prices and calendar only")
    p.add_argument("--keep-warm-start", action="store_true",
                   help="mqtransformer: write the checkpoint even if no epoch beat the MQ-CNN warm start "
                        "(it is then marked as not learned; without this flag training fails)")
    p.add_argument("--new-lr-factor", type=float, default=d.new_lr_factor,
                   help="mqtransformer: step of the parts the MQ-CNN lacks, times --lr (default %(default)s)")
    p.add_argument("--max-items", type=int, default=None)
    p.add_argument("--publish", choices=("served", "candidate"), default=None,
                   help="then publish the checkpoint to the models topic in this role (see `mqstream models`)")
    p.add_argument("--unless-served", action="store_true",
                   help="with --publish: train only where the models topic serves no --model yet (a first start)")
    p.add_argument("--no-progress", action="store_true")
    add_history_arguments(p)
    add_period_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, batch_items=args.batch_items, val_days=args.val_days,
                             seed=args.seed, max_items=args.max_items, warm_start=args.warm_start, smoothness=args.smoothness,
                             calibrate=args.calibrate, max_coverage=args.max_coverage,
                             simulated_views=args.simulated_views, keep_warm_start=args.keep_warm_start,
                             new_lr_factor=args.new_lr_factor)
    try:
        cadence = cadence_from_args(args)
        history = history_from_args(args)
        cutoff = args.cutoff or (SHIPPED_CUTOFF if args.data is None else
                                 pd.Timestamp(history.last_day, unit="D").date().isoformat())
        r = train(args.model, cutoff, args.out, settings, data=history, progress=not args.no_progress,
                  cadence=cadence, horizons=args.horizons)
    except HistoryError as exc:
        print(f"mqstream train: {exc}", file=sys.stderr)
        return 2
    except WarmStartKept as exc:
        print(f"mqstream train: {exc}", file=sys.stderr)
        return 3
    through = cadence.iso(cadence.last_ending_by(cutoff)) if cadence.days != 1 else cutoff
    print(f"{r.name}: best validation wQL {r.val_loss:.4f} after {r.epochs} epochs on {r.items} items up to "
          f"{cutoff} ({cadence.name(2)}{f', the last from {through}' if cadence.days != 1 else ''}), "
          f"{r.seconds:.0f} s -> {r.path}")
    if isinstance(r.model, MQTransformer):
        use = r.model.attention_use()
        print(f"decoder weights (mean |w|) on its attention outputs: decoder-encoder {use['encoder_attention']:.4f}, "
              f"feedback {use['feedback_attention']:.4f}, against {use['other_inputs']:.4f} on its other inputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(configure_parser(argparse.ArgumentParser("train")).parse_args()))
