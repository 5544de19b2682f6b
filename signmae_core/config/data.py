"""The training/evaluation data reader: temporal sampling and augmentation (see docs/MASKS.md).

The number of frames and the output size come from `ModelConfig` (`num_frames`, `img_size`),
the order and the augmentation seeds from the training seed; this section holds only how frames
are picked and how clips are augmented (`signmae_core.data.Sampling.from_config`).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section


class DataConfig(Section):
    """Temporal sampling, random resized crop and flip of training clips and their mask fields."""

    frame_stride: int = Field(
        2, ge=1, description="Step between sampled frames, in stored frames (at decode.fps)."
    )
    crop_scale: tuple[float, float] = Field(
        (0.7, 1.0), description="Random resized crop: range of the crop's share of the frame area."
    )
    crop_ratio: tuple[float, float] = Field(
        (0.75, 1.3333), description="Random resized crop: range of the crop's aspect ratio (w/h)."
    )
    flip_prob: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Probability of a horizontal flip in training (it swaps the hand fields).",
    )

    repeated_views: int = Field(
        1,
        ge=1,
        description="Repeated sampling: views per decoded training clip, each with its own "
        "frames, crop, flip and mask; a batch of `batch_size` clips holds batch_size x k views.",
    )

    @model_validator(mode="after")
    def _check_ranges(self) -> DataConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        low, high = self.crop_ratio
        if not 0 < low <= high:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        return self
