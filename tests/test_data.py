"""The dataset reader: temporal sampling, crop and flip of clips and fields alike, pooling
commutes with crop and flip, and a deterministic, resumable order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signmae_core.data import (
    ClipDataset,
    ClipRecord,
    Sampling,
    collate,
    random_resized_crop_box,
    sample_frame_indices,
    transform_clip,
    transform_fields,
)
from signmae_core.masking import FIELD_NAMES, pool_fields
from signmae_core.masking.fields import FLIP_PERMUTATION

F = {name: i for i, name in enumerate(FIELD_NAMES)}


# ---- temporal sampling -------------------------------------------------------------------------
def test_training_frames_are_a_strided_run_inside_the_clip() -> None:
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        idx = sample_frame_indices(40, 8, 3, rng)
        assert idx.shape == (8,) and (np.diff(idx) == 3).all()
        assert idx[0] >= 0 and idx[-1] < 40
        starts.add(int(idx[0]))
    assert len(starts) > 5


def test_evaluation_views_are_deterministic_and_spread() -> None:
    views = [sample_frame_indices(100, 8, 2, None, view=v, num_views=3) for v in range(3)]
    assert views[0][0] < views[1][0] < views[2][0]
    assert np.array_equal(views[1], sample_frame_indices(100, 8, 2, None, view=1, num_views=3))
    centre = sample_frame_indices(100, 8, 2)
    assert centre[0] == round(0.5 * (100 - 15))


def test_short_clips_are_stretched_not_padded_with_garbage() -> None:
    idx = sample_frame_indices(5, 8, 2, np.random.default_rng(0))
    assert idx.shape == (8,) and idx.min() == 0 and idx.max() == 4
    assert (np.diff(idx) >= 0).all()


# ---- spatial transforms ------------------------------------------------------------------------
def test_random_resized_crop_stays_inside_with_the_asked_area() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        y0, x0, h, w = random_resized_crop_box(rng, 64, 48, (0.5, 1.0), (0.75, 1.333))
        assert 0 <= y0 and y0 + h <= 64 and 0 <= x0 and x0 + w <= 48
        assert 0.45 <= h * w / (64 * 48) <= 1.0


def test_clip_transform_crops_resizes_and_flips() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    same = transform_clip(frames, (8, 4, 16, 16), 16, flip=False)
    assert same.shape == (3, 4, 16, 16) and same.dtype == torch.uint8
    assert torch.equal(same, torch.from_numpy(frames[:, 8:24, 4:20]).permute(3, 0, 1, 2))
    flipped = transform_clip(frames, (8, 4, 16, 16), 16, flip=True)
    assert torch.equal(flipped, same.flip(-1))
    assert transform_clip(frames, (0, 0, 32, 32), 24, flip=False).shape == (3, 4, 24, 24)


def random_fields(frames: int = 8, cells: int = 14, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fields = rng.random((len(FIELD_NAMES), frames, cells, cells)).astype(np.float16)
    fields[F["right_hand"]] *= 0.5  # make the hands distinguishable
    return fields


def pooled(fields: np.ndarray, grid: tuple[int, int, int]) -> torch.Tensor:
    return pool_fields(torch.from_numpy(fields.astype(np.float32))[None], grid)[0]


@pytest.mark.parametrize(
    ("out_size", "patch"),
    [(64, 16), (128, 16)],  # same scale as the stored clip, and twice its scale
)
def test_pooling_after_crop_and_flip_equals_crop_and_flip_of_the_pooled_map(
    out_size: int, patch: int
) -> None:
    """Stored clip 112 px with 8 px cells (14 x 14); crop box (16, 32, 64, 64) aligned to tokens.

    Output tokens of `patch` px cover `patch * 64 / out_size` stored px, so the reference is the
    stored fields pooled at that token size, then cut to the box and mirrored (hands swapped).
    """
    fields = random_fields()
    box = (16, 32, 64, 64)
    stored_token = patch * 64 // out_size  # stored px per output token
    out_cells = out_size // 8
    for flip in (False, True):
        moved = transform_fields(fields, box, (112, 112), (out_cells, out_cells), flip)
        side = out_size // patch
        after = pooled(moved, (4, side, side))
        full_side = 112 // stored_token
        before = pooled(fields, (4, full_side, full_side))
        y0, x0 = box[0] // stored_token, box[1] // stored_token
        expected = before[:, :, y0 : y0 + side, x0 : x0 + side]
        if flip:
            expected = expected[list(FLIP_PERMUTATION)].flip(-1)
        assert torch.allclose(after, expected, atol=2e-3), (flip, (after - expected).abs().max())


def test_a_flip_swaps_the_hands() -> None:
    fields = np.zeros((len(FIELD_NAMES), 1, 4, 4), np.float16)
    fields[F["left_hand"], 0, 1, 0] = 1.0
    fields[F["left_motion"], 0, 1, 0] = 0.5
    flipped = transform_fields(fields, (0, 0, 32, 32), (32, 32), (4, 4), flip=True)
    assert flipped[F["right_hand"], 0, 1, 3] == 1.0 and flipped[F["left_hand"]].sum() == 0
    assert flipped[F["right_motion"], 0, 1, 3] == 0.5 and flipped[F["left_motion"]].sum() == 0


# ---- the dataset -------------------------------------------------------------------------------
class SquareClips:
    """In-memory clips: a white square (the 'left hand') walking right on black frames.

    Serves as frame reader, meta reader and field source, so the dataset runs without files.
    """

    def __init__(self, frames: int = 24, size: int = 64, cell: int = 2) -> None:
        self.size, self.cell = size, cell
        self.clip = np.zeros((frames, size, size, 3), np.uint8)
        cells = size // cell
        self.fields = np.zeros((len(FIELD_NAMES), frames, cells, cells), np.float16)
        for t in range(frames):
            x = 4 + 2 * t
            self.clip[t, 24:40, x : x + 16] = 255
            self.fields[F["left_hand"], t] = _coverage(size, cell, 24, 40, x, x + 16)

    def read_frames(self, path: str, indices) -> np.ndarray:
        return self.clip[list(indices)]

    def read_meta(self, path: str) -> tuple[int, int, int]:
        return self.clip.shape[0], self.size, self.size

    def get(self, video_id: str) -> np.ndarray | None:
        return None if video_id == "nofields" else self.fields


def _coverage(size: int, cell: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    mask[y0:y1, x0:x1] = 1
    cells = size // cell
    return mask.reshape(cells, cell, cells, cell).mean(axis=(1, 3))


def make_dataset(train: bool = True, ids=("a", "b", "nofields")) -> tuple[ClipDataset, object]:
    source = SquareClips()
    records = [ClipRecord(v, f"{v}.smclip", label=i - 1) for i, v in enumerate(ids)]
    sampling = Sampling(
        num_frames=8,
        img_size=48,
        frame_stride=2,
        crop_scale=(0.4, 1.0),
        flip_prob=0.5,
        field_cell=8,
    )
    dataset = ClipDataset(
        records,
        sampling,
        fields=source,
        train=train,
        seed=3,
        read_frames=source.read_frames,
        read_meta=source.read_meta,
    )
    return dataset, source


def test_items_have_the_documented_layout() -> None:
    dataset, _ = make_dataset()
    item = dataset[0]
    assert item["clips"].shape == (3, 8, 48, 48) and item["clips"].dtype == torch.uint8
    assert item["fields"].shape == (len(FIELD_NAMES), 8, 6, 6)
    assert item["fields"].dtype == np.float16 and item["has_fields"]
    assert item["label"] == -1 and item["video_id"] == "a"
    missing = dataset[2]
    assert not missing["has_fields"] and not missing["fields"].any()
    batch = collate([dataset[i] for i in range(3)])
    assert batch["clips"].shape == (3, 3, 8, 48, 48) and batch["label"].tolist() == [-1, 0, 1]
    assert batch["fields"].shape == (3, len(FIELD_NAMES), 8, 6, 6)
    assert batch["has_fields"].tolist() == [True, True, False]


def test_fields_follow_the_pixels_through_sampling_crop_and_flip() -> None:
    """The white square is the left hand: after any augmentation, per-cell brightness of the
    output clip equals the hand presence of the output fields (the right hand after a flip).

    Stored fields have 2 px cells, so they can follow the square's edges; what remains is the
    resize filter's blur of the pixels at the edges."""
    dataset, _ = make_dataset()
    flips = 0
    for seed in range(12):
        item = dataset.load(0, np.random.default_rng(seed))
        clip = item["clips"][0].float().numpy() / 255  # (T, 48, 48), one channel
        brightness = clip.reshape(8, 6, 8, 6, 8).mean(axis=(2, 4))
        fields = item["fields"].astype(np.float32)
        hands = fields[F["left_hand"]] + fields[F["right_hand"]]
        assert np.abs(brightness - hands).max() < 0.1, seed
        assert abs(brightness.sum() - hands.sum()) < 0.02 * brightness.sum(), seed
        flipped = fields[F["right_hand"]].sum() > 0
        assert fields[F["left_hand"]].sum() == 0 or not flipped
        flips += flipped
    assert 0 < flips < 12


def test_evaluation_items_are_deterministic_whole_frames() -> None:
    dataset, source = make_dataset(train=False)
    a, b = dataset[1], dataset[1]
    assert torch.equal(a["clips"], b["clips"]) and np.array_equal(a["fields"], b["fields"])
    assert a["fields"][F["right_hand"]].sum() == 0  # never flipped


def test_the_engine_order_resumes_at_a_sample_count() -> None:
    from signmae_core.train.batches import EpochBatches

    dataset, _ = make_dataset(ids=tuple(f"c{i}" for i in range(6)))
    source = EpochBatches(len(dataset), dataset.load, batch_size=2, seed=5, epochs=2)
    straight = [b["video_id"] + [b["clips"].float().mean().item()] for b in source]
    resumed = [b["video_id"] + [b["clips"].float().mean().item()] for b in source.start_at(4)]
    assert len(straight) == 6 and resumed == straight[2:]


def test_sampling_comes_from_the_model_data_and_masks_sections() -> None:
    from signmae_core.config import ConfigError, load_config

    cfg = load_config("ci_tiny", ["data.frame_stride=3", "data.flip_prob=0", "masks.cell=4"])
    sampling = Sampling.from_config(cfg)
    assert (sampling.num_frames, sampling.img_size) == (cfg.model.num_frames, cfg.model.img_size)
    assert sampling.frame_stride == 3 and sampling.flip_prob == 0
    assert sampling.field_grid == (cfg.model.img_size // 4,) * 2
    with pytest.raises(ConfigError, match="crop_scale"):
        load_config(None, ["data.crop_scale=[0.9, 0.5]"])
