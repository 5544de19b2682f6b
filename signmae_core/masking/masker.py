"""Fields of a batch -> masked tokens: pooling, scores and the configured sampler in one call.

The training engine's entry point::

    masker = TokenMasker.from_config(cfg.masking, grid)        # grid = token_grid(cfg.model)
    draw = masker(batch["fields"], batch_size=B, device=device, generator=generator)
    draw.mask            # (B, N) bool, True = masked, exactly num_masked(grid, ratio) per row
    draw.hand_presence   # (B, N) float32 hand share per token (for a hand loss weight), or None

`fields` is the collated (B, F, T, Hc, Wc) tensor (any float dtype, on the batch's device) or
None; the scores are computed only when the sampler uses them or when hand weights are wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .pooling import Grid, ScoreWeights, TokenMaps, token_maps
from .samplers import MaskSampler, Noise, build_sampler


@dataclass
class MaskDraw:
    """One batch's masks and the per-token maps they were drawn from (None without fields)."""

    mask: torch.Tensor  # (B, N) bool
    maps: TokenMaps | None

    @property
    def hand_presence(self) -> torch.Tensor | None:
        return None if self.maps is None else self.maps.hand_presence


@dataclass
class TokenMasker:
    """Pool, score and sample with the settings of one `MaskingConfig`."""

    sampler: MaskSampler
    grid: Grid
    ratio: float
    weights: ScoreWeights
    hand_threshold: float

    @classmethod
    def from_config(cls, config: object, grid: Grid) -> TokenMasker:
        return cls(
            sampler=build_sampler(config),
            grid=tuple(grid),  # type: ignore[arg-type]
            ratio=float(config.ratio),  # type: ignore[attr-defined]
            weights=ScoreWeights.from_config(config),
            hand_threshold=float(config.hand_threshold),  # type: ignore[attr-defined]
        )

    def __call__(
        self,
        fields: torch.Tensor | None,
        *,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        generator: Noise = None,
    ) -> MaskDraw:
        """Draw a (B, N) mask; `fields` (B, F, T, Hc, Wc) or None (then give batch_size)."""
        maps = None
        if fields is not None:
            maps = token_maps(fields, self.grid, self.weights, self.hand_threshold)
        mask = self.sampler(
            None if maps is None else maps.scores,
            self.grid,
            self.ratio,
            generator,
            batch_size=batch_size,
            device=device,
            hands=None if maps is None else maps.hands,
        )
        return MaskDraw(mask=mask, maps=maps)
