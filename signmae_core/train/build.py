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


def sample_keys(seed: int, batch: Batch) -> Any:
    """The batch's mask noise keys: (seed, `sample_epoch`, `sample_index`, `sample_view`) per
    clip (`EpochBatches` puts the first two in every item; the view is 0 unless given)."""
    from signmae_core.masking import SampleKeys

    if "sample_index" not in batch:
        raise ValueError("the batch has no sample_index: masks need each clip's coordinates")
    return SampleKeys.of(seed, batch["sample_epoch"], batch["sample_index"],
                         batch.get("sample_view", 0))


def make_masker(cfg: PipelineConfig, sampler: str) -> Any:
    """The `TokenMasker` of the masking config with `sampler` in place of `masking.sampler`."""
    from signmae_core.masking import TokenMasker
    from signmae_core.models import token_grid

    settings = cfg.masking.model_copy(update={"sampler": sampler})
    return TokenMasker.from_config(settings, token_grid(cfg.model))


def make_mask_fn(cfg: PipelineConfig, sampler: str) -> Any:
    """`mask_fn(batch, grid, device) -> (mask (B, N) bool, hand presence (B, N) or None)`, drawn
    on `device` as a pure function of each clip's keys (`sample_keys`) and the run's seed."""
    masker = make_masker(cfg, sampler)
    seed = cfg.pretrain.seed

    def mask_fn(batch: Batch, grid: Grid, device: torch.device) -> Any:
        fields = batch.get("fields")
        draw = masker(
            None if fields is None else fields.to(device, non_blocking=True),
            batch_size=batch["clips"].shape[0], device=device, generator=sample_keys(seed, batch),
        )
        return draw.mask, draw.hand_presence

    return mask_fn


def make_figure_fn(cfg: PipelineConfig, with_fields: bool, samples: int) -> FigureFn:
    """Reconstruction figures of `samples` clips under every sampler the clips allow (`tube`,
    `random`, and `segmentation` with fields), each mask drawn from a generator seeded by the
    step, so figures never change the run."""
    from .recon import save_reconstruction

    samplers = ["tube", "random"] + (["segmentation"] if with_fields else [])
    maskers = {name: make_masker(cfg, name) for name in samplers}

    def figure_fn(model: nn.Module, batch: Batch, step: int, path: Path) -> None:
        fields = batch.get("fields")
        fields = None if fields is None else fields[:samples]
        count = min(samples, batch["clips"].shape[0])
        masks = {
            name: masker(fields, batch_size=count,
                         generator=torch.Generator().manual_seed(step)).mask
            for name, masker in maskers.items()
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
    from signmae_core.masking import num_masked
    from signmae_core.models import create_pretrain_model, token_grid

    model = create_pretrain_model(cfg.model)
    grid = token_grid(cfg.model)
    task = PretrainTask(make_mask_fn(cfg, cfg.masking.sampler), grid,
                        num_masked=num_masked(grid, cfg.masking.ratio))
    return model, task, make_figure_fn(cfg, with_fields, cfg.pretrain.recon_samples)


def build_finetuning(
    cfg: PipelineConfig, num_classes: int, init_encoder: str | Path | None = None
) -> tuple[nn.Module, FinetuneTask]:
    """The classifier over `num_classes` (encoder from the safetensors file `init_encoder`,
    random when None) and its cross-entropy task (head alone for the first
    `finetune.head_only_steps` steps)."""
    from signmae_core.models import create_classifier

    from .checkpoint import load_weights

    model = create_classifier(cfg.model, num_classes)
    if init_encoder is not None:
        model.load_encoder_state_dict(load_weights(init_encoder))
    return model, FinetuneTask(cfg.finetune.label_smoothing, cfg.finetune.head_only_steps)
