"""Nixtla's neuralforecast as a maintained neural peer in the rolling-origin backtest.

``NHITSPeer`` is a ``ForecastMethod`` of ``models.backtest``: a published, maintained
implementation of a strong global neural forecaster (N-HiTS, Challu et al. 2023), so the
project's own neural models are measured against more than trees and ETS.

It follows the rules of the learned baselines (``models.baselines``): one global model is
trained once, on every item's daily units up to ``cutoff`` (no target after it), with the
multi-quantile pinball loss over the backtest's levels; then each origin is forecast from
the history up to that origin only, all items in one ``predict`` call. Page views are not
used, as by the headline models.

neuralforecast is an optional extra (``pip install 'mqstream[peers]'``) and slow to import,
so it is imported only when a peer is built.

TFT was measured and left out: on one CPU thread a training step of neuralforecast's TFT
takes about 15 s at its defaults and still about 1 s at hidden size 64 with 256 windows,
against about 0.1 s for this N-HiTS.
"""
from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd

from mqstream.models.dataset import DemandSeries
from mqstream.models.protocol import DEFAULT_HORIZONS, DEFAULT_QUANTILES

MISSING = "neuralforecast is not installed: pip install 'mqstream[peers]'"
# Lightning reports devices and deprecations on every fit and predict: it would drown the
# backtest's own output, and none of it is actionable here.
QUIET_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning")
TRAINER = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False)


def _neuralforecast() -> SimpleNamespace:
    """The few neuralforecast names used here, imported on first use."""
    try:
        from neuralforecast import NeuralForecast
        from neuralforecast.losses.pytorch import MQLoss
        from neuralforecast.models import NHITS
    except ImportError as e:
        raise ImportError(MISSING) from e
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return SimpleNamespace(NeuralForecast=NeuralForecast, MQLoss=MQLoss, NHITS=NHITS)


def long_frame(units: np.ndarray, start_day: int) -> pd.DataFrame:
    """neuralforecast's long format of (N, T) daily units whose first column is ``start_day``:
    ``unique_id`` is the row, ``ds`` the day index (integer frequency 1)."""
    n, t = units.shape
    return pd.DataFrame({"unique_id": np.repeat(np.arange(n), t),
                         "ds": np.tile(start_day + np.arange(t), n),
                         "y": units.ravel().astype(np.float32)})


class NHITSPeer:
    """N-HiTS trained once up to ``cutoff`` with ``MQLoss``, forecasting every origin.

    ``max_steps`` bounds the training cost (each step samples ``WINDOWS_PER_STEP`` windows
    from ``SERIES_PER_STEP`` items, whatever the number of items): on the development split
    (2,228 items, 547 training days) the default fits in about 4 minutes on one thread of a
    busy two-core machine and scores wQL 0.815; 1,000 steps fit in 1.7 minutes for 0.821.
    Training is seeded and runs on the CPU with data loading in-process, so two fits on the
    same data give the same weights.

    The loss is the pinball loss of each window in its own scale, so every window counts
    alike while wQL weighs items by volume; weighting windows by item volume was tried and
    scored worse (0.850 against 0.830, both with the "robust" scaler at 1,000 steps).
    """

    name = "nhits"
    WIDTH = 256  # units of each MLP layer: the library's 512 costs 2.5x as much per step
    WINDOWS_PER_STEP = 1024
    SERIES_PER_STEP = 32
    PREDICT_SERIES_PER_BATCH = 1024  # items per forward pass at prediction: fewer, larger batches
    # per-window mean and std, so items of any volume look alike to the network; the
    # median and MAD of "robust" collapse on intermittent counts (wQL 0.830 against 0.821
    # at 1,000 steps)
    SCALER = "standard"

    def __init__(self, cutoff: int, horizons: int = DEFAULT_HORIZONS,
                 quantiles: tuple[float, ...] = DEFAULT_QUANTILES, seed: int = 0,
                 max_steps: int = 2000, input_size: int | None = None):
        self.nf = _neuralforecast()  # fail here, not after the backtest has prepared its data
        self.cutoff = cutoff  # last day whose demand may be a training target
        self.horizons, self.quantiles, self.seed, self.max_steps = horizons, tuple(quantiles), seed, max_steps
        self.input_size = input_size or 3 * horizons  # 12 weeks at 28 days; 8 weeks scored the same

    def forecast(self, series: DemandSeries, views: np.ndarray, origins: np.ndarray) -> np.ndarray:
        if origins[0] <= self.cutoff:
            raise ValueError(f"{self.name}: origins must come after the training cutoff")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lightning's deprecations and device hints, every call
            engine = self._fit(series)
            per_origin = [self._predict(engine, series, int(o)) for o in origins]  # O x (N, H, Q)
        return np.stack(per_origin, axis=1)  # (N, O, H, Q)

    def _model(self):
        return self.nf.NHITS(
            h=self.horizons, input_size=self.input_size, loss=self.nf.MQLoss(quantiles=list(self.quantiles)),
            mlp_units=3 * [[self.WIDTH, self.WIDTH]], max_steps=self.max_steps,
            val_check_steps=self.max_steps,  # no validation set: never validate mid-training
            batch_size=self.SERIES_PER_STEP, windows_batch_size=self.WINDOWS_PER_STEP,
            valid_batch_size=self.PREDICT_SERIES_PER_BATCH, scaler_type=self.SCALER,
            random_seed=self.seed, **TRAINER)

    def _fit(self, series: DemandSeries):
        """A fitted ``NeuralForecast`` that has read no day after the cutoff."""
        train = series.units[:, : series.column(self.cutoff) + 1]  # (N, T_train)
        engine = self.nf.NeuralForecast(models=[self._model()], freq=1)
        engine.fit(long_frame(train, series.start_day))
        return engine

    def _predict(self, engine, series: DemandSeries, origin: int) -> np.ndarray:
        """(N, H, Q) quantiles in units from the ``input_size`` days to ``origin``: all the
        model reads (shorter histories are zero-padded by the library)."""
        stop = series.column(origin) + 1
        start = max(stop - self.input_size, 0)
        frame = engine.predict(df=long_frame(series.units[:, start:stop], series.start_day + start))
        frame = frame.sort_values(["unique_id", "ds"])
        columns = [c for c in frame.columns if c not in ("unique_id", "ds")]  # the levels, in order
        values = frame[columns].to_numpy(np.float64).reshape(len(series.items), self.horizons, len(columns))
        # pinball loss alone leaves negatives and crossings possible; sorting never raises it
        return np.sort(np.clip(values, 0.0, None), axis=-1)
