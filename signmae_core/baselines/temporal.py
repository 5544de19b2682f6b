"""A small temporal classifier on per-frame landmark features, as pose-based recognizers do.

Two 1-D convolutions over time (kernel 3, `width` channels, GELU, dropout), mean- and
max-pooled over time, then a linear layer. Features are standardized with the training set's
per-feature mean and standard deviation. Training is full-batch AdamW with Gaussian feature
noise as the only augmentation, for a fixed number of steps, on the CPU, from a fixed seed:
seconds for thousands of clips, and the same numbers every run on the same machine.

It runs on one thread: the network is so small that a second thread only waits, and on a
loaded 2-core machine two threads made 60 steps take 8 s instead of 0.2 s (measured).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TemporalSettings:
    """How the classifier is built and trained (the defaults are what the reports use)."""

    width: int = 64
    dropout: float = 0.2
    steps: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-2
    noise: float = 0.1  # std of the Gaussian noise added to standardized features
    seed: int = 0


class TemporalConv(nn.Module):
    """(B, T, F) per-frame features -> (B, K) logits."""

    def __init__(self, features: int, classes: int, width: int = 64, dropout: float = 0.2
                 ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(features, width, 3, padding=1), nn.GELU(), nn.Dropout(dropout),
            nn.Conv1d(width, width, 3, padding=1), nn.GELU(),
        )
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x.transpose(1, 2))  # (B, W, T)
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=1))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU ops on one thread inside the block; restore the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class TemporalClassifier:
    """A trained classifier with its standardization: `scores(x)` gives (M, K) softmax."""

    model: TemporalConv
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(M, T, F) features -> (M, K) class probabilities, float64."""
        self.model.eval()
        with torch.no_grad(), one_thread():
            return torch.softmax(self.model(self._standardize(x)), dim=1).double().numpy()

    def _standardize(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))


def train_temporal(
    x: np.ndarray, y: np.ndarray, num_classes: int, settings: TemporalSettings | None = None
) -> TemporalClassifier:
    """Train on (N, T, F) features and (N,) labels in [0, num_classes)."""
    settings = settings or TemporalSettings()
    flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    with torch.random.fork_rng(devices=[]), one_thread():  # the caller's RNG stays as it was
        torch.manual_seed(settings.seed)
        model = TemporalConv(x.shape[-1], num_classes, settings.width, settings.dropout)
        classifier = TemporalClassifier(model, flat.mean(0), flat.std(0) + 1e-6)
        _fit(classifier, x, y, settings)
    return classifier


def _fit(classifier: TemporalClassifier, x: np.ndarray, y: np.ndarray,
         settings: TemporalSettings) -> None:
    model = classifier.model
    generator = torch.Generator().manual_seed(settings.seed)
    inputs = classifier._standardize(x)
    targets = torch.from_numpy(np.asarray(y, dtype=np.int64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    model.train()
    for _ in range(settings.steps):
        noise = torch.randn(inputs.shape, generator=generator) * settings.noise
        loss = nn.functional.cross_entropy(model(inputs + noise), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
