"""`signmae inspect <video_id>`: a PNG contact sheet to check the extraction by eye.

One column per sampled frame of the stored clip, one row per panel:

- `landmarks`: the frame with both hands' skeletons (signer's left orange, right cyan) and the
  upper-body pose (white);
- `parts`: the frame with the part map laid over it (body blue, face yellow, hands as above).

A panel is a function `panel(tile, clip, t) -> tile` that draws on one frame (`tile` is the
frame scaled to the sheet's tile size, `(S, S, 3)` uint8 RGB; `clip` the `ClipExtraction`; `t`
the frame index); add one to `PANELS` and it can be asked for with `--panels`. Other views (for
example mask maps) can add their own option in `register` and their own rows with `add_rows`.

`--masks` also writes the mask figure (`inspect_masks`): per time slot the frame, the mask
fields, the pooled score and one mask drawn by each sampler. The clip may be named by its video
id or by its file's stem; everything is read through the plan (`pipelines.outputs`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from signmae_core.errors import InputError
from signmae_core.parts import BODY, FACE, LEFT_HAND, NUM_PARTS, RIGHT_HAND

if TYPE_CHECKING:
    from .dag import Plan

Panel = Callable[[np.ndarray, Any, int], np.ndarray]

LEFT_COLOUR = (255, 140, 0)  # the signer's left hand
RIGHT_COLOUR = (0, 200, 255)  # the signer's right hand
BODY_COLOUR = (60, 90, 255)
FACE_COLOUR = (255, 230, 0)
PART_COLOURS = np.zeros((NUM_PARTS, 3), dtype=np.uint8)  # part label -> RGB (background black)
for _label, _colour in ((BODY, BODY_COLOUR), (FACE, FACE_COLOUR), (LEFT_HAND, LEFT_COLOUR),
                        (RIGHT_HAND, RIGHT_COLOUR)):
    PART_COLOURS[_label] = _colour
PART_ALPHA = 0.5
HAND_BONES = [
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19),
    (19, 20),
]
POSE_BONES = [
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24), (9, 10),
    (2, 5), (7, 2), (8, 5),
]


@dataclass
class Inspection:
    """What a contact sheet shows: the stored clip and its extraction."""

    video_id: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, the stored clip
    clip: Any  # signmae_core.extract.ClipExtraction


# ---- panels ------------------------------------------------------------------------------------
def _to_px(points: np.ndarray, size: int) -> np.ndarray:
    """Normalized (u, v) -> integer pixel centres of a `size` tile."""
    return np.round(points[..., :2] * size - 0.5).astype(np.int32)


def _draw_skeleton(
    tile: np.ndarray, points: np.ndarray, bones: list[tuple[int, int]], colour: tuple[int, ...],
    min_visibility: float | None = None,
) -> None:
    import cv2

    size = tile.shape[0]
    if points.ndim != 2 or np.isnan(points[:, :2]).all():
        return
    visible = np.isfinite(points[:, 0])
    if min_visibility is not None:
        visible &= np.nan_to_num(points[:, 3]) >= min_visibility
    px = _to_px(points, size)
    thickness = max(1, size // 128)
    for a, b in bones:
        if visible[a] and visible[b]:
            cv2.line(tile, tuple(map(int, px[a])), tuple(map(int, px[b])), colour, thickness,
                     cv2.LINE_AA)
    for i in np.flatnonzero(visible):
        cv2.circle(tile, tuple(map(int, px[i])), thickness + 1, colour, -1, cv2.LINE_AA)


def landmarks_panel(tile: np.ndarray, clip: Any, t: int) -> np.ndarray:
    """The frame with pose (white) and hand skeletons (signer's left orange, right cyan)."""
    out = tile.copy()
    _draw_skeleton(out, clip.pose[t], POSE_BONES, (255, 255, 255), min_visibility=0.5)
    _draw_skeleton(out, clip.left_hand[t], HAND_BONES, LEFT_COLOUR)
    _draw_skeleton(out, clip.right_hand[t], HAND_BONES, RIGHT_COLOUR)
    return out


def parts_panel(tile: np.ndarray, clip: Any, t: int) -> np.ndarray:
    """The frame with the part map laid over it (nearest-neighbour upscaled)."""
    import cv2

    size = tile.shape[0]
    labels = cv2.resize(clip.part_maps[t], (size, size), interpolation=cv2.INTER_NEAREST)
    colour = PART_COLOURS[labels]
    out = tile.astype(np.float32)
    painted = labels > 0
    out[painted] = (1 - PART_ALPHA) * out[painted] + PART_ALPHA * colour[painted]
    return out.astype(np.uint8)


PANELS: dict[str, Panel] = {"landmarks": landmarks_panel, "parts": parts_panel}


# ---- the sheet ---------------------------------------------------------------------------------
def sample_frames(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over a clip (all frames when it is shorter)."""
    if num_frames <= count:
        return list(range(num_frames))
    return [int(round(i)) for i in np.linspace(0, num_frames - 1, count)]


def _caption(tile: np.ndarray, text: str) -> None:
    import cv2

    scale = max(0.35, tile.shape[0] / 400)
    cv2.putText(tile, text, (4, int(16 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (4, int(16 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)


def panel_rows(
    inspection: Inspection, indices: list[int], panels: list[str], tile: int
) -> list[np.ndarray]:
    """One `(tile, len(indices) * tile, 3)` image row per panel name."""
    import cv2

    clip = inspection.clip
    rows = []
    for name in panels:
        tiles = []
        for t in indices:
            frame = cv2.resize(inspection.frames[t], (tile, tile), interpolation=cv2.INTER_LINEAR)
            drawn = PANELS[name](frame, clip, t)
            found = "L" if clip.left_found[t] else "-"
            found += "R" if clip.right_found[t] else "-"
            _caption(drawn, f"{name} t={t} {found}")
            tiles.append(drawn)
        rows.append(np.concatenate(tiles, axis=1))
    return rows


def legend(width: int, height: int = 28) -> np.ndarray:
    """A strip naming the colours."""
    import cv2

    strip = np.full((height, width, 3), 32, dtype=np.uint8)
    items = [("body", BODY_COLOUR), ("face", FACE_COLOUR), ("signer's left hand",
             LEFT_COLOUR), ("signer's right hand", RIGHT_COLOUR), ("pose", (255, 255, 255))]
    x = 6
    for text, colour in items:
        cv2.rectangle(strip, (x, 7), (x + 14, 21), tuple(int(c) for c in colour), -1)
        cv2.putText(strip, text, (x + 18, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1,
                    cv2.LINE_AA)
        x += 26 + 8 * len(text)
    return strip


def contact_sheet(
    inspection: Inspection,
    panels: list[str] | None = None,
    num_frames: int = 8,
    tile: int = 192,
    add_rows: list[np.ndarray] | None = None,
) -> np.ndarray:
    """The sheet as one `(H, W, 3)` uint8 RGB image: a row per panel, then `add_rows`, legend."""
    panels = panels or list(PANELS)
    unknown = [p for p in panels if p not in PANELS]
    if unknown:
        raise InputError(f"unknown panel(s) {unknown} (known: {', '.join(PANELS)})")
    indices = sample_frames(len(inspection.frames), num_frames)
    if not indices:
        raise InputError(f"clip {inspection.video_id} has no frames")
    rows = panel_rows(inspection, indices, panels, tile) + list(add_rows or [])
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate([*rows, legend(width)], axis=0)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB image as PNG; returns the path."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise InputError(f"cannot write {path}")
    return path


# ---- loading -----------------------------------------------------------------------------------
def resolve_video_id(plan: Plan, dataset: str, name: str) -> str:
    """The video id `name` stands for in the dataset's manifest: the id itself, the id of the
    row whose file stem is `name` (`s00_c003_r00` -> `videos__s00_c003_r00`), or the one id that
    ends with `__<name>`. Else an InputError listing the closest ids (or the ids it matches)."""
    from . import outputs
    from .dag import closest

    manifest = outputs.manifest(plan, dataset).select(["video_id", "path"]).to_pylist()
    ids = sorted(row["video_id"] for row in manifest)
    if name in ids:
        return name
    found = sorted({r["video_id"] for r in manifest if PurePosixPath(r["path"]).stem == name})
    found = found or [i for i in ids if i.endswith(f"__{name}")]
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f"{name!r} matches {len(found)} clips of dataset {dataset} "
                         f"({', '.join(found[:8])}); give one of these video ids")
    raise InputError(f"dataset {dataset}: {closest(name, ids, 'video id')}")


def clip_row(plan: Plan, dataset: str, video_id: str) -> dict[str, Any]:
    """The decode stage's row of an ok clip (`clip_path` absolute); else an InputError."""
    from . import outputs

    rows = [r for r in outputs.clip_rows(plan, dataset) if r["video_id"] == video_id]
    if not rows:
        raise InputError(f"clip {video_id!r} is not in the decode output of dataset {dataset} "
                         f"(its video failed ingest: see the manifest)")
    if rows[0]["status"] != "ok":
        raise InputError(f"clip {video_id!r} failed decoding: {rows[0]['error']}")
    return rows[0]


def load_inspection(plan: Plan, dataset: str, name: str) -> Inspection:
    """The stored clip and the extraction of the clip `name` stands for (`resolve_video_id`),
    from the finished outputs of the plan's config."""
    from signmae_core.clips import read_clip
    from signmae_core.extract.schema import ExtractionError, load_clip

    from . import outputs

    video_id = resolve_video_id(plan, dataset, name)
    row = clip_row(plan, dataset, video_id)
    folder = outputs.extraction(plan, dataset).folder

    def read_extraction() -> Any:
        try:
            return load_clip(folder, video_id)
        except ExtractionError as exc:  # absent or failed: a fact, not damage
            raise InputError(str(exc)) from None

    clip = outputs.readable(plan, "extract", dataset, folder, read_extraction)
    path = row["clip_path"]
    frames = outputs.readable(plan, "decode", dataset, path, lambda: read_clip(path))
    return Inspection(video_id, frames, clip)


# ---- the mask figure ---------------------------------------------------------------------------
def inspect_masks(plan: Plan, dataset: str, video_id: str, out: str | Path, seed: int = 0
                  ) -> Path:
    """Write `out` (PNG): per time slot, the frame, the part fields, the pooled score and one mask
    drawn by each sampler, for a clip's evaluation view (whole frame, centred frames)."""
    import torch

    from signmae_core.data import ClipDataset, ClipRecord, Sampling
    from signmae_core.masking.figure import save_mask_figure
    from signmae_core.models import token_grid

    from . import outputs

    cfg = plan.cfg
    row = clip_row(plan, dataset, video_id)
    reader = outputs.field_reader(plan, dataset)
    if video_id not in reader:
        reason = reader.failed.get(video_id, "not in the mask output")
        raise InputError(f"no mask fields for {video_id!r} in {dataset}: {reason}")
    record = ClipRecord(video_id, row["clip_path"], dataset=dataset)
    one = ClipDataset([record], Sampling.from_config(cfg), fields=reader, train=False)
    item = one.load(0, None)
    grid = token_grid(cfg.model)
    masks, scores = _draw_masks(cfg, grid, torch.from_numpy(item["fields"])[None], seed)
    title = (
        f"{dataset}/{video_id}  masks {plan.version(plan.key('masks', dataset))}  "
        f"ratio {cfg.masking.ratio}  strength {cfg.masking.strength}"
    )
    frames = item["clips"].permute(1, 2, 3, 0).numpy()
    return save_mask_figure(out, frames, item["fields"], scores, masks, grid, title=title)


def _draw_masks(cfg: Any, grid: Any, fields: Any, seed: int) -> tuple[dict[str, Any], Any]:
    """One mask per sampler (name -> (T', H', W') bool) and the pooled score, same seed each."""
    import torch

    from signmae_core.masking import SAMPLERS, TokenMasker

    masks, scores = {}, None
    for name in sorted(SAMPLERS):
        masker = TokenMasker.from_config(cfg.masking.model_copy(update={"sampler": name}), grid)
        draw = masker(fields, generator=torch.Generator().manual_seed(seed))
        masks[name] = draw.mask[0].numpy()
        scores = draw.maps.scores[0].numpy()
    return masks, scores


# ---- the command -------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    from signmae_core.config import load_config

    from .dag import Plan

    plan = Plan.from_config(load_config(args.config, args.overrides))
    dataset = plan.cfg.dataset(args.dataset).name
    inspection = load_inspection(plan, dataset, args.video_id)
    panels = [p.strip() for p in args.panels.split(",") if p.strip()]
    sheet = contact_sheet(inspection, panels, num_frames=args.frames, tile=args.tile)
    out = write_png(args.out or f"inspect_{inspection.video_id}.png", sheet)
    clip = inspection.clip
    hands = (clip.left_found | clip.right_found).mean() if clip.num_frames else 0.0
    print(f"inspect: {out} ({clip.num_frames} frames, hands found in {hands:.0%})")
    if args.masks:
        figure = inspect_masks(plan, dataset, inspection.video_id,
                               out.with_name(f"{out.stem}_masks.png"))
        print(f"inspect: {figure} (mask fields, score and one mask per sampler)")
    return 0


def register(sub: Any, add_config_args: Callable[[Any], None]) -> None:
    """Add `signmae inspect` to the CLI's subcommands."""
    p = sub.add_parser("inspect", help="write a PNG contact sheet of a clip's extraction")
    p.add_argument("video_id", help="the clip's video id (as in the manifest), or its file's "
                   "name without the extension")
    p.add_argument("--dataset", help="dataset name (default: the first configured)")
    p.add_argument("--out", help="PNG path (default: inspect_<video_id>.png)")
    p.add_argument("--frames", type=int, default=8, help="frames to show (spread evenly)")
    p.add_argument("--tile", type=int, default=192, help="tile size in pixels")
    p.add_argument("--panels", default=",".join(PANELS),
                   help=f"comma-separated panel rows (known: {', '.join(PANELS)})")
    p.add_argument("--masks", action="store_true",
                   help="also write <out>_masks.png: per time slot the frame, the mask fields, "
                   "the pooled score and one mask drawn by each sampler")
    add_config_args(p)
    p.set_defaults(func=cmd_inspect)
