"""The decode stage: standardized clips (see docs/CLIPS.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section, runtime_field


class DecodeConfig(Section):
    """Target geometry and storage of decoded clips."""

    fps: float = Field(
        25.0, gt=0, le=240, description="Target frame rate (frames are resampled)."
    )
    size: int = Field(224, ge=16, description="Square output size in pixels.")
    crop: Literal["bbox_or_pad", "pad", "center"] = Field(
        "bbox_or_pad",
        description="bbox_or_pad: the dataset's bbox grown to a square when given, else the full "
        "frame padded to a square; pad: always the padded full frame; center: the centred square.",
    )
    max_frames: int = Field(
        256, ge=1, description="Frames kept per clip after resampling (the first ones)."
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of stored frames.")
    max_in_flight: int | None = runtime_field(
        None, ge=1, description="Decode tasks in flight at once (None: twice the cluster's CPUs)."
    )
    timeout_s: float = runtime_field(
        600.0, gt=0, description="A video still decoding after this long fails (and is stopped)."
    )
