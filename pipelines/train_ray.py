"""Distributed data parallel training through Ray Train, or one plain process.

`run_training("pipelines.training:train_worker", payload, ...)` calls that function with the
payload on every worker and returns what rank 0 returned (a function object works too when the
workers can unpickle it):

- `num_workers == 1`: one call in this process; no Ray, no process group;
- `num_workers > 1`: Ray Train's `TorchTrainer` starts the workers and the process group (gloo
  on CPUs, nccl on GPUs); the training engine sees `torch.distributed` initialized and wraps the
  model in DDP. This is how a run moves from a laptop to many GPUs and machines unchanged: the
  Ray cluster (`RAY_ADDRESS`) decides where the workers run.

Ray Train keeps its run state under `storage_path` (the stage folder's `ray/`), never in the home
folder. Stages name their worker function by import path, so it pickles by reference.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from signmae_core.config import RayConfig

from .ray_runtime import ensure_ray

WorkerFn = Callable[[dict[str, Any]], Any]


def _resolve(function: str | WorkerFn) -> WorkerFn:
    if callable(function):
        return function
    module, name = function.split(":")
    return getattr(importlib.import_module(module), name)


def _ray_worker(config: dict[str, Any]) -> Any:
    """Entry point of every Ray Train worker: pin its GPU, then run the named function."""
    import torch

    if torch.cuda.is_available():
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    return _resolve(config["function"])(config["payload"])


def run_training(
    function: str | WorkerFn,
    payload: dict[str, Any],
    *,
    num_workers: int,
    use_gpu: bool,
    storage_path: str,
    name: str,
    cpus_per_worker: float = 1.0,
    ray_config: RayConfig | None = None,
) -> Any:
    """Run `function(payload)` on `num_workers` DDP workers; return rank 0's return value.

    `function` is "module:name" or a function. `payload` must be plain data (it travels to the
    workers).
    """
    if num_workers == 1:
        return _resolve(function)(payload)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ensure_ray(ray_config)
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"function": function, "payload": payload},
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(storage_path=storage_path, name=name),
    )
    return trainer.fit().return_value
