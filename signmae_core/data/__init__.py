"""The one dataset reader for training and evaluation (see docs/MASKS.md, "Data reader").

- `ClipDataset`: decoded clips + labels + mask fields, with temporal sampling, random resized crop
  and flip applied to the clip and its fields alike;
- `build_dataset(cfg, dataset, split=..., train=...)`: the reader of one dataset's stage outputs;
- `transforms`: the sampling and augmentation functions themselves;
- `shards`: the readers of WebDataset shard sets (what training reads), `device`: decoding a
  batch's JPEG frames on the training device.
"""

from .dataset import ClipDataset, ClipRecord, Sampling, collate
from .transforms import (
    random_resized_crop_box,
    sample_frame_indices,
    transform_clip,
    transform_fields,
)

__all__ = [
    "ClipDataset",
    "ClipRecord",
    "Sampling",
    "collate",
    "random_resized_crop_box",
    "sample_frame_indices",
    "transform_clip",
    "transform_fields",
]
