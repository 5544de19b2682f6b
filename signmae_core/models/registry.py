"""Named model variants: the widths and depths of the encoder and of the pretraining decoder.

Geometry (frames, image size, patch and tubelet sizes) is not part of a variant: it comes from
the model config, so one variant serves any clip size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VariantSpec:
    """Widths and depths of one named ViT variant (encoder) and its MAE decoder."""

    embed_dim: int
    depth: int
    num_heads: int
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        for dim, heads, what in (
            (self.embed_dim, self.num_heads, "encoder"),
            (self.decoder_dim, self.decoder_heads, "decoder"),
        ):
            if dim % heads:
                raise ValueError(f"{what} width {dim} is not divisible by its {heads} heads")


VARIANTS: dict[str, VariantSpec] = {
    # For tests and CPU demos: a 4-block ViT-Ti width.
    "tiny": VariantSpec(
        embed_dim=192, depth=4, num_heads=3, decoder_dim=96, decoder_depth=2, decoder_heads=3
    ),
    # ViT-S with VideoMAE's ViT-S decoder (192 wide, 4 blocks).
    "small": VariantSpec(
        embed_dim=384, depth=12, num_heads=6, decoder_dim=192, decoder_depth=4, decoder_heads=3
    ),
    # ViT-B with VideoMAE's decoder (384 wide, 4 blocks): the published VideoMAE-B.
    "base": VariantSpec(
        embed_dim=768, depth=12, num_heads=12, decoder_dim=384, decoder_depth=4, decoder_heads=6
    ),
    # ViT-L with VideoMAE's ViT-L decoder (512 wide, 4 blocks), for public VideoMAE-L weights.
    "large": VariantSpec(
        embed_dim=1024, depth=24, num_heads=16, decoder_dim=512, decoder_depth=4, decoder_heads=8
    ),
}


def list_variants() -> list[str]:
    """Names of the registered variants."""
    return sorted(VARIANTS)


def get_variant(name: str) -> VariantSpec:
    """The variant called `name`; an unknown name is a `ValueError` listing the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        known = ", ".join(list_variants())
        raise ValueError(f"unknown model variant {name!r} (known: {known})") from None


def register_variant(name: str, spec: VariantSpec) -> None:
    """Add a variant under a new name (an existing name is an error, never silently replaced)."""
    if name in VARIANTS:
        raise ValueError(f"model variant {name!r} is already registered")
    VARIANTS[name] = spec
