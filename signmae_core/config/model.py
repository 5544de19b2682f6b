"""The video ViT: encoder, decoder and classifier."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class ModelConfig(Section):
    """Variant and token geometry; patch and tubelet sizes are never literals elsewhere."""

    variant: str = Field("tiny", description="Registry name: tiny, small, base.")
    num_frames: int = Field(16, ge=1)
    img_size: int = Field(112, ge=16)
    patch_size: int = Field(16, ge=1)
    tubelet_size: int = Field(2, ge=1)
    pos_embed: Literal["sincos", "learned"] = "sincos"
    norm_pix_loss: bool = True
    hand_loss_weight: float = Field(0.0, ge=0, description="Extra loss weight on hand tokens.")
    drop_path: float = Field(0.0, ge=0, lt=1)
    mean: tuple[float, float, float] = Field(
        (0.485, 0.456, 0.406), description="Pixel mean the model normalizes its input with."
    )
    std: tuple[float, float, float] = Field(
        (0.229, 0.224, 0.225), description="Pixel std the model normalizes its input with."
    )
