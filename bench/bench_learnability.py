"""Can the model learn these clips at all? The project's ViT classifier against a small 3D CNN,
on the same clips, with the same loop, in the same run.

A diagnostic for the learning issue, not a pipeline stage: the clips of a synthetic dataset
(`signmae synth` output: `labels.csv` with train/test splits by signer) are decoded once into
memory at `--size` px and both models are trained on them with the same sampling (`--frames`
frames evenly spaced over the clip, random resized crop, flip), AdamW with warm-up and cosine,
batch `--batch`, for `--epochs` epochs. Optionally the ViT first pretrains as a masked
autoencoder (tube masking, 90 %) for `--pretrain` steps on the training clips, or on the clips
of another synthetic folder (`--pretrain-data`, e.g. more signers made with another seed).
`--pool max` pools the ViT's tokens by their maximum instead of their mean; `--stem conv` embeds
tokens with a small 3-D conv stem and `--layer-scale S` scales every block's branches from S
(`model.stem`, `model.layer_scale`). Prints per epoch the training loss and accuracy and the
unseen signers' Top-1, and a closing line per model.

    signmae synth -c cpu_demo                     # or any synthetic dataset folder
    python bench/bench_learnability.py --data runs/demo/data/synthetic --size 112 --patch 16

What it measured is in docs/results.md ("Why the demo does not learn yet").
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from signmae_core.models import create_classifier, create_pretrain_model


def load_clips(root: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, list[str]]:
    """Every clip of `root/labels.csv` -> (N, T, S, S, 3) uint8, labels (N,), splits (N,) and
    the class names."""
    import av
    from PIL import Image

    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["label"] for r in rows})
    clips = []
    for row in rows:
        with av.open(str(root / row["path"])) as container:
            frames = [
                np.asarray(frame.to_image().resize((size, size), Image.BILINEAR))
                for frame in container.decode(video=0)
            ]
        clips.append(np.stack(frames))
    labels = torch.tensor([classes.index(r["label"]) for r in rows])
    return torch.from_numpy(np.stack(clips)), labels, np.array([r["split"] for r in rows]), classes


class Views:
    """Training and test views of in-memory clips: (3, frames, S, S) float in [0, 1]."""

    def __init__(
        self,
        clips: torch.Tensor,
        frames: int,
        crop_scale: float,
        flip: float,
        rng: np.random.Generator,
    ) -> None:
        self.clips, self.frames, self.crop_scale, self.flip, self.rng = (
            clips,
            frames,
            crop_scale,
            flip,
            rng,
        )
        self.indices = np.rint(np.linspace(0, clips.shape[1] - 1, frames)).astype(int)

    def __call__(self, index: int, train: bool) -> torch.Tensor:
        clip = self.clips[index][self.indices].permute(3, 0, 1, 2).float() / 255.0
        if not train:
            return clip
        size = clip.shape[-1]
        area = self.rng.uniform(self.crop_scale, 1.0) * size * size
        ratio = math.exp(self.rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = min(size, round(math.sqrt(area * ratio)))
        h = min(size, round(math.sqrt(area / ratio)))
        x0, y0 = self.rng.integers(0, size - w + 1), self.rng.integers(0, size - h + 1)
        clip = F.interpolate(
            clip[:, :, y0 : y0 + h, x0 : x0 + w],
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return clip.flip(-1) if self.rng.random() < self.flip else clip

    def batch(self, indices: np.ndarray, train: bool) -> torch.Tensor:
        return torch.stack([self(int(i), train) for i in indices])


class Small3dCnn(nn.Module):
    """Five 3x3x3 conv + BN + ReLU blocks (16-128 channels, stride 2 after the first), mean
    pooling, a linear head: (B, 3, T, S, S) -> (B, K)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: tuple[int, int, int] | int) -> nn.Module:
            return nn.Sequential(
                nn.Conv3d(cin, cout, 3, stride, 1), nn.BatchNorm3d(cout), nn.ReLU()
            )

        self.features = nn.Sequential(
            block(3, 16, (1, 2, 2)),
            block(16, 32, 2),
            block(32, 64, 2),
            block(64, 128, 2),
            block(128, 128, 2),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(clips).mean(dim=(2, 3, 4)))


def cosine(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine to zero."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain(
    model_cfg: dict,
    views: Views,
    train: np.ndarray,
    steps: int,
    batch: int,
    lr: float,
    rng: np.random.Generator,
) -> dict[str, torch.Tensor]:
    """Tube-masked (90 %) MAE pretraining on the training clips; returns the encoder's state."""
    mae = create_pretrain_model(model_cfg)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    slots, rows, cols = mae.grid
    per_slot = rows * cols
    masked = round(0.9 * per_slot)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine(step, steps, lr, 20)
        keys = torch.rand(batch, per_slot)
        tube = torch.zeros(batch, per_slot, dtype=torch.bool)
        tube.scatter_(1, keys.argsort(dim=1)[:, :masked], True)
        mask = tube[:, None].expand(batch, slots, per_slot).reshape(batch, -1)
        loss = mae(views.batch(rng.choice(train, batch, replace=False), True), mask)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"  pretrain step {step}: loss {loss.item():.3f}", flush=True)
    return mae.encoder.state_dict()


def finetune(
    name: str,
    model: nn.Module,
    views: Views,
    labels: torch.Tensor,
    train: np.ndarray,
    test: np.ndarray,
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> float:
    """Train `model` on the training clips; print each epoch; return the test Top-1."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=args.lr
    )
    per_epoch = len(train) // args.batch
    total, step, start = per_epoch * args.epochs, 0, time.perf_counter()

    def test_top1() -> float:
        model.eval()
        with torch.no_grad():
            logits = torch.cat(
                [model(views.batch(test[i : i + 16], False)) for i in range(0, len(test), 16)]
            )
        model.train()
        return (logits.argmax(-1) == labels[test]).float().mean().item()

    for epoch in range(args.epochs):
        order, losses, hits = rng.permutation(train), [], []
        for b in range(per_epoch):
            ids = order[b * args.batch : (b + 1) * args.batch]
            for group in optimizer.param_groups:
                group["lr"] = cosine(step, total, args.lr, args.warmup)
            logits = model(views.batch(ids, True))
            loss = F.cross_entropy(logits, labels[ids], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            losses.append(loss.item())
            hits.append((logits.argmax(-1) == labels[ids]).float().mean().item())
        print(
            f"  {name} epoch {epoch}: loss {np.mean(losses):.3f}, train acc {np.mean(hits):.3f}, "
            f"test Top-1 {test_top1():.3f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return test_top1()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a synthetic dataset folder")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--pool", default="mean", help="model.pool: mean or max")
    parser.add_argument("--stem", default="linear", help="model.stem: linear or conv")
    parser.add_argument("--layer-scale", type=float, help="model.layer_scale (default: off)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--crop-scale", type=float, default=0.7)
    parser.add_argument("--flip", type=float, default=0.5)
    parser.add_argument("--pretrain", type=int, default=0, help="MAE steps before the ViT")
    parser.add_argument(
        "--pretrain-data",
        type=Path,
        help="a synthetic dataset folder whose clips (all splits, no labels) the MAE pretrains "
        "on instead of the training clips",
    )
    parser.add_argument("--models", default="vit,cnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clips, labels, splits, classes = load_clips(args.data, args.size)
    train, test = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")
    print(
        f"{len(train)} training clips, {len(test)} test clips, {len(classes)} classes "
        f"(chance {1 / len(classes):.3f}); {args.frames} frames at {args.size} px",
        flush=True,
    )
    model_cfg = {
        "variant": args.variant,
        "num_frames": args.frames,
        "img_size": args.size,
        "patch_size": args.patch,
        "pool": args.pool,
        "stem": args.stem,
        "layer_scale": args.layer_scale,
    }
    builders: dict[str, Callable[[np.random.Generator], nn.Module]] = {
        "vit": lambda rng: vit(model_cfg, len(classes), args, views_for(rng), train, rng),
        "cnn": lambda rng: Small3dCnn(len(classes)),
    }

    def views_for(rng: np.random.Generator) -> Views:
        return Views(clips, args.frames, args.crop_scale, args.flip, rng)

    results = {}
    for name in args.models.split(","):
        torch.manual_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        model = builders[name](rng)
        results[name] = finetune(name, model, views_for(rng), labels, train, test, args, rng)
    for name, top1 in results.items():
        print(f"{name}: test Top-1 {top1:.3f} (chance {1 / len(classes):.3f})")


def vit(
    model_cfg: dict,
    num_classes: int,
    args: argparse.Namespace,
    views: Views,
    train: np.ndarray,
    rng: np.random.Generator,
) -> nn.Module:
    """The project's classifier, its encoder pretrained first when `--pretrain` asks."""
    model = create_classifier(model_cfg, num_classes)
    if args.pretrain:
        if args.pretrain_data:
            unlabelled = load_clips(args.pretrain_data, args.size)[0]
            views = Views(unlabelled, args.frames, args.crop_scale, args.flip, rng)
            train = np.arange(len(unlabelled))
        model.load_encoder_state_dict(
            pretrain(model_cfg, views, train, args.pretrain, args.batch, 1.5e-3, rng)
        )
    return model


if __name__ == "__main__":
    main()
