"""Mask maps (stored per frame and part) and the masking samplers (applied on the fly).

`MasksConfig` holds what the stored fields depend on: changing any of its fields (except
`version`, which only chooses what to read) makes a new mask version beside the old ones.
`MaskingConfig` holds what is applied while training (pooling weights, sampler, ratio): changing
it needs no recompute. See docs/MASKS.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section, runtime_field

SamplerName = Literal["tube", "random", "segmentation"]


class MasksConfig(Section):
    """Fields computed by `signmae run masks`; any change here makes a new mask version."""

    cell: int = Field(8, ge=1, description="Cell size of the field grid, in stored-clip pixels.")
    dilation: int = Field(
        0, ge=0, description="Square dilation radius of each part mask, in part-map pixels."
    )
    blur: float = Field(
        0.0, ge=0, description="Gaussian blur sigma of the presence fields, in cells (0: none)."
    )
    motion_scale: float = Field(
        0.25,
        gt=0,
        description="Landmark speed (hand sizes per stored frame) at which motion saturates to 1.",
    )
    version: str | None = runtime_field(
        None,
        description="Mask version read downstream; None: the version this config makes.",
    )

    def field_params(self) -> dict[str, float | int]:
        """The settings the stored fields depend on (everything except the runtime `version`)."""
        return self.output_dump()


class MaskingConfig(Section):
    """How the pooled mask maps turn into masked tokens during pretraining (no recompute)."""

    sampler: SamplerName = Field("segmentation", description="tube, random or segmentation.")
    ratio: float = Field(
        0.9, gt=0, lt=1, description="Share of tokens masked (exact count per clip)."
    )
    strength: float = Field(
        4.0, ge=0, description="Gumbel-top-k temperature: masking follows strength * score."
    )
    hand_weight: float = Field(1.0, ge=0, description="Weight of hand presence in the score.")
    face_weight: float = Field(0.25, ge=0, description="Weight of face presence in the score.")
    body_weight: float = Field(0.1, ge=0, description="Weight of body presence in the score.")
    motion_weight: float = Field(1.0, ge=0, description="Weight of hand motion in the score.")
    keep_hand_visible: float = Field(
        0.0, ge=0, le=1, description="Share of hand tokens forced visible (segmentation sampler)."
    )
    hand_threshold: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Pooled hand presence above which a token counts as a hand token.",
    )
