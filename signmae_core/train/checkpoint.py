"""Training checkpoints: safetensors + JSON, written atomically, no pickle anywhere.

One checkpoint is a folder (see docs/TRAINING.md)::

    step_00000120/
        model.safetensors      the model's state dict (unwrapped from DDP / torch.compile)
        optimizer.safetensors  every optimizer tensor, keyed "state.<param index>.<name>"
        rng.safetensors        torch CPU (and CUDA) RNG state (dropout, drop path; masks need none:
                               they are a pure function of seed, epoch, sample and view)
        meta.json              step, sample counts, optimizer param groups and scalar state,
                               and whatever the caller adds (config, task, class names)

The folder is written under a `.tmp-` name and renamed into place, so a `step_*` folder is always
complete; a killed run leaves only a `.tmp-*` folder, which the next save removes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT_VERSION = 1
STEP_PREFIX = "step_"
TMP_PREFIX = ".tmp-"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """A state dict as safetensors (string metadata only, as the format wants)."""
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    save_file(_cpu_tensors(state), str(path), metadata=meta)


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict."""
    return load_file(str(path), device=str(device))


# ---- optimizer state <-> (tensors, JSON) ---------------------------------------------------------
def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in info["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in info["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# ---- RNG ----------------------------------------------------------------------------------------
def _rng_tensors() -> dict[str, torch.Tensor]:
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda.{i}"] = state
    return rng


def _restore_rng(rng: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---- folders ------------------------------------------------------------------------------------
def checkpoint_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir()
        if p.is_dir() and p.name.startswith(STEP_PREFIX) and (p / "meta.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    meta: dict[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write checkpoint `step` under `root` atomically; keep only the newest `keep` ones."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    final = root / checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}"
    tmp.mkdir()
    try:
        save_weights(tmp / "model.safetensors", unwrap_model(model).state_dict())
        info: dict[str, Any] = {"format": FORMAT_VERSION, "step": step, **(meta or {})}
        if optimizer is not None:
            tensors, info["optimizer"] = _flatten_optimizer(optimizer.state_dict())
            save_file(_cpu_tensors(tensors), str(tmp / "optimizer.safetensors"))
        save_file(_cpu_tensors(_rng_tensors()), str(tmp / "rng.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
        for file in tmp.iterdir():
            _fsync(file)
        if final.exists():  # the same step saved again (e.g. final save after a periodic one)
            old = root / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if keep:
        for stale in list_checkpoints(root)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def read_meta(path: str | Path) -> dict[str, Any]:
    """The meta.json of a checkpoint folder."""
    return json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint folder into `model` (and optimizer, RNG states); return its meta."""
    path = Path(path)
    meta = read_meta(path)
    target = unwrap_model(model)
    device = next(target.parameters()).device
    target.load_state_dict(load_weights(path / "model.safetensors", device))
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"checkpoint {path} holds no optimizer state")
        tensors = load_weights(path / "optimizer.safetensors", "cpu")
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    if restore_rng:
        _restore_rng(load_weights(path / "rng.safetensors", "cpu"))
    return meta
