"""Training: seeded and reproducible, a checkpoint that loads without executing code, and a
validation block that training never sees."""
import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mqstream.models.history import load_history
from mqstream.models.protocol import ItemInfo, Period
from mqstream.models.registry import load_model
from dataclasses import replace

from mqstream.models.features import VIEWS_INPUT
from mqstream.models.registry import WARM_START_SUFFIX
from mqstream.models.scores import coverage_80, wql
from mqstream.models.training import (TrainSettings, WarmStartKept, configure_parser, fit_calibration, holds_config,
                                      model_config_of, run, targets, train, training_series)
from mqstream.periods import DAILY, Cadence, day_of_iso
from tests.model_helpers import torch_one_thread  # noqa: F401 (fixture)

TINY = {"channels": 8, "dilations": [1, 2, 4], "item_dim": 4, "context_dim": 4, "agnostic_dim": 4,
        "global_hidden": 16, "local_hidden": 8}
TINY_MQT = {**TINY, "pe_dim": 4, "recent_days": 8, "year_window": 1, "memory_dim": 4, "head_dim": 4,
            "feedback_days": 4, "feedback_dim": 4}
QUICK = TrainSettings(batch_items=8, origins_per_item=8, epochs=1, max_items=16, val_items=None)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def shipped():
    return load_history()


@pytest.fixture(scope="module")
def mqcnn_run(shipped, tmp_path_factory):
    return train("mqcnn", out=tmp_path_factory.mktemp("a"), settings=QUICK, model_config=TINY, data=shipped, progress=False)


def test_same_seed_gives_the_same_weights_and_version(shipped, mqcnn_run, tmp_path):
    a = mqcnn_run
    b = train("mqcnn", out=tmp_path / "b", settings=QUICK, model_config=TINY, data=shipped, progress=False)
    wa, wb = load_file(str(a.path / "model.safetensors")), load_file(str(b.path / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert load_model("mqcnn", a.path).version == load_model("mqcnn", b.path).version
    record = json.loads((a.path / "config.json").read_text())
    assert record["model"] == "mqcnn" and record["train"]["val_wql"] == pytest.approx(a.val_loss)
    assert np.isfinite(a.val_loss) and a.epochs == 1


def test_mqtransformer_checkpoint_serves_a_cold_start_item(shipped, tmp_path):
    r = train("mqtransformer", out=tmp_path / "m", settings=replace(QUICK, calibrate=True, keep_warm_start=True),
              model_config=TINY_MQT, data=shipped, progress=False)
    model = load_model("mqtransformer", r.path)
    factors = json.loads((r.path / "config.json").read_text())["train"]["calibration"]["factors"]
    np.testing.assert_allclose(model.model.decoder.calibration.numpy(), factors, rtol=1e-6)  # stored in the weights
    state = model.new_state(ItemInfo("99999", "RED SPOTTY MUG", 2.5), day_of_iso("2011-06-01"))
    q = model.forecast([state])[0]  # (H, Q)
    assert q[:, -1].sum() > 0 and (np.diff(q, axis=-1) >= 0).all()
    (state,) = model.advance([state], [Period(day_of_iso("2011-06-01"), 3.0, 10.0, 2.5)])
    assert model.forecast([state]).shape == (1, 28, 9)


def test_a_checkpoint_is_todays_model_only_with_todays_config(mqcnn_run):
    """Defaults change (the memory's width did): evaluate and the recipe sweep train again a
    checkpoint of another config rather than score it as today's model."""
    assert holds_config(mqcnn_run.path, model_config_of("mqcnn", DAILY, None, TINY, use_views=False))
    assert not holds_config(mqcnn_run.path, model_config_of("mqcnn", DAILY, None, {**TINY, "item_dim": 8},
                                                            use_views=False))
    assert not holds_config(mqcnn_run.path, model_config_of("mqcnn", Cadence("week", 0), None, TINY, use_views=False))


def test_loading_a_checkpoint_as_the_other_model_is_refused(mqcnn_run):
    with pytest.raises(ValueError, match="holds 'mqcnn'"):
        load_model("mqtransformer", mqcnn_run.path)


def test_training_targets_stop_before_the_validation_block(shipped):
    batch, _ = training_series(day_of_iso("2011-05-31"), shipped, max_items=4)
    origins = torch.arange(400, 480).expand(4, 80)
    _, mask = targets(batch, origins, 28, last_col=450)
    target_col = origins[..., None] + torch.arange(1, 29)
    assert mask[target_col > 450].sum() == 0 and mask[target_col <= 450].sum() > 0


def test_cli_writes_a_checkpoint(tmp_path):
    args = configure_parser(argparse.ArgumentParser()).parse_args(
        ["--model", "mqcnn", "--out", str(tmp_path / "cli"), "--epochs", "1", "--max-items", "8",
         "--batch-items", "8", "--threads", "1", "--no-progress"])
    assert run(args) == 0
    assert (tmp_path / "cli" / "model.safetensors").exists()
    model = load_model("mqcnn", tmp_path / "cli")
    assert model.forecast([model.new_state(ItemInfo("1"), 15000)]).shape == (1, 28, 9)


def test_mqtransformer_trains_from_the_mqcnn_the_mqcnn_defaults_give(shipped, tmp_path):
    defaults = replace(QUICK, epochs=None, origins_per_item=None)  # the MQ-CNN stage runs the MQ-CNN recipe
    base = train("mqcnn", out=tmp_path / "base", settings=defaults, model_config=TINY, data=shipped, progress=False)
    quick = replace(QUICK, keep_warm_start=True)
    inside = train("mqtransformer", out=tmp_path / "a", settings=quick, model_config=TINY_MQT, data=shipped, progress=False)
    given = train("mqtransformer", out=tmp_path / "b", settings=replace(quick, warm_start=base.path),
                  model_config=TINY_MQT, data=shipped, progress=False)
    wa, wb = load_file(str(inside.path / "model.safetensors")), load_file(str(given.path / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    record = json.loads((inside.path / "config.json").read_text())
    assert record["train"]["warm_start"]["val_wql"] == pytest.approx(base.val_loss)


def test_calibration_factors_undo_a_known_scale_error():
    rng = np.random.default_rng(0)
    quantiles = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    mean = rng.gamma(1.0, 5.0, 20_000)
    y = rng.exponential(mean)
    true = -np.log(1 - np.array(quantiles))[None, :] * mean[:, None]  # exponential quantiles
    factors = fit_calibration(true / 2, y, quantiles)
    np.testing.assert_allclose(factors, 2.0, rtol=0.08)
    assert wql(y, true / 2 * factors, quantiles) < wql(y, true / 2, quantiles)


def test_a_coverage_cap_shrinks_the_upper_quantiles_only():
    rng = np.random.default_rng(1)
    quantiles = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    y = rng.poisson(0.3, 20_000).astype(float)  # mostly zero: P10 = 0 and P90 covers > 90%
    pred = np.tile(np.array([0, 0, 0, 0, 0, 0.4, 0.7, 1.0, 1.3]), (len(y), 1))
    free = fit_calibration(pred, y, quantiles)
    capped = fit_calibration(pred, y, quantiles, max_coverage=0.85)
    assert coverage_80(y, np.maximum.accumulate(pred * capped, -1), quantiles) <= 0.85
    assert np.array_equal(capped[:5], free[:5])
    assert (capped[5:] <= free[5:]).all() and (capped[5:] < free[5:]).any()


def test_revision_is_zero_when_consecutive_origins_agree_on_every_target_day():
    from mqstream.models.training import revision
    level = torch.arange(40.0)  # forecast of target day d is level[d], whatever the origin
    origins = torch.arange(5)[:, None] + torch.arange(1, 29)  # (S, H) target days
    steady = level[origins][None, ..., None].expand(1, 5, 28, 9)
    y, mask = torch.ones(1, 5, 28), torch.ones(1, 5, 28)
    assert revision(steady, y, mask) == 0
    moving = (steady + torch.arange(5.0)[None, :, None, None]).requires_grad_()
    penalty = revision(moving, y, mask)
    assert penalty > 0 and penalty.requires_grad  # a training loss term: it must carry a gradient


def test_mqtransformer_that_does_not_beat_its_warm_start_fails_training(shipped, mqcnn_run, tmp_path):
    frozen = replace(QUICK, lr=1e-30, warm_start=mqcnn_run.path)  # no step moves a weight: the start stays best
    with pytest.raises(WarmStartKept, match="did not learn"):
        train("mqtransformer", out=tmp_path / "m", settings=frozen, model_config=TINY_MQT, data=shipped, progress=False)
    assert not (tmp_path / "m").exists()


def test_a_kept_warm_start_is_marked_and_served_under_a_version_that_says_so(shipped, mqcnn_run, tmp_path):
    frozen = replace(QUICK, lr=1e-30, warm_start=mqcnn_run.path, keep_warm_start=True)
    r = train("mqtransformer", out=tmp_path / "m", settings=frozen, model_config=TINY_MQT, data=shipped, progress=False)
    record = json.loads((r.path / "config.json").read_text())["train"]
    assert record["learned"] is False
    # the decoder never read its attention outputs, and the checkpoint says so
    assert record["attention_use"]["encoder_attention"] == 0 == record["attention_use"]["feedback_attention"]
    assert record["attention_use"]["other_inputs"] > 0
    with pytest.warns(UserWarning, match="did not beat its MQ-CNN warm start"):
        model = load_model("mqtransformer", r.path)
    assert model.version.endswith(WARM_START_SUFFIX)


def test_training_reads_no_page_views_unless_asked(shipped, tmp_path):
    plain, _ = training_series(day_of_iso("2011-05-31"), shipped, max_items=8)
    simulated, _ = training_series(day_of_iso("2011-05-31"), shipped, max_items=8, simulated_views=True)
    assert plain.past[..., VIEWS_INPUT].abs().sum() == 0 and simulated.past[..., VIEWS_INPUT].abs().sum() > 0
    r = train("mqcnn", out=tmp_path / "v", settings=replace(QUICK, simulated_views=True), model_config=TINY,
              data=shipped, progress=False)
    assert json.loads((r.path / "config.json").read_text())["train"]["page_views"].startswith("simulated")
    assert load_model("mqcnn", r.path).model.cfg.use_views


def test_a_model_without_views_forecasts_the_same_whatever_views_it_is_fed(mqcnn_run):
    model = load_model("mqcnn", mqcnn_run.path)
    state = model.new_state(ItemInfo("1", "MUG", 2.0), 15000)
    (quiet,), (busy,) = (model.advance([state], [Period(15000, 3.0, views, 2.0)]) for views in (0.0, 5_000.0))
    np.testing.assert_array_equal(model.forecast([quiet]), model.forecast([busy]))
