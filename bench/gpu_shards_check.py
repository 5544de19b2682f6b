"""GPU check of the shard input path: JPEG decode on the device, and whether the loader keeps a
ViT-B pretraining step fed (issue 12; docs/SHARDS.md, "Device decode").

On a GPU machine with torch, torchvision and timm only (no pydantic, pyarrow, webdataset, av,
ray or prefect: shards are read with Python's `tarfile`, the clip container's header with
`struct` + `json`; the project's pieces used are the ones that import none of them: the item
draws `signmae_core.data.dataset.clip_items(decode=False)`, the device decoder
`signmae_core.data.device`, `EpochBatches`, the model and the engine's `Trainer.train_step`).
In one run, over a shard set made beforehand with `--make-shards`:

  decode      decoded clips/s: the batch's pooled JPEG frames through one batched
              `torchvision.io.decode_jpeg(device=...)` call, nothing else (16 frames a clip)
  views       training views/s of `decode_batch` (decode + crop + resize + flip on the device)
              on batches made beforehand, and fed by the loader (CPU threads) as training is
  step        the engine's training step (ViT-B, 16x224x224, compiled, bf16, masks drawn on the
              device) fed by the loader through `DeviceDecode` (the engine's `prepare` hook),
              against the same step fed by random uint8 tensors of the same shape already on the
              device, interleaved; the ratio (random step time / loader step time) should be
              >= 0.9; `overlap` is an experiment: the same with the next batch decoded on a side
              CUDA stream in a thread (not what the engine does today)

    # here (CPU machine, the whole project): the synthetic signer at 224 px -> ingest, decode,
    # shard -> the clip shard set (tars + index.json), about 20 MB for 64 clips of 32 frames
    python bench/gpu_shards_check.py --make-shards bench/gpu_shards
    # there (see bench/gpu_shards_check.sh): carries bench/gpu_shards
    python bench/gpu_shards_check.py --shards bench/gpu_shards --json $OUT/gpu_shards.json
    # CI: the same code on the CPU, tiny model, a few steps (tests/test_gpu_shards_check.py)
    python bench/gpu_shards_check.py --smoke --shards DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CLIP_MAGIC = b"SMCLIP01"  # signmae_core.clips: magic, header length, JSON header, JPEG frames
CLIP_PREFIX = struct.Struct("<8sI")


# ---- shards, read without the project's data stack ---------------------------------------------
@dataclass
class TarClip:
    """A stored clip from a shard member: its JPEG frames and geometry (a `StoredClip` for
    `clip_items(decode=False)`, which never decodes)."""

    jpegs: list[bytes]
    num_frames: int
    height: int
    width: int


def parse_clip(data: bytes) -> TarClip:
    """A `.smclip` member -> its frames (the container of `signmae_core.clips`)."""
    magic, header_len = CLIP_PREFIX.unpack_from(data)
    if magic != CLIP_MAGIC:
        raise ValueError(f"not a clip file (magic {magic!r})")
    start = CLIP_PREFIX.size + header_len
    header = json.loads(data[CLIP_PREFIX.size : start].decode("utf-8"))
    meta = header["meta"]
    jpegs = [data[start + o : start + o + n] for o, n in header["frames"]]
    return TarClip(jpegs, int(meta["num_frames"]), int(meta["height"]), int(meta["width"]))


def read_shards(folder: Path) -> list[TarClip]:
    """Every clip of a shard set folder (`index.json` + `shards/*.tar`), in index order."""
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    clips = []
    for entry in index["shards"]:
        with tarfile.open(folder / entry["path"]) as tar:
            for member in tar:
                if member.isreg() and member.name.endswith(".smclip"):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    clips.append(parse_clip(handle.read()))
    if not clips:
        raise SystemExit(f"no clips in {folder}")
    return clips


# ---- the loader --------------------------------------------------------------------------------
def make_loader(clips: list[TarClip], args: argparse.Namespace, threads: int) -> Any:
    """Undecoded training batches, as the training stage's reader makes them
    (`RepeatedViews`): `batch / views` clips per batch, `views` views each, items from
    `clip_items(decode=False)`, pooled by `collate_items`; `threads` loading threads."""
    import numpy as np

    from signmae_core.data.dataset import MISSING, Sampling, clip_items
    from signmae_core.data.device import collate_items
    from signmae_core.train.batches import EpochBatches

    sampling = Sampling(num_frames=args.frames, img_size=args.size, frame_stride=2)

    def load(index: int, rng: np.random.Generator) -> dict[str, Any]:
        views = clip_items(clips[index], sampling, MISSING, rng, repeats=args.views, decode=False)
        return {"views": [{**v, "label": -1, "video_id": str(index)} for v in views]}

    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_items(
            [
                {**v, "sample_epoch": i["sample_epoch"], "sample_index": i["sample_index"]}
                for i in items
                for v in i["views"]
            ]
        )

    per_batch = args.batch // args.views
    if len(clips) < per_batch:
        clips = (clips * (per_batch // len(clips) + 1))[: max(per_batch, len(clips))]
    return EpochBatches(len(clips), load, per_batch, seed=0, threads=threads, collate_fn=collate)


def timed(fn: Callable[[], Any], device: Any) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def made_batches(
    clips: list[TarClip], args: argparse.Namespace, views: int
) -> list[dict[str, Any]]:
    """`--decode-batches` undecoded batches of `args.batch` views, `views` per clip."""
    source = iter(make_loader(clips, argparse.Namespace(**{**vars(args), "views": views}), 0))
    return [next(source) for _ in range(args.decode_batches)]


def measure_decode(clips: list[TarClip], args: argparse.Namespace, device: Any) -> dict[str, float]:
    """Device throughput on batches made beforehand, best of the repeats: decoded clips/s (one
    view per clip: `--frames` frames a clip, decode only) and views/s of `decode_batch` with
    `--views` views per clip (their frames pooled, decoded once)."""
    from signmae_core.data.device import decode_batch, decode_jpeg_list

    single, repeated = made_batches(clips, args, 1), made_batches(clips, args, args.views)
    for b in single[:2] + repeated[:2]:  # warm-up (nvjpeg handles, allocator)
        decode_batch(dict(b), args.size, device)
    decode_s = min(
        timed(lambda: [decode_jpeg_list(b["jpegs"], device) for b in single], device)
        for _ in range(args.repeats)
    )
    views_s = min(
        timed(lambda: [decode_batch(dict(b), args.size, device) for b in repeated], device)
        for _ in range(args.repeats)
    )
    clips_done = sum(b["frame_ref"].shape[0] for b in single)
    frames = sum(len(b["jpegs"]) for b in single)
    return {
        "decoded_clips_per_s": clips_done / decode_s,
        "decoded_frames_per_s": frames / decode_s,
        "views_per_s_device": sum(b["frame_ref"].shape[0] for b in repeated) / views_s,
        "frames_per_view_batch": sum(len(b["jpegs"]) for b in repeated) / len(repeated),
    }


def measure_loader(loader: Any, args: argparse.Namespace, device: Any) -> float:
    """Views/s of the loader + device decode, with nothing else running."""
    from signmae_core.data.device import decode_batch

    source = iter(loader)
    decode_batch(next(source), args.size, device)
    count = args.steps * 2
    seconds = timed(
        lambda: [decode_batch(next(source), args.size, device) for _ in range(count)], device
    )
    return count * args.batch / seconds


# ---- the training step -------------------------------------------------------------------------
def make_trainer(args: argparse.Namespace, device: Any) -> Any:
    """The engine around the pretraining model (ViT-`variant`), masks drawn on the device."""
    import torch

    from signmae_core.models import ModelSpec, create_pretrain_model
    from signmae_core.train.engine import PretrainTask, Trainer

    spec = ModelSpec(
        variant=args.variant,
        num_frames=args.frames,
        img_size=args.size,
        patch_size=args.patch,
        tubelet_size=2,
        norm_pix_loss=True,
    )
    grid = spec.grid
    tokens = grid[0] * grid[1] * grid[2]
    num_masked = int(args.ratio * tokens)

    def mask_fn(batch: dict[str, Any], grid: Any, device: Any) -> Any:
        order = torch.rand(batch["clips"].shape[0], tokens, device=device).argsort(dim=1)
        mask = torch.zeros(batch["clips"].shape[0], tokens, dtype=torch.bool, device=device)
        return mask.scatter_(1, order[:, :num_masked], True)

    cfg = SimpleNamespace(  # the TrainConfig fields the engine reads (no pydantic needed)
        device=str(device),
        compile=args.compile,
        precision=args.dtype,
        grad_accum=1,
        grad_clip=1.0,
        lr=1.5e-4,
        min_lr=0.0,
        warmup_steps=0,
        weight_decay=0.05,
        betas=(0.9, 0.95),
        layer_decay=1.0,
        log_every=10**9,
        checkpoint_every=0,
        keep_checkpoints=1,
        recon_every=0,
        resume=False,
    )
    torch.manual_seed(0)
    model = create_pretrain_model(spec)
    return Trainer(model, PretrainTask(mask_fn, grid, num_masked), cfg, total_steps=10**9)


class Overlapped:
    """The experiment `overlap`: batch i+1 decoded on a side CUDA stream in a thread while step
    i runs; `next()` waits for it and hands the decoded batch over."""

    def __init__(self, source: Iterator[dict[str, Any]], size: int, device: Any) -> None:
        import torch

        from signmae_core.data.device import decode_batch

        self.source, self.size, self.device = source, size, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.decode = decode_batch
        self.pending: tuple[threading.Thread, dict[str, Any]] | None = None
        self._start()

    def _start(self) -> None:
        import torch

        box: dict[str, Any] = {}

        def work() -> None:
            raw = next(self.source)
            if self.stream is None:
                box["batch"] = self.decode(raw, self.size, self.device)
                return
            with torch.cuda.stream(self.stream):
                box["batch"] = self.decode(raw, self.size, self.device)
                box["event"] = torch.cuda.Event()
                box["event"].record(self.stream)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self.pending = (thread, box)

    def __next__(self) -> dict[str, Any]:
        import torch

        assert self.pending is not None
        thread, box = self.pending
        thread.join()
        batch = box["batch"]
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_event(box["event"])
            batch["clips"].record_stream(torch.cuda.current_stream(self.device))
        self._start()
        return batch


def measure_steps(
    trainer: Any, loader: Any, args: argparse.Namespace, device: Any
) -> dict[str, Any]:
    """Median step time per arm over `rounds` interleaved groups of `steps` steps."""
    import torch

    from signmae_core.data.device import DeviceDecode

    clips = torch.randint(
        0, 256, (args.batch, 3, args.frames, args.size, args.size), dtype=torch.uint8, device=device
    )
    random_batch = {"clips": clips, "label": torch.full((args.batch,), -1)}
    arms: dict[str, tuple[Any, Any]] = {
        "random": (None, lambda: iter(lambda: random_batch, None)),
        "loader": (DeviceDecode(args.size), lambda: iter(loader)),
    }
    if args.overlap:
        arms["overlap"] = (None, lambda: Overlapped(iter(loader), args.size, device))
    sources = {name: make() for name, (_, make) in arms.items()}
    for name, (prepare, _) in arms.items():  # warm-up: compile, autotune, loader threads
        trainer.prepare = prepare
        for _ in range(args.warmup):
            trainer.train_step(sources[name])
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, (prepare, _) in arms.items():
            trainer.prepare = prepare
            seconds = timed(
                lambda n=name: [trainer.train_step(sources[n]) for _ in range(args.steps)], device
            )
            times[name].append(seconds / args.steps)
    step = {name: statistics.median(t) for name, t in times.items()}
    out: dict[str, Any] = {f"step_s_{name}": s for name, s in step.items()}
    out["ratio_loader_vs_random"] = step["random"] / step["loader"]
    if "overlap" in step:
        out["ratio_overlap_vs_random"] = step["random"] / step["overlap"]
    out["views_per_s_training"] = args.batch / step["loader"]
    return out


# ---- making the shards (CPU machine, the whole project) ---------------------------------------
def make_shards(out: Path, args: argparse.Namespace) -> None:
    """The synthetic signer (`signmae_core.synth`) through ingest, decode and shard at
    `--size` px; the clip shard set (tars + index.json) copied to `out`."""
    import shutil
    import tempfile

    from pipelines.dag import Plan
    from pipelines.runner import run_stages
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_generated

    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        overrides = [
            f"store.root={root / 'store'}",
            f"datasets.0.root={root / 'data'}",
            f"synth.classes={args.classes}",
            f"synth.signers={args.signers}",
            f"synth.reps={args.reps}",
            f"synth.frames={args.stored}",
            f"synth.size={args.size}",
            f"decode.size={args.size}",
            "shard.max_samples=256",
        ]
        cfg = load_config("ci_tiny", overrides)
        ensure_generated(root / "data", cfg.synth)
        run_stages(cfg, ["ingest", "decode", "shard"])
        folder = Path(Plan.from_config(cfg).output("shard", cfg.datasets[0].name).folder)
        if out.exists():
            shutil.rmtree(out)
        (out / "shards").mkdir(parents=True)
        shutil.copy2(folder / "index.json", out / "index.json")
        for tar in sorted((folder / "shards").glob("*.tar")):
            shutil.copy2(tar, out / "shards" / tar.name)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"shards: {out} ({size / 1e6:.1f} MB)")


# ---- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, help="a clip shard set folder (--make-shards)")
    parser.add_argument("--make-shards", type=Path, help="write a shard set here and stop")
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, tiny model, 2 steps: that the check runs (CI)"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variant", default="base")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=64, help="views per training batch")
    parser.add_argument("--views", type=int, default=2, help="views per decoded clip (k)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--threads", type=int, default=8, help="loader threads")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed group")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved groups per arm")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per arm")
    parser.add_argument("--repeats", type=int, default=3, help="decode timings, best of")
    parser.add_argument("--decode-batches", type=int, default=8)
    parser.add_argument("--no-overlap", dest="overlap", action="store_false")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    # --make-shards: the synthetic signer's size (64 clips of 32 frames by default)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--signers", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--stored", type=int, default=32, help="frames per synthetic clip")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in dict(
            device="cpu",
            variant="tiny",
            frames=4,
            size=32,
            patch=8,
            batch=4,
            views=2,
            dtype="fp32",
            compile=False,
            threads=2,
            steps=2,
            rounds=1,
            warmup=1,
            repeats=1,
            decode_batches=2,
        ).items():
            setattr(args, name, value)
    return args


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torchvision

    device = torch.device(args.device)
    clips = read_shards(args.shards)
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "clips": len(clips),
        "variant": args.variant,
        "shape": [args.batch, 3, args.frames, args.size, args.size],
        "views": args.views,
        "dtype": args.dtype,
        "compile": args.compile,
        "loader_threads": args.threads,
    }
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
    result.update(measure_decode(clips, args, device))
    loader = make_loader(clips, args, threads=args.threads)
    result["views_per_s_loader"] = measure_loader(loader, args, device)
    result.update(measure_steps(make_trainer(args, device), loader, args, device))
    return result


def report(result: dict[str, Any]) -> None:
    for key, value in result.items():
        print(f"{key:28} {value:.4g}" if isinstance(value, float) else f"{key:28} {value}")
    ratio = result["ratio_loader_vs_random"]
    print(f"loader-fed step vs random tensors: {ratio:.3f}x (target >= 0.9)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_shards is not None:
        make_shards(args.make_shards, args)
        return 0
    if args.shards is None:
        raise SystemExit("--shards DIR is needed (make one with --make-shards DIR)")
    result = run_check(args)
    report(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
