"""The training engine: one loop for pretraining and finetuning, checkpoints, metrics, figures,
and the model and task of a run built from a config (`build`)."""

from .batches import EpochBatches, collate
from .build import build_finetuning, build_pretraining, make_figure_fn, make_mask_fn
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
    "build_finetuning",
    "build_optimizer",
    "build_pretraining",
    "collate",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_at",
    "make_figure_fn",
    "make_mask_fn",
    "read_metrics",
    "resolve_device",
    "save_checkpoint",
    "unwrap_model",
]
