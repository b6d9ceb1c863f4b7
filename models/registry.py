"""Models by name, for the worker, the backtest and the CLI.

Public API
----------
- ``MODEL_NAMES``: the names ``load_model`` knows.
- ``load_model(name, checkpoint) -> QuantileForecaster``: "mqcnn" and "mqtransformer" need a
  checkpoint directory written by ``models.training`` (weights as safetensors + JSON config;
  nothing in it is executed); "seasonal-naive" takes none. An MQTransformer checkpoint written
  with ``--keep-warm-start`` whose attention did not learn is served with a version ending in
  ``-warm-start``, and a warning. The model serves the periods of ``cadence``: a checkpoint
  trained on others is refused.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from mqstream.models.protocol import QuantileForecaster
from mqstream.periods import DAILY, Cadence

MODEL_NAMES = ("mqcnn", "mqtransformer", "seasonal-naive")
WARM_START_SUFFIX = "-warm-start"  # version of a checkpoint whose attention did not learn


def load_model(name: str, checkpoint: Path | None = None, cadence: Cadence = DAILY) -> QuantileForecaster:
    if name == "seasonal-naive":
        from mqstream.models.seasonal_naive import SeasonalNaive, SeasonalNaiveConfig

        return SeasonalNaive(SeasonalNaiveConfig.of(cadence))
    if name not in ("mqcnn", "mqtransformer"):
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}, not {name!r}")
    if checkpoint is None:
        raise ValueError(f"{name} needs a checkpoint: train one with "
                         f"`mqstream train --model {name} --out checkpoints/{name}`")
    from mqstream.models.mqcnn import MQCNNForecaster
    from mqstream.models.mqtransformer import MQTransformerForecaster
    from mqstream.models.training import checkpoint_record, load_checkpoint

    stored, module = load_checkpoint(Path(checkpoint))
    if stored != name:
        raise ValueError(f"checkpoint {checkpoint} holds {stored!r}, not {name!r}")
    forecaster = MQCNNForecaster(module) if name == "mqcnn" else MQTransformerForecaster(module)
    if forecaster.cadence != cadence:
        raise ValueError(f"checkpoint {checkpoint} was trained on {forecaster.cadence.name(2)}; this run's period is "
                         f"{cadence.period} (set period, or train with --period {cadence.period})")
    if not checkpoint_record(Path(checkpoint)).get("learned", True):
        # its attention never beat the MQ-CNN it started from: say so wherever the version shows
        forecaster.version += WARM_START_SUFFIX
        warnings.warn(f"{checkpoint}: this {name} did not beat its MQ-CNN warm start in training; "
                      f"serving it as version {forecaster.version}", stacklevel=2)
    return forecaster
