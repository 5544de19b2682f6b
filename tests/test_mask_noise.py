"""Counter-based mask noise: a mask is a pure function of (seed, epoch, sample index, view)."""

from __future__ import annotations

import torch

from signmae_core.config import MaskingConfig
from signmae_core.masking import SampleKeys, TokenMasker
from signmae_core.masking.noise import hash32


def lowbias32(x: int) -> int:
    """Reference: Chris Wellons' lowbias32 in plain Python integers."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash_matches_the_reference_on_edge_and_random_values() -> None:
    values = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 123456789] + list(
        torch.randint(0, 2**32, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    )
    got = hash32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [lowbias32(v) for v in values]


def test_a_row_depends_on_its_own_keys_only_not_on_the_batch_it_is_in() -> None:
    together = SampleKeys.of(7, epoch=3, index=torch.tensor([10, 11, 12, 13]), view=1)
    split = [SampleKeys.of(7, epoch=3, index=torch.tensor([12, 10]), view=1),
             SampleKeys.of(7, epoch=3, index=torch.tensor([13, 11]), view=1)]
    whole = together.uniform(50, stream=2)
    parts = [k.uniform(50, stream=2) for k in split]
    assert torch.equal(whole[2], parts[0][0]) and torch.equal(whole[0], parts[0][1])
    assert torch.equal(whole[3], parts[1][0]) and torch.equal(whole[1], parts[1][1])


def test_every_coordinate_changes_the_noise() -> None:
    base = SampleKeys.of(7, epoch=3, index=torch.tensor([10]), view=1).uniform(64, stream=2)
    for other in (
        SampleKeys.of(8, epoch=3, index=torch.tensor([10]), view=1).uniform(64, stream=2),
        SampleKeys.of(7, epoch=4, index=torch.tensor([10]), view=1).uniform(64, stream=2),
        SampleKeys.of(7, epoch=3, index=torch.tensor([11]), view=1).uniform(64, stream=2),
        SampleKeys.of(7, epoch=3, index=torch.tensor([10]), view=2).uniform(64, stream=2),
        SampleKeys.of(7, epoch=3, index=torch.tensor([10]), view=1).uniform(64, stream=3),
    ):
        assert (other != base).float().mean() > 0.9


def test_noise_is_uniform_enough_for_masking() -> None:
    u = SampleKeys.of(0, epoch=0, index=torch.arange(400)).uniform(500, stream=1)
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005
    histogram = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert float((histogram - 0.1).abs().max()) < 0.005
    # neighbouring samples and columns are uncorrelated
    assert abs(float(torch.corrcoef(torch.stack([u[:-1].flatten(), u[1:].flatten()]))[0, 1])) < 0.01


def test_masks_from_keys_are_exact_count_and_reproducible_for_every_sampler() -> None:
    grid = (4, 7, 7)
    fields = torch.rand(3, 6, 8, 14, 14, generator=torch.Generator().manual_seed(1))
    for sampler in ("tube", "random", "segmentation"):
        masker = TokenMasker.from_config(MaskingConfig(sampler=sampler, ratio=0.75), grid)
        keys = SampleKeys.of(5, epoch=1, index=torch.tensor([4, 9, 2]))
        first = masker(fields, generator=keys).mask
        again = masker(fields[[1]], generator=SampleKeys.of(5, epoch=1, index=torch.tensor([9])))
        assert torch.equal(first[1], again.mask[0]), sampler
        assert first.sum(dim=1).tolist() == [4 * round(0.75 * 49)] * 3
        other = masker(fields, generator=SampleKeys.of(5, epoch=2, index=torch.tensor([4, 9, 2])))
        assert not torch.equal(first, other.mask)
