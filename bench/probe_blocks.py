"""Where in the encoder does pretraining's knowledge sit? A k-NN probe of every block's output.

The probe stage (`signmae run probe`) asks the encoder's last block, max-pooled; this script asks
each block, max- and mean-pooled, of the encoders named, on the same clips (the pipeline's
shards), plus the mean cosine similarity between the training clips' last-block features (close
to 1: every clip looks alike to the encoder). An encoder is the pretrain stage's
`encoder/encoder.safetensors`, or `random` for the weights finetuning from scratch starts from.

    P=runs/bench_synth/artifacts/_train/pretrain
    .venv/bin/python bench/probe_blocks.py -c bench_synth \\
        --encoder tube-seed2=$P/<version>/encoder/encoder.safetensors --encoder random=random

Needs the config's data stages done (`signmae run -c CONFIG shard`). Every labelled training
clip is the gallery (no labelled budget), the test split the queries; one temporal view each.
"""

from __future__ import annotations

import argparse
import types

import numpy as np
import torch

from pipelines.dag import Plan
from pipelines.training import dataset_clips, labelled, open_clips, predict_views
from signmae_core.baselines.knn import weighted_knn_scores
from signmae_core.config import load_config
from signmae_core.train.build import build_finetuning


def block_features(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """Clips `(B, 3, T, H, W)` -> `(B, L, 2, D)`: every block's tokens max- and mean-pooled."""
    outputs: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out))
             for block in model.encoder.blocks]
    try:
        model.forward_features(clips)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack([torch.stack([o.amax(dim=1), o.mean(dim=1)], dim=1) for o in outputs],
                       dim=1)


def unit(x: np.ndarray) -> np.ndarray:
    """Layer-normalised (no affine) then unit-length rows, as the probe's `fc_norm` + cosine."""
    x = (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-6)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", default="bench_synth")
    parser.add_argument("--dataset", default=None, help="labelled dataset (default: the first)")
    parser.add_argument("--encoder", action="append", required=True, metavar="NAME=PATH",
                        help="an encoder file, or NAME=random (repeatable)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    cfg = load_config(args.config, ["finetune.clips_per_class=null"]).with_absolute_paths()
    dataset = args.dataset or cfg.datasets[0].name
    ctx = types.SimpleNamespace(plan=Plan.from_config(cfg), cfg=cfg)
    gallery = [labelled(dataset_clips(ctx, dataset, ["train"]))]
    queries = [labelled(dataset_clips(ctx, dataset, ["test"]))]
    classes = len(gallery[0].class_names)
    print(f"{args.config}/{dataset}: {len(gallery[0].records)} gallery clips, "
          f"{len(queries[0].records)} queries, {classes} classes, k={args.k}")
    for spec in args.encoder:
        name, _, path = spec.partition("=")
        torch.manual_seed(cfg.finetune.seed)
        model, _ = build_finetuning(cfg, classes, None if path == "random" else path)
        model.eval()

        def features(parts: list, model: torch.nn.Module = model) -> tuple[np.ndarray, np.ndarray]:
            clips = open_clips(cfg, parts, train=False, with_fields=False)
            views, labels = predict_views(lambda c: block_features(model, c).flatten(1),
                                          clips, 1, 8, torch.device("cpu"), 1)
            return views[:, 0].reshape(len(labels), len(model.encoder.blocks), 2, -1), labels

        gallery_x, gallery_y = features(gallery)
        query_x, query_y = features(queries)
        cells = []
        for block in range(gallery_x.shape[1]):
            for pool, label in enumerate(("max", "mean")):
                scores = weighted_knn_scores(unit(query_x[:, block, pool]),
                                             unit(gallery_x[:, block, pool]), gallery_y, classes,
                                             args.k, 0.07)
                top1 = float((scores.argmax(axis=1) == query_y).mean())
                cells.append(f"block {block} {label} {100 * top1:.1f}")
        last = unit(gallery_x[:, -1, 0])
        cosine = float(np.mean(last @ last.T))
        print(f"{name}: " + ", ".join(cells) + f"; mean cosine between clips {cosine:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
