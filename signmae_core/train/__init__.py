"""The training engine: one loop for pretraining and finetuning, checkpoints, metrics, figures."""

from .batches import EpochBatches, collate
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, unwrap_model
from .engine import (
    FinetuneTask,
    PretrainTask,
    Trainer,
    TrainResult,
    TrainState,
    autocast,
    resolve_device,
)
from .metrics import MetricsLogger, read_metrics
from .optim import build_optimizer, lr_at

__all__ = [
    "EpochBatches",
    "FinetuneTask",
    "MetricsLogger",
    "PretrainTask",
    "TrainResult",
    "TrainState",
    "Trainer",
    "autocast",
    "build_optimizer",
    "collate",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_at",
    "read_metrics",
    "resolve_device",
    "save_checkpoint",
    "unwrap_model",
]
