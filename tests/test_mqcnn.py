"""MQ-CNN: the incremental serving path is the full forking-sequence path, one day at a time."""
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mqstream.models.features import series_batch
from mqstream.models.mqcnn import ema_scale
from mqstream.models.mqcnn import MQCNN, MQCNNConfig, MQCNNForecaster, new_base_state
from mqstream.models.mqtransformer import MQTransformer, MQTransformerConfig, MQTransformerForecaster
from mqstream.models.protocol import ItemInfo, Period
from tests.model_helpers import real_series, torch_one_thread  # noqa: F401 (fixture)

TINY = MQCNNConfig(channels=8, dilations=(1, 2, 4, 8), item_dim=4, context_dim=4, agnostic_dim=4,
                   global_hidden=16, local_hidden=8)
ITEMS = np.array(["85123A", "22423", "84879", "22418"])  # 22423 and 22418 start inside the window
START, DAYS = 14669, 420  # 2010-03-01, long enough for every ring buffer to wrap


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def real():
    return real_series(ITEMS, START, DAYS)


def forecaster(seed=0):
    torch.manual_seed(seed)
    model = MQCNN(TINY)
    with torch.no_grad():  # calibration factors that reorder levels: the running max must hold in both paths
        model.decoder.calibration.copy_(torch.tensor([1.5, 0.8, 1.0, 1.2, 1.0, 0.9, 1.3, 1.1, 1.4]))
    return MQCNNForecaster(model)


def replay(f, s, views, first, item_price):
    """(N, T, H, Q) forecasts published after each closed day (and at each item's creation,
    column first - 1), NaN elsewhere."""
    n, t = s.units.shape
    out = np.full((n, t, f.horizons, len(f.quantiles)), np.nan, np.float32)
    states = {}
    for col in range(-1, t):
        new = [i for i in range(n) if first[i] == col + 1]
        for i in new:
            states[i] = f.new_state(ItemInfo(s.items[i], s.descriptions[i], float(item_price[i])), START + col + 1)
        live = [i for i in range(n) if first[i] <= col]
        if live:
            adv = f.advance([states[i] for i in live], [
                Period(START + col, float(s.units[i, col]), float(views[i, col]), float(s.price[i, col]))
                for i in live])
            states.update(zip(live, adv))
        rows = [i for i in range(n) if first[i] <= col + 1]
        if col >= 0 and rows:
            out[rows, col] = f.forecast([states[i] for i in rows])
    return out, states



def assert_equal_to_item_scale(inc, full, batch, alpha, tol=1e-5):
    """|incremental - full| <= tol * item scale (1 + EMA of demand), the units the model
    predicts in. A quantile is a base plus increments clipped at 0, so a near-zero quantile
    of a 100-unit item carries float32 rounding of terms near 100 (about 1e-7 of the scale)."""
    scale = (1 + ema_scale(batch.units, alpha)).numpy()[..., None, None]  # (N, T, 1, 1)
    done = ~np.isnan(inc)
    assert done.any()
    err = np.abs(inc - full) / scale
    assert err[done].max() <= tol, err[done].max()

def test_incremental_forecasts_equal_full_recompute_on_real_data(real):
    s, views, first, item_price = real
    f = forecaster()
    inc, _ = replay(f, s, views, first, item_price)
    batch = series_batch(s.units, views, s.price, START, first, s.descriptions, item_price)
    with torch.no_grad():
        full = f.model(batch).numpy()  # (N, T, H, Q)
    assert not np.isnan(inc[1, first[1] - 1]).any()  # the cold-start origin is compared too
    assert_equal_to_item_scale(inc, full, batch, TINY.scale_alpha)


def test_quantiles_never_cross_and_never_go_negative(real):
    s, views, first, item_price = real
    f = forecaster(seed=3)
    with torch.no_grad():
        for p in f.model.parameters():
            p.mul_(5)  # large weights push the head to extremes
    batch = series_batch(s.units, views, s.price, START, first, s.descriptions, item_price)
    with torch.no_grad():
        q = f.model(batch).numpy()  # (N, T, H, Q): the serving path equals it (test above)
    assert (q >= 0).all()
    assert (np.diff(q, axis=-1) >= 0).all()


def test_cold_start_item_gets_positive_forecasts_that_depend_on_item_features():
    f = forecaster()
    states = [f.new_state(ItemInfo("99999", "RED SPOTTY MUG", 2.5), 15000),
              f.new_state(ItemInfo("99998", "JUMBO BAG VINTAGE", 0.4), 15000)]
    q = f.forecast(states)  # (2, H, Q)
    assert q.shape == (2, TINY.horizons, len(TINY.quantiles))
    assert (q[:, :, -1] > 0).all()  # demand is possible every day (most days sell nothing: the median may be 0)
    assert not np.allclose(q[0], q[1])


def test_state_round_trips_through_bytes():
    f = forecaster()
    state = f.new_state(ItemInfo("1", "A", 1.0), 15000)
    for d in range(30):
        (state,) = f.advance([state], [Period(15000 + d, d % 4, 2.0, 1.0)])
    copy = bytes(bytearray(state))
    assert f.layout.encode(f.layout.decode([copy]))[0] == state
    np.testing.assert_array_equal(f.forecast([copy]), f.forecast([state]))
    assert len(state) == 52 + 4 * (2 + TINY.channels) + 2 * TINY.channels * sum(TINY.dilations)  # float16 buffers


def test_a_new_state_holds_its_own_item_and_nothing_of_another():
    """New states are the model's blank state with the item's fields written over a copy:
    the same bytes as every field encoded from scratch, one item after another."""
    tiny_transformer = MQTransformerForecaster(MQTransformer(MQTransformerConfig(**vars(TINY))))
    for f in (forecaster(), tiny_transformer):
        for item, day in [(ItemInfo("a", "WHITE HEART MUG", 2.55), 15000), (ItemInfo("b", "", 0.0), 14000),
                          (ItemInfo("c", "x " * 400, 9e5), 16000)]:
            expected = f.layout.decode([f.blank])
            expected.update(new_base_state(f.cfg, item, day))
            assert f.new_state(item, day) == f.layout.encode(expected)[0]


def _advance_for(f, days):
    """A state with ``days`` of history: a quiet stretch (one call closes the gap), then a
    few selling days."""
    state = f.new_state(ItemInfo("1", "A", 1.0), 15000)
    (state,) = f.advance([state], [Period(15000 + days - 10, 1.0, 1.0, 1.0)])
    for d in range(days - 9, days):
        (state,) = f.advance([state], [Period(15000 + d, float(d % 3), 4.0, 1.0)])
    return state


def test_advance_cost_and_state_size_do_not_grow_with_history():
    f = forecaster()
    flops, sizes = [], []
    for days in (100, 1000):
        state = _advance_for(f, days)
        with FlopCounterMode(display=False) as counter:
            f.advance([state], [Period(15000 + days, 1.0, 1.0, 1.0)])
        flops.append(counter.get_total_flops())
        sizes.append(len(state))
    assert flops[0] == flops[1] > 0
    assert sizes[0] == sizes[1]


def test_a_missing_day_closes_with_no_sales_and_a_replayed_day_is_ignored():
    f = forecaster()
    a = b = f.new_state(ItemInfo("1", "A", 1.0), 15000)
    (a,) = f.advance([a], [Period(15000, 3.0, 5.0, 1.0)])
    (a,) = f.advance([a], [Period(15002, 2.0, 4.0, 1.0)])  # 15001 never reported
    (b,) = f.advance([b], [Period(15000, 3.0, 5.0, 1.0)])
    (b,) = f.advance([b], [Period(15001, 0.0, 0.0, 1.0)])
    (b,) = f.advance([b], [Period(15002, 2.0, 4.0, 1.0)])
    np.testing.assert_allclose(f.forecast([a]), f.forecast([b]), rtol=1e-6)
    (c,) = f.advance([b], [Period(15002, 9.0, 9.0, 1.0)])
    assert c == b
