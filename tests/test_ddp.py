"""Data parallel training through Ray Train: 2 CPU workers (gloo) follow 1 worker's trajectory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines.train_ray import run_training
from signmae_core.config import ModelConfig, TrainConfig
from signmae_core.models import create_pretrain_model, token_grid
from signmae_core.train import EpochBatches, PretrainTask, Trainer

MODEL = ModelConfig(variant="tiny", num_frames=4, img_size=32, patch_size=8, tubelet_size=2)
GLOBAL_BATCH = 4
STEPS = 4


def load_item(index: int, rng: np.random.Generator) -> dict[str, Any]:
    """A random clip and the seed of its mask, both fixed by (seed, epoch, index)."""
    clip = rng.integers(0, 256, size=(3, 4, 32, 32), dtype=np.uint8)
    return {"clips": torch.from_numpy(clip), "label": -1, "mask_seed": int(rng.integers(2**31))}


def per_clip_mask(batch: dict[str, Any], grid: tuple[int, int, int], generator) -> torch.Tensor:
    """Each clip's mask follows from its own seed, so it does not depend on the worker count."""
    tokens = grid[0] * grid[1] * grid[2]
    rows = []
    for seed in batch["mask_seed"].tolist():
        keys = torch.rand(tokens, generator=torch.Generator().manual_seed(seed))
        rows.append(torch.zeros(tokens, dtype=torch.bool).scatter_(0, keys.topk(24).indices, True))
    return torch.stack(rows)


def train_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Runs on every worker (or in-process for one): the same model, data and steps."""
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(0)
    model = create_pretrain_model(MODEL)
    cfg = TrainConfig(batch_size=GLOBAL_BATCH, lr=2e-3, warmup_steps=1, log_every=2, seed=1)
    data = EpochBatches(8, load_item, GLOBAL_BATCH, seed=2, rank=rank, world_size=world)
    trainer = Trainer(
        model, PretrainTask(per_clip_mask, token_grid(MODEL)), cfg, STEPS,
        run_dir=payload["run_dir"],
    )
    result = trainer.fit(data)
    return {
        "world_size": world,
        "losses": [result.losses[s] for s in range(1, STEPS + 1)],
        "params": torch.cat([p.detach().flatten() for p in model.parameters()]).tolist(),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
    }


@pytest.mark.slow
def test_two_gloo_workers_follow_one_worker_with_the_combined_batch(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import time

    # fewer helper processes and faster polling: this test is about numbers, not fault tolerance
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

    from ray import cloudpickle

    # test modules are not importable in Ray's workers: ship this one's functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runs = {}
    for workers in (1, 2):
        started = time.perf_counter()
        runs[workers] = run_training(
            train_worker,
            {"run_dir": str(tmp_path / f"run{workers}")},
            num_workers=workers,
            use_gpu=False,
            storage_path=str(tmp_path / "ray"),
            name=f"ddp{workers}",
            cpus_per_worker=1,
        )
        print(f"{workers} worker(s): {time.perf_counter() - started:.1f} s")
    single, double = runs[1], runs[2]
    assert single["world_size"] == 1 and double["world_size"] == 2
    assert single["losses"][-1] < single["losses"][0]
    np.testing.assert_allclose(double["losses"], single["losses"], rtol=1e-4)
    np.testing.assert_allclose(double["params"], single["params"], rtol=1e-3, atol=1e-5)
    # rank 0 wrote the checkpoint; Ray Train kept its state under the given storage path
    assert double["checkpoint"] and Path(double["checkpoint"]).is_dir()
    assert (tmp_path / "ray" / "ddp2").is_dir()
