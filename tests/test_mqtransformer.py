"""MQTransformer: incremental serving (conv ring buffers, attention memory, error memory)
is the full forking-sequence path one day at a time, feedback included."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mqstream.models.features import series_batch
from mqstream.models.mqcnn import MQCNN, MQCNNConfig, ema_scale
from mqstream.models.mqtransformer import MQTransformer, MQTransformerConfig, MQTransformerForecaster
from mqstream.models.protocol import ItemInfo, Period, TargetErrors
from tests.model_helpers import real_series, torch_one_thread  # noqa: F401 (fixture)

TINY = MQTransformerConfig(channels=8, dilations=(1, 2, 4), item_dim=4, context_dim=4, agnostic_dim=4,
                           global_hidden=16, local_hidden=8, pe_dim=4, recent_days=10, year_window=2,
                           memory_dim=4, heads=2, head_dim=4, feedback_days=4, feedback_dim=4)
ITEMS = np.array(["85123A", "22423", "22418"])  # 22423 and 22418 start inside the window
START, DAYS = 14669, 400  # 2010-03-01; the 366-day attention memory wraps


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def real():
    return real_series(ITEMS, START, DAYS)


def forecaster(seed=0):
    torch.manual_seed(seed)
    model = MQTransformer(TINY)
    with torch.no_grad():  # zero-initialised biases and null slots would hide bugs
        model.lag_bias.normal_(0, 1)
        model.null_k.normal_(0, 1)
        model.fb_null_k.normal_(0, 1)
        model.decoder.calibration.copy_(torch.tensor([1.5, 0.8, 1.0, 1.2, 1.0, 0.9, 1.3, 1.1, 1.4]))
    return MQTransformerForecaster(model)


def replay(f, s, views, first, item_price):
    """Serve the series as the worker does: close a day, feed back the errors of every
    earlier forecast that targeted it, publish a forecast. -> (N, T, H, Q) published
    forecasts, NaN where none."""
    n, t = s.units.shape
    pub = np.full((n, t, f.horizons, len(f.quantiles)), np.nan, np.float32)
    states = {}
    for col in range(t):
        for i in (i for i in range(n) if first[i] == col):
            states[i] = f.new_state(ItemInfo(s.items[i], s.descriptions[i], float(item_price[i])), START + col)
        live = [i for i in range(n) if first[i] <= col]
        adv = f.advance([states[i] for i in live], [
            Period(START + col, float(s.units[i, col]), float(views[i, col]), float(s.price[i, col])) for i in live])
        for i, state in zip(live, adv):
            h = np.arange(f.horizons, 0, -1)
            h = h[col - h >= first[i]]
            errors = TargetErrors(START + col, float(s.units[i, col]), START + col - h, pub[i, col - h, h - 1])
            (states[i],) = f.observe_errors([state], [errors])
        pub[live, col] = f.forecast([states[i] for i in live])
    return pub



def assert_equal_to_item_scale(inc, full, batch, alpha, tol=1e-5):
    """|incremental - full| <= tol * item scale (1 + EMA of demand), the units the model
    predicts in. A quantile is a base plus increments clipped at 0, so a near-zero quantile
    of a 100-unit item carries float32 rounding of terms near 100 (about 1e-7 of the scale)."""
    scale = (1 + ema_scale(batch.units, alpha)).numpy()[..., None, None]  # (N, T, 1, 1)
    done = ~np.isnan(inc)
    assert done.any()
    err = np.abs(inc - full) / scale
    assert err[done].max() <= tol, err[done].max()

def test_incremental_forecasts_with_feedback_equal_full_recompute_on_real_data(real):
    s, views, first, item_price = real
    f = forecaster()
    pub = replay(f, s, views, first, item_price)
    batch = series_batch(s.units, views, s.price, START, first, s.descriptions, item_price)
    with torch.no_grad():
        full = f.model(batch, published=torch.from_numpy(pub)).numpy()  # (N, T, H, Q)
        no_feedback = f.model(batch).numpy()
    done = ~np.isnan(pub)
    assert_equal_to_item_scale(pub, full, batch, TINY.scale_alpha)
    assert np.abs(no_feedback[done] - full[done]).max() > 1e-3  # the error memory is live
    published = done.all(-1)  # (N, T)
    assert (pub[published] >= 0).all() and (np.diff(pub[published], axis=-1) >= 0).all()


def test_cold_start_item_gets_positive_forecasts_that_depend_on_item_features():
    f = forecaster()
    q = f.forecast([f.new_state(ItemInfo("99999", "RED SPOTTY MUG", 2.5), 15000),
                    f.new_state(ItemInfo("99998", "JUMBO BAG VINTAGE", 0.4), 15000)])  # (2, H, Q)
    assert (q[:, :, -1] > 0).all()
    assert not np.allclose(q[0], q[1])


def _with_history(f, days):
    state = f.new_state(ItemInfo("1", "A", 1.0), 15000)
    (state,) = f.advance([state], [Period(15000 + days - 5, 1.0, 1.0, 1.0)])  # a quiet stretch, one call
    for d in range(days - 4, days):
        (state,) = f.advance([state], [Period(15000 + d, float(d % 3), 4.0, 1.0)])
    return state


def test_state_round_trips_through_bytes_and_errors_arrive_in_any_order():
    f = forecaster()
    state = _with_history(f, 30)
    horizons = np.array([7, 5, 1])
    errors = [TargetErrors(15029 - a, 2.0 + a, 15029 - a - horizons, np.linspace(0, 4, 9) * horizons[:, None])
              for a in range(3)]
    one = state
    for e in errors:
        (one,) = f.observe_errors([one], [e])
    other = state
    for e in reversed(errors):  # later targets first, and each target's forecasts one at a time, newest first
        for row in reversed(range(len(horizons))):
            single = TargetErrors(e.target, e.actual, e.origins[row:row + 1], e.forecasts[row:row + 1])
            (other,) = f.observe_errors([other], [single])
    assert one == other
    together = f.observe_errors([state, state, state], errors)  # one batch, one target per state
    assert together[2] == f.observe_errors([state], [errors[2]])[0] != state
    assert f.layout.encode(f.layout.decode([one]))[0] == one
    np.testing.assert_array_equal(f.forecast([bytes(bytearray(one))]), f.forecast([one]))
    assert not np.array_equal(f.forecast([one]), f.forecast([state]))


def test_advance_and_forecast_cost_and_state_size_do_not_grow_with_history():
    f = forecaster()
    flops, sizes = [], []
    for days in (100, 1000):
        state = _with_history(f, days)
        with FlopCounterMode(display=False) as counter:
            (state,) = f.advance([state], [Period(15000 + days, 1.0, 1.0, 1.0)])
            f.forecast([state])
        flops.append(counter.get_total_flops())
        sizes.append(len(state))
    assert flops[0] == flops[1] > 0
    assert sizes[0] == sizes[1]


def test_warm_start_from_mqcnn_forecasts_exactly_what_the_mqcnn_does(real):
    s, views, first, item_price = real
    torch.manual_seed(1)
    base = MQCNN(MQCNNConfig(**{k: getattr(TINY, k) for k in MQCNNConfig.__dataclass_fields__}))
    with torch.no_grad():
        base.decoder.calibration.fill_(2.0)  # the MQ-CNN's own calibration is not carried over
    model = forecaster().model
    model.warm_start(base)
    assert torch.equal(model.decoder.calibration, torch.ones(len(TINY.quantiles)))
    batch = series_batch(s.units, views, s.price, START, first, s.descriptions, item_price)
    with torch.no_grad():
        base.decoder.calibration.fill_(1.0)
        np.testing.assert_allclose(model(batch).numpy(), base(batch).numpy(), rtol=1e-5, atol=1e-6)


def test_state_size_with_the_defaults_is_what_the_docstring_says():
    """The year-ago attention keeps 371 projected encoder states: 5,936 of the 11,332 bytes."""
    f = MQTransformerForecaster(MQTransformer(MQTransformerConfig()))
    assert len(f.new_state(ItemInfo("1", "A", 1.0), 15000)) == f.layout.nbytes == 11332


def test_without_feedback_attention_the_errors_change_nothing():
    torch.manual_seed(0)
    f = MQTransformerForecaster(MQTransformer(replace(TINY, feedback_attention=False)))
    state = _with_history(f, 30)
    horizons = np.array([4, 1])
    errors = TargetErrors(15029, 9.0, 15029 - horizons, np.linspace(0, 4, 9) * horizons[:, None])
    np.testing.assert_array_equal(f.forecast(f.observe_errors([state], [errors])), f.forecast([state]))


def test_without_encoder_attention_the_attended_history_changes_nothing():
    f = forecaster()
    ablated = MQTransformerForecaster(MQTransformer(replace(TINY, encoder_attention=False)))
    ablated.model.load_state_dict(f.model.state_dict())
    state = _with_history(ablated, 30)
    before = ablated.forecast([state])
    with torch.no_grad():
        ablated.model.lag_bias.normal_(0, 3)  # attention weights move; the ablated output must not
        ablated.model.value_mem.weight.normal_(0, 3)
    np.testing.assert_array_equal(ablated.forecast([state]), before)
    assert not np.array_equal(f.forecast([_with_history(f, 30)]), before)
