"""The scores of docs/EVALUATION.md over backtest arrays.

Every function takes the same two arrays, so that every method is scored on exactly the
same cells:

- ``actuals``: (N, O, H) units sold, product n, origin o, horizon h+1 (target day o+h+1);
- ``forecasts``: (N, O, H, Q) the quantiles forecast for those cells, Q along ``quantiles``.

Origins must be consecutive days (EVALUATION.md: every day in the range is an origin);
``volatility`` relies on it to line up the forecasts of one target day.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

HORIZON_BUCKETS: dict[str, tuple[int, int]] = {"1-7": (1, 7), "8-14": (8, 14), "15-28": (15, 28)}
OTHER_HORIZONS = "other"  # the bucket of a horizon past the last one (a model with longer horizons)


BUCKET_NAMES: tuple[str, ...] = (*HORIZON_BUCKETS, OTHER_HORIZONS)


def bucket_indices(horizons: np.ndarray) -> np.ndarray:
    """The index in ``BUCKET_NAMES`` of the horizon bucket each horizon (1-based) falls in."""
    horizons = np.asarray(horizons)
    found = np.full(horizons.shape, len(HORIZON_BUCKETS))
    for i, (lo, hi) in enumerate(HORIZON_BUCKETS.values()):
        found[(lo <= horizons) & (horizons <= hi)] = i
    return found


def pinball_loss(y: np.ndarray | float, f: np.ndarray | float, q: float | np.ndarray) -> np.ndarray:
    """Elementwise ``max(q·(y−f), (q−1)·(y−f))``; ``q`` broadcasts (one level, or one per
    quantile of a forecast's last axis)."""
    diff = np.asarray(y, np.float64) - np.asarray(f, np.float64)
    q = np.asarray(q, np.float64)
    return np.maximum(q * diff, (q - 1.0) * diff)


def wql_per_quantile(actuals: np.ndarray, forecasts: np.ndarray,
                     quantiles: Sequence[float]) -> np.ndarray:
    """(Q,) ``2·Σ pinball_q / Σ |y|`` over every cell, one value per quantile level."""
    _check_shapes(actuals, forecasts, quantiles)
    scale = np.abs(actuals).sum(dtype=np.float64)
    if scale == 0:
        raise ValueError("wQL is undefined when every actual is zero")
    return np.array([2.0 * pinball_loss(actuals, forecasts[..., k], q).sum() / scale
                     for k, q in enumerate(quantiles)])


def wql(actuals: np.ndarray, forecasts: np.ndarray, quantiles: Sequence[float]) -> float:
    """The headline: mean over quantile levels of the per-quantile wQL."""
    return float(wql_per_quantile(actuals, forecasts, quantiles).mean())


def wql_by_bucket(actuals: np.ndarray, forecasts: np.ndarray,
                  quantiles: Sequence[float]) -> dict[str, float]:
    """wQL restricted to each horizon bucket of EVALUATION.md (each with its own Σ|y|) that
    the forecasts reach; buckets count periods (with 13 weeks: 1-7 and 8-14, the latter cut at 13)."""
    return {name: wql(actuals[:, :, lo - 1:hi], forecasts[:, :, lo - 1:hi], quantiles)
            for name, (lo, hi) in HORIZON_BUCKETS.items() if lo <= actuals.shape[2]}


def coverage_80(actuals: np.ndarray, forecasts: np.ndarray, quantiles: Sequence[float]) -> float:
    """Share of cells with ``f_0.1 ≤ y ≤ f_0.9`` (target 0.80)."""
    _check_shapes(actuals, forecasts, quantiles)
    lower = forecasts[..., _level_index(quantiles, 0.1)]
    upper = forecasts[..., _level_index(quantiles, 0.9)]
    return float(((lower <= actuals) & (actuals <= upper)).mean())


def volatility(actuals: np.ndarray, forecasts: np.ndarray, quantiles: Sequence[float]) -> float:
    """How much the median forecast of one target day moves as its origin advances.

    EVALUATION.md: "for each product and target day, the median forecast made at successive
    origins; the mean absolute change between consecutive origins, divided by the mean
    actual". Read here as one pooled ratio over every pair of consecutive origins (o, o+1)
    that both forecast the same product and target day:

        mean over pairs |P50_{o+1}(n, D) − P50_o(n, D)|  /  mean over pairs y(n, D)

    Pooling (rather than a ratio per product and day) keeps zero-demand days defined and
    weighs products by volume, like wQL. Pairs come from origin o at horizon h ≥ 2 and
    origin o+1 at horizon h−1, so with O origins and H horizons there are (O−1)·(H−1) per
    product; target days near the edges of the range have fewer pairs, as they should.
    """
    _check_shapes(actuals, forecasts, quantiles)
    median = forecasts[..., _level_index(quantiles, 0.5)]  # (N, O, H)
    earlier = median[:, :-1, 1:]  # origin o, horizons 2..H
    later = median[:, 1:, :-1]  # origin o+1, horizons 1..H-1: the same target days
    target_actuals = actuals[:, 1:, :-1]
    mean_actual = target_actuals.mean(dtype=np.float64)
    if mean_actual == 0:
        raise ValueError("volatility is undefined when every actual is zero")
    return float(np.abs(later - earlier).mean(dtype=np.float64) / mean_actual)


def calibration(actuals: np.ndarray, forecasts: np.ndarray, quantiles: Sequence[float]) -> dict:
    """Whether each quantile level is where it claims to be, and where the 80% coverage comes from.

    For a level q with forecast f_q, a calibrated forecaster has

        P(y < f_q)  ≤  q  ≤  P(y ≤ f_q)

    (the two ends differ by the share of ties y = f_q: with integer demand that is mostly
    zero, a P10 of 0 ties with every zero day). Returned, JSON-ready:

    - ``below`` / ``at_or_below``: per level, the share of cells with y < f_q / y ≤ f_q;
    - ``zero_share``: the share of cells whose actual is 0;
    - ``coverage_80_zero_days`` / ``coverage_80_sale_days``: ``coverage_80`` over the cells
      with y = 0 / y > 0 (None where there are none). Their mean weighted by ``zero_share``
      is ``coverage_80``, which equals ``at_or_below[0.9] − below[0.1]`` when P10 ≤ P90.

    Any shape works as long as ``forecasts`` is ``actuals`` + (Q,).
    """
    _check_shapes(actuals, forecasts, quantiles)
    lower = forecasts[..., _level_index(quantiles, 0.1)]
    upper = forecasts[..., _level_index(quantiles, 0.9)]
    inside = (lower <= actuals) & (actuals <= upper)
    zero = actuals == 0
    return {
        "below": {f"{q:.1f}": float((actuals < forecasts[..., k]).mean()) for k, q in enumerate(quantiles)},
        "at_or_below": {f"{q:.1f}": float((actuals <= forecasts[..., k]).mean())
                        for k, q in enumerate(quantiles)},
        "zero_share": float(zero.mean()),
        "coverage_80_zero_days": _mean_or_none(inside[zero]),
        "coverage_80_sale_days": _mean_or_none(inside[actuals > 0]),
    }


def score(actuals: np.ndarray, forecasts: np.ndarray, quantiles: Sequence[float]) -> dict:
    """Every number EVALUATION.md reports for one method, JSON-ready."""
    per_quantile = wql_per_quantile(actuals, forecasts, quantiles)
    return {
        "wql": float(per_quantile.mean()),
        "wql_by_bucket": wql_by_bucket(actuals, forecasts, quantiles),
        "wql_per_quantile": {f"{q:.1f}": float(v) for q, v in zip(quantiles, per_quantile)},
        "coverage_80": coverage_80(actuals, forecasts, quantiles),
        "volatility": volatility(actuals, forecasts, quantiles),
    }


def item_losses(actuals: np.ndarray, forecasts: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """(N,) each product's share of the wQL numerator: ``2·Σ_{o,h} mean_q pinball_q``. Summed
    over products and divided by ``Σ |y|`` it is ``wql``; the unit a paired bootstrap resamples."""
    _check_shapes(actuals, forecasts, quantiles)
    per_q = [pinball_loss(actuals, forecasts[..., k], q).sum(axis=(1, 2)) for k, q in enumerate(quantiles)]
    return 2.0 * np.mean(per_q, axis=0)


def paired_bootstrap(loss_a: np.ndarray, loss_b: np.ndarray, scale: np.ndarray, draws: int = 2000,
                     seed: int = 0) -> dict:
    """wQL(a) − wQL(b) over the same products, with a 95% percentile interval from resampling
    products with replacement (the pair stays together: both methods see each draw).
    ``loss_a``/``loss_b`` from ``item_losses``, ``scale`` (N,) each product's ``Σ |y|``."""
    rng = np.random.default_rng(seed)
    diff = np.asarray(loss_a, np.float64) - np.asarray(loss_b, np.float64)  # (N,)
    draw = rng.integers(0, len(diff), size=(draws, len(diff)))  # (draws, N) products per draw
    boot = diff[draw].sum(1) / np.maximum(scale[draw].sum(1), 1e-12)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"difference": float(diff.sum() / scale.sum()), "ci95": [float(lo), float(hi)], "draws": draws}


def _level_index(quantiles: Sequence[float], level: float) -> int:
    matches = [k for k, q in enumerate(quantiles) if abs(q - level) < 1e-9]
    if not matches:
        raise ValueError(f"quantile level {level} is required; got {tuple(quantiles)}")
    return matches[0]


def _mean_or_none(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if flags.size else None


def _check_shapes(actuals: np.ndarray, forecasts: np.ndarray, quantiles: Sequence[float]) -> None:
    if forecasts.shape != actuals.shape + (len(quantiles),):
        raise ValueError(f"forecasts {forecasts.shape} must be actuals {actuals.shape} "
                         f"+ ({len(quantiles)},) quantiles")
