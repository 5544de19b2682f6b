"""A deterministic, resumable batch source over a map-style set of clips.

Epoch `e` visits the items in a permutation drawn from `(seed, e)`; global batch `i` of an epoch
holds items `perm[i*B:(i+1)*B]` (a last partial batch is dropped) and worker `r` of `W` takes rows
`[r*B/W, (r+1)*B/W)`. Each item is loaded with its own RNG seeded by `(seed, epoch, index)`, so the
augmentation an item gets does not depend on the number of workers, on loading threads, or on
whether the run was resumed: `start_at(samples)` positions the source at a global sample count
without loading anything before it. Each item carries its `sample_epoch` and `sample_index`, the
coordinates its mask is drawn from (`signmae_core.masking.SampleKeys`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

Batch = dict[str, Any]
LoadFn = Callable[[int, np.random.Generator], dict[str, Any]]


def collate(items: Sequence[dict[str, Any]]) -> Batch:
    """Stack a list of item dicts: tensors/arrays/numbers are stacked, other values listed;
    a key that is None in every item stays None."""
    batch: Batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        first = values[0]
        if all(v is None for v in values):
            batch[key] = None
        elif isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, np.ndarray):
            batch[key] = torch.from_numpy(np.stack(values))
        elif isinstance(first, (bool, int, float, np.integer, np.floating)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


class EpochBatches:
    """Batches of `load(index, rng)` items; see the module docstring for the order."""

    def __init__(
        self,
        num_items: int,
        load: LoadFn,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        epochs: int | None = None,
        threads: int = 0,
        start_sample: int = 0,
        collate_fn: Callable[[Sequence[dict[str, Any]]], Batch] = collate,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not a multiple of {world_size} workers")
        if num_items < batch_size:
            raise ValueError(f"{num_items} clips are fewer than one batch of {batch_size}")
        self.num_items = num_items
        self.load = load
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epochs = epochs
        self.threads = threads
        self.start_sample = start_sample
        self.collate_fn = collate_fn

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.batch_size

    @property
    def samples_per_epoch(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def start_at(self, samples: int) -> EpochBatches:
        """The same source positioned after `samples` global samples (a multiple of the batch)."""
        if samples % self.batch_size:
            raise ValueError(f"cannot resume at sample {samples}: not a multiple of the batch")
        return EpochBatches(
            self.num_items, self.load, self.batch_size, self.seed, self.rank, self.world_size,
            self.shuffle, self.epochs, self.threads, start_sample=samples,
            collate_fn=self.collate_fn,
        )

    def order(self, epoch: int) -> np.ndarray:
        """Item indices of `epoch` in visiting order, (num_items,)."""
        if not self.shuffle:
            return np.arange(self.num_items)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

    def _positions(self) -> Iterator[tuple[int, np.ndarray]]:
        """(epoch, this worker's item indices) for every batch from `start_sample` on."""
        epoch, offset = divmod(self.start_sample, self.samples_per_epoch)
        first_batch = offset // self.batch_size
        per_rank = self.batch_size // self.world_size
        while self.epochs is None or epoch < self.epochs:
            order = self.order(epoch)
            for i in range(first_batch, self.batches_per_epoch):
                start = i * self.batch_size + self.rank * per_rank
                yield epoch, order[start : start + per_rank]
            epoch, first_batch = epoch + 1, 0

    def _load_item(self, epoch: int, index: int) -> dict[str, Any]:
        """The item, with `sample_epoch` and `sample_index`: what its mask is a function of."""
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        return {**self.load(int(index), rng), "sample_epoch": epoch, "sample_index": int(index)}

    def __iter__(self) -> Iterator[Batch]:
        if self.threads <= 0:
            for epoch, indices in self._positions():
                yield self.collate_fn([self._load_item(epoch, i) for i in indices])
            return
        # one batch loads ahead while the caller works on the current one
        with ThreadPoolExecutor(self.threads) as pool:
            pending: list[Future] | None = None
            for epoch, indices in self._positions():
                submitted = [pool.submit(self._load_item, epoch, i) for i in indices]
                if pending is not None:
                    yield self.collate_fn([f.result() for f in pending])
                pending = submitted
            if pending is not None:
                yield self.collate_fn([f.result() for f in pending])
