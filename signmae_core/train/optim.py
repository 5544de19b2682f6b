"""AdamW with weight-decay / layer-decay parameter groups, and the cosine schedule with warm-up.

The schedule is a pure function of the step (`lr_at`), so a resumed run needs no scheduler state
beyond the step count: `set_lr` writes `lr * group["lr_scale"]` into every parameter group.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from signmae_core.config import TrainConfig



def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Parameter groups: no weight decay on biases, norms and embeddings; layer decay if asked.

    With `cfg.layer_decay < 1` the model must offer `param_groups_layer_decay(weight_decay,
    layer_decay)` (the classifier does); each group then carries an `lr_scale`.
    """
    if cfg.layer_decay < 1.0:
        if not hasattr(model, "param_groups_layer_decay"):
            raise ValueError(f"{type(model).__name__} has no layer-wise lr decay groups")
        groups = list(model.param_groups_layer_decay(cfg.weight_decay, cfg.layer_decay))
    else:
        skip = set(getattr(model, "no_weight_decay", lambda: set())())
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim <= 1 or name.endswith(".bias") or name in skip:
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
    groups = [dict(g) for g in groups if len(g["params"])]
    for group in groups:
        group.setdefault("lr_scale", 1.0)
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, cfg)`; the fused kernel on CUDA."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
        fused=fused or None,
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
