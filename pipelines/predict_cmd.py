"""`signmae predict VIDEO...` and `signmae export-encoder`.

`predict` runs what the finetuned model needs on the fly: it reads each video whole, resamples
it to the frame rate, square crop and size the model was trained on (the decode stage's
settings, kept in the model folder's model.json), cuts the evaluation views the evaluate stage
uses, averages their softmax and prints the top-k labels with their scores. A video that cannot
be read is reported on its own line (or as an `error` in JSON) and the others go on; the exit
status is 1 when any video failed.

`export-encoder` writes the encoder of a pretrained or finetuned model folder as
`encoder.safetensors` + `encoder.json` (see docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np

from signmae_core.errors import InputError

MODEL_SUBDIR = "model"


def find_model_folder(path: str | None, config: Any = None) -> Path:
    """The model folder to use: `path` (a model folder, its model.safetensors, or a finetune
    stage folder holding `model/`), else the newest finetune output in the config's store."""
    if path:
        candidate = Path(path)
        if not candidate.exists():
            raise InputError(f"checkpoint not found: {candidate}")
        if candidate.is_dir() and (candidate / MODEL_SUBDIR / "model.json").is_file():
            return candidate / MODEL_SUBDIR
        return candidate
    if config is None:
        raise InputError("no --checkpoint given")
    from signmae_core.store import ArtifactStore

    from .finetune import STAGE_DATASET, STAGE_NAME

    store = ArtifactStore(config.store.root)
    records = [
        store.read_record(STAGE_DATASET, STAGE_NAME, v)
        for v in store.versions(STAGE_DATASET, STAGE_NAME)
    ]
    records = [r for r in records if r is not None]
    if not records:
        raise InputError(
            f"no finetuned model in store {config.store.root}; run `signmae run finetune` "
            "or pass --checkpoint"
        )
    newest = max(records, key=lambda r: r.finished_at)
    return Path(store.stage_dir(STAGE_DATASET, STAGE_NAME, newest.version)) / MODEL_SUBDIR


def decode_video(path: str | Path, decode: dict[str, Any], limits: Any = None) -> np.ndarray:
    """The whole video as the decode stage would store it: `(T, S, S, 3)` uint8 RGB.

    Probed first with the ingest limits (`limits`: an IngestConfig; defaults when None), then
    resampled to `decode["fps"]`, the full frame padded (or centre-cropped) to a square, resized
    to `decode["size"]`, at most `decode["max_frames"]` frames.
    """
    from signmae_core.config import IngestConfig
    from signmae_core.ingest.probe import probe_video
    from signmae_core.ingest.source import SourceError, crop_box_for, read_window

    probe = probe_video(path, limits or IngestConfig())
    if probe.error is not None:
        raise InputError(f"{path}: {probe.error}")
    mode = "center" if decode.get("crop") == "center" else "pad"  # no dataset bbox here
    box = crop_box_for(probe.width, probe.height, mode)
    try:
        frames = [
            frame
            for _, frame in read_window(
                path, 0, int(probe.frame_count), out_fps=float(decode["fps"]), box=box,
                size=int(decode["size"]), max_frames=int(decode["max_frames"]),
            )
        ]
    except SourceError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not frames:
        raise InputError(f"{path}: no frame could be decoded")
    return np.stack(frames)


def view_clips(frames: np.ndarray, sampling: dict[str, Any], views: int) -> Any:
    """The evaluation views of decoded frames: `(V, 3, T, S, S)` uint8 tensor.

    The same reader and views as the evaluate stage (`ClipDataset.load(i, None, view, views)`).
    """
    import torch

    from signmae_core.data import ClipDataset, ClipRecord, Sampling

    known = {f.name for f in dataclass_fields(Sampling)}
    spec = Sampling(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in sampling.items() if k in known})
    dataset = ClipDataset(
        [ClipRecord(video_id="video", clip_path="video")],
        spec,
        train=False,
        read_frames=lambda _path, indices: frames[list(indices)],
        read_meta=lambda _path: frames.shape[:3],
    )
    return torch.stack([dataset.load(0, None, view=v, num_views=views)["clips"]
                        for v in range(views)])


def predict_videos(
    videos: list[str], model_folder: Path, views: int | None = None, topk: int = 5,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Top-k labels with scores for each video; a failed video gets `error` instead."""
    import torch

    from signmae_core.train.engine import autocast, resolve_device
    from signmae_core.train.export import load_model_folder

    torch_device = resolve_device(device)
    model, info = load_model_folder(model_folder, device=str(torch_device))
    if info["kind"] != "classifier":
        raise InputError(f"{model_folder} holds a {info['kind']} model, not a finetuned classifier")
    names = info["class_names"]
    inputs = info["input"]
    views = views or int(inputs.get("views", 1))
    results = []
    for video in videos:
        try:
            frames = decode_video(video, inputs["decode"])
            clips = view_clips(frames, inputs["sampling"], views).to(torch_device)
            with torch.no_grad(), autocast(torch_device, "bf16"):
                logits = model(clips).float()
            probs = logits.softmax(dim=-1).mean(dim=0)
            scores, index = probs.topk(min(topk, len(names)))
            results.append({
                "video": video,
                "top": [
                    {"label": names[i], "score": round(float(s), 6)}
                    for s, i in zip(scores.tolist(), index.tolist(), strict=True)
                ],
                "views": views,
                "frames": int(frames.shape[0]),
            })
        except (InputError, OSError, ValueError) as exc:
            results.append({"video": video, "error": str(exc)})
    return results


def cmd_predict(args: argparse.Namespace) -> int:
    from signmae_core.config import load_config

    config = load_config(args.config, args.overrides) if not args.checkpoint else None
    folder = find_model_folder(args.checkpoint, config)
    results = predict_videos(args.videos, folder, args.views, args.topk, args.device)
    if args.json:
        print(json.dumps({"model": str(folder), "predictions": results}, ensure_ascii=False,
                         indent=2))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['video']}: error: {result['error']}")
                continue
            print(f"{result['video']}  ({result['frames']} frames, {result['views']} views)")
            for rank, item in enumerate(result["top"], 1):
                print(f"  {rank}. {item['label']:<24} {item['score']:.4f}")
    failed = sum("error" in r for r in results)
    if failed:
        print(f"signmae: {failed} of {len(results)} videos failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_export_encoder(args: argparse.Namespace) -> int:
    from signmae_core.config import load_config
    from signmae_core.train.export import export_encoder

    if args.checkpoint:
        folder = Path(args.checkpoint)
        if folder.is_dir() and (folder / MODEL_SUBDIR / "model.json").is_file():
            folder = folder / MODEL_SUBDIR
    else:
        folder = find_model_folder(None, load_config(args.config, args.overrides))
    out = export_encoder(folder, args.out)
    print(f"encoder of {folder} -> {out}/encoder.safetensors, {out}/encoder.json")
    return 0


def register(sub: Any, add_config_args: Any) -> None:
    """Add the `predict` and `export-encoder` subcommands."""
    p = sub.add_parser("predict", help="top-5 signs of videos with a finetuned model")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    p.add_argument("--checkpoint", help="model folder (default: newest finetune output)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--views", type=int, help="temporal views averaged (default: as evaluated)")
    p.add_argument("--topk", type=int, default=5, help="labels shown per video")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_config_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export-encoder", help="write a model's encoder as safetensors + JSON")
    p.add_argument("--checkpoint", help="model folder (default: newest finetune output)")
    p.add_argument("--out", required=True, help="output folder")
    add_config_args(p)
    p.set_defaults(func=cmd_export_encoder)


__all__ = ["decode_video", "find_model_folder", "predict_videos", "register", "view_clips"]
