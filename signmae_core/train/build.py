"""The model and the task of a training run, built from a config.

    model, task, figure_fn = build_pretraining(cfg, with_fields)       # masked video pretraining
    model, task = build_finetuning(cfg, num_classes, init_encoder)     # classifier finetuning

`cfg` is a `signmae_core.config.PipelineConfig` (its `model`, `masking` and the run's train
section are read). The pipeline's training worker (`pipelines.training.train_worker`) uses these;
so can a notebook or a benchmark, without the pipeline stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .engine import Batch, FinetuneTask, Grid, PretrainTask

if TYPE_CHECKING:
    from signmae_core.config import PipelineConfig

FigureFn = Any  # (model, batch, step, path) -> None, see `Trainer(figure_fn=...)`


def make_mask_fn(cfg: PipelineConfig, sampler: str) -> Any:
    """`mask_fn(batch, grid, generator) -> (mask (B, N) bool, hand presence (B, N) or None)`
    from the masking config, with `sampler` in place of `masking.sampler`."""
    from signmae_core.masking import TokenMasker
    from signmae_core.models import token_grid

    settings = cfg.masking.model_copy(update={"sampler": sampler})
    masker = TokenMasker.from_config(settings, token_grid(cfg.model))

    def mask_fn(batch: Batch, grid: Grid, generator: torch.Generator) -> Any:
        draw = masker(
            batch.get("fields"), batch_size=batch["clips"].shape[0], device="cpu",
            generator=generator,
        )
        return draw.mask, draw.hand_presence

    return mask_fn


def make_figure_fn(cfg: PipelineConfig, with_fields: bool, samples: int) -> FigureFn:
    """Reconstruction figures of `samples` clips under every sampler the clips allow (`tube`,
    `random`, and `segmentation` with fields), each mask drawn from a generator seeded by the
    step, so figures never change the run."""
    from signmae_core.models import token_grid

    from .recon import save_reconstruction

    samplers = ["tube", "random"] + (["segmentation"] if with_fields else [])
    mask_fns = {name: make_mask_fn(cfg, name) for name in samplers}
    grid = token_grid(cfg.model)

    def figure_fn(model: nn.Module, batch: Batch, step: int, path: Path) -> None:
        masks = {
            name: fn(batch, grid, torch.Generator().manual_seed(step))[0]
            for name, fn in mask_fns.items()
        }
        device = next(model.parameters()).device
        clips = batch["clips"][:samples].to(device)
        save_reconstruction(path, model, clips, masks, title=f"step {step}", max_clips=samples)

    return figure_fn


def build_pretraining(
    cfg: PipelineConfig, with_fields: bool
) -> tuple[nn.Module, PretrainTask, FigureFn]:
    """The masked autoencoder, its task (masks from `cfg.masking`) and its figure function.

    `with_fields`: the batches carry mask fields (the segmentation sampler in the figures)."""
    from signmae_core.models import create_pretrain_model, token_grid

    model = create_pretrain_model(cfg.model)
    task = PretrainTask(make_mask_fn(cfg, cfg.masking.sampler), token_grid(cfg.model))
    return model, task, make_figure_fn(cfg, with_fields, cfg.pretrain.recon_samples)


def build_finetuning(
    cfg: PipelineConfig, num_classes: int, init_encoder: str | Path | None = None
) -> tuple[nn.Module, FinetuneTask]:
    """The classifier over `num_classes` (encoder from the safetensors file `init_encoder`,
    random when None) and its cross-entropy task."""
    from signmae_core.models import create_classifier

    from .checkpoint import load_weights

    model = create_classifier(cfg.model, num_classes)
    if init_encoder is not None:
        model.load_encoder_state_dict(load_weights(init_encoder))
    return model, FinetuneTask(cfg.finetune.label_smoothing)
