"""MQTransformer (Eisenach et al. 2020, "MQTransformer: Multi-Horizon Forecasts with Context
Dependent and Feedback-Aware Attention"), read top to bottom.

MQ-CNN's dilated causal encoder and global/local decoder (``models.mqcnn``), plus:

(a) a learned positional encoding ``pe(day)`` from the day's calendar/event features;
(b) horizon-specific decoder-encoder attention: the query of horizon h carries its context
    and ``pe(t+h)``; keys carry the past encoder state (projected to ``memory_dim``, stored as
    float16) and ``pe(s)`` of its day, plus a learned bias per lag (t+h) - s, so horizon h can
    align with the same weekday in earlier weeks. It attends over the last ``recent_days``
    days and, with ``use_year`` (the default), over the days around t+1..t+H one year
    (364 days) earlier, so the query for t+h can find the same context last year; the memory
    then keeps the last 364 + ``year_window`` encoder states (2.7x the state without it);
(c) feedback-aware attention over the item's recent forecast errors: a grid of the last
    ``feedback_days`` target days x ``feedback_horizons``, each cell the published quantiles
    and the actual, read relative to the item's current scale.

Training (``models.training``) starts from a trained MQ-CNN (``warm_start``: the attention
outputs enter the decoder through zeroed weights, so training starts at the MQ-CNN's
forecasts, and the parts the MQ-CNN lacks learn at a larger step) and runs two passes per step: a first pass without feedback makes the forecasts
(detached) that the second pass sees as errors, only those whose target day is closed at the
origin, exactly as the serving worker would see them.

Serving (``MQTransformerForecaster``): MQ-CNN's state plus a ring buffer of the last
``memory_days`` projected encoder states (slot = day mod memory_days) and the error grid
(slot = target day mod feedback_days). ``advance`` is O(1) in history; ``forecast`` reads a
bounded memory.

Public API
----------
- ``MQTransformerConfig`` (extends ``MQCNNConfig``), ``MQTransformer(cfg)``, ``warm_start(mqcnn)``:
  ``forward(batch, origins, published=None) -> (B, S, H, Q)`` units;
  ``published`` (B, T, H, Q) are the forecasts published at each origin column (NaN where
  none), from which the error memory is built; ``two_pass(batch, origins)`` makes them.
- ``MQTransformerForecaster(model)``: ``models.protocol.QuantileForecaster``.
  State bytes per item: MQ-CNN's + 2 * memory_days * memory_dim + 4 * feedback_days
  + 2 * feedback_days * len(feedback_horizons) * (Q + 1); 11,332 with the defaults (conv ring
  buffers 4,032, attention memory 371 days x 8 float16 = 5,936, error memory 1,176).
  Errors are stored as float16 (clipped at 65504 units); the full path rounds them the same
  way, so both paths stay equal to float32 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mqstream.models.features import N_CALENDAR, N_PAST, SeriesBatch, calendar, encoder_inputs
from mqstream.models.mqcnn import (BLANK_ITEM, MQCNN, CausalConvEncoder, ItemEncoder, MQCNNConfig, MQDecoder,
                                   StateLayout, stored, base_fields, base_origin, base_step, ema_scale, fill_gaps,
                                   future_calendar, item_fields, model_version, new_base_state, origin_features)
from mqstream.models.protocol import ItemInfo, Period, TargetErrors, error_rows

FP16_MAX = 65504.0  # errors are stored as float16; larger values clip
ERROR_CLIP = 10.0  # scaled errors beyond +-10 scales carry no more information


@dataclass
class MQTransformerConfig(MQCNNConfig):
    pe_dim: int = 16  # learned positional encoding of a day from its calendar features
    recent_days: int = 35  # attention sees the last 5 weeks ...
    use_year: bool = True  # ... and the same weeks last year: 371 stored days, not 35
    year_window: int = 7  # last year's weeks are t+1-364-7 .. t+H-364+7
    memory_dim: int = 8  # encoder states are projected before storing: state bytes (eval/mqtransformer-memory.md)
    memory_dtype: str = "float16"  # stored projected states; the full path rounds the same way
    heads: int = 2
    head_dim: int = 16
    feedback_days: int = 14  # error memory: target days t-13..t ...
    feedback_horizons: tuple[int, ...] = (1, 7, 14, 28)  # ... at these horizons
    feedback_dim: int = 16
    # ablations: without one, its attention output enters the decoder as zeros
    encoder_attention: bool = True  # (b) decoder-encoder attention
    feedback_attention: bool = True  # (c) feedback-aware attention over the error memory

    def __post_init__(self):
        super().__post_init__()
        self.feedback_horizons = tuple(self.feedback_horizons)
        if self.feedback_days > self.recent_days:
            raise ValueError("feedback_days must be <= recent_days (errors reuse the recent days' encoding)")
        if self.memory_dtype not in ("float16", "float32"):
            raise ValueError(f"memory_dtype must be 'float16' or 'float32', not {self.memory_dtype!r}")

    @property
    def history_needed(self) -> int:
        """MQ-CNN's, or the oldest period attention reaches, whichever is further back."""
        return max(super().history_needed, self.memory_days)

    @property
    def memory_days(self) -> int:
        """Ring buffer length: the oldest period attention reaches is t - memory_days + 1."""
        return self.cadence.year + self.year_window if self.use_year else self.recent_days

    def attention_lags(self) -> np.ndarray:
        """Memory slots attended, as lags from the origin (slot l is day t - l), ascending."""
        if not self.use_year:
            return np.arange(self.recent_days)
        year = np.arange(self.cadence.year - self.horizons - self.year_window, self.memory_days)
        return np.union1d(np.arange(self.recent_days), year)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | float,
           null_k: torch.Tensor, null_v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of H queries over L slots plus an always-valid learned null slot
    (so an item with no history attends to something). q (..., H, n, d), k/v (..., L, n, d),
    valid (..., L), bias broadcastable to (..., n, H, L) -> (..., H, n * d). One fused
    ``scaled_dot_product_attention``: half the time of the einsum/softmax it replaced."""
    lead = q.shape[:-3]
    k = torch.cat([null_k.expand(*lead, 1, *null_k.shape), k], -3)  # (..., 1 + L, n, d)
    v = torch.cat([null_v.expand(*lead, 1, *null_v.shape), v], -3)
    gate = F.pad(torch.zeros(valid.shape).masked_fill(~valid, float("-inf")), (1, 0))  # (..., 1 + L)
    if torch.is_tensor(bias):
        bias = F.pad(bias, (1, 0))  # the null slot has no lag
    mask = gate[..., None, None, :] + bias  # (..., n, H, 1 + L)
    out = F.scaled_dot_product_attention(q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2),
                                         attn_mask=mask)  # (..., n, H, d)
    return out.transpose(-3, -2).flatten(-2)  # (..., H, n * d)


def error_features(actual: torch.Tensor, fcst: torch.Tensor, ema: torch.Tensor, horizons: torch.Tensor,
                   ages: torch.Tensor, n_horizons: int, n_days: int) -> torch.Tensor:
    """Error cells read against the item's current scale: actual (..., D, K), published
    quantiles (..., D, K, Q) (NaN where missing), ema (...) -> (..., D, K, 2Q + 2)."""
    scale = (1 + ema)[..., None, None, None]
    z = ((actual.unsqueeze(-1) - fcst) / scale).clamp(-ERROR_CLIP, ERROR_CLIP)  # (..., D, K, Q)
    below = (actual.unsqueeze(-1) < fcst).to(z.dtype)  # where the actual fell among the quantiles
    pos = torch.stack(torch.broadcast_tensors(horizons[None, :] / n_horizons, ages[:, None] / n_days), -1)
    pos = pos.expand(*z.shape[:-1], 2)  # (..., D, K, 2)
    return torch.nan_to_num(torch.cat([z, below, pos], -1))


def asdict_base(cfg: MQCNNConfig) -> dict:
    """The hyper-parameters MQ-CNN and MQTransformer share."""
    return {f: getattr(cfg, f) for f in MQCNNConfig.__dataclass_fields__}


def n_error_features(cfg: MQTransformerConfig) -> int:
    return 2 * len(cfg.quantiles) + 2


def fp16(x: torch.Tensor) -> torch.Tensor:
    """How the state stores errors; the full path applies the same rounding."""
    return x.clamp(max=FP16_MAX).half().float()


class MQTransformer(nn.Module):
    def __init__(self, cfg: MQTransformerConfig):
        super().__init__()
        self.cfg = cfg
        c, p, nh, hd, fd = cfg.channels, cfg.pe_dim, cfg.heads, cfg.head_dim, cfg.feedback_dim
        self.encoder = CausalConvEncoder(N_PAST, c, cfg.dilations, cfg.buffer_dtype)
        self.item = ItemEncoder(cfg.item_dim)
        self.decoder = MQDecoder(cfg, c + cfg.item_dim + 3, n_extra=nh * hd + fd)
        self.pe = nn.Sequential(nn.Linear(N_CALENDAR, p), nn.Tanh(), nn.Linear(p, p))
        self.memory = nn.Linear(c, cfg.memory_dim)
        # (b) decoder-encoder attention
        self.query = nn.Linear(cfg.context_dim + p, nh * hd)
        self.key_mem, self.key_pe = nn.Linear(cfg.memory_dim, nh * hd), nn.Linear(p, nh * hd, bias=False)
        self.value_mem, self.value_pe = nn.Linear(cfg.memory_dim, nh * hd), nn.Linear(p, nh * hd, bias=False)
        self.lag_bias = nn.Parameter(torch.zeros(nh, cfg.memory_days + cfg.horizons))  # by lag (t+h) - s
        self.null_k, self.null_v = nn.Parameter(torch.zeros(nh, hd)), nn.Parameter(torch.zeros(nh, hd))
        # (c) feedback-aware attention
        ne = n_error_features(cfg)
        self.fb_query = nn.Linear(cfg.context_dim + p, fd)
        self.fb_key, self.fb_value = nn.Linear(ne + p, fd), nn.Linear(ne, fd)
        self.fb_null_k, self.fb_null_v = nn.Parameter(torch.zeros(1, fd)), nn.Parameter(torch.zeros(1, fd))
        self.slots = torch.from_numpy(cfg.attention_lags())  # (L,) lag of each attended slot from t
        self.lags = torch.arange(1, cfg.horizons + 1)[:, None] + self.slots  # (H, L): lag from t+h

    @torch.no_grad()
    def warm_start(self, mqcnn: MQCNN) -> None:
        """Take a trained MQ-CNN's encoder, item encoder and decoder, with the decoder's weights
        on the attention outputs zeroed: the forecasts start equal to the MQ-CNN's, and
        training then learns what attention adds."""
        if asdict_base(mqcnn.cfg) != asdict_base(self.cfg):
            raise ValueError("warm start needs an MQ-CNN with the same shared hyper-parameters")
        own = self.state_dict()
        for k, v in mqcnn.state_dict().items():
            if k == "decoder.calibration":
                own[k].fill_(1.0)  # the MQ-CNN's factors fit its forecasts; this model fits its own
                continue
            if k == "decoder.local_mlp.0.weight":  # (hidden, n_local): MQ-CNN's inputs come first
                own[k].zero_()[:, : v.shape[1]] = v
            else:
                own[k].copy_(v)

    @torch.no_grad()
    def attention_use(self) -> dict[str, float]:
        """Mean |weight| of the decoder's first local layer on each group of its inputs: how
        much the forecasts read each attention (both start at 0 from a warm start)."""
        w = self.decoder.local_mlp[0].weight.abs()  # (hidden, inputs): attention outputs come last
        fb = self.cfg.feedback_dim
        enc = fb + self.cfg.heads * self.cfg.head_dim
        return {"other_inputs": round(w[:, :-enc].mean().item(), 4),
                "encoder_attention": round(w[:, -enc:-fb].mean().item(), 4),
                "feedback_attention": round(w[:, -fb:].mean().item(), 4)}

    def positional(self, days: np.ndarray) -> torch.Tensor:
        """(...) day indices -> (..., pe_dim), computed once per distinct day."""
        uniq, inv = np.unique(days, return_inverse=True)
        return self.pe(torch.from_numpy(calendar(uniq, self.cfg.cadence)))[torch.from_numpy(inv.reshape(np.shape(days)))]

    def keys_values(self, mem: torch.Tensor, pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention keys and values of stored states (..., dm) on days with encoding (..., p)
        -> (..., nh, hd) each."""
        shape = (self.cfg.heads, self.cfg.head_dim)
        return ((self.key_mem(mem) + self.key_pe(pe)).unflatten(-1, shape),
                (self.value_mem(mem) + self.value_pe(pe)).unflatten(-1, shape))

    def decode(self, origin: torch.Tensor, origin_day: np.ndarray, ema: torch.Tensor, k: torch.Tensor,
               v: torch.Tensor, mem_valid: torch.Tensor, err_actual: torch.Tensor, err_fcst: torch.Tensor) -> torch.Tensor:
        """Shared by both paths. Leading dims (...) are origins: origin (..., n_origin),
        origin_day (...), ema (...), keys/values (..., L, nh, hd) of the attended slots (slot i
        is day t - slots[i]), mem_valid (..., L), err_actual (..., D, K), err_fcst
        (..., D, K, Q) where row a is target day t - a -> (..., H, Q) quantiles in units."""
        cfg = self.cfg
        cal = future_calendar(origin_day, cfg.horizons, cfg.cadence)  # (..., H, N_CAL)
        ctx, agn = self.decoder.contexts(origin, cal)  # (..., H, dc), (..., da)
        qin = torch.cat([ctx, self.pe(cal)], -1)  # (..., H, dc + p): context and pe(t+h)
        q = self.query(qin).unflatten(-1, (cfg.heads, cfg.head_dim))  # (..., H, nh, hd)
        att = attend(q, k, v, mem_valid, self.lag_bias[:, self.lags], self.null_k, self.null_v)  # (..., H, nh*hd)

        d, hs = cfg.feedback_days, torch.tensor(cfg.feedback_horizons, dtype=torch.float32)
        feats = error_features(err_actual, err_fcst, ema, hs, torch.arange(d, dtype=torch.float32),
                               cfg.horizons, d).flatten(-3, -2)  # (..., D*K, ne)
        pe_err = self.positional(np.asarray(origin_day)[..., None] - np.arange(d))  # (..., D, p)
        pe_err = pe_err.unsqueeze(-2).expand(*err_fcst.shape[:-1], -1).flatten(-3, -2)  # (..., D*K, p)
        err_valid = ~torch.isnan(err_fcst[..., 0]).flatten(-2)  # (..., D*K)
        fk = self.fb_key(torch.cat([feats, pe_err], -1)).unsqueeze(-2)  # (..., D*K, 1, fd)
        fv = self.fb_value(feats).unsqueeze(-2)
        fb = attend(self.fb_query(qin).unsqueeze(-2), fk, fv, err_valid, 0.0, self.fb_null_k, self.fb_null_v)
        att, fb = att * cfg.encoder_attention, fb * cfg.feedback_attention  # an ablated branch adds nothing

        return self.decoder.quantiles(ctx, agn, cal, torch.cat([att, fb], -1)) * (1 + ema)[..., None, None]

    def forward(self, batch: SeriesBatch, origins: torch.Tensor | None = None,
                published: torch.Tensor | None = None) -> torch.Tensor:
        """Forking sequences at origin columns (B, S) (default all) -> (B, S, H, Q) units.
        ``published`` (B, T, H, Q): forecasts made at each column, NaN where none; None
        means no feedback yet (the first training pass)."""
        cfg = self.cfg
        B, T = batch.units.shape
        if origins is None:
            origins = torch.arange(T).expand(B, T)
        S = origins.shape[1]
        h = self.encoder(encoder_inputs(batch.past, cfg.use_views), batch.exists)  # (B, T, C)
        ema = ema_scale(batch.units, cfg.scale_alpha)  # (B, T)
        age = batch.exists.cumsum(1)
        at = lambda x: torch.take_along_dim(x, origins.reshape(B, S, *([1] * (x.dim() - 2))), 1)
        item = self.item(batch.tokens, batch.band).unsqueeze(1).expand(-1, S, -1)  # (B, S, E)
        origin = origin_features(at(h), item, at(ema), at(age), at(batch.price), cfg.cadence)  # (B, S, n_origin)

        # keys and values once per column, then each origin gathers its attended slots
        mem = stored(self.memory(h), getattr(torch, cfg.memory_dtype))  # (B, T, dm) as the state holds it
        k_all, v_all = self.keys_values(mem, self.positional(batch.days.numpy()))  # (B, T, nh, hd)
        cols = origins[..., None] - self.slots  # (B, S, L) column of each attended slot
        inside = cols >= 0
        cols = cols.clamp(min=0)
        rows = torch.arange(B)[:, None, None]
        mem_valid = inside & batch.exists[rows, cols]

        hs = torch.tensor(cfg.feedback_horizons)
        target = origins[..., None] - torch.arange(cfg.feedback_days)  # (B, S, D)
        src = target[..., None] - hs  # (B, S, D, K) origin column that forecast the cell
        ok = src >= 0
        if published is None:
            fcst = torch.full((*src.shape, len(cfg.quantiles)), float("nan"))
        else:
            fcst = published[rows[..., None], src.clamp(min=0), (hs - 1).expand_as(src)]  # (B, S, D, K, Q)
            fcst = torch.where(ok[..., None], fp16(fcst), float("nan"))
        actual = fp16(batch.units[rows, target.clamp(min=0)]).unsqueeze(-1).expand_as(src)  # (B, S, D, K)
        return self.decode(origin, batch.days[origins].numpy(), at(ema), k_all[rows, cols], v_all[rows, cols],
                           mem_valid, actual, fcst)

    def two_pass(self, batch: SeriesBatch, origins: torch.Tensor) -> torch.Tensor:
        """Training forward at a block of consecutive origins (B, S): a first pass without
        feedback, detached, publishes the forecasts the error memory of ``origins`` needs;
        the second pass reads them. -> (B, S, H, Q)."""
        B, T = batch.units.shape
        back = self.cfg.feedback_days + max(self.cfg.feedback_horizons)
        first = (origins[:, :1] - back + torch.arange(back + origins.shape[1])).clamp(0, T - 1)  # (B, S1)
        with torch.no_grad():
            pub = self(batch, first)  # (B, S1, H, Q)
        can = batch.exists | torch.roll(batch.exists, -1, 1)  # an origin exists or is a cold start
        published = torch.full((B, T, *pub.shape[2:]), float("nan"))
        published[torch.arange(B)[:, None], first] = pub
        published[~can] = float("nan")
        return self(batch, origins, published)


# --- incremental serving ----------------------------------------------------------------
class MQTransformerForecaster:
    """``QuantileForecaster`` over an ``MQTransformer``. Batched, float32, no autograd; the
    caller chooses ``torch.set_num_threads``."""

    name = "mqtransformer"

    def __init__(self, model: MQTransformer):
        self.model = model.eval()
        self.cfg = cfg = model.cfg
        self.horizons, self.quantiles, self.cadence = cfg.horizons, cfg.quantiles, cfg.cadence
        self.history_needed = cfg.history_needed
        self.version = model_version(self.name, cfg, model)
        k, q = len(cfg.feedback_horizons), len(cfg.quantiles)
        self.feedback_column = np.full(cfg.horizons + 2, -1)  # horizon -> its column of the error memory
        self.feedback_column[list(cfg.feedback_horizons)] = np.arange(k)
        self.layout = StateLayout(tag=0x4D51_0002, fields=base_fields(cfg) + [
            ("memory", np.dtype(cfg.memory_dtype).type, (cfg.memory_days, cfg.memory_dim)),  # slot = day mod L
            ("fb_day", np.int32, (cfg.feedback_days,)),  # target day of each error row
            ("fb_actual", np.float16, (cfg.feedback_days, k)),
            ("fb_fcst", np.float16, (cfg.feedback_days, k, q)),  # NaN where not observed
        ])
        self.blank = self._blank()

    def _blank(self) -> bytes:
        cfg, k, q = self.cfg, len(self.cfg.feedback_horizons), len(self.cfg.quantiles)
        st = new_base_state(cfg, BLANK_ITEM, 0)
        st["memory"] = np.zeros((1, cfg.memory_days, cfg.memory_dim))
        st["fb_day"] = np.full((1, cfg.feedback_days), np.iinfo(np.int32).min)
        st["fb_actual"] = np.full((1, cfg.feedback_days, k), np.nan)
        st["fb_fcst"] = np.full((1, cfg.feedback_days, k, q), np.nan)
        return self.layout.encode(st)[0]

    def new_state(self, item: ItemInfo, first_day: int) -> bytes:
        return self.layout.stamped(self.blank, item_fields(item, first_day))

    def _step(self, st: dict[str, np.ndarray], rows: np.ndarray, periods: Sequence[Period]) -> None:
        h = base_step(self.model.encoder, self.cfg, st, rows, periods)  # (R, C)
        slot = st["last_day"][rows, 0] % self.cfg.memory_days
        st["memory"][rows, slot] = stored(self.model.memory(h), getattr(torch, self.cfg.memory_dtype)).numpy()

    @torch.no_grad()
    def advance(self, states: Sequence[bytes], periods: Sequence[Period]) -> list[bytes]:
        return self.layout.updated(states, lambda st: fill_gaps(st, periods, self._step))

    def observe_errors(self, states: Sequence[bytes], errors: Sequence[TargetErrors]) -> list[bytes]:
        """Keep each item's errors at ``feedback_horizons`` of a target among its last
        ``feedback_days`` closed days; order of arrival does not matter. One indexed write
        for the whole batch, into the feedback fields only."""
        cfg, n = self.cfg, len(states)
        if not n:
            return []
        rows = self.layout.rows(states, writable=True)
        st = self.layout.views(rows, ("last_day", "fb_day", "fb_actual", "fb_fcst"))
        target = np.array([e.target for e in errors], np.int64)
        last = st["last_day"][:, 0]
        kept = (last - cfg.feedback_days < target) & (target <= last)  # (B,)
        slot = target % cfg.feedback_days
        item = np.arange(n)
        new = kept & (st["fb_day"][item, slot] != target)
        st["fb_day"][item[new], slot[new]] = target[new]
        st["fb_actual"][item[new], slot[new]] = np.nan
        st["fb_fcst"][item[new], slot[new]] = np.nan
        cells = error_rows(errors)
        col = self.feedback_column[np.clip(cells.horizons, 0, cfg.horizons + 1)]
        take = kept[cells.owner] & (col >= 0)
        at = cells.owner[take], slot[cells.owner[take]], col[take]
        st["fb_actual"][at] = np.minimum(cells.actuals[take], FP16_MAX).astype(np.float16)
        st["fb_fcst"][at] = np.minimum(cells.forecasts[take].astype(np.float32), FP16_MAX).astype(np.float16)
        return [row.tobytes() for row in rows]

    @torch.no_grad()
    def forecast(self, states: Sequence[bytes]) -> np.ndarray:
        cfg = self.cfg
        st = self.layout.decode(states)
        origin = base_origin(self.model, st)
        last = st["last_day"][:, 0].astype(np.int64)  # (B,)
        lag = self.model.slots.numpy()
        mem = torch.from_numpy(st["memory"][np.arange(len(last))[:, None], (last[:, None] - lag) % cfg.memory_days]
                               .astype(np.float32))  # (B, L, dm)
        k, v = self.model.keys_values(mem, self.model.positional(last[:, None] - lag))  # (B, L, nh, hd)
        mem_valid = torch.from_numpy(lag[None, :] < st["n_days"][:, :1])  # (B, L): day t - lag exists
        target = last[:, None] - np.arange(cfg.feedback_days)  # (B, D)
        row = target % cfg.feedback_days
        b = np.arange(len(last))[:, None]
        here = (st["fb_day"][b, row] == target)[..., None]  # (B, D, 1) the row holds this target
        actual = torch.from_numpy(np.where(here, st["fb_actual"][b, row], np.nan).astype(np.float32))
        fcst = torch.from_numpy(np.where(here[..., None], st["fb_fcst"][b, row], np.nan).astype(np.float32))
        return self.model.decode(origin, last, torch.from_numpy(st["ema"][:, 0]).float(), k, v, mem_valid,
                                 actual, fcst).numpy()  # (B, H, Q)
