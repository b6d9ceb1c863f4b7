import sys

import numpy as np
import pytest
import torch

from mqstream.periods import day_of_iso
from mqstream.models.backtest import BacktestSplit, leaked_origins, prepare, run_method
from mqstream.models.baselines import ZeroForecast
from mqstream.models.dataset import DemandSeries
from mqstream.models.scores import wql
from mqstream.models.peers import MISSING, NHITSPeer
from mqstream.models.protocol import DEFAULT_HORIZONS, DEFAULT_QUANTILES

START = day_of_iso("2010-11-01")
DAYS = 200
ORIGINS = 4
CUTOFF = START + DAYS - 1 - DEFAULT_HORIZONS - ORIGINS  # each origin after it has all its targets
TINY_STEPS = 60  # enough to learn a weekly pattern on 20 items, seconds on one core


@pytest.fixture
def neuralforecast():
    return pytest.importorskip("neuralforecast")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the machine is shared, and more threads would only contend for it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def weekly_series(n_items: int = 20, seed: int = 0) -> DemandSeries:
    """Poisson demand with a strong weekly pattern (no sales on Saturdays), fixed prices."""
    rng = np.random.default_rng(seed)
    weekday = np.array([1.0, 1.2, 1.1, 1.0, 1.4, 0.0, 0.6])[(START + np.arange(DAYS) + 3) % 7]
    units = rng.poisson(rng.uniform(2, 12, (n_items, 1)) * weekday).astype(np.float32)  # (N, T)
    price = np.repeat(rng.uniform(1, 5, (n_items, 1)), DAYS, axis=1).astype(np.float32)  # (N, T)
    items = np.array([str(20001 + i) for i in range(n_items)])
    return DemandSeries(items=items, descriptions=np.array(["MUG"] * n_items), start_day=START,
                       units=units, price=price)


def test_a_peer_without_neuralforecast_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "neuralforecast", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'mqstream\[peers\]'") as raised:
        NHITSPeer(0)
    assert str(raised.value) == MISSING


def test_nhits_refuses_origins_not_after_the_cutoff(neuralforecast):
    series = weekly_series()
    with pytest.raises(ValueError, match="cutoff"):
        NHITSPeer(CUTOFF, max_steps=1).forecast(series, np.zeros_like(series.units), np.array([CUTOFF]))


@pytest.mark.slow
def test_nhits_forecasts_every_cell_and_beats_the_zero_forecast(neuralforecast):
    series = weekly_series()
    split = BacktestSplit(CUTOFF, CUTOFF + 1, CUTOFF + ORIGINS, min_sale_days=20)
    data = prepare(series, split)
    forecasts = run_method(NHITSPeer(CUTOFF, max_steps=TINY_STEPS), data, split)  # checks sign, order, finite
    assert forecasts.shape == (20, ORIGINS, DEFAULT_HORIZONS, len(DEFAULT_QUANTILES))
    zero = run_method(ZeroForecast(), data, split)
    assert wql(data.actuals, forecasts, split.quantiles) < 0.6 * wql(data.actuals, zero, split.quantiles)


@pytest.mark.slow
def test_nhits_uses_nothing_after_each_origin(neuralforecast):
    series = weekly_series(n_items=6)
    peer = NHITSPeer(CUTOFF, max_steps=5)  # leakage does not depend on how well it learned
    assert leaked_origins(peer, series, CUTOFF + np.array([1, 3])) == []
