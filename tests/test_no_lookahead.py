"""No look-ahead, for every method the backtest scores: a forecast at origin o depends on
nothing after o. Each check replaces the sales and prices after o, derives every input
again from the changed data (the page views too, when a run simulates them) and asks for
the same forecast at o (``models.backtest.leaked_origins``). The baselines (zero, QRF,
LightGBM, AutoETS) get the same check in tests/test_baselines.py."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from mqstream.models.registry import load_model
from mqstream.periods import Cadence, day_of_iso
from mqstream.models.backtest import StreamingReplay, leaked_origins
from mqstream.models.dataset import DemandSeries
from mqstream.models.mqcnn import MQCNN, MQCNNConfig, MQCNNForecaster
from mqstream.models.mqtransformer import MQTransformer, MQTransformerConfig, MQTransformerForecaster
from mqstream.models.pageviews import simulate_views
from mqstream.models.seasonal_naive import SeasonalNaive
from tests.model_helpers import torch_one_thread  # noqa: F401 (fixture)

START = day_of_iso("2010-06-07")
SMALL = dict(channels=8, dilations=(1, 2, 4), item_dim=4, context_dim=4, agnostic_dim=4, global_hidden=16,
             local_hidden=8)
ORIGINS = START + np.array([70, 75])


def series(n_items: int = 3, days: int = 110) -> DemandSeries:
    rng = np.random.default_rng(0)
    weekly = np.tile([3.0, 5.0, 4.0, 6.0, 2.0, 0.0, 1.0], days // 7 + 1)[:days]
    units = rng.poisson(weekly * rng.uniform(0.5, 2.0, (n_items, 1))).astype(np.float32)
    return DemandSeries(items=np.array([f"2{k:04d}" for k in range(n_items)]),
                       descriptions=np.array(["RED MUG"] * n_items), start_day=START, units=units,
                       price=np.full((n_items, days), 2.5, np.float32))


def neural(name: str, use_views: bool) -> StreamingReplay:
    torch.manual_seed(0)
    if name == "mqcnn":
        model = MQCNNForecaster(MQCNN(MQCNNConfig(**SMALL, use_views=use_views)))
    else:
        cfg = MQTransformerConfig(**SMALL, use_views=use_views, pe_dim=4, recent_days=8, year_window=1,
                                  memory_dim=4, head_dim=4, feedback_days=4, feedback_dim=4)
        net = MQTransformer(cfg)
        with torch.no_grad():  # the decoder's attention inputs start at 0 in training: open them here
            net.decoder.local_mlp[0].weight.normal_(0, 0.3)
        model = MQTransformerForecaster(net)
    return StreamingReplay(model, feedback_warmup=6)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("simulated_views", [False, True])
@pytest.mark.parametrize("name", ["mqcnn", "mqtransformer"])
def test_a_neural_model_served_as_the_worker_serves_it_uses_nothing_after_the_origin(name, simulated_views):
    assert leaked_origins(neural(name, simulated_views), series(), ORIGINS, simulated_views) == []


def test_seasonal_naive_uses_nothing_after_the_origin_even_with_simulated_views():
    assert leaked_origins(StreamingReplay(SeasonalNaive(), feedback_warmup=3), series(), ORIGINS, True) == []


def test_simulated_views_of_a_day_are_drawn_from_that_day_and_before():
    s = series(days=60)
    later = s.units.copy()
    later[:, 31:] = 500.0
    views, changed = (simulate_views(s.items, u, s.start_day) for u in (s.units, later))
    np.testing.assert_array_equal(views[:, :31], changed[:, :31])
    assert (changed[:, 31:] > views[:, 31:]).all()


@pytest.mark.parametrize("name", ["mqcnn", "mqtransformer", "seasonal-naive"])
def test_a_weekly_model_uses_nothing_after_the_origin_week(name):
    weeks = Cadence("week")
    start = weeks.of_iso("2010-01-04")
    s = replace(series(days=80), start_day=start, cadence=weeks)
    if name == "seasonal-naive":
        method = StreamingReplay(load_model(name, cadence=weeks), feedback_warmup=3)
    else:
        period = {"period": "week", "horizons": 13}
        torch.manual_seed(0)
        net = (MQCNN(MQCNNConfig(**SMALL, **period)) if name == "mqcnn" else
               MQTransformer(MQTransformerConfig(**SMALL, **period, pe_dim=4, recent_days=8, year_window=1,
                                                 memory_dim=4, head_dim=4, feedback_days=4, feedback_dim=4,
                                                 feedback_horizons=(1, 2, 4, 13))))
        method = StreamingReplay(load_forecaster(net), feedback_warmup=6)
    assert leaked_origins(method, s, start + np.array([60, 64])) == []


def load_forecaster(net):
    return MQCNNForecaster(net) if isinstance(net, MQCNN) else MQTransformerForecaster(net)
