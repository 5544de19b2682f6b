"""Reconstruction figures: original / masked / reconstruction frames, one row pair per sampler.

The figure for clip b has one row of original frames, then for every sampler a row of the
masked input (masked tokens grey) and a row of the reconstruction (predicted masked tokens pasted
into the visible ones); columns are frames spread over the clip, one per tubelet slot at most.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

MAX_COLUMNS = 8


def _frames(video: torch.Tensor, columns: list[int]) -> list[np.ndarray]:
    """(3, T, H, W) in [0, 1] -> the chosen frames as (H, W, 3) float arrays."""
    return [video[:, t].permute(1, 2, 0).float().clamp(0, 1).cpu().numpy() for t in columns]


def reconstruction_png(
    model: nn.Module,
    clips: torch.Tensor,
    masks: dict[str, torch.Tensor],
    title: str = "",
    max_clips: int = 2,
) -> bytes:
    """A PNG of the reconstructions of `clips` (B,3,T,H,W) under each (B,N) mask in `masks`.

    `model` is the pretraining model (it offers `reconstruct(clips, mask)`); the call runs under
    `torch.no_grad()` and leaves the model's train/eval mode as it was.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    count = min(max_clips, clips.shape[0])
    clips = clips[:count]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pictures = {
                name: model.reconstruct(clips, mask[:count].to(clips.device))
                for name, mask in masks.items()
            }
    finally:
        model.train(was_training)
    num_frames = clips.shape[2]
    tubelet = getattr(getattr(model, "spec", None), "tubelet_size", 1)
    slots = list(range(0, num_frames, tubelet))
    picks = np.linspace(0, len(slots) - 1, min(MAX_COLUMNS, len(slots))).round().astype(int)
    columns = [slots[i] for i in picks]
    rows: list[tuple[str, list[np.ndarray]]] = []
    for b in range(count):
        first = next(iter(pictures.values()))
        rows.append((f"clip {b}: original", _frames(first["original"][b], columns)))
        for name, picture in pictures.items():
            rows.append((f"{name}: masked", _frames(picture["masked"][b], columns)))
            rows.append((f"{name}: reconstruction", _frames(picture["reconstruction"][b], columns)))
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(1.4 * len(columns) + 1.6, 1.4 * len(rows)),
        squeeze=False,
    )
    for r, (label, frames) in enumerate(rows):
        for c, frame in enumerate(frames):
            ax = axes[r][c]
            ax.imshow(frame, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={columns[c]}", fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        height = fig.get_figheight()
        fig.subplots_adjust(top=1 - 0.5 / height)  # room for the title, no more
        fig.suptitle(title, fontsize=9, y=1 - 0.15 / height)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_reconstruction(
    path: str | Path,
    model: nn.Module,
    clips: torch.Tensor,
    masks: dict[str, torch.Tensor],
    title: str = "",
    max_clips: int = 2,
) -> Path:
    """Write `reconstruction_png(...)` to `path` atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(reconstruction_png(model, clips, masks, title, max_clips))
    os.replace(tmp, path)
    return path
