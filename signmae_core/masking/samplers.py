"""Masking samplers: which tokens of each clip are masked, batched, on the batch's device.

One interface for every sampler::

    mask = sampler(scores, grid, ratio, generator)     # (B, N) bool, True = masked

- `scores`: (B, N) float per-token scores (see `pooling.token_maps`), or None for samplers that
  ignore them (then pass `batch_size=` and `device=`);
- `grid`: the token grid (T', H', W'), N = T'H'W' in (t, h, w) order;
- `ratio`: share of tokens to mask; every sampler masks exactly `num_masked(grid, ratio)` tokens
  in every clip (T' times the per-slot count, so tube masking is exact too and samplers compare
  at equal counts), so batches stack and the encoder sees a fixed number of tokens;
- `generator`: the noise source: `SampleKeys` (counter-based: the mask is a pure function of
  each clip's seed, epoch, global index and view, whoever draws it; what training uses), or a
  `torch.Generator` on the batch's device (None: torch's default generator).

Samplers: `tube` (VideoMAE: one spatial mask repeated over time), `random` (uniform over all
tokens) and `segmentation` (Gumbel-top-k over `strength * score`: at strength 0 it is exactly the
uniform draw of `random`, with no special case; optionally a share of hand tokens kept visible).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .noise import SampleKeys
from .pooling import Grid

Noise = torch.Generator | SampleKeys | None
# one noise stream per use, so that two uses of counter-based keys never share values
STREAM_TUBE, STREAM_RANDOM, STREAM_SEGMENTATION, STREAM_HANDS_VISIBLE = 1, 2, 3, 4


def masked_per_slot(grid: Grid, ratio: float) -> int:
    """Masked tokens per time slot: round(ratio * H'W'), kept within [1, H'W' - 1]."""
    spatial = grid[1] * grid[2]
    if spatial < 2:
        raise ValueError(f"token grid {grid} has fewer than 2 spatial positions: nothing to mask")
    if not 0 < ratio < 1:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    return min(max(round(ratio * spatial), 1), spatial - 1)


def num_masked(grid: Grid, ratio: float) -> int:
    """Masked tokens per clip, the same for every sampler: T' * masked_per_slot(grid, ratio)."""
    return grid[0] * masked_per_slot(grid, ratio)


def _top_k_mask(keys: torch.Tensor, k: int) -> torch.Tensor:
    """(B, M) keys -> (B, M) bool with True at the k largest keys of each row."""
    mask = torch.zeros_like(keys, dtype=torch.bool)
    return mask.scatter_(1, keys.topk(k, dim=1).indices, True)


def _uniform(
    shape: tuple[int, int], generator: Noise, device: torch.device, stream: int
) -> torch.Tensor:
    """(B, M) uniform noise in (0, 1) from counter-based keys or a torch generator."""
    if isinstance(generator, SampleKeys):
        if generator.batch_size != shape[0]:
            raise ValueError(f"{generator.batch_size} sample keys for a batch of {shape[0]}")
        return generator.uniform(shape[1], stream, device)
    return torch.rand(shape, generator=generator, device=device)


def _batch_shape(
    scores: torch.Tensor | None,
    grid: Grid,
    batch_size: int | None,
    device: torch.device | str | None,
) -> tuple[int, torch.device]:
    tokens = grid[0] * grid[1] * grid[2]
    if scores is not None:
        if scores.ndim != 2 or scores.shape[1] != tokens:
            shape = tuple(scores.shape)
            raise ValueError(f"scores must be (B, {tokens}) for grid {grid}, got {shape}")
        return scores.shape[0], scores.device
    if batch_size is None:
        raise ValueError("without scores, pass batch_size (and device)")
    return batch_size, torch.device(device or "cpu")


class MaskSampler:
    """Base class: `__call__` checks the shapes, subclasses implement `_draw`."""

    name: ClassVar[str] = ""
    needs_scores: ClassVar[bool] = False

    def __call__(
        self,
        scores: torch.Tensor | None,
        grid: Grid,
        ratio: float,
        generator: Noise = None,
        *,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        hands: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N) bool mask, True = masked, exactly `num_masked(grid, ratio)` per row.

        `hands` (B, N) or (B, 2, N) bool marks hand tokens (used by `keep_hand_visible`).
        """
        if scores is None and self.needs_scores:
            raise ValueError(f"the {self.name} sampler needs per-token scores (mask fields)")
        batch, dev = _batch_shape(scores, grid, batch_size, device)
        return self._draw(scores, grid, ratio, generator, batch, dev, hands)

    def _draw(
        self,
        scores: torch.Tensor | None,
        grid: Grid,
        ratio: float,
        generator: Noise,
        batch: int,
        device: torch.device,
        hands: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError


class TubeSampler(MaskSampler):
    """VideoMAE tube masking: one random spatial mask per clip, repeated over every time slot."""

    name = "tube"

    def _draw(self, scores, grid, ratio, generator, batch, device, hands):
        keys = _uniform((batch, grid[1] * grid[2]), generator, device, STREAM_TUBE)
        spatial = _top_k_mask(keys, masked_per_slot(grid, ratio))  # (B, H'W')
        return spatial[:, None, :].expand(batch, grid[0], spatial.shape[1]).reshape(batch, -1)


class RandomSampler(MaskSampler):
    """Uniform masking: every set of `num_masked` tokens is equally likely."""

    name = "random"

    def _draw(self, scores, grid, ratio, generator, batch, device, hands):
        keys = _uniform((batch, grid[0] * grid[1] * grid[2]), generator, device, STREAM_RANDOM)
        return _top_k_mask(keys, num_masked(grid, ratio))


class SegmentationSampler(MaskSampler):
    """Gumbel-top-k over `strength * score`: masking follows the hands wherever they go.

    The top k of `strength * score + Gumbel noise` is a draw of k tokens without replacement with
    probabilities proportional to `exp(strength * score)`; at strength 0 the keys are pure Gumbel
    noise, whose top k is a uniform draw (the `random` sampler's distribution). With
    `keep_hand_visible` > 0, that share of each clip's hand tokens is drawn uniformly and kept
    visible (at most N - num_masked tokens, so the count stays exact).
    """

    name = "segmentation"
    needs_scores = True

    def __init__(self, strength: float = 4.0, keep_hand_visible: float = 0.0) -> None:
        if strength < 0 or not 0 <= keep_hand_visible <= 1:
            raise ValueError("strength must be >= 0 and keep_hand_visible in [0, 1]")
        self.strength = strength
        self.keep_hand_visible = keep_hand_visible

    def _draw(self, scores, grid, ratio, generator, batch, device, hands):
        k = num_masked(grid, ratio)
        uniform = _uniform(tuple(scores.shape), generator, device, STREAM_SEGMENTATION)
        gumbel = -torch.log(-torch.log(uniform.clamp_(min=torch.finfo(uniform.dtype).tiny)))
        keys = self.strength * scores.float() + gumbel
        if self.keep_hand_visible > 0 and hands is not None:
            keys = keys.masked_fill(self._forced_visible(hands, k, generator), float("-inf"))
        return _top_k_mask(keys, k)

    def _forced_visible(
        self, hands: torch.Tensor, k: int, generator: Noise
    ) -> torch.Tensor:
        """(B, N) bool: a uniform share `keep_hand_visible` of each row's hand tokens."""
        if hands.ndim == 3:  # (B, 2, N) per hand -> either hand
            hands = hands.any(dim=1)
        tokens = hands.shape[1]
        count = torch.round(self.keep_hand_visible * hands.sum(dim=1).float()).long()
        count = count.clamp(max=tokens - k)  # (B,)
        order = _uniform(tuple(hands.shape), generator, hands.device, STREAM_HANDS_VISIBLE)
        order = order.masked_fill(~hands, 2.0)
        rank = order.argsort(dim=1).argsort(dim=1)
        return rank < count[:, None]


SAMPLERS: dict[str, type[MaskSampler]] = {
    cls.name: cls for cls in (TubeSampler, RandomSampler, SegmentationSampler)
}


def build_sampler(config: object) -> MaskSampler:
    """The sampler a `MaskingConfig` names; an unknown name is a `ConfigError` listing the valid."""
    name = config.sampler  # type: ignore[attr-defined]
    if name not in SAMPLERS:
        from signmae_core.config import ConfigError  # pydantic: imported only when needed

        valid = ", ".join(sorted(SAMPLERS))
        raise ConfigError(f"unknown masking sampler {name!r} (valid: {valid})")
    if name == SegmentationSampler.name:
        return SegmentationSampler(
            strength=float(config.strength),  # type: ignore[attr-defined]
            keep_hand_visible=float(config.keep_hand_visible),  # type: ignore[attr-defined]
        )
    return SAMPLERS[name]()
