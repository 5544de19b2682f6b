"""Mask maps (stored per frame and part) and the masking samplers (applied on the fly)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class MasksConfig(Section):
    """Fields computed by `signmae run masks`; any change here makes a new mask version."""

    cell: int = Field(8, ge=1, description="Cell size in pixels of the stored clip.")
    dilation: int = Field(0, ge=0, description="Dilation of part masks, in part-map pixels.")
    blur: float = Field(0.0, ge=0, description="Gaussian blur sigma of presence, in cells.")
    motion_source: Literal["keypoints", "frame_diff"] = Field(
        "keypoints", description="How hand motion is measured."
    )
    version: str | None = Field(
        None, description="Mask version to read downstream; None: the one this config makes."
    )


class MaskingConfig(Section):
    """How the pooled mask maps turn into masked tokens during pretraining."""

    sampler: str = Field("segmentation", description="tube, random or segmentation.")
    ratio: float = Field(0.9, gt=0, lt=1, description="Share of tokens masked (exact per clip).")
    strength: float = Field(4.0, ge=0, description="How strongly the score drives masking.")
    hand_weight: float = Field(1.0, ge=0, description="Weight of hand presence in the score.")
    face_weight: float = Field(0.25, ge=0, description="Weight of face presence in the score.")
    body_weight: float = Field(0.1, ge=0, description="Weight of body presence in the score.")
    motion_weight: float = Field(1.0, ge=0, description="Weight of hand motion in the score.")
    keep_hand_visible: float = Field(
        0.0, ge=0, le=1, description="Share of hand tokens forced visible."
    )
