"""The one training engine's settings, for pretraining and finetuning, and evaluation."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class TrainConfig(Section):
    """Optimizer, schedule and loop settings shared by pretraining and finetuning."""

    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1.5e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    layer_decay: float = Field(1.0, gt=0, le=1, description="Layer-wise lr decay (finetuning).")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    compile: bool = False
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (1: single process).")
    checkpoint_every: int = Field(0, ge=0, description="Steps between checkpoints (0: at end).")
    seed: int = 0


class EvalConfig(Section):
    """Evaluation of a finetuned classifier."""

    views: int = Field(2, ge=1, description="Temporal views per test clip, averaged.")
    topk: list[int] = Field(default_factory=lambda: [1, 5])
