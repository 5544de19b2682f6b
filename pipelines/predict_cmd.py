"""`signmae predict VIDEO...` and `signmae export-encoder`.

`predict` runs what the finetuned model needs on the fly: it reads each video whole through the
decode stage's own code (`signmae_core.clips.decode_source`, with the decode settings the model
was trained on, kept in the model folder's model.json: frame rate, square crop, size, JPEG
quality), decodes the JPEG frames the way the clip reader does, cuts the evaluation views the
evaluate stage uses, averages their softmax and prints the top-k labels with their scores. For a
video of a dataset (whole video, no person box) the model gets exactly the tensor the evaluate
stage gives it for the stored clip. A video that cannot be read is reported on its own line (or
as an `error` in JSON) and the others go on; the exit status is 1 when any video failed.

`export-encoder` writes the encoder of a pretrained or finetuned model folder as
`encoder.safetensors` + `encoder.json` (see docs/TRAINING.md).

Without `--checkpoint` both use the finetune output of the config's plan (the one `signmae run
finetune` makes for this config), never some other finetune run in the store.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np

from signmae_core.errors import InputError

MODEL_SUBDIR = "model"


def find_model_folder(path: str | None, config: Any = None) -> Path:
    """The model folder to use: `path` (a model folder, its model.safetensors, or a finetune
    stage folder holding `model/`), else the finetune output of `config`'s plan."""
    if path:
        candidate = Path(path)
        if not candidate.exists():
            raise InputError(f"checkpoint not found: {candidate}")
        if candidate.is_dir() and (candidate / MODEL_SUBDIR / "model.json").is_file():
            return candidate / MODEL_SUBDIR
        return candidate
    if config is None:
        raise InputError("no --checkpoint given")
    from .dag import Plan

    try:
        plan = Plan.from_config(config)
        output = plan.output("finetune")
    except InputError as exc:
        raise InputError(f"{exc}, or pass --checkpoint") from None
    # an object-store root: the model folder copied to this machine's cache (a local root: as is)
    return Path(plan.store.local_copy(output.folder, output.record, skip=("checkpoints/",))
                ) / MODEL_SUBDIR


def decode_video(path: str | Path, decode: dict[str, Any], limits: Any = None) -> Any:
    """The whole video as the decode stage would store it: `(jpegs, ClipMeta)`.

    Probed first with the ingest limits (`limits`: an IngestConfig; defaults when None), then
    decoded by `signmae_core.clips.decode_source` over all its frames with the `decode`
    settings (a `DecodeConfig` dump; no person box: `bbox_or_pad` pads the full frame).
    """
    from signmae_core.clips import decode_source
    from signmae_core.config import DecodeConfig, IngestConfig
    from signmae_core.ingest.probe import probe_video
    from signmae_core.ingest.source import SourceError

    probe = probe_video(path, limits or IngestConfig())
    if probe.error is not None:
        raise InputError(f"{path}: {probe.error}")
    known = DecodeConfig.model_fields  # a model folder made by other code may carry other keys
    settings = DecodeConfig.model_validate({k: v for k, v in decode.items() if k in known})
    try:
        return decode_source(
            path, settings, window=(0, int(probe.frame_count)), source_fps=float(probe.fps),
            source_size=(int(probe.width), int(probe.height)), source_path=Path(path).name,
        )
    except SourceError as exc:
        raise InputError(f"{path}: {exc}") from None


def view_clips(jpegs: Sequence[bytes], meta: Any, sampling: dict[str, Any], views: int) -> Any:
    """The evaluation views of a decoded video: `(V, 3, T, S, S)` uint8 tensor.

    The same reader and views as the evaluate stage (`ClipDataset.load(i, None, view, views)`),
    reading frames from `jpegs` as `signmae_core.clips.read_frames` reads them from a clip file.
    """
    import torch

    from signmae_core.clips import decode_jpeg
    from signmae_core.data import ClipDataset, ClipRecord, Sampling

    known = {f.name for f in dataclass_fields(Sampling)}
    spec = Sampling(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in sampling.items() if k in known})
    dataset = ClipDataset(
        [ClipRecord(video_id=meta.video_id or "video", clip_path="video")],
        spec,
        train=False,
        read_frames=lambda _path, indices: np.stack([decode_jpeg(jpegs[i]) for i in indices]),
        read_meta=lambda _path: (meta.num_frames, meta.height, meta.width),
    )
    return torch.stack([dataset.load(0, None, view=v, num_views=views)["clips"]
                        for v in range(views)])


def predict_videos(
    videos: list[str], model_folder: Path, views: int | None = None, topk: int = 5,
    device: str = "auto", limits: Any = None,
) -> list[dict[str, Any]]:
    """Top-k labels with scores for each video; a failed video gets `error` instead.

    `limits`: the probe limits (an IngestConfig; defaults when None)."""
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
            jpegs, meta = decode_video(video, inputs["decode"], limits)
            clips = view_clips(jpegs, meta, inputs["sampling"], views).to(torch_device)
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
                "frames": meta.num_frames,
            })
        except (InputError, OSError, ValueError) as exc:
            results.append({"video": video, "error": str(exc)})
    return results


def cmd_predict(args: argparse.Namespace) -> int:
    from signmae_core.config import load_config

    config = load_config(args.config, args.overrides) if not args.checkpoint else None
    folder = find_model_folder(args.checkpoint, config)
    results = predict_videos(args.videos, folder, args.views, args.topk, args.device,
                             limits=config.ingest if config is not None else None)
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
    p.add_argument("--checkpoint", help="model folder (default: this config's finetune output)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--views", type=int, help="temporal views averaged (default: as evaluated)")
    p.add_argument("--topk", type=int, default=5, help="labels shown per video")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_config_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export-encoder", help="write a model's encoder as safetensors + JSON")
    p.add_argument("--checkpoint", help="model folder (default: this config's finetune output)")
    p.add_argument("--out", required=True, help="output folder")
    add_config_args(p)
    p.set_defaults(func=cmd_export_encoder)


__all__ = ["decode_video", "find_model_folder", "predict_videos", "register", "view_clips"]
