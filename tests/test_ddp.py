"""Data parallel training through Ray Train: 2 CPU workers (gloo) follow 1 worker's trajectory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines.train_ray import run_training
from signmae_core.config import ModelConfig, TrainConfig
from signmae_core.masking import SampleKeys
from signmae_core.models import create_pretrain_model, token_grid
from signmae_core.train import EpochBatches, PretrainTask, Trainer

MODEL = ModelConfig(variant="tiny", num_frames=4, img_size=32, patch_size=8, tubelet_size=2)
GLOBAL_BATCH = 4
STEPS = 4


def load_item(index: int, rng: np.random.Generator) -> dict[str, Any]:
    """A random clip fixed by (seed, epoch, index)."""
    clip = rng.integers(0, 256, size=(3, 4, 32, 32), dtype=np.uint8)
    return {"clips": torch.from_numpy(clip), "label": -1}


def per_clip_mask(batch: dict[str, Any], grid: tuple[int, int, int], device) -> torch.Tensor:
    """24 masked tokens per clip from the clip's own keys: the worker count cannot change them."""
    tokens = grid[0] * grid[1] * grid[2]
    noise = SampleKeys.of(1, batch["sample_epoch"], batch["sample_index"]).uniform(tokens, 2)
    return torch.zeros_like(noise, dtype=torch.bool).scatter_(1, noise.topk(24, dim=1).indices,
                                                             True)


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
    per_rank = [result.local_samples] * world
    if world > 1:
        dist.all_gather_object(per_rank, result.local_samples)
    return {
        "world_size": world,
        "clips_per_rank": per_rank,
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
    # each rank trained on its half of every global batch, not on the whole of it
    assert single["clips_per_rank"] == [STEPS * GLOBAL_BATCH]
    assert double["clips_per_rank"] == [STEPS * GLOBAL_BATCH // 2] * 2
    assert single["losses"][-1] < single["losses"][0]
    np.testing.assert_allclose(double["losses"], single["losses"], rtol=1e-4)
    np.testing.assert_allclose(double["params"], single["params"], rtol=1e-3, atol=1e-5)
    # rank 0 wrote the checkpoint; Ray Train kept its state under the given storage path
    assert double["checkpoint"] and Path(double["checkpoint"]).is_dir()
    assert (tmp_path / "ray" / "ddp2").is_dir()


# ---- the pretrain stage itself: real sampler, real reader, real stage code ----------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> list[str]:
    """ci_tiny's data stages (oracle extraction, mask fields) in a module folder; returns the
    overrides that point a config at them."""
    from pipelines.runner import run_stages
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_generated

    root = tmp_path_factory.mktemp("ddp-stage")
    overrides = [f"store.root={root / 'store'}", f"datasets.0.root={root / 'data'}",
                 "extract.backend=oracle", "masking.sampler=segmentation",
                 "pretrain.epochs=4", "pretrain.batch_size=2", "pretrain.log_every=1"]
    cfg = load_config("ci_tiny", overrides)
    ensure_generated(root / "data", cfg.synth)
    run_stages(cfg, ["ingest", "decode", "extract", "masks", "shard", "shard_fields"])
    return overrides


@pytest.mark.slow
def test_the_pretrain_stage_gives_one_run_whatever_the_workers_and_loader_threads(
    tiny_data: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from pipelines.runner import run_stages
    from signmae_core.config import load_config
    from signmae_core.train import read_metrics

    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    runs = {}
    for workers, threads in ((1, 0), (2, 2), (1, 2)):
        cfg = load_config("ci_tiny", [*tiny_data, f"pretrain.num_workers={workers}",
                                      f"pretrain.loader_threads={threads}"])
        record = run_stages(cfg, ["pretrain"], force=True)[-1].record
        folder = Path(cfg.store.root) / "_train" / "pretrain" / record.version
        runs[workers, threads] = (
            record,
            [row["loss"] for row in read_metrics(folder / "metrics.jsonl")],
            load_file(str(folder / "model" / "model.safetensors")),
        )
    reference, losses, weights = runs[1, 0]
    steps = reference.counts["steps"]
    assert steps >= 4 and len(losses) == steps
    assert reference.extra["clips_per_rank"] == [2 * steps]
    assert runs[2, 2][0].extra["clips_per_rank"] == [steps, steps]  # one clip per rank per step
    for key in ((2, 2), (1, 2)):
        record, other_losses, other_weights = runs[key]
        assert record.version == reference.version  # workers and threads are runtime fields
        np.testing.assert_allclose(other_losses, losses, rtol=1e-5, err_msg=str(key))
        for name, tensor in weights.items():
            torch.testing.assert_close(other_weights[name], tensor, rtol=1e-4, atol=1e-6)
