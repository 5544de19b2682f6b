"""Counter-based noise: a clip's mask as a pure function of (seed, epoch, sample, view).

A stateful generator makes a mask depend on how the work was split: which worker drew it, how
many clips that worker drew before, whether the run was resumed. Counter-based noise does not:
each value is a hash of its coordinates, computed on the training device without any state.

    keys = SampleKeys.of(seed, epoch=e, index=global_sample_indices, view=views)   # (B,) each
    u = keys.uniform(width=N, stream=1, device="cuda")                               # (B, N)

`u[b, j]` depends only on (seed, epoch[b], index[b], view[b], stream, j): one worker or two,
any number of loader workers, and a resumed run draw the same masks. The hash is Chris Wellons'
`lowbias32` in 32-bit arithmetic done in int64 without overflow (products stay below 2^48), so
CPU and CUDA give identical bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MASK32 = 0xFFFFFFFF
GOLDEN32 = 0x9E3779B9


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """`(x * constant) mod 2^32` for int64 `x` in [0, 2^32), without int64 overflow."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) of int64 values, elementwise; result in [0, 2^32)."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


@dataclass(frozen=True)
class SampleKeys:
    """Per-row coordinates of a batch's noise: `(B,)` int64 epoch, global sample index, view."""

    seed: int
    epoch: torch.Tensor
    index: torch.Tensor
    view: torch.Tensor

    @classmethod
    def of(
        cls,
        seed: int,
        epoch: torch.Tensor | int,
        index: torch.Tensor,
        view: torch.Tensor | int = 0,
    ) -> SampleKeys:
        """Keys for a batch; scalar `epoch`/`view` apply to every row."""
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        full = torch.full_like(index, 0)
        epoch_t = torch.as_tensor(epoch, dtype=torch.int64).reshape(-1) + full
        view_t = torch.as_tensor(view, dtype=torch.int64).reshape(-1) + full
        return cls(int(seed), epoch_t, index, view_t)

    @property
    def batch_size(self) -> int:
        return int(self.index.shape[0])

    def row_hash(self, stream: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(B,) int64 hash of (seed, stream, epoch, index, view) per row."""
        device = torch.device(device or "cpu")
        h = hash32(torch.tensor([(self.seed ^ (stream * GOLDEN32)) & MASK32], device=device))
        for part in (self.epoch, self.index, self.view):
            h = hash32(h ^ (part.to(device) & MASK32))
        return h

    def uniform(
        self, width: int, stream: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """(B, width) float32 in (0, 1), a pure function of each row's keys, `stream`, column."""
        rows = self.row_hash(stream, device)
        columns = torch.arange(width, dtype=torch.int64, device=rows.device)
        h = hash32(rows[:, None] ^ _mul32(columns + 1, GOLDEN32)[None, :])
        return ((h >> 8).to(torch.float32) + 0.5) / float(1 << 24)
