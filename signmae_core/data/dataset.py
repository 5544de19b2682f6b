"""The one dataset reader for training and evaluation: decoded clips + labels + mask fields.

Each item is a dict::

    clips     torch.uint8 (3, T, S, S)      T = ModelConfig.num_frames, S = ModelConfig.img_size
    label     int                           class id, -1 for unlabelled clips
    fields    np.float16 (F, T, Hc, Wc)     mask fields after the same transform (see
                                            signmae_core.masking.fields.FIELD_NAMES), or None
                                            when the reader has no fields
    has_fields bool                         False when this clip has no fields (zeros instead)
    video_id  str

`load(index, rng)` draws the training augmentation from `rng` (frame start, random resized crop,
flip); `load(index, None)` is the deterministic evaluation view (centred frames, whole frame).
`signmae_core.train.batches.EpochBatches(len(ds), ds.load, batch_size, seed=...)` gives the
deterministic, resumable order (an item's RNG is seeded by (seed, epoch, index)); its `collate`
stacks the items, or use `collate` here (the same, for plain DataLoader use).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from signmae_core.masking.fields import FIELD_NAMES, cell_grid

from .transforms import (
    random_resized_crop_box,
    sample_frame_indices,
    transform_clip,
    transform_fields,
)


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a dataset: where its decoded frames are and its label (-1: none)."""

    video_id: str
    clip_path: str
    label: int = -1
    split: str = ""
    dataset: str = ""


@dataclass(frozen=True)
class Sampling:
    """How items are cut: frames and output size (from ModelConfig) and the augmentation."""

    num_frames: int
    img_size: int
    frame_stride: int = 2
    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    flip_prob: float = 0.5
    field_cell: int = 8

    @classmethod
    def from_config(cls, cfg: Any) -> Sampling:
        """From a `PipelineConfig`: frames and size from `model`, the rest from `data`, the
        field cell from `masks.cell`."""
        return cls(
            num_frames=cfg.model.num_frames,
            img_size=cfg.model.img_size,
            frame_stride=cfg.data.frame_stride,
            crop_scale=tuple(cfg.data.crop_scale),
            crop_ratio=tuple(cfg.data.crop_ratio),
            flip_prob=cfg.data.flip_prob,
            field_cell=cfg.masks.cell,
        )

    @property
    def field_grid(self) -> tuple[int, int]:
        """(Ho, Wo) cells of the output fields: cells of `field_cell` output pixels."""
        return cell_grid(self.img_size, self.img_size, self.field_cell)


class FieldSource(Protocol):
    """Anything that gives a clip's fields (F, T, Hc, Wc) by video id (e.g. `FieldReader`)."""

    def get(self, video_id: str) -> np.ndarray | None: ...


class FrameReader(Protocol):
    def __call__(self, path: str, indices: Sequence[int]) -> np.ndarray: ...


def _default_frame_reader(path: str, indices: Sequence[int]) -> np.ndarray:
    from signmae_core.clips import read_frames

    return read_frames(path, indices)


def _default_meta(path: str) -> tuple[int, int, int]:
    from signmae_core.clips import read_clip_meta

    meta = read_clip_meta(path)
    return meta.num_frames, meta.height, meta.width


class ClipDataset(torch.utils.data.Dataset):
    """Map-style dataset over `ClipRecord`s; see the module docstring for the item layout.

    `fields` is one source for every record, or a mapping dataset name -> source (records of
    several datasets in one reader); None gives items without fields.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        sampling: Sampling,
        fields: FieldSource | Mapping[str, FieldSource] | None = None,
        train: bool = True,
        seed: int = 0,
        read_frames: FrameReader = _default_frame_reader,
        read_meta: Any = _default_meta,
    ) -> None:
        self.records = list(records)
        self.sampling = sampling
        self.fields = fields
        self.train = train
        self.seed = seed
        self._read_frames = read_frames
        self._read_meta = read_meta
        self._meta_cache: dict[str, tuple[int, int, int]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Training: augmentation seeded by (seed, index); evaluation: the deterministic view."""
        rng = np.random.default_rng([self.seed, int(index)]) if self.train else None
        return self.load(int(index), rng)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def clip_meta(self, path: str) -> tuple[int, int, int]:
        """(num_frames, height, width) of a stored clip (read once, then cached)."""
        meta = self._meta_cache.get(path)
        if meta is None:
            meta = self._meta_cache[path] = tuple(self._read_meta(path))  # type: ignore[assignment]
        return meta

    def load(
        self,
        index: int,
        rng: np.random.Generator | None,
        view: int = 0,
        num_views: int = 1,
    ) -> dict[str, Any]:
        """Item `index`; augmented from `rng`, or evaluation view `view` of `num_views`."""
        record = self.records[index]
        s = self.sampling
        num_stored, height, width = self.clip_meta(record.clip_path)
        frames_index = sample_frame_indices(
            num_stored, s.num_frames, s.frame_stride, rng, view=view, num_views=num_views
        )
        if rng is not None:
            box = random_resized_crop_box(rng, height, width, s.crop_scale, s.crop_ratio)
            flip = bool(rng.random() < s.flip_prob)
        else:
            box, flip = (0, 0, height, width), False
        frames = self._read_frames(record.clip_path, frames_index.tolist())
        item: dict[str, Any] = {
            "clips": transform_clip(frames, box, s.img_size, flip),
            "label": int(record.label),
            "video_id": record.video_id,
        }
        if self.fields is not None:
            fields = self._fields_of(record)
            has_fields = fields is not None and fields.shape[1] == num_stored
            if has_fields:
                item["fields"] = transform_fields(
                    fields[:, frames_index], box, (height, width), s.field_grid, flip
                )
            else:
                item["fields"] = np.zeros(
                    (len(FIELD_NAMES), s.num_frames, *s.field_grid), dtype=np.float16
                )
            item["has_fields"] = has_fields
        else:
            item["fields"] = None
            item["has_fields"] = False
        return item

    def _fields_of(self, record: ClipRecord) -> np.ndarray | None:
        """The stored fields of a record's clip (a mapping of sources is keyed by dataset)."""
        source = self.fields
        if isinstance(source, Mapping):
            source = source.get(record.dataset)
            if source is None:
                return None
        return source.get(record.video_id)


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items: clips (B, 3, T, S, S) uint8, label (B,) long, fields (B, F, T, Ho, Wo)
    float16 or None, has_fields (B,) bool, video_id list of str."""
    fields = [item["fields"] for item in items]
    return {
        "clips": torch.stack([item["clips"] for item in items]),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "fields": None if fields[0] is None else torch.from_numpy(np.stack(fields)),
        "has_fields": torch.tensor([item["has_fields"] for item in items], dtype=torch.bool),
        "video_id": [item["video_id"] for item in items],
    }
