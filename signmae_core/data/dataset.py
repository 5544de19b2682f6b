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


class StoredClip(Protocol):
    """A stored clip before decoding: its geometry and a way to decode frames by index."""

    num_frames: int
    height: int
    width: int

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (repeats allowed): (len(indices), H, W, 3) uint8 RGB."""
        ...


def _default_frame_reader(path: str, indices: Sequence[int]) -> np.ndarray:
    from signmae_core.clips import read_frames

    return read_frames(path, indices)


def _default_meta(path: str) -> tuple[int, int, int]:
    from signmae_core.clips import read_clip_meta

    meta = read_clip_meta(path)
    return meta.num_frames, meta.height, meta.width


@dataclass
class FileClip:
    """A clip file of the decode stage (or anything a `FrameReader` reads by path)."""

    path: str
    num_frames: int
    height: int
    width: int
    read: FrameReader = _default_frame_reader

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        return self.read(self.path, list(indices))

    @property
    def jpegs(self) -> list[bytes]:
        """The clip file's JPEG frames as stored (read from the file; for a device decoder)."""
        from signmae_core.clips import read_clip_bytes

        with open(self.path, "rb") as handle:
            return read_clip_bytes(handle.read(), self.path)[1]


@dataclass
class BytesClip:
    """A whole clip file held in memory (a shard's `.smclip` member): frames decoded on demand
    (each stored frame at most once), the JPEG bytes kept for a device decoder."""

    jpegs: list[bytes]
    num_frames: int
    height: int
    width: int

    @classmethod
    def parse(cls, data: bytes, name: str = "clip") -> BytesClip:
        """From the clip file's bytes; raises `ClipError` when they are damaged or truncated."""
        from signmae_core.clips import read_clip_bytes

        meta, jpegs = read_clip_bytes(data, name)
        return cls(jpegs, meta.num_frames, meta.height, meta.width)

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        from signmae_core.clips import decode_jpeg

        decoded = {t: decode_jpeg(self.jpegs[t]) for t in sorted(set(int(i) for i in indices))}
        if not decoded:
            return np.zeros((0, self.height, self.width, 3), dtype=np.uint8)
        return np.stack([decoded[int(t)] for t in indices])


MISSING = object()  # `clip_item(fields=MISSING)`: the reader reads no fields at all


def draw_view(
    clip: StoredClip, s: Sampling, rng: np.random.Generator | None, view: int, num_views: int
) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """One view's frame indices (T,), crop box and flip: drawn from `rng` (training), or the
    deterministic evaluation view `view` of `num_views` (centred frames, whole frame)."""
    frames_index = sample_frame_indices(
        clip.num_frames, s.num_frames, s.frame_stride, rng, view=view, num_views=num_views
    )
    if rng is None:
        return frames_index, (0, 0, clip.height, clip.width), False
    box = random_resized_crop_box(rng, clip.height, clip.width, s.crop_scale, s.crop_ratio)
    return frames_index, box, bool(rng.random() < s.flip_prob)


def clip_items(
    clip: StoredClip,
    sampling: Sampling,
    fields: Any = MISSING,
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
    repeats: int = 1,
    decode: bool = True,
) -> list[dict[str, Any]]:
    """The one per-clip transform: a stored clip (+ its fields) -> `repeats` augmented items.

    Each item holds `clips` (3, T, S, S) uint8, `fields` (F, T, Ho, Wo) float16 (None when
    `fields` is MISSING; zeros and `has_fields` False when it is None or its frame count does not
    match the clip) and `sample_view`. Training (`rng`): view r draws its frames, crop and flip
    from `rng` after view r-1, so `repeats=1` is the single-view item; the frames of every view
    are decoded once. Evaluation (`rng` None): the deterministic view `view` of `num_views`.

    `decode=False` (a device decoder follows): nothing is decoded; instead of `clips` an item
    holds `jpegs` (the T stored JPEG frames of its view, shared objects across views), `box`
    (4,) int64 (y0, x0, h, w), `flip` and `clip_hw` (2,) int64, the same draws, and the fields
    transformed as above (`signmae_core.data.device.decode_batch` finishes the clips).
    """
    s = sampling
    draws = [draw_view(clip, s, rng, view, num_views) for _ in range(repeats)]
    if decode:
        wanted = np.concatenate([d[0] for d in draws])
        unique, inverse = np.unique(wanted, return_inverse=True)
        decoded = clip.frames(unique.tolist())[inverse]
    else:
        jpegs = clip.jpegs  # type: ignore[attr-defined]
    items = []
    for r, (frames_index, box, flip) in enumerate(draws):
        item: dict[str, Any] = {"sample_view": r if rng is not None else view}
        if decode:
            frames = decoded[r * s.num_frames : (r + 1) * s.num_frames]
            item["clips"] = transform_clip(frames, box, s.img_size, flip)
        else:
            item.update(jpegs=[jpegs[int(t)] for t in frames_index], flip=flip,
                        box=np.asarray(box, dtype=np.int64),
                        clip_hw=np.asarray((clip.height, clip.width), dtype=np.int64))
        item.update(_item_fields(clip, s, fields, frames_index, box, flip))
        items.append(item)
    return items


def _item_fields(clip: StoredClip, s: Sampling, fields: Any, frames_index: np.ndarray,
                 box: tuple[int, int, int, int], flip: bool) -> dict[str, Any]:
    """`fields`/`has_fields` of one view (see `clip_items`)."""
    if fields is MISSING:
        return {"fields": None, "has_fields": False}
    if fields is not None and fields.shape[1] == clip.num_frames:
        out = transform_fields(fields[:, frames_index], box, (clip.height, clip.width),
                               s.field_grid, flip)
        return {"fields": out, "has_fields": True}
    zeros = np.zeros((len(FIELD_NAMES), s.num_frames, *s.field_grid), dtype=np.float16)
    return {"fields": zeros, "has_fields": False}


class ClipDataset(torch.utils.data.Dataset):
    """Map-style dataset over `ClipRecord`s; see the module docstring for the item layout.

    `fields` is one source for every record, or a mapping dataset name -> source (records of
    several datasets in one reader); None gives items without fields. `decode=False` gives
    undecoded items (`clip_items`) for a device decoder.
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
        decode: bool = True,
    ) -> None:
        self.records = list(records)
        self.decode = decode
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

    def open_clip(self, record: ClipRecord) -> StoredClip:
        """The record's stored clip (its header read once, then cached)."""
        num_stored, height, width = self.clip_meta(record.clip_path)
        return FileClip(record.clip_path, num_stored, height, width, self._read_frames)

    def load(
        self,
        index: int,
        rng: np.random.Generator | None,
        view: int = 0,
        num_views: int = 1,
    ) -> dict[str, Any]:
        """Item `index`; augmented from `rng`, or evaluation view `view` of `num_views`."""
        return self.load_views(index, rng, view, num_views)[0]

    def load_views(
        self,
        index: int,
        rng: np.random.Generator | None,
        view: int = 0,
        num_views: int = 1,
        repeats: int = 1,
    ) -> list[dict[str, Any]]:
        """`repeats` views of item `index` from one read of the clip (`clip_items`)."""
        record = self.records[index]
        fields = MISSING if self.fields is None else self._fields_of(record)
        items = clip_items(self.open_clip(record), self.sampling, fields, rng, view, num_views,
                           repeats, decode=self.decode)
        for item in items:
            item.update(label=int(record.label), video_id=record.video_id)
        return items

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
