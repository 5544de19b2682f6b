"""`signmae baselines`: the floors and the keypoint baseline on this config's data, one command.

It reads the decode and extract outputs of every configured dataset through the plan (the
clips of `finetune.splits` are the training set and gallery, those of `evaluate.splits` the
test set, labels as the model sees them: `pipelines.training.combined_classes`), runs
`signmae_core.baselines.run_baselines` (raw-pixel 1-NN, hand-keypoint 1-NN, a temporal
convolution on hand and pose landmarks), prints a table and writes `baselines.json`. The
evaluate stage calls `compute_baselines` too, so its report shows the same numbers beside the
model's. See docs/BASELINES.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from signmae_core.errors import InputError

from . import outputs
from .dag import Plan

if TYPE_CHECKING:  # pipelines.training imports torch: not at CLI start
    from signmae_core.store import ArtifactStore

    from .training import DatasetClips

PIXEL_THREADS = 2  # threads decoding the JPEG frames of the raw-pixel features


def split_clips(plan: Plan, splits: Sequence[str]) -> list[DatasetClips]:
    """The labelled ok clips of `splits` of every configured dataset (decode output)."""
    from .training import DatasetClips, labelled

    parts = []
    for dataset in plan.cfg.datasets:
        records = [
            {"video_id": r["video_id"], "clip_path": r["clip_path"], "split": r["split"],
             "label": -1 if r["label_id"] is None else int(r["label_id"])}
            for r in outputs.clip_rows(plan, dataset.name)
            if r["status"] == "ok" and r["split"] in splits
        ]
        parts.append(labelled(
            DatasetClips(dataset.name, records, outputs.class_names(plan, dataset.name))
        ))
    return parts


def combined_groups(plan: Plan, parts: Sequence[DatasetClips]) -> list[dict[str, Any]]:
    """Every dataset's class groups, named as in `combined_classes(parts)`."""
    labelled_parts = [p for p in parts if p.class_names]
    prefix = len(labelled_parts) > 1
    return [
        {"kind": g["kind"], "classes": [f"{p.name}:{c}" if prefix else c for c in g["classes"]]}
        for p in labelled_parts
        for g in outputs.class_groups(plan, p.name)
    ]


# ---- features ----------------------------------------------------------------------------------
def _pixels(store: ArtifactStore, path: str) -> np.ndarray:
    """The raw-pixel features of one decode clip file, read through `store` (a clip in an
    object store is fetched into a local temporary file first)."""
    if store.is_local:
        return _pixels_of(path)
    with tempfile.TemporaryDirectory(prefix="signmae-pixels-") as tmp:
        return _pixels_of(str(store.fetch(path, Path(tmp) / "clip")))


def _pixels_of(path: str) -> np.ndarray:
    from signmae_core.baselines.features import pixel_features, sample_indices
    from signmae_core.baselines.suite import NUM_FRAMES, PIXEL_SIZE
    from signmae_core.clips import read_clip_meta, read_frames

    indices = sample_indices(read_clip_meta(path).num_frames, NUM_FRAMES)
    return pixel_features(read_frames(path, indices), PIXEL_SIZE)


def _landmarks(plan: Plan, part: DatasetClips) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video id -> (hands (16, 2, 21, 3), pose (16, 33, 4)) sampled at the features' frames,
    for the part's clips that extraction did not fail on."""
    from signmae_core.baselines.features import sample_indices
    from signmae_core.baselines.suite import NUM_FRAMES
    from signmae_core.extract import iter_clips

    folder = outputs.extraction(plan, part.name).folder
    found = {}
    for clip in iter_clips(folder, [r["video_id"] for r in part.records]):
        indices = sample_indices(clip.num_frames, NUM_FRAMES)
        found[clip.video_id] = (clip.hands[indices], clip.pose[indices])
    return found


def part_features(plan: Plan, part: DatasetClips, offset: int) -> tuple[Any, int]:
    """The part's `ClipFeatures` (labels shifted by `offset` into the combined class list) and
    how many of its clips have no extraction row (their landmarks count as never found)."""
    from signmae_core.baselines import ClipFeatures
    from signmae_core.baselines.features import hand_features, sequence_features
    from signmae_core.baselines.suite import NUM_FRAMES

    with ThreadPoolExecutor(PIXEL_THREADS) as pool:
        pixels = list(pool.map(partial(_pixels, plan.store),
                               [r["clip_path"] for r in part.records]))
    landmarks = _landmarks(plan, part)
    nothing = (np.full((NUM_FRAMES, 2, 21, 3), np.nan), np.full((NUM_FRAMES, 33, 4), np.nan))
    marks = [landmarks.get(r["video_id"], nothing) for r in part.records]
    hands = [hand_features(h) for h, _ in marks]
    features = ClipFeatures(
        labels=np.asarray([r["label"] + offset for r in part.records], dtype=np.int64),
        pixels=np.stack(pixels),
        hands=np.stack([slots for slots, _ in hands]),
        hands_found=np.stack([found for _, found in hands]),
        sequences=np.stack([sequence_features(h, p) for h, p in marks]),
    )
    return features, len(part.records) - len(landmarks)


def split_features(plan: Plan, parts: Sequence[DatasetClips]) -> tuple[Any, int]:
    """`ClipFeatures` of every part's clips, concatenated, and the clips without landmarks."""
    from signmae_core.baselines import ClipFeatures

    made, missing, offset = [], 0, 0
    for part in parts:
        if part.records:
            features, absent = part_features(plan, part, offset)
            made.append(features)
            missing += absent
        offset += len(part.class_names)
    if not made:
        raise InputError("no labelled clips for the baselines")
    joined = {name: np.concatenate([getattr(f, name) for f in made])
              for name in ("labels", "pixels", "hands", "hands_found", "sequences")}
    return ClipFeatures(**joined), missing


# ---- the suite ---------------------------------------------------------------------------------
def compute_baselines(plan: Plan, train: Sequence[DatasetClips], test: Sequence[DatasetClips],
                      topk: Sequence[int]) -> dict[str, Any]:
    """The baselines of `train` (gallery, training set) and `test` clips: what baselines.json
    holds (`methods`: per method the metrics of `run_baselines`; counts; seconds)."""
    from signmae_core.baselines import run_baselines
    from signmae_core.eval.metrics import group_indices

    from .training import combined_classes

    names = combined_classes(train)
    if not names or names != combined_classes(test):
        raise InputError("the baselines need labelled training and test clips of one class map")
    started = time.perf_counter()
    train_features, train_missing = split_features(plan, train)
    test_features, test_missing = split_features(plan, test)
    feature_seconds = time.perf_counter() - started
    groups = group_indices(combined_groups(plan, train), names)
    return {
        "datasets": [p.name for p in train],
        "train_clips": int(len(train_features.labels)),
        "test_clips": int(len(test_features.labels)),
        "num_classes": len(names),
        "clips_without_landmarks": {"train": train_missing, "test": test_missing},
        "feature_seconds": round(feature_seconds, 3),
        "methods": run_baselines(train_features, test_features, names, groups, topk),
    }


def baselines_of_config(plan: Plan) -> dict[str, Any]:
    """`compute_baselines` on the config's `finetune.splits` and `evaluate.splits`."""
    cfg = plan.cfg
    result = compute_baselines(plan, split_clips(plan, cfg.finetune.splits),
                               split_clips(plan, cfg.evaluate.splits), cfg.evaluate.topk)
    result["splits"] = {"train": list(cfg.finetune.splits), "test": list(cfg.evaluate.splits)}
    return result


# ---- the command -------------------------------------------------------------------------------
def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table; floats as percentages with one decimal."""
    cells = [[f"{v:.1%}" if isinstance(v, float) else "-" if v is None else str(v) for v in row]
             for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def cmd_baselines(args: argparse.Namespace) -> int:
    from signmae_core.config import load_config
    from signmae_core.eval.report import comparison_table

    plan = Plan.from_config(load_config(args.config, args.overrides))
    result = baselines_of_config(plan)
    table = comparison_table(result)
    print(text_table(table.headers, table.rows))
    print(f"{result['train_clips']} training clips, {result['test_clips']} test clips, "
          f"{result['num_classes']} classes (chance {1 / result['num_classes']:.1%}); "
          f"features {result['feature_seconds']:.1f} s; " + ", ".join(
              f"{name} {m['seconds']:.1f} s" for name, m in result["methods"].items()))
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"baselines: {out}")
    return 0


def register(sub: Any, add_config_args: Callable[[Any], None]) -> None:
    """Add `signmae baselines` to the CLI's subcommands."""
    p = sub.add_parser("baselines", help="raw-pixel and hand-keypoint 1-NN floors and a "
                       "keypoint temporal classifier on the config's train and test clips")
    p.add_argument("--out", default="baselines.json", help="JSON output (default: %(default)s)")
    add_config_args(p)
    p.set_defaults(func=cmd_baselines)
