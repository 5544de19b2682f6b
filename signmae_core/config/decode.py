"""The decode stage: standardized clips."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class DecodeConfig(Section):
    """Target geometry and storage of decoded clips."""

    fps: float = Field(25.0, gt=0, description="Target frame rate (frames are resampled).")
    size: int = Field(224, ge=16, description="Square output size in pixels.")
    crop: Literal["bbox_or_pad", "pad", "center"] = Field(
        "bbox_or_pad", description="Dataset bbox when given, else full frame padded to square."
    )
    max_frames: int = Field(256, ge=1, description="Frames kept per clip after resampling.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of stored frames.")
