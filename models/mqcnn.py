"""MQ-CNN (Wen et al. 2017, "A Multi-Horizon Quantile Recurrent Forecaster"), read top to bottom.

A dilated causal Conv1d stack encodes each item's past day by day; at every origin a global
MLP turns the encoding plus the known future (calendar of the 28 target days, planned price)
into one context per horizon and one horizon-agnostic context; a local MLP shared by all
horizons turns (horizon context, agnostic context, target-day calendar) into Q quantiles.
Quantiles are predicted in a per-item scaled space (scale = 1 + EMA of demand) as a base
plus cumulative softplus increments, clipped at zero, so they never cross, never go below
zero, and can be exactly zero.

Training uses forking sequences: one encoder pass over a series gives a forecast at every
day (``MQCNN.forward``). Serving uses the incremental path (``MQCNNForecaster``): the state of
an item caches, per conv layer, a ring buffer of its last ``dilation`` inputs, so ``advance``
costs the same whatever the item's history, and equals the full path to float rounding.

Public API
----------
- ``MQCNNConfig``: hyper-parameters (defaults are the shipped model).
- ``MQCNN(cfg)``: the torch module; ``forward(batch, origins) -> (B, S, H, Q)`` units.
- ``MQCNNForecaster(model)``: ``models.protocol.QuantileForecaster`` over ``MQCNN``.
  State bytes per item: 52 + 4 * (2 + C) + 2 * C * sum(dilations) (ring buffers in float16,
  ``buffer_dtype``); 4,220 with the defaults.
- Building blocks reused by ``models.mqtransformer``: ``stored``, ``CausalConvEncoder``,
  ``ItemEncoder``, ``MQDecoder``, ``ema_scale``, ``origin_features``, ``StateLayout``,
  ``pinball_loss``, ``model_version``.
"""
from __future__ import annotations

import hashlib
import math
import json
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mqstream.models.features import (MAX_TOKENS, N_CALENDAR, N_PAST, N_PRICE_BANDS, TOKEN_BUCKETS, encoder_inputs,
                                      SeriesBatch, calendar, item_tokens, past_inputs, price_band)
from mqstream.models.protocol import DEFAULT_HORIZONS, DEFAULT_QUANTILES, ItemInfo, Period, TargetErrors
from mqstream.periods import Cadence

AGE_CAP = 365  # days of history after which an item counts as "established"
FP16_MAX = 65504.0  # float16 state fields clip here


# --- building blocks --------------------------------------------------------------------
def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def stored(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as a state of ``dtype`` stores and reads it back (clipped to float16's range), with
    a straight-through gradient; the full path applies it wherever the incremental path
    reads a value back from the state, so both paths round the same way."""
    if dtype == torch.float32:
        return x
    r = x.clamp(-FP16_MAX, FP16_MAX).to(dtype).float()
    return r.detach() + (x - x.detach()) if x.requires_grad else r  # value r exactly, gradient 1


class CausalConvEncoder(nn.Module):
    """Pointwise input projection, then residual dilated causal convs of kernel 2:
    h_l+1[t] = h_l[t] + relu(W0 stored(h_l[t - d]) + W1 h_l[t] + b). The look-back tap reads
    the ring buffer the state keeps (``buffer_dtype``); the full path rounds it the same way.
    Both paths compute a conv as two matmuls (a dilated Conv1d is slow on CPU)."""

    def __init__(self, n_in: int, channels: int, dilations: tuple[int, ...], buffer_dtype: str = "float32"):
        super().__init__()
        self.dilations = dilations
        self.buffer_dtype = getattr(torch, buffer_dtype)
        self.inp = nn.Linear(n_in, channels)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, 2, dilation=d) for d in dilations)
        # ring buffer rows of layer l start at offsets[l] and hold its last d_l inputs
        self.offsets = np.concatenate([[0], np.cumsum(dilations)[:-1]]).astype(np.int64)
        self.buffer_rows = int(sum(dilations))

    def forward(self, x: torch.Tensor, exists: torch.Tensor) -> torch.Tensor:
        """Full path: (B, T, n_in), (B, T) -> (B, T, C). Zeroing every layer where the item
        does not exist yet is exactly the zero padding a fresh ring buffer gives."""
        m = exists.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        h = self.inp(x) * m  # (B, T, C)
        for conv, d in zip(self.convs, self.dilations):
            past = F.pad(stored(h, self.buffer_dtype), (0, 0, d, 0))[:, : h.shape[1]]  # (B, T, C) h[t - d]
            w = conv.weight  # (C, C, 2): tap 0 looks back d days, tap 1 is today
            h = (h + F.relu(past @ w[:, :, 0].T + h @ w[:, :, 1].T + conv.bias)) * m
        return h

    def step(self, x: torch.Tensor, buffers: torch.Tensor, day: torch.Tensor) -> torch.Tensor:
        """Incremental path for one day: x (B, n_in), buffers (B, R, C) float32 holding values
        of ``buffer_dtype``, updated in place, day (B,) int64 -> (B, C). Slot (day mod d)
        holds the input of day - d."""
        rows = torch.arange(len(x))
        h = self.inp(x)  # (B, C)
        for conv, d, off in zip(self.convs, self.dilations, self.offsets):
            slot = int(off) + day % d  # (B,)
            past = buffers[rows, slot]  # (B, C) input of this layer d days ago
            buffers[rows, slot] = stored(h, self.buffer_dtype)
            w = conv.weight
            h = h + F.relu(past @ w[:, :, 0].T + h @ w[:, :, 1].T + conv.bias)
        return h


class ItemEncoder(nn.Module):
    """Bag of hashed description words plus a price band: all a new item brings."""

    def __init__(self, dim: int):
        super().__init__()
        self.words = nn.Embedding(TOKEN_BUCKETS, dim, padding_idx=0)
        self.band = nn.Embedding(N_PRICE_BANDS, dim)

    def forward(self, tokens: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
        """(B, K) int, (B,) int -> (B, dim)"""
        n = (tokens > 0).sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
        return self.words(tokens).sum(1) / n + self.band(band)


def ema_scale(units: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, T) EMA of demand (0 before an item exists, where units are 0), the recursion of
    ``base_step`` unrolled into one float64 product with the decay matrix."""
    t = torch.arange(units.shape[1], dtype=torch.float64)
    lag = t[None, :] - t[:, None]  # (T, T): column t sums day k = row with weight a(1-a)^(t-k)
    w = torch.where(lag >= 0, alpha * (1 - alpha) ** lag.clamp(min=0), 0.0)
    return (units.double() @ w).float()


def origin_features(h: torch.Tensor, item: torch.Tensor, ema: torch.Tensor, age: torch.Tensor,
                    price: torch.Tensor, cadence: Cadence) -> torch.Tensor:
    """What the decoder knows at an origin: (..., C), (..., E), and (...) ema, age (periods of
    history), planned price -> (..., C + E + 3)."""
    cap = cadence.count(AGE_CAP)
    age_feat = torch.log1p(age.clamp(max=cap).float()) / np.log1p(cap)
    extras = torch.stack([torch.log1p(ema), age_feat, torch.log1p(price)], -1)  # (..., 3)
    return torch.cat([h, item, extras], -1)


def monotone_quantiles(raw: torch.Tensor) -> torch.Tensor:
    """(..., Q) -> (..., Q): a free base plus softplus increments, clipped at 0. Sorted and
    never negative, and lower quantiles can be exactly 0: most item-days sell nothing, and a
    0.1-quantile of 0.001 would miss every zero actual (80% coverage counts f_0.1 <= y)."""
    steps = torch.cat([raw[..., :1], F.softplus(raw[..., 1:])], -1)
    return torch.cumsum(steps, -1).clamp(min=0)


class MQDecoder(nn.Module):
    """Global MLP (origin features + all H future calendars -> H contexts + one agnostic
    context) and local MLP shared across horizons (-> Q quantiles, in scaled units)."""

    def __init__(self, cfg: "MQCNNConfig", n_origin: int, n_extra: int = 0):
        super().__init__()
        self.cfg = cfg
        h, dc, da = cfg.horizons, cfg.context_dim, cfg.agnostic_dim
        self.global_mlp = mlp(n_origin + h * N_CALENDAR, cfg.global_hidden, h * dc + da)
        self.local_mlp = mlp(dc + da + N_CALENDAR + n_extra, cfg.local_hidden, len(cfg.quantiles))
        with torch.no_grad():  # start with small quantiles, the lowest at 0: most days sell nothing
            self.local_mlp[-1].bias.fill_(-2.0)[0] = -0.5
        # per-quantile factors fitted on the validation block after training (models.training);
        # ones (the identity) while training. Part of the weights, so both paths apply them.
        self.register_buffer("calibration", torch.ones(len(cfg.quantiles)))

    def contexts(self, origin: torch.Tensor, future_cal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., n_origin), (..., H, N_CAL) -> (..., H, dc) per-horizon, (..., da) agnostic."""
        h, dc = self.cfg.horizons, self.cfg.context_dim
        g = self.global_mlp(torch.cat([origin, future_cal.flatten(-2)], -1))
        return g[..., : h * dc].unflatten(-1, (h, dc)), g[..., h * dc:]

    def quantiles(self, ctx: torch.Tensor, agnostic: torch.Tensor, future_cal: torch.Tensor,
                  extra: torch.Tensor | None = None) -> torch.Tensor:
        """-> (..., H, Q) scaled quantiles; ``extra`` (..., H, n_extra) e.g. attention outputs."""
        parts = [ctx, agnostic.unsqueeze(-2).expand(*ctx.shape[:-1], -1), future_cal]
        q = monotone_quantiles(self.local_mlp(torch.cat(parts + ([extra] if extra is not None else []), -1)))
        return calibrate(q, self.calibration)


def calibrate(q: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(..., Q) sorted, non-negative quantiles times per-level factors (Q,), kept sorted by a
    running max: still non-negative, and the identity for factors of one."""
    return torch.cummax(q * factors, -1).values


def future_calendar(origins: np.ndarray, horizons: int, cadence: Cadence) -> torch.Tensor:
    """(...) origin periods -> (..., H, N_CAL) calendar of the target periods t+1..t+H."""
    return torch.from_numpy(calendar(np.asarray(origins)[..., None] + np.arange(1, horizons + 1), cadence))


def pinball_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                 quantiles: Sequence[float]) -> torch.Tensor:
    """wQL of (..., H, Q) forecasts for (..., H) actuals over mask (..., H): mean over q of
    2 * sum pinball / sum |y|. Summing in units weights items by scale, as wQL does."""
    q = torch.tensor(quantiles, dtype=pred.dtype)
    diff = y.unsqueeze(-1) - pred  # (..., H, Q)
    loss = torch.maximum(q * diff, (q - 1) * diff) * mask.unsqueeze(-1)
    return 2 * loss.sum() / (y.abs() * mask).sum().clamp(min=1.0) / len(quantiles)


def model_version(name: str, cfg, module: nn.Module) -> str:
    """Short hash of config and weights: two forecasters agree iff their versions do."""
    h = hashlib.sha256(json.dumps({"name": name, **asdict(cfg)}, sort_keys=True).encode())
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


class StateLayout:
    """Fixed-size bytes of named numpy fields; a batch of states decodes as one array."""

    def __init__(self, tag: int, fields: list[tuple[str, type, tuple[int, ...]]]):
        self.fields = [("tag", np.int32, (1,))] + fields
        self.tag = tag
        self.sizes = [np.dtype(dt).itemsize * int(np.prod(shape)) for _, dt, shape in self.fields]
        self.nbytes = sum(self.sizes)
        offsets = np.cumsum([0, *self.sizes[:-1]]).tolist()
        self._places = {name: (dt, size, offset, shape)
                        for (name, dt, shape), size, offset in zip(self.fields, self.sizes, offsets)}

    def rows(self, states: Sequence[bytes], writable: bool = False) -> np.ndarray:
        """(B, nbytes) bytes of a batch of states, checked; ``writable``: to write through
        ``views`` (joined into a bytearray: one copy of the batch, not a second one)."""
        raw = np.frombuffer((bytearray() if writable else b"").join(states), np.uint8)
        if raw.size != self.nbytes * len(states):
            raise ValueError(f"state is not a {self.nbytes}-byte state of this model")
        raw = raw.reshape(len(states), self.nbytes)
        if (raw[:, :4].view(np.int32) != self.tag).any():
            raise ValueError("state was written by another model or layout version")
        return raw

    def views(self, rows: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Writable views of some fields of a batch of ``rows``: writing through them changes
        the rows (an update of a few fields need not decode and encode the others)."""
        return {name: rows[:, offset: offset + size].view(dt).reshape(len(rows), *shape)
                for name in names for dt, size, offset, shape in (self._places[name],)}

    def updated(self, states: Sequence[bytes], update: Callable[[dict[str, np.ndarray]], None]) -> list[bytes]:
        """``states`` after ``update`` wrote into views of every field of their rows: one
        copy in, one ``tobytes`` per state out. Decoding each field and encoding them again,
        MQTransformer's ``advance`` took 48 us an item of 17 kB; this way 22."""
        rows = self.rows(states, writable=True)
        update(self.views(rows, [name for name, _, _ in self.fields]))
        return [row.tobytes() for row in rows]

    def stamped(self, blank: bytes, fields: dict[str, np.ndarray]) -> bytes:
        """One state: ``blank`` with ``fields`` written over it (MQTransformer's ``new_state``
        82 -> 25 us, ~10% of a worker's first close of its items)."""
        row = np.frombuffer(blank, np.uint8).copy()[None]
        for name, view in self.views(row, list(fields)).items():
            view[...] = fields[name]
        return row.tobytes()

    def decode(self, states: Sequence[bytes]) -> dict[str, np.ndarray]:
        raw, out, off = self.rows(states), {}, 0
        for (name, dt, shape), size in zip(self.fields, self.sizes):
            out[name] = raw[:, off: off + size].copy().view(dt).reshape(len(states), *shape)
            off += size
        return out

    def encode(self, fields: dict[str, np.ndarray]) -> list[bytes]:
        n = len(next(iter(fields.values())))
        fields = {**fields, "tag": np.full((n, 1), self.tag, np.int32)}
        cols = [np.ascontiguousarray(fields[name], dtype=dt).reshape(n, -1).view(np.uint8)
                for name, dt, _ in self.fields]
        return [row.tobytes() for row in np.concatenate(cols, axis=1)]


# --- the model --------------------------------------------------------------------------
@dataclass
class MQCNNConfig:
    horizons: int = DEFAULT_HORIZONS
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    channels: int = 32  # encoder width: small on purpose, training must fit 2 CPU cores
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # kernel 2 -> receptive field 64 days
    item_dim: int = 8  # item embedding (description words + price band), for cold start
    context_dim: int = 16  # per-horizon context from the global MLP
    agnostic_dim: int = 16  # horizon-agnostic context
    global_hidden: int = 128
    local_hidden: int = 32
    scale_alpha: float = 1 / 28  # EMA weight of demand scale: about a month of memory
    buffer_dtype: str = "float16"  # conv ring buffers in the state: half the bytes, no loss seen
    use_views: bool = False  # read page views; off, the views input is 0 in training and serving alike

    @property
    def history_needed(self) -> int:
        """Periods of input a state depends on: the convolutions' receptive field, or the span
        after which a period weighs under 1% in the demand-scale EMA, whichever is longer."""
        return max(1 + sum(self.dilations), math.ceil(math.log(0.01) / math.log(1 - self.scale_alpha)))
    period: str = "day"  # what a step is (mqstream.periods): the model serves only a worker of the same
    week_start: int = 0  # 0 = Monday

    def __post_init__(self):  # JSON round trips give lists
        self.quantiles, self.dilations = tuple(self.quantiles), tuple(self.dilations)
        Cadence(self.period, self.week_start)  # raises on an unknown period
        if self.buffer_dtype not in ("float16", "float32"):
            raise ValueError(f"buffer_dtype must be 'float16' or 'float32', not {self.buffer_dtype!r}")

    @property
    def cadence(self) -> Cadence:
        return Cadence(self.period, self.week_start)


class MQCNN(nn.Module):
    def __init__(self, cfg: MQCNNConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = CausalConvEncoder(N_PAST, cfg.channels, cfg.dilations, cfg.buffer_dtype)
        self.item = ItemEncoder(cfg.item_dim)
        self.decoder = MQDecoder(cfg, cfg.channels + cfg.item_dim + 3)

    def forward(self, batch: SeriesBatch, origins: torch.Tensor | None = None) -> torch.Tensor:
        """Forking sequences: (B, S, H, Q) quantiles in units at origin columns (B, S)
        (default every column). Origin t has seen days <= t; a column before the item's
        first day is its cold start."""
        B, T = batch.units.shape
        if origins is None:
            origins = torch.arange(T).expand(B, T)
        h = self.encoder(encoder_inputs(batch.past, self.cfg.use_views), batch.exists)  # (B, T, C)
        ema = ema_scale(batch.units, self.cfg.scale_alpha)  # (B, T)
        age = batch.exists.cumsum(1)  # (B, T)
        at = lambda x: torch.take_along_dim(x, origins.reshape(B, -1, *([1] * (x.dim() - 2))), 1)
        item = self.item(batch.tokens, batch.band).unsqueeze(1).expand(-1, origins.shape[1], -1)  # (B, S, E)
        origin = origin_features(at(h), item, at(ema), at(age), at(batch.price), self.cfg.cadence)  # (B, S, n_origin)
        cal = future_calendar(batch.days[origins].numpy(), self.cfg.horizons, self.cfg.cadence)  # (B, S, H, N_CAL)
        ctx, agn = self.decoder.contexts(origin, cal)
        return self.decoder.quantiles(ctx, agn, cal) * (1 + at(ema))[..., None, None]  # (B, S, H, Q)


# --- incremental serving ----------------------------------------------------------------
def base_fields(cfg: MQCNNConfig) -> list[tuple[str, type, tuple[int, ...]]]:
    """State fields of the encoder side, shared with MQTransformer."""
    return [("last_day", np.int32, (1,)),  # last closed day; first_day - 1 when none
            ("n_days", np.int32, (1,)),  # closed days seen (age)
            ("band", np.int32, (1,)),
            ("tokens", np.int32, (MAX_TOKENS,)),
            ("ema", np.float64, (1,)),  # float64: the full path sums the EMA exactly
            ("price", np.float32, (1,)),  # planned price: last positive price seen
            ("h", np.float32, (cfg.channels,)),  # encoding after the last closed day
            ("conv", np.dtype(cfg.buffer_dtype).type, (sum(cfg.dilations), cfg.channels))]  # ring buffers


def new_base_state(cfg: MQCNNConfig, item: ItemInfo, first_day: int) -> dict[str, np.ndarray]:
    return {**item_fields(item, first_day), "n_days": np.zeros((1, 1)), "ema": np.zeros((1, 1)),
            "h": np.zeros((1, cfg.channels)), "conv": np.zeros((1, sum(cfg.dilations), cfg.channels))}


BLANK_ITEM = ItemInfo("", "", 0.0)  # a new state's item fields before ``item_fields`` writes them


def item_fields(item: ItemInfo, first_day: int) -> dict[str, np.ndarray]:
    """The fields of a new state that differ from item to item; the others start the same."""
    return {"last_day": np.array([[first_day - 1]]), "band": np.array([[price_band(item.price)]]),
            "tokens": item_tokens(item.description)[None], "price": np.array([[item.price]])}


def fill_gaps(st: dict[str, np.ndarray], periods: Sequence[Period], step) -> None:
    """Advance each item to its period's day: missing days in between close with no sales
    (cost grows with the gap, never with history); periods already seen are ignored."""
    day = np.array([p.day for p in periods])
    gap = day - st["last_day"][:, 0]
    for g in range(1, int(gap.max(initial=0)) + 1):
        rows = np.flatnonzero(gap >= g)
        if len(rows) == 0:
            break
        filler = [Period(int(st["last_day"][r, 0]) + 1, 0.0, 0.0, float(st["price"][r, 0])) for r in rows]
        step(st, rows, [periods[r] if gap[r] == g else f for r, f in zip(rows, filler)])


def base_step(encoder: CausalConvEncoder, cfg: MQCNNConfig, st: dict[str, np.ndarray], rows: np.ndarray,
              periods: Sequence[Period]) -> torch.Tensor:
    """Close one day for ``rows`` of decoded states (in place); returns their new h (R, C)."""
    alpha = cfg.scale_alpha
    day = np.array([p.day for p in periods])
    units = np.array([p.units for p in periods], np.float32)
    price = np.array([p.price for p in periods], np.float32)
    views = np.array([p.views for p in periods])
    x = encoder_inputs(torch.from_numpy(past_inputs(units, views, price, day, cfg.cadence)), cfg.use_views)  # (R, N_PAST)
    buf = torch.from_numpy(st["conv"][rows].astype(np.float32))  # (R, Rb, C)
    h = encoder.step(x, buf, torch.from_numpy(day))
    ema = st["ema"][rows, 0]
    st["ema"][rows, 0] = ema + alpha * (units.astype(np.float64) - ema)
    st["conv"][rows], st["h"][rows] = buf.numpy(), h.numpy()
    st["last_day"][rows, 0] = day
    st["n_days"][rows, 0] += 1
    st["price"][rows, 0] = np.where(price > 0, price, st["price"][rows, 0])
    return h


def base_origin(model: nn.Module, st: dict[str, np.ndarray]) -> torch.Tensor:
    """Origin features (B, n_origin) of decoded states."""
    item = model.item(torch.from_numpy(st["tokens"]).long(), torch.from_numpy(st["band"][:, 0]).long())
    return origin_features(torch.from_numpy(st["h"]), item, torch.from_numpy(st["ema"][:, 0]).float(),
                           torch.from_numpy(st["n_days"][:, 0]), torch.from_numpy(st["price"][:, 0]),
                           model.cfg.cadence)


class MQCNNForecaster:
    """``QuantileForecaster`` over an ``MQCNN``. Batched, float32, no autograd; the caller
    chooses ``torch.set_num_threads`` (a process-wide setting)."""

    name = "mqcnn"

    def __init__(self, model: MQCNN):
        self.model = model.eval()
        self.cfg = model.cfg
        self.horizons, self.quantiles, self.cadence = self.cfg.horizons, self.cfg.quantiles, self.cfg.cadence
        self.history_needed = self.cfg.history_needed
        self.version = model_version(self.name, self.cfg, model)
        self.layout = StateLayout(tag=0x4D51_0001, fields=base_fields(self.cfg))
        self.blank = self.layout.encode(new_base_state(self.cfg, BLANK_ITEM, 0))[0]

    def new_state(self, item: ItemInfo, first_day: int) -> bytes:
        return self.layout.stamped(self.blank, item_fields(item, first_day))

    @torch.no_grad()
    def advance(self, states: Sequence[bytes], periods: Sequence[Period]) -> list[bytes]:
        step = partial(base_step, self.model.encoder, self.cfg)
        return self.layout.updated(states, lambda st: fill_gaps(st, periods, step))

    def observe_errors(self, states: Sequence[bytes], errors: Sequence[TargetErrors]) -> list[bytes]:
        return list(states)  # MQ-CNN has no feedback path

    @torch.no_grad()
    def forecast(self, states: Sequence[bytes]) -> np.ndarray:
        st = self.layout.decode(states)
        origin, cal = base_origin(self.model, st), future_calendar(st["last_day"][:, 0], self.cfg.horizons, self.cfg.cadence)
        ctx, agn = self.model.decoder.contexts(origin, cal)
        q = self.model.decoder.quantiles(ctx, agn, cal) * (1 + torch.from_numpy(st["ema"]).float())[..., None]
        return q.numpy()  # (B, H, Q)
