"""The video ViT models: masked autoencoder for pretraining, classifier for finetuning.

Needs only torch and timm (no pipeline config stack), so benchmarks and exported encoders run
anywhere PyTorch does. The factories take a `signmae_core.config.ModelConfig`, a `ModelSpec`, a
mapping or any object with the same fields.

    grid = token_grid(cfg)                      # (T / tubelet, H / patch, W / patch)
    mae = create_pretrain_model(cfg)            # out = mae(clips, mask, token_weight=None)
    clf = create_classifier(cfg, num_classes)   # clf(clips) -> logits (B, K)
    clf.load_encoder_state_dict(mae.encoder.state_dict())
"""

from __future__ import annotations

from typing import Any

from .classifier import VideoClassifier, adapt_pos_embed
from .convert import (
    LoadReport,
    convert_videomae_state_dict,
    load_videomae_pretrained,
    videomae_config_kwargs,
)
from .mae import MaskedVideoAutoencoder, norm_pix_target, split_mask
from .registry import VARIANTS, VariantSpec, get_variant, list_variants, register_variant
from .spec import ModelSpec, as_spec, token_grid
from .vit import VideoViTEncoder, patchify, resize_pos_embed, sinusoid_table, unpatchify

__all__ = [
    "VARIANTS",
    "LoadReport",
    "MaskedVideoAutoencoder",
    "ModelSpec",
    "VariantSpec",
    "VideoClassifier",
    "VideoViTEncoder",
    "adapt_pos_embed",
    "as_spec",
    "convert_videomae_state_dict",
    "create_classifier",
    "create_encoder",
    "create_pretrain_model",
    "get_variant",
    "list_variants",
    "load_videomae_pretrained",
    "norm_pix_target",
    "patchify",
    "register_variant",
    "resize_pos_embed",
    "sinusoid_table",
    "split_mask",
    "token_grid",
    "unpatchify",
    "videomae_config_kwargs",
]


def create_pretrain_model(cfg: Any) -> MaskedVideoAutoencoder:
    """The pretraining model (encoder + decoder + loss) for a model config."""
    spec = as_spec(cfg)
    return MaskedVideoAutoencoder(spec, get_variant(spec.variant))


def create_classifier(cfg: Any, num_classes: int) -> VideoClassifier:
    """The finetuning classifier (encoder + mean pooling + linear head) for a model config."""
    spec = as_spec(cfg)
    return VideoClassifier(spec, get_variant(spec.variant), num_classes)


def create_encoder(cfg: Any, final_norm: bool = True) -> VideoViTEncoder:
    """The bare encoder (all tokens or any subset) for a model config."""
    spec = as_spec(cfg)
    return VideoViTEncoder(spec, get_variant(spec.variant), final_norm=final_norm)
