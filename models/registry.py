"""Models by name, for the worker, the backtest and the CLI.

Public API
----------
- ``MODEL_NAMES``: the names ``load_model`` knows.
- ``load_model(name, checkpoint) -> QuantileForecaster``: "mqcnn" and "mqtransformer" need a
  checkpoint directory written by ``models.training`` (weights as safetensors + JSON config;
  nothing in it is executed); "seasonal-naive" takes none.
"""
from __future__ import annotations

from pathlib import Path

from models.protocol import QuantileForecaster

MODEL_NAMES = ("mqcnn", "mqtransformer", "seasonal-naive")


def load_model(name: str, checkpoint: Path | None = None) -> QuantileForecaster:
    if name == "seasonal-naive":
        from models.seasonal_naive import SeasonalNaive  # the lead's module; imported when asked for

        return SeasonalNaive()
    if name not in ("mqcnn", "mqtransformer"):
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}, not {name!r}")
    if checkpoint is None:
        raise ValueError(f"{name} needs a checkpoint: train one with "
                         f"`mqstream train --model {name} --out checkpoints/{name}`")
    from models.mqcnn import MQCNNForecaster
    from models.mqtransformer import MQTransformerForecaster
    from models.training import load_checkpoint

    stored, module = load_checkpoint(Path(checkpoint))
    if stored != name:
        raise ValueError(f"checkpoint {checkpoint} holds {stored!r}, not {name!r}")
    return MQCNNForecaster(module) if name == "mqcnn" else MQTransformerForecaster(module)
