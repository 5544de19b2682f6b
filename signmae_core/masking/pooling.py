"""Pool mask fields to the model's token grid and combine them into one score per token (torch).

Applied on the fly, after the clip's own transforms, on whatever device the batch is on:

    fields (B, F, T, Hc, Wc)  --pool_fields-->  (B, F, T', H', W')  --token_scores-->  (B, N)

with (T', H', W') = (T / tubelet, H / patch, W / patch) from the model config and N = T'H'W'
tokens in (t, h, w) order, the order of the model's patch embedding. Pooling is an exact area
mean (a token's presence is the share of its space-time volume the part covers), so the field
grid need not divide the token grid. The weights come from `MaskingConfig`: changing one needs
no recompute of the stored fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .fields import FIELD_INDEX
from .resample import overlap_matrix

Grid = tuple[int, int, int]


def _matrix(n_out: int, n_in: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(overlap_matrix(n_out, n_in)).to(device)


def pool_fields(fields: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Area-mean pooling: (B, F, T, Hc, Wc) any float -> (B, F, T', H', W') float32."""
    if fields.ndim != 5:
        raise ValueError(f"fields must be (B, F, T, Hc, Wc), got shape {tuple(fields.shape)}")
    _, _, frames, height, width = fields.shape
    device = fields.device
    a_t = _matrix(grid[0], frames, device)
    a_h = _matrix(grid[1], height, device)
    a_w = _matrix(grid[2], width, device)
    pooled = fields.float() @ a_w.T  # (B, F, T, Hc, W')
    pooled = a_h @ pooled  # (B, F, T, H', W')
    return (pooled.movedim(2, -1) @ a_t.T).movedim(-1, 2)  # (B, F, T', H', W')


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of the combined score (taken from `MaskingConfig` with `from_config`)."""

    hand: float = 1.0
    face: float = 0.25
    body: float = 0.1
    motion: float = 1.0

    @classmethod
    def from_config(cls, config: object) -> ScoreWeights:
        return cls(
            hand=float(config.hand_weight),  # type: ignore[attr-defined]
            face=float(config.face_weight),  # type: ignore[attr-defined]
            body=float(config.body_weight),  # type: ignore[attr-defined]
            motion=float(config.motion_weight),  # type: ignore[attr-defined]
        )


def combine(pooled: torch.Tensor, weights: ScoreWeights) -> torch.Tensor:
    """One score per token: (B, F, T', H', W') -> (B, N) float32.

    score = hand * (left + right presence) + face * face + body * body
            + motion * (left + right motion)
    """
    f = FIELD_INDEX
    score = (
        weights.hand * (pooled[:, f["left_hand"]] + pooled[:, f["right_hand"]])
        + weights.face * pooled[:, f["face"]]
        + weights.body * pooled[:, f["body"]]
        + weights.motion * (pooled[:, f["left_motion"]] + pooled[:, f["right_motion"]])
    )
    return score.flatten(1)


def hand_tokens(pooled: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which tokens hold each hand: (B, F, T', H', W') -> (B, 2, N) bool (left, right)."""
    hands = pooled[:, [FIELD_INDEX["left_hand"], FIELD_INDEX["right_hand"]]]
    return hands.flatten(2) > threshold


@dataclass
class TokenMaps:
    """Per-token views of a batch's fields. N = T'H'W' tokens in (t, h, w) order."""

    scores: torch.Tensor  # (B, N) float32
    hands: torch.Tensor  # (B, 2, N) bool: left, right hand present
    hand_presence: torch.Tensor  # (B, N) float32: left + right presence, clipped to [0, 1]


def token_maps(
    fields: torch.Tensor, grid: Grid, weights: ScoreWeights, hand_threshold: float
) -> TokenMaps:
    """Pool (B, F, T, Hc, Wc) fields to `grid` and derive scores and hand tokens."""
    pooled = pool_fields(fields, grid)
    presence = pooled[:, FIELD_INDEX["left_hand"]] + pooled[:, FIELD_INDEX["right_hand"]]
    return TokenMaps(
        scores=combine(pooled, weights),
        hands=hand_tokens(pooled, hand_threshold),
        hand_presence=presence.flatten(1).clamp(0, 1),
    )
