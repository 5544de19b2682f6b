"""The training/evaluation data reader: temporal sampling and augmentation (see docs/MASKS.md).

The number of frames and the output size come from `ModelConfig` (`num_frames`, `img_size`),
the order and the augmentation seeds from the training seed; this section holds only how frames
are picked and how clips are augmented (`signmae_core.data.Sampling.from_config`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Section, runtime_field

# the streaming reader's settings: part of the data hash only when `reader` is `stream`
STREAM_FIELDS = ("stream_partitions", "stream_buffer", "stream_epoch_clips")


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

    decode_on: Literal["auto", "cpu", "device"] = runtime_field(
        "auto",
        description="Where training clips are decoded: `cpu` in the loader, `device` on the "
        "training device (JPEG batches via torchvision; the crop, resize and flip there too), "
        "`auto` on the device when it is CUDA. The CPU path of the device decoder gives the "
        "loader's tensors (docs/SHARDS.md).",
    )
    reader: Literal["shards", "stream"] = Field(
        "shards",
        description="Training reader: `shards` (map-style ShardClips, a permutation of the clips "
        "per epoch) or `stream` (WebDataset ShardStream: resampled shards in `stream_partitions` "
        "seeded streams, a shuffle buffer, a fixed epoch length).",
    )
    stream_partitions: int = Field(
        8,
        ge=1,
        description="Stream: seeded sample streams per epoch; each global batch takes batch_size "
        "/ partitions clips from each, and a training worker reads partitions / workers of them "
        "(both must divide). The run does not depend on workers or loader processes.",
    )
    stream_buffer: int = Field(
        256, ge=0, description="Stream: sample shuffle buffer per partition (0 or 1: none)."
    )
    stream_epoch_clips: int | None = Field(
        None,
        ge=1,
        description="Stream: clips drawn per epoch over all partitions (None: the number of "
        "training clips).",
    )
    stream_workers: int = runtime_field(
        2,
        ge=0,
        description="Stream: DataLoader worker processes per training worker (0: in the "
        "training process); never changes the run.",
    )

    def output_dump(self) -> dict[str, Any]:
        """As `Section.output_dump`; with the default reader the stream's settings are left
        out, so versions made before they existed stay the same."""
        dumped = super().output_dump()
        if self.reader == "shards":
            for name in ("reader", *STREAM_FIELDS):
                dumped.pop(name)
        return dumped

    @model_validator(mode="after")
    def _check_ranges(self) -> DataConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        low, high = self.crop_ratio
        if not 0 < low <= high:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        return self
