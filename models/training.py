"""Train MQ-CNN or MQTransformer on the shipped transactions and write a checkpoint.

Public API
----------
- ``TrainSettings``: optimisation settings (defaults fit < 10 minutes on 2 CPU cores).
- ``train(model, cutoff, out, settings, model_config, tx, progress) -> TrainResult``:
  daily series of product-like items from the transactions up to ``cutoff`` (nothing later
  is read), simulated page views, a validation block of the last ``val_days`` origins whose
  28 horizons end by the cutoff (training targets stop before it), early stopping on
  validation wQL, seeded and deterministic for a given thread count.
- ``save_checkpoint(dir, name, model, extra)`` / ``load_checkpoint(dir) -> (name, module)``:
  ``model.safetensors`` (weights) + ``config.json`` (model name, config, training record);
  loading executes no code from the checkpoint.
- ``configure_parser(p)`` and ``run(args) -> int``: the ``mqstream train`` command, e.g.
  ``mqstream train --model mqtransformer --cutoff 2011-05-31 --out checkpoints/mqt``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from models.dataset import daily_series, load_transactions, select_products
from models.features import SeriesBatch, series_batch
from models.mqcnn import MQCNN, MQCNNConfig, pinball_loss
from models.mqtransformer import MQTransformer, MQTransformerConfig
from models.pageviews import simulate_views

MODELS = {"mqcnn": (MQCNN, MQCNNConfig), "mqtransformer": (MQTransformer, MQTransformerConfig)}


@dataclass
class TrainSettings:
    val_days: int = 28  # validation origins: the last 28 whose horizons all end by the cutoff
    batch_items: int = 32  # series per step
    origins_per_item: int | None = None  # consecutive forking origins per series; None: model default
    lr: float = 2e-3
    max_epochs: int = 40  # an epoch visits every training series once
    patience: int = 4  # epochs without a better validation wQL before stopping
    seed: int = 0
    time_budget_s: float = 480.0  # stop starting epochs after this: the whole run stays < 10 min
    max_items: int | None = None  # train on a random subset (tests, quick checks)
    val_items: int | None = 1024  # validate on a fixed random subset: validation is a forward pass per epoch


DEFAULT_ORIGINS = {"mqcnn": 128, "mqtransformer": 24}  # attention over 371 days is the costly part


@dataclass
class TrainResult:
    name: str
    model: torch.nn.Module
    val_loss: float
    epochs: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    path: Path | None = None


def to_day(iso: str) -> int:
    return int(pd.Timestamp(iso).value // 86_400_000_000_000)


def training_series(cutoff_day: int, tx: pd.DataFrame | None = None,
                    max_items: int | None = None, seed: int = 0) -> tuple[SeriesBatch, np.ndarray]:
    """Product-like items with >= 50 selling days up to the cutoff, as a batch of dense series
    (an item exists from its first priced day). Returns the batch and item ids."""
    tx = load_transactions() if tx is None else tx
    series = daily_series(tx, end_day=cutoff_day)
    keep = np.flatnonzero(select_products(series, cutoff_day + 1))
    if max_items is not None and max_items < len(keep):
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_items, replace=False))
    units, price, items = series.units[keep], series.price[keep], series.items[keep]
    views = simulate_views(items, units, series.start_day)
    first_col = np.argmax((price > 0) | (units > 0), axis=1)
    item_price = price[np.arange(len(keep)), first_col]
    return series_batch(units, views, price, series.start_day, first_col, series.descriptions[keep],
                        item_price), items


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


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batch: SeriesBatch, first: int, days: int, last_col: int,
                    chunk: int = 128) -> float:
    """wQL over all items at origin columns first..first+days-1 (as pinball sums, pooled)."""
    model.eval()
    q = torch.tensor(model.cfg.quantiles)
    num = den = 0.0
    for lo in range(0, len(batch), chunk):
        b = batch.select(np.arange(lo, min(lo + chunk, len(batch))))
        origins = (first + torch.arange(days)).expand(len(b), days)
        y, mask = targets(b, origins, model.cfg.horizons, last_col)
        diff = y.unsqueeze(-1) - predict(model, b, origins)
        num += float((torch.maximum(q * diff, (q - 1) * diff) * mask.unsqueeze(-1)).sum())
        den += float((y * mask).sum())
    model.train()
    return 2 * num / max(den, 1.0) / len(q)


def sample_origins(batch: SeriesBatch, rng: np.random.Generator, n: int, last_col: int) -> torch.Tensor:
    """(B, n) consecutive origin columns per series, starting at a random usable origin."""
    first = np.maximum(batch.exists.float().argmax(1).numpy() - 1, 0)  # cold-start origin
    hi = np.maximum(last_col - n, first + 1)
    start = rng.integers(first, hi)
    return torch.from_numpy(np.minimum(start[:, None] + np.arange(n), last_col - 1))


def train(model: str = "mqtransformer", cutoff: str = "2011-05-31", out: Path | None = None,
          settings: TrainSettings | None = None, model_config: dict | None = None,
          tx: pd.DataFrame | None = None, progress: bool = True) -> TrainResult:
    """Train ``model`` on data up to ``cutoff`` (inclusive); keep the weights of the best
    validation epoch; write a checkpoint to ``out`` when given. Deterministic for a seed and
    a ``torch.get_num_threads()``."""
    if model not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS)}, not {model!r}")
    s = settings or TrainSettings()
    t_start = time.monotonic()
    torch.manual_seed(s.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(s.seed)
    module_cls, cfg_cls = MODELS[model]
    cfg = cfg_cls(**(model_config or {}))
    net = module_cls(cfg)

    cutoff_day = to_day(cutoff)
    batch, _ = training_series(cutoff_day, tx, s.max_items, s.seed)
    cutoff_col = int(cutoff_day - batch.days[0])
    val_first = cutoff_col - cfg.horizons - s.val_days + 1  # validation origins val_first..cutoff_col-H
    train_last = val_first  # training targets stop where validation targets start
    n_origins = s.origins_per_item or DEFAULT_ORIGINS[model]

    val_batch = batch if s.val_items is None or s.val_items >= len(batch) else \
        batch.select(np.sort(rng.choice(len(batch), s.val_items, replace=False)))
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    best, best_state, history, bad = float("inf"), None, [], 0
    for epoch in range(s.max_epochs):
        if time.monotonic() - t_start > s.time_budget_s and history:
            break
        order = rng.permutation(len(batch))
        steps = range(0, len(order), s.batch_items)
        bar = tqdm(steps, desc=f"{model} epoch {epoch}", disable=not progress, leave=False)
        losses = []
        for lo in bar:
            if time.monotonic() - t_start > s.time_budget_s:
                break  # the budget holds mid-epoch too: validate what we have
            b = batch.select(order[lo: lo + s.batch_items])
            origins = sample_origins(b, rng, n_origins, train_last)
            y, mask = targets(b, origins, cfg.horizons, train_last)
            loss = pinball_loss(predict(net, b, origins), y, mask, cfg.quantiles)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if not losses:
            break
        val = validation_loss(net, val_batch, val_first, s.val_days, cutoff_col)
        history.append({"epoch": epoch, "steps": len(losses), "train_loss": float(np.mean(losses)), "val_wql": val,
                        "seconds": round(time.monotonic() - t_start, 1)})
        if progress:
            tqdm.write(f"{model} epoch {epoch}: train {np.mean(losses):.4f} val wQL {val:.4f}")
        if val < best:
            best, best_state, bad = val, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= s.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    result = TrainResult(model, net, best, len(history), time.monotonic() - t_start, history)
    if out is not None:
        record = {"cutoff": cutoff, "settings": asdict(s), "val_wql": best, "history": history,
                  "threads": torch.get_num_threads(), "items": len(batch)}
        result.path = save_checkpoint(Path(out), model, net, record)
    return result


def save_checkpoint(path: Path, name: str, model: torch.nn.Module, record: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model": name, "config": asdict(model.cfg),
                                                  "train": record}, indent=2))
    return path


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
    p.add_argument("--cutoff", default="2011-05-31", help="last day of training data (YYYY-MM-DD)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.max_epochs)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-items", type=int, default=d.batch_items)
    p.add_argument("--val-days", type=int, default=d.val_days)
    p.add_argument("--time-budget", type=float, default=d.time_budget_s, help="seconds")
    p.add_argument("--max-items", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    settings = TrainSettings(val_days=args.val_days, batch_items=args.batch_items, lr=args.lr,
                             max_epochs=args.epochs, patience=args.patience, seed=args.seed,
                             time_budget_s=args.time_budget, max_items=args.max_items)
    r = train(args.model, args.cutoff, args.out, settings, progress=not args.no_progress)
    print(f"{r.name}: best validation wQL {r.val_loss:.4f} after {r.epochs} epochs, "
          f"{r.seconds:.0f} s -> {r.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(configure_parser(argparse.ArgumentParser("train")).parse_args()))
