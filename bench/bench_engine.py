"""What the training engine costs on top of a bare training step, and resuming on the device.

Two loops over the same pretraining model, batch and masks, in one run:

  bare     forward + backward + AdamW step (fused on CUDA), bf16 autocast on CUDA
  engine   `signmae_core.train.Trainer.fit`: the same, plus the lr schedule, gradient clipping,
           loss bookkeeping (one sync per `log_every` steps)

Both draw masks the same way: uniform top-k of counter-based noise keyed by each clip's sample
coordinates, drawn on the training device (as the pipeline's samplers draw them). The ratio
engine / bare clips/s is the engine's overhead; the target is >= 0.95. With `--check-resume`
a tiny model is trained 6 steps straight and, separately, killed after step 3 (checkpoint at 2)
and resumed: the largest relative loss difference of steps 3-6 is printed (0 on CPU; bf16 and
non-deterministic kernels make it small but not 0 on CUDA). Needs only torch, timm, safetensors.

    python bench/bench_engine.py --variant tiny --frames 16 --size 112 --batch 4 --steps 10
    python bench/bench_engine.py --variant base --frames 16 --size 224 --batch 64 --steps 20 \
        --compile --check-resume          # on a GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from signmae_core.masking.noise import SampleKeys  # noqa: E402
from signmae_core.models import create_pretrain_model, token_grid  # noqa: E402
from signmae_core.train import PretrainTask, Trainer  # noqa: E402
from signmae_core.train.engine import autocast, resolve_device  # noqa: E402


def train_config(**overrides: Any) -> Any:
    """A TrainConfig (a plain namespace with its fields where pydantic is not installed)."""
    values = dict(
        epochs=1, max_steps=None, batch_size=8, grad_accum=1, lr=1.5e-4, min_lr=0.0,
        warmup_steps=0, weight_decay=0.05, betas=(0.9, 0.95), grad_clip=1.0, layer_decay=1.0,
        label_smoothing=0.0, precision="bf16", compile=False, device="auto", num_workers=1,
        cpus_per_worker=1.0, loader_threads=0, splits=["train"], log_every=10,
        checkpoint_every=0, keep_checkpoints=2, recon_every=0, recon_samples=2, resume=True,
        init_encoder=None, seed=0,
    )
    values.update(overrides)
    try:
        from signmae_core.config import TrainConfig
    except ImportError:
        return SimpleNamespace(**values)
    return TrainConfig(**values)


def uniform_mask(ratio: float):
    """`mask_fn(batch, grid, device)`: uniform top-k on the device from the clips' keys."""

    def mask_fn(batch: dict, grid: tuple[int, int, int], device: torch.device):
        tokens = grid[0] * grid[1] * grid[2]
        keys = SampleKeys.of(0, batch["sample_epoch"], batch["sample_index"])
        noise = keys.uniform(tokens, stream=2, device=device)
        masked = noise.topk(int(round(ratio * tokens)), dim=1).indices
        return torch.zeros_like(noise, dtype=torch.bool).scatter_(1, masked, True)

    return mask_fn


def with_keys(batch: dict, first_index: int = 0) -> dict:
    """The batch with each clip's sample coordinates (epoch 0, consecutive indices)."""
    size = batch["clips"].shape[0]
    return {**batch, "sample_epoch": torch.zeros(size, dtype=torch.int64),
            "sample_index": torch.arange(first_index, first_index + size)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_batches(batch: dict, warmup: int, clock: dict, device: torch.device):
    """The same batch forever; the clock starts when the first timed step asks for its batch."""
    i = 0
    while True:
        if i == warmup:
            sync(device)
            clock["start"] = time.perf_counter()
        yield batch
        i += 1


def run_bare(model, batch, mask_fn, grid, cfg, device, warmup: int, steps: int) -> float:
    """Clips/s of the bare loop."""
    forward = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
        fused=device.type == "cuda" or None,
    )
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        mask = mask_fn(batch, grid, device)
        with autocast(device, cfg.precision):
            loss = forward(batch["clips"], mask)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return steps * batch["clips"].shape[0] / (time.perf_counter() - start)


def run_engine(model, batch, mask_fn, grid, cfg, device, warmup: int, steps: int) -> float:
    """Clips/s of `Trainer.fit` (nothing written: no run folder)."""
    clock: dict[str, float] = {}
    trainer = Trainer(model, PretrainTask(mask_fn, grid), cfg, total_steps=warmup + steps)
    trainer.fit(timed_batches(batch, warmup, clock, device))
    sync(device)
    return steps * batch["clips"].shape[0] / (time.perf_counter() - clock["start"])


def check_resume(device: torch.device, work: Path) -> float:
    """Largest relative loss difference of a killed-and-resumed run vs a straight one."""
    spec = {"variant": "tiny", "num_frames": 8, "img_size": 64, "drop_path": 0.1}
    grid = token_grid(spec)
    generator = torch.Generator().manual_seed(1)
    clips = torch.randint(0, 256, (12, 4, 3, 8, 64, 64), dtype=torch.uint8, generator=generator)
    data = [with_keys({"clips": c.to(device)}, 4 * i) for i, c in enumerate(clips)]
    cfg = train_config(batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1, device=str(device))

    def trainer(run: Path, seed: int) -> Trainer:
        torch.manual_seed(seed)
        task = PretrainTask(uniform_mask(0.75), grid)
        return Trainer(create_pretrain_model(spec), task, cfg, total_steps=6, run_dir=run)

    straight = trainer(work / "straight", 0).fit(data)

    def killed():
        yield from data[:3]
        raise KeyboardInterrupt  # the process dies during step 4

    try:
        trainer(work / "resumed", 0).fit(killed())
    except KeyboardInterrupt:
        pass
    resumed = trainer(work / "resumed", 99).fit(data)
    assert resumed.resumed_from == 2, resumed.resumed_from
    return max(
        abs(resumed.losses[s] - straight.losses[s]) / abs(straight.losses[s]) for s in range(3, 7)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="bare/engine alternations")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--check-resume", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    spec = {"variant": args.variant, "num_frames": args.frames, "img_size": args.size}
    grid = token_grid(spec)
    cfg = train_config(batch_size=args.batch, compile=args.compile, device=str(device))
    torch.manual_seed(0)
    model = create_pretrain_model(spec).to(device)
    clips = torch.randint(0, 256, (args.batch, 3, args.frames, args.size, args.size),
                          dtype=torch.uint8, device=device)
    batch = with_keys({"clips": clips, "label": torch.full((args.batch,), -1)})
    mask_fn = uniform_mask(args.ratio)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, **spec,
        "batch": args.batch, "compile": args.compile, "bare": [], "engine": [],
    }
    for _ in range(args.rounds):  # alternate so drifting clocks and loads hit both
        for name, run in (("bare", run_bare), ("engine", run_engine)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate = run(model, batch, mask_fn, grid, cfg, device, args.warmup, args.steps)
            results[name].append(round(rate, 2))
            if device.type == "cuda":
                results[f"{name}_peak_gib"] = round(
                    torch.cuda.max_memory_allocated(device) / 2**30, 2
                )
            print(f"{name:>6}: {rate:8.2f} clips/s", flush=True)
    bare, engine = max(results["bare"]), max(results["engine"])
    results["ratio_engine_over_bare"] = round(engine / bare, 3)
    print(f"engine / bare = {engine / bare:.3f} (best of {args.rounds} rounds each)")
    if args.check_resume:
        with tempfile.TemporaryDirectory() as work:
            results["resume_max_rel_loss_diff"] = check_resume(device, Path(work))
        print(f"resume: max relative loss difference {results['resume_max_rel_loss_diff']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
