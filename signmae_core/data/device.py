"""Decoding training batches on the training device (docs/SHARDS.md, "Device decode").

Where the loader does not decode (`decode=False` readers: `clip_items`), each item carries its
view's JPEG frames and its draws (`box`, `flip`; the frames were picked already) and the fields
already cut by the same draws on the CPU. `collate_items` pools a batch's JPEG frames (each
stored frame once, however many views use it) and `decode_batch` makes the clips on the device:

    batch = collate_items(items)                      # jpegs: list[bytes], frame_ref (B, T)
    batch = decode_batch(batch, img_size, device)     # clips (B, 3, T, S, S) uint8 on device

one batched `torchvision.io.decode_jpeg(list, device=...)` call (nvjpeg on CUDA), then per view
the crop, the resize and the flip of the CPU loader (`transforms.resize_crop`, the same
function). On the CPU this gives the CPU loader's tensors (tests/test_shard_loader.py). The
model normalizes the uint8 clips on the device (`signmae_core.models.vit.to_unit_range`).
`DeviceDecode` is the engine's hook (`Trainer(prepare=...)`); `decode_on_device` reads
`data.decode_on`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .transforms import resize_crop

log = logging.getLogger(__name__)

Batch = dict[str, Any]
UNDECODED = ("jpegs", "frame_ref", "box", "flip", "clip_hw")  # what decode_batch consumes


def decode_on_device(choice: str, device: torch.device | str) -> bool:
    """`data.decode_on`: `device` decodes on the training device, `cpu` in the loader, `auto`
    on the device when it is CUDA."""
    if choice not in ("auto", "cpu", "device"):
        raise ValueError(f"decode_on must be auto, cpu or device, not {choice!r}")
    return choice == "device" or (choice == "auto" and torch.device(device).type == "cuda")


def decode_jpeg_list(
    jpegs: Sequence[bytes], device: torch.device | str = "cpu"
) -> list[torch.Tensor]:
    """JPEG frames -> [(3, H, W) uint8] on `device`, one batched call (nvjpeg on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    if not data:
        return []
    return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=torch.device(device)))


def decode_jpegs(jpegs: Sequence[bytes], device: torch.device | str = "cpu") -> torch.Tensor:
    """JPEG frames of one size -> (N, 3, H, W) uint8 on `device` (`decode_jpeg_list`)."""
    return torch.stack(decode_jpeg_list(jpegs, device))


def _decode_each(
    jpegs: Sequence[bytes], sizes: Sequence[tuple[int, int]], device: torch.device | str
) -> tuple[list[torch.Tensor], int]:
    """Frame by frame, after a batched call failed: a frame that does not decode becomes
    black (its clip's size) and is counted."""
    frames, failed = [], 0
    for data, (height, width) in zip(jpegs, sizes, strict=True):
        try:
            frames += decode_jpeg_list([data], device)
        except RuntimeError as exc:
            failed += 1
            log.warning("a JPEG frame did not decode (%s): a black frame in its place", exc)
            frames.append(torch.zeros(3, height, width, dtype=torch.uint8, device=device))
    return frames, failed


def collate_items(items: Sequence[dict[str, Any]]) -> Batch:
    """Stack items (`signmae_core.train.batches.collate`); undecoded items (with `jpegs`) have
    their frames pooled: `jpegs` lists each distinct frame object once, `frame_ref` (B, T) long
    indexes it per view, `frame_hw` (len(jpegs), 2) is each frame's clip size."""
    from signmae_core.train.batches import collate

    if "jpegs" not in items[0]:
        return collate(items)
    pooled: dict[int, int] = {}
    jpegs: list[bytes] = []
    sizes: list[tuple[int, int]] = []
    refs = []
    for item in items:
        row = []
        for data in item["jpegs"]:
            at = pooled.get(id(data))
            if at is None:
                at = pooled[id(data)] = len(jpegs)
                jpegs.append(data)
                sizes.append(tuple(int(v) for v in item["clip_hw"]))
            row.append(at)
        refs.append(row)
    batch = collate([{k: v for k, v in item.items() if k != "jpegs"} for item in items])
    batch.update(
        jpegs=jpegs,
        frame_ref=torch.tensor(refs, dtype=torch.long),
        frame_hw=torch.tensor(sizes, dtype=torch.long).reshape(-1, 2),
    )
    return batch


def decode_batch(batch: Batch, out_size: int, device: torch.device | str) -> Batch:
    """An undecoded batch (`collate_items`) -> the same batch with `clips` (B, 3, T, S, S) uint8
    on `device`: the pooled frames decoded in one call, then per view its frames cropped to
    `box`, resized to `out_size` and flipped (`resize_crop`). A batch with `clips` already is
    returned as it is. `decode_failures` counts frames that did not decode (black instead)."""
    if "jpegs" not in batch:
        return batch
    jpegs = batch["jpegs"]
    failed = 0
    try:
        frames = decode_jpeg_list(jpegs, device)
    except RuntimeError:
        frames, failed = _decode_each(jpegs, batch["frame_hw"].tolist(), device)
    views = []
    for refs, box, flip in zip(
        batch["frame_ref"].tolist(), batch["box"].tolist(), batch["flip"].tolist(), strict=True
    ):
        y0, x0, height, width = box
        crop = torch.stack([frames[i][:, y0 : y0 + height, x0 : x0 + width] for i in refs])
        views.append(resize_crop(crop, out_size, bool(flip)))
    out = {k: v for k, v in batch.items() if k not in (*UNDECODED, "frame_hw")}
    out["clips"] = torch.stack(views)
    out["decode_failures"] = failed
    return out


class DeviceDecode:
    """The engine's batch hook (`Trainer(prepare=...)`): `decode_batch` on the training device;
    `failed` counts frames that did not decode in this process."""

    def __init__(self, out_size: int) -> None:
        self.out_size = out_size
        self.failed = 0

    def __call__(self, batch: Batch, device: torch.device) -> Batch:
        out = decode_batch(batch, self.out_size, device)
        self.failed += int(out.pop("decode_failures", 0))
        return out


def device_clip_views(
    jpegs: Sequence[bytes],
    height: int,
    width: int,
    draws: Sequence[Any],
    out_size: int,
    device: torch.device | str,
) -> torch.Tensor:
    """The views of one clip decoded and transformed on `device`: (k, 3, T, S, S) uint8.

    `draws` are `dataset.draw_view` results (frame indices, box, flip); only the frames the
    views use are decoded (`decode_batch` over the clip's views)."""
    items = [
        {
            "jpegs": [jpegs[int(t)] for t in index],
            "box": np.asarray(box, dtype=np.int64),
            "flip": flip,
            "clip_hw": np.asarray((height, width), dtype=np.int64),
        }
        for index, box, flip in draws
    ]
    return decode_batch(collate_items(items), out_size, device)["clips"]
