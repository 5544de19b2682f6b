"""Hand leakage: how often a masked hand token can be copied from a neighbouring time slot.

A masked hand token is a token (t, c) where a hand is present and that is masked. It *leaks*
when the same hand is visible in a neighbouring time slot (t - 1 or t + 1) at whichever cells it
occupies there, i.e. some token of slot t +- 1 holds that hand and is not masked. Leakage is the
share of masked hand tokens that leak, counted per hand (left and right separately) and summed.

Tube masking leaks whenever the hand moves into a visible column; masking that follows the hand
into every slot leaks little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .pooling import Grid


@dataclass(frozen=True)
class Leakage:
    """Counts over a batch (or summed over batches with `+`)."""

    masked_hand_tokens: int = 0
    leaked_tokens: int = 0
    hand_tokens: int = 0

    @property
    def share(self) -> float:
        """Leaked / masked hand tokens (NaN when no hand token was masked)."""
        if self.masked_hand_tokens == 0:
            return float("nan")
        return self.leaked_tokens / self.masked_hand_tokens

    @property
    def hand_masked_share(self) -> float:
        """Masked hand tokens / hand tokens (NaN without hand tokens)."""
        if self.hand_tokens == 0:
            return float("nan")
        return self.masked_hand_tokens / self.hand_tokens

    def __add__(self, other: Leakage) -> Leakage:
        return Leakage(
            self.masked_hand_tokens + other.masked_hand_tokens,
            self.leaked_tokens + other.leaked_tokens,
            self.hand_tokens + other.hand_tokens,
        )


def hand_leakage(mask: torch.Tensor, hands: torch.Tensor, grid: Grid) -> Leakage:
    """Leakage of one batch.

    mask: (B, N) bool, True = masked; hands: (B, 2, N) bool, hand present (left, right);
    N = T'H'W' tokens in (t, h, w) order.
    """
    batch = mask.shape[0]
    slots = grid[0]
    masked = mask.reshape(batch, 1, slots, -1)  # (B, 1, T', S)
    present = hands.reshape(batch, hands.shape[1], slots, -1)  # (B, 2, T', S)
    visible_somewhere = (present & ~masked).any(dim=-1)  # (B, 2, T')
    neighbour_visible = torch.zeros_like(visible_somewhere)
    neighbour_visible[..., 1:] |= visible_somewhere[..., :-1]
    neighbour_visible[..., :-1] |= visible_somewhere[..., 1:]
    masked_hand = present & masked  # (B, 2, T', S)
    leaked = masked_hand & neighbour_visible[..., None]
    return Leakage(
        masked_hand_tokens=int(masked_hand.sum()),
        leaked_tokens=int(leaked.sum()),
        hand_tokens=int(present.sum()),
    )
