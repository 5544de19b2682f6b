"""Masking samplers: exact counts, tube structure, strength limits, hands kept visible, registry."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from signmae_core.config import ConfigError, MaskingConfig, load_config
from signmae_core.config.masks import SamplerName
from signmae_core.masking import (
    FIELD_NAMES,
    SAMPLERS,
    TokenMasker,
    build_sampler,
    hand_leakage,
    masked_per_slot,
    num_masked,
)
from signmae_core.masking.samplers import RandomSampler, SegmentationSampler, TubeSampler

GRID = (4, 6, 6)
N = GRID[0] * GRID[1] * GRID[2]


def hand_scores(batch: int = 64, hand_share: float = 0.15, seed: int = 12345):
    """Scores with a random set of hand tokens (score 1) among zeros: ((B, N), (B, N) bool)."""
    g = torch.Generator().manual_seed(seed)
    hands = torch.rand(batch, N, generator=g) < hand_share
    return hands.float(), hands


def sampler(name: str, **params) -> object:
    return build_sampler(MaskingConfig(sampler=name, **params))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("ratio", [0.05, 0.5, 0.75, 0.9, 0.95])
@pytest.mark.parametrize("grid", [(1, 2, 2), (4, 6, 6), (8, 7, 7), (2, 3, 5)])
def test_every_sampler_masks_the_exact_count(name: str, ratio: float, grid) -> None:
    tokens = grid[0] * grid[1] * grid[2]
    scores = torch.rand(5, tokens) * 3
    gen = torch.Generator().manual_seed(1)
    mask = sampler(name)(scores, grid, ratio, gen, hands=scores > 2)
    assert mask.shape == (5, tokens) and mask.dtype == torch.bool
    expected = num_masked(grid, ratio)
    assert (mask.sum(dim=1) == expected).all()
    assert expected == grid[0] * masked_per_slot(grid, ratio)
    assert 0 < expected < tokens


def test_samplers_without_scores_take_the_batch_size() -> None:
    for name in ("tube", "random"):
        mask = sampler(name)(None, GRID, 0.9, batch_size=3, device="cpu")
        assert mask.shape == (3, N)
    with pytest.raises(ValueError, match="needs per-token scores"):
        sampler("segmentation")(None, GRID, 0.9, batch_size=3)


def test_tube_repeats_one_spatial_mask_over_time() -> None:
    mask = TubeSampler()(None, GRID, 0.75, torch.Generator().manual_seed(0), batch_size=8)
    slots = mask.reshape(8, GRID[0], -1)
    assert (slots == slots[:, :1]).all()
    assert not (slots[0, 0] == slots[1, 0]).all()  # different clips, different masks


def test_samplers_are_reproducible_from_the_generator() -> None:
    scores, _ = hand_scores(4)
    for name in SAMPLERS:
        a = sampler(name)(scores, GRID, 0.9, torch.Generator().manual_seed(7))
        b = sampler(name)(scores, GRID, 0.9, torch.Generator().manual_seed(7))
        assert torch.equal(a, b)


def test_strength_zero_is_exactly_the_random_draw() -> None:
    """No special case: Gumbel keys are a monotone map of the same uniforms."""
    scores, _ = hand_scores(16)
    seg = SegmentationSampler(strength=0.0)(scores, GRID, 0.9, torch.Generator().manual_seed(3))
    rnd = RandomSampler()(scores, GRID, 0.9, torch.Generator().manual_seed(3))
    assert torch.equal(seg, rnd)


def test_tiny_strength_has_random_statistics() -> None:
    scores, hands = hand_scores(batch=2000)
    gen = torch.Generator().manual_seed(0)
    ratio = 0.5
    seg = SegmentationSampler(strength=1e-3)(scores * 5, GRID, ratio, gen)
    rnd = RandomSampler()(scores, GRID, ratio, gen)
    seg_hand = seg[hands].float().mean().item()
    rnd_hand = rnd[hands].float().mean().item()
    assert abs(seg_hand - rnd_hand) < 0.02 and abs(seg_hand - ratio) < 0.02
    # per-position frequencies match too (no position is favoured)
    assert (seg.float().mean(0) - ratio).abs().max() < 0.06


def test_hand_tokens_masked_rises_to_one_with_strength() -> None:
    scores, hands = hand_scores(batch=256)
    gen = torch.Generator().manual_seed(0)
    shares = []
    for strength in (0.0, 0.25, 1.0, 2.0, 8.0):
        mask = SegmentationSampler(strength)(scores, GRID, 0.5, gen)
        shares.append(mask[hands].float().mean().item())
    assert all(b >= a for a, b in zip(shares, shares[1:], strict=False)), shares
    assert shares[1] > shares[0] + 0.02 and shares[2] > shares[1] + 0.02
    assert abs(shares[0] - 0.5) < 0.03 and shares[-1] > 0.999


def test_keep_hand_visible_keeps_that_share_and_the_exact_count() -> None:
    scores, hands = hand_scores(batch=64, hand_share=0.3)
    gen = torch.Generator().manual_seed(0)
    mask = SegmentationSampler(strength=50.0, keep_hand_visible=0.25)(
        scores, GRID, 0.9, gen, hands=hands
    )
    assert (mask.sum(1) == num_masked(GRID, 0.9)).all()
    visible_share = (~mask & hands).sum(1).float() / hands.sum(1).float()
    assert ((visible_share - 0.25).abs() < 0.03).all()


def test_keep_hand_visible_never_breaks_the_count() -> None:
    hands = torch.ones(4, N, dtype=torch.bool)  # every token is a hand token
    mask = SegmentationSampler(strength=1.0, keep_hand_visible=1.0)(
        hands.float(), GRID, 0.9, hands=hands
    )
    assert (mask.sum(1) == num_masked(GRID, 0.9)).all()


def test_registry_matches_the_config_and_unknown_names_list_the_valid() -> None:
    assert set(get_args(SamplerName)) == set(SAMPLERS)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["masking.sampler=blocks"])
    for name in SAMPLERS:
        assert name in str(err.value)

    class Named:
        sampler = "blocks"

    with pytest.raises(ConfigError, match="valid: random, segmentation, tube"):
        build_sampler(Named())


def test_segmentation_follows_a_moving_hand_and_leaks_less_than_tube() -> None:
    """A hand walking across the frame: tube masking leaks, segmentation masking does not."""
    grid = (8, 6, 6)
    batch = 32
    hands = torch.zeros(batch, 2, grid[0], grid[1], grid[2], dtype=torch.bool)
    for t in range(grid[0]):
        hands[:, 0, t, 2, t % grid[2]] = True
        hands[:, 0, t, 3, t % grid[2]] = True
    hands = hands.flatten(2)
    scores = hands.any(1).float()
    gen = torch.Generator().manual_seed(0)
    tube = TubeSampler()(scores, grid, 0.75, gen)
    seg = SegmentationSampler(strength=20.0)(scores, grid, 0.75, gen)
    tube_leak = hand_leakage(tube, hands, grid).share
    seg_leak = hand_leakage(seg, hands, grid).share
    assert tube_leak > 0.3 and seg_leak < 0.01


def test_token_masker_pools_scores_and_draws() -> None:
    fields = torch.zeros(2, len(FIELD_NAMES), 8, 12, 12, dtype=torch.float16)
    fields[:, 0, :, 0:4, 0:4] = 1.0  # left hand in the top-left 2x2 tokens
    masker = TokenMasker.from_config(MaskingConfig(strength=30.0, ratio=0.5), GRID)
    draw = masker(fields, generator=torch.Generator().manual_seed(0))
    assert draw.mask.shape == (2, N) and (draw.mask.sum(1) == num_masked(GRID, 0.5)).all()
    hand = draw.maps.hands.any(1)
    assert hand.sum() == 2 * 4 * 4 and draw.mask[hand].all()
    assert draw.hand_presence.shape == (2, N)
    tube = TokenMasker.from_config(MaskingConfig(sampler="tube"), GRID)
    assert tube(None, batch_size=2).maps is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_samplers_run_on_the_batch_device() -> None:
    scores, hands = hand_scores(8)
    scores, hands = scores.cuda(), hands.cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name in SAMPLERS:
        mask = sampler(name, keep_hand_visible=0.1)(scores, GRID, 0.9, gen, hands=hands)
        assert mask.device.type == "cuda" and (mask.sum(1) == num_masked(GRID, 0.9)).all()
