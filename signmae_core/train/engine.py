"""The one training loop, for masked-video pretraining and for classifier finetuning.

The loop takes any iterable of batches (dicts with `clips` (B,3,T,H,W) uint8 or float in [0,1],
`label` (B,) long with -1 for unlabelled clips, and optionally `token_scores` (B,N) or
`token_weight` (B,N)); what differs between pretraining and finetuning is the *task*, a callable
that turns a batch into a loss. One step = `grad_accum` forward/backward passes, gradient clipping
and one AdamW update with the learning rate of the cosine schedule at that step.

A `prepare(batch, device)` hook (`Trainer(prepare=...)`) finishes each batch before the task
sees it: the device decoder (`signmae_core.data.device.DeviceDecode`) turns a batch of JPEG
frames and crop draws into clips on the training device.

Distributed data parallel: when `torch.distributed` is initialized (Ray Train does it, see
`pipelines/train_ray.py`) the model is wrapped in DDP; each worker reads its own rows of every
global batch and the gradients are averaged, so W workers with B/W clips each follow the same
trajectory as one worker with B clips.

Masks: the task draws them on the training device from counter-based noise keyed by each clip's
(seed, epoch, global sample index, view) (`signmae_core.masking.SampleKeys`), so they do not
depend on how many workers (or loader threads) split the batch, nor on a resume: no sampler
state exists to save.

Resuming: the newest checkpoint under `run_dir/checkpoints` restores weights, optimizer, step,
sample count and the torch RNG; the batch source is positioned at the sample count
(`start_at(samples)` when it has one, otherwise the consumed batches are skipped), so a
deterministic source continues exactly where the run stopped, with any number of workers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    unwrap_model,
)
from .metrics import MetricsLogger
from .optim import build_optimizer, lr_at, set_lr

if TYPE_CHECKING:  # the engine reads the fields only: it runs where pydantic is absent
    from signmae_core.config import TrainConfig

log = logging.getLogger(__name__)

Batch = dict[str, Any]
Grid = tuple[int, int, int]
MaskFn = Callable[
    [Batch, Grid, torch.device], torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]
]
"""`mask_fn(batch, grid, device) -> (B, N) bool` drawn on `device`, True = masked, the same
count in every row; or `(mask, token_weight)` with a (B, N) loss weight per token (e.g. hand
presence) or None. A pure function of the batch (its `sample_epoch`, `sample_index`)."""
PrepareFn = Callable[[Batch, torch.device], Batch]
"""`prepare(batch, device) -> batch`, run on every batch before the task: e.g. decoding the
batch's JPEG frames on the device (`signmae_core.data.device.DeviceDecode`)."""


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; other names are passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked; a no-op on the CPU (which trains in fp32)."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Task(Protocol):
    """Turns a batch into a scalar loss (plus scalar tensors to log), and says which parameters
    the step at hand leaves alone."""

    name: str

    def __call__(
        self, model: nn.Module, batch: Batch, device: torch.device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def frozen_parameters(self, model: nn.Module, step: int) -> list[nn.Parameter]: ...


class PretrainTask:
    """Masked reconstruction: draw the mask, let the model reconstruct the masked tokens."""

    name = "pretrain"

    def __init__(self, mask_fn: MaskFn, grid: Grid, num_masked: int | None = None) -> None:
        self.mask_fn = mask_fn
        self.grid = grid
        self.num_masked = num_masked  # known in advance: the model need not read it off the device

    def __call__(
        self, model: nn.Module, batch: Batch, device: torch.device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        clips = batch["clips"].to(device, non_blocking=True)
        drawn = self.mask_fn(batch, self.grid, device)
        mask, weight = drawn if isinstance(drawn, tuple) else (drawn, batch.get("token_weight"))
        num_masked = self.num_masked
        if num_masked is None and mask.device.type == "cpu":
            num_masked = int(mask[0].sum())
        mask = mask.to(device, non_blocking=True)
        if weight is not None:
            weight = weight.to(device, non_blocking=True)
        out = model(clips, mask, token_weight=weight, num_masked=num_masked)
        return out["loss"], {}

    def frozen_parameters(self, model: nn.Module, step: int) -> list[nn.Parameter]:
        """Nothing: pretraining trains the whole model at every step."""
        return []


class FinetuneTask:
    """Classification: cross-entropy with label smoothing; logs the training accuracy.

    `head_only_steps`: the first steps train the head alone on the frozen encoder (linear
    probing, then finetuning: LP-FT, Kumar et al. 2022), so a pretrained encoder meets a head
    that already fits its features instead of a random one that rewrites them.
    """

    name = "finetune"

    def __init__(self, label_smoothing: float = 0.0, head_only_steps: int = 0) -> None:
        self.label_smoothing = label_smoothing
        self.head_only_steps = head_only_steps

    def __call__(
        self, model: nn.Module, batch: Batch, device: torch.device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if bool((batch["label"] < 0).any()):  # checked before the labels leave the host
            raise ValueError("finetuning got unlabelled clips (label -1)")
        clips = batch["clips"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
        return loss, {"acc": accuracy.detach()}

    def frozen_parameters(self, model: nn.Module, step: int) -> list[nn.Parameter]:
        """The encoder's parameters while step `step` (0-based) is a head-only step."""
        if step >= self.head_only_steps:
            return []
        return list(unwrap_model(model).encoder.parameters())


@dataclass
class TrainState:
    """Where a run stands: optimizer steps done and global clips consumed."""

    step: int = 0
    samples: int = 0


@dataclass
class TrainResult:
    """What `Trainer.fit` returns: the state and this process' per-step global mean losses."""

    state: TrainState
    losses: dict[int, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    resumed_from: int | None = None
    ran_out_of_data: bool = False
    local_samples: int = 0  # clips this process trained on in this call (its share of batches)


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Runs `task` on `model` for `total_steps` optimizer steps (see the module docstring).

    `run_dir` receives `checkpoints/`, `metrics.jsonl` and `recon/` (rank 0 writes); without it
    nothing is written. `meta` goes into every checkpoint's meta.json (config, class names).
    `figure_fn(model, batch, step, path)` draws a reconstruction figure at the chosen steps.
    `prepare(batch, device)` turns each batch of the source into the one the task gets (the
    clips counted, drawn in figures) before the step uses it: e.g. the device decoder.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        cfg: TrainConfig,
        total_steps: int,
        run_dir: str | Path | None = None,
        meta: dict[str, Any] | None = None,
        figure_fn: Callable[[nn.Module, Batch, int, Path], None] | None = None,
        prepare: PrepareFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.prepare = prepare
        self.task = task
        self.total_steps = total_steps
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.meta = dict(meta or {})
        self.figure_fn = figure_fn
        self.rank, self.world_size = _distributed()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.model = model.to(self.device)  # the plain module: checkpoints, figures
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        self.state = TrainState()
        self.local_samples = 0
        self.forward: nn.Module = torch.compile(self.model) if cfg.compile else self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(self.forward, device_ids=ids)
        self.logger = (
            MetricsLogger(self.run_dir / "metrics.jsonl")
            if self.run_dir is not None and self.rank == 0
            else None
        )

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir is not None else None

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Checkpoint the current state (rank 0 writes; every rank waits for it)."""
        path = None
        if self.rank == 0 and self.checkpoint_dir is not None:
            meta = {
                **self.meta,
                "task": self.task.name,
                "samples": self.state.samples,
                "total_steps": self.total_steps,
                "world_size": self.world_size,
            }
            path = save_checkpoint(
                self.checkpoint_dir, self.state.step, self.model, self.optimizer, meta,
                keep=self.cfg.keep_checkpoints,
            )
        if self.world_size > 1:
            dist.barrier()
        return path

    def maybe_resume(self) -> int | None:
        """Load the newest checkpoint of this run if there is one; return its step."""
        if not self.cfg.resume or self.checkpoint_dir is None:
            return None
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            return None
        meta = read_meta(path)
        if meta.get("task") != self.task.name:
            raise ValueError(f"{path} is a {meta.get('task')} checkpoint, not {self.task.name}")
        load_checkpoint(path, self.model, self.optimizer)  # data and masks: positions only
        self.state = TrainState(step=meta["step"], samples=meta["samples"])
        if self.logger is not None:
            self.logger.truncate_after(self.state.step)
        log.info("resumed from %s (step %d)", path, self.state.step)
        return self.state.step

    # ---- the loop ------------------------------------------------------------------------------
    def _position(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        if self.state.samples == 0:
            return iter(batches)
        if hasattr(batches, "start_at"):
            return iter(batches.start_at(self.state.samples))
        return itertools.islice(iter(batches), self.state.step * self.cfg.grad_accum, None)

    def train_step(self, data: Iterator[Batch]) -> tuple[torch.Tensor, dict, Batch] | None:
        """One optimizer step over `grad_accum` batches; None when the data ran out."""
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        extras: dict[str, torch.Tensor] = {}
        batch: Batch = {}
        for micro in range(self.cfg.grad_accum):
            batch = next(data, None)
            if batch is None:
                return None
            if self.prepare is not None:
                batch = self.prepare(batch, self.device)
            last = micro == self.cfg.grad_accum - 1
            sync = contextlib.nullcontext()
            if self.world_size > 1 and not last:
                sync = self.forward.no_sync()
            with sync, autocast(self.device, self.cfg.precision):
                loss, logs = self.task(self.forward, batch, self.device)
                (loss / self.cfg.grad_accum).backward()
            total += loss.detach().float() / self.cfg.grad_accum
            for name, value in logs.items():
                extras[name] = extras.get(name, 0) + value.float() / self.cfg.grad_accum
            self.state.samples += batch["clips"].shape[0] * self.world_size
            self.local_samples += batch["clips"].shape[0]
        for param in self.task.frozen_parameters(self.model, self.state.step):
            param.grad = None  # AdamW skips it: no update, no weight decay, no moments
        grad_norm = None
        if self.cfg.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        if grad_norm is not None:
            extras["grad_norm"] = grad_norm.detach().float()
        return total, extras, batch

    def fit(self, batches: Iterable[Batch]) -> TrainResult:
        """Train until `total_steps` (or until the data runs out); checkpoint at the end."""
        resumed = self.maybe_resume()
        result = TrainResult(self.state, resumed_from=resumed)
        data = self._position(batches)
        self.forward.train()
        pending: list[tuple[int, torch.Tensor, dict]] = []  # steps not logged yet
        tick, tick_samples = time.perf_counter(), self.state.samples
        while self.state.step < self.total_steps:
            lr = lr_at(self.state.step, self.cfg, self.total_steps)
            set_lr(self.optimizer, lr)
            out = self.train_step(data)
            if out is None:
                result.ran_out_of_data = True
                log.warning("data ran out at step %d of %d", self.state.step, self.total_steps)
                break
            loss, extras, batch = out
            self.state.step = step = self.state.step + 1
            pending.append((step, loss, {"lr": lr, "wall_time": time.time(), **extras}))
            if step % self.cfg.log_every == 0 or step == self.total_steps:
                rate = (self.state.samples - tick_samples) / (time.perf_counter() - tick)
                self._flush(pending, result, clips_per_s=rate)
            if self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0:
                self._flush(pending, result)  # a resumed run must find these steps logged
                result.checkpoint = self.save()
            if self._figure_due(step):
                self._figure(batch, step)
            if not pending:  # throughput intervals leave out checkpoints and figures
                tick, tick_samples = time.perf_counter(), self.state.samples
        self._flush(pending, result)
        if result.checkpoint is None or self.state.step % max(1, self.cfg.checkpoint_every):
            result.checkpoint = self.save()
        result.local_samples = self.local_samples
        return result

    def _flush(
        self, pending: list[tuple[int, torch.Tensor, dict]], result: TrainResult, **extra: Any
    ) -> None:
        """Average the pending steps' losses over workers (one all-reduce) and log them."""
        if not pending:
            return
        names = sorted({k for _, _, logs in pending for k, v in logs.items() if torch.is_tensor(v)})
        values = torch.stack(
            [torch.stack([loss, *(extra_[n].reshape(()) for n in names)])
             for _, loss, extra_ in pending]
        )
        if self.world_size > 1:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.world_size
        values = values.cpu().tolist()
        for (step, _, logs), row in zip(pending, values, strict=True):
            result.losses[step] = row[0]
            if self.logger is not None:
                values_row = {"loss": row[0], **dict(zip(names, row[1:], strict=True))}
                values_row.update({k: v for k, v in logs.items() if not torch.is_tensor(v)})
                # wall_time stays a keyword of its own: the logger rounds other floats
                if step == pending[-1][0]:
                    values_row.update(samples=self.state.samples, **extra)
                self.logger.log(step, **values_row)
        pending.clear()

    def _figure_due(self, step: int) -> bool:
        if self.figure_fn is None or self.run_dir is None or self.rank != 0:
            return False
        every = self.cfg.recon_every
        return step == self.total_steps or (every > 0 and step % every == 0)

    def _figure(self, batch: Batch, step: int) -> None:
        path = self.run_dir / "recon" / f"step_{step:08d}.png"
        self.model.eval()
        try:
            with torch.no_grad(), autocast(self.device, self.cfg.precision):
                self.figure_fn(self.model, batch, step, path)
        finally:
            self.model.train()


__all__ = [
    "Batch",
    "FinetuneTask",
    "MaskFn",
    "PrepareFn",
    "PretrainTask",
    "Task",
    "TrainResult",
    "TrainState",
    "Trainer",
    "autocast",
    "resolve_device",
    "unwrap_model",
]
