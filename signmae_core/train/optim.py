"""AdamW with weight-decay / layer-decay parameter groups, and the cosine schedule with warm-up.

The schedule is a pure function of the step (`lr_at`), so a resumed run needs no scheduler state
beyond the step count: `set_lr` writes `lr * group["lr_scale"]` into every parameter group.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from signmae_core.config import TrainConfig


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW over timm's parameter groups; the fused kernel on CUDA.

    No weight decay on 1-D parameters (biases, norms) and the model's `no_weight_decay()`
    names. With `cfg.layer_decay < 1`, layer-wise lr decay over the model's timm
    `group_matcher()` (the classifier has one): each group's `lr_scale` is
    `layer_decay ** (last layer - its layer)`, which `set_lr` applies.
    """
    from timm.optim import create_optimizer_v2

    layer_decay = cfg.layer_decay if cfg.layer_decay < 1.0 else None
    if layer_decay is not None and not hasattr(model, "group_matcher"):
        raise ValueError(f"{type(model).__name__} has no layer-wise lr decay groups")
    return create_optimizer_v2(
        model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas,
        layer_decay=layer_decay, **({"fused": True} if device.type == "cuda" else {}),
    )


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, then cosine to min_lr."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write `lr` times each group's `lr_scale` into the optimizer."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
