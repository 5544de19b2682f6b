"""The video ViT: encoder, decoder and classifier.

`signmae_core.models.ModelSpec` mirrors these fields as a plain dataclass, so the model code runs
without this config stack (a test keeps the two in step).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class ModelConfig(Section):
    """Variant and token geometry; patch and tubelet sizes are never literals elsewhere."""

    variant: str = Field("tiny", description="Registry name: tiny, small, base, large.")
    num_frames: int = Field(16, ge=1, description="Frames per clip the model takes.")
    img_size: int = Field(112, ge=16, description="Square frame side in pixels.")
    patch_size: int = Field(16, ge=1, description="Token side in pixels.")
    tubelet_size: int = Field(2, ge=1, description="Frames per token.")
    pos_embed: Literal["sincos", "learned"] = Field(
        "sincos", description="Encoder positions: VideoMAE's fixed sin-cos table, or learned."
    )
    norm_pix_loss: bool = Field(
        True, description="Reconstruct per-token normalized pixels (VideoMAE) instead of raw."
    )
    hand_loss_weight: float = Field(
        0.0,
        ge=0,
        description="Extra loss weight on hand tokens: a masked token weighs "
        "1 + hand_loss_weight * token_weight (its hand presence).",
    )
    drop_path: float = Field(0.0, ge=0, lt=1, description="Stochastic depth of the last block.")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier head.")
    pool: Literal["mean", "max"] = Field(
        "mean",
        description="Classifier pooling over tokens: mean (VideoMAE) or max, which lets a few "
        "hand tokens decide where the frame is mostly body and background (docs/results.md).",
    )
    stem: Literal["linear", "conv", "token_conv"] = Field(
        "linear",
        description="Token embedding: linear per token (VideoMAE); conv, a small 3-D conv stem "
        "over the whole clip down to the token grid (masked tokens are zeros to it); or "
        "token_conv, the same stem inside each token alone, which sees the same inputs under "
        "MAE masking as when finetuning (docs/results.md).",
    )
    layer_scale: float | None = Field(
        None,
        gt=0,
        description="LayerScale: each block's branches scaled by learned factors starting here "
        "(None: off).",
    )
    mean: tuple[float, float, float] = Field(
        (0.485, 0.456, 0.406), description="Pixel mean the model normalizes its input with."
    )
    std: tuple[float, float, float] = Field(
        (0.229, 0.224, 0.225), description="Pixel std the model normalizes its input with."
    )
