"""The extraction stage: keypoints and part segmentation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class ExtractConfig(Section):
    """Backend and resolution of keypoint and part extraction."""

    backend: Literal["mediapipe", "oracle"] = Field(
        "mediapipe", description="mediapipe for real data; oracle reads synthetic ground truth."
    )
    resolution: int = Field(448, ge=64, description="Longest side extraction runs at.")
    seg_scale: float = Field(0.25, gt=0, le=1, description="Part map size relative to the clip.")
    min_detection_confidence: float = Field(0.3, ge=0, le=1)
    min_tracking_confidence: float = Field(0.3, ge=0, le=1)
    num_cpus_per_worker: int = Field(1, ge=1)
