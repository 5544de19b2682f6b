"""The model's settings as a plain dataclass, and the token grid they imply.

`signmae_core.config.ModelConfig` (pydantic) is how the pipeline configures the model. The model
code itself reads any object with the same attribute names through `as_spec`, so it runs where
only torch and timm are installed (benchmarks on GPU machines, exported encoders).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

POS_EMBED_KINDS = ("sincos", "learned")
POOL_KINDS = ("mean", "max")
STEM_KINDS = ("linear", "conv", "token_conv")


@dataclass(frozen=True)
class ModelSpec:
    """Variant, token geometry, loss and input-normalization settings of one model.

    Mirrors `signmae_core.config.ModelConfig` field for field (a test keeps them in step).
    """

    variant: str = "tiny"
    num_frames: int = 16
    img_size: int = 112
    patch_size: int = 16
    tubelet_size: int = 2
    pos_embed: str = "sincos"
    norm_pix_loss: bool = True
    hand_loss_weight: float = 0.0
    drop_path: float = 0.0
    head_dropout: float = 0.0
    pool: str = "mean"
    stem: str = "linear"
    layer_scale: float | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.pos_embed not in POS_EMBED_KINDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_KINDS}, got {self.pos_embed!r}")
        if self.stem not in STEM_KINDS:
            raise ValueError(f"stem must be one of {STEM_KINDS}, got {self.stem!r}")
        if self.layer_scale is not None and self.layer_scale <= 0:
            raise ValueError(f"layer_scale must be positive or None, got {self.layer_scale}")
        if self.pool not in POOL_KINDS:
            raise ValueError(f"pool must be one of {POOL_KINDS}, got {self.pool!r}")
        for name in ("num_frames", "img_size", "patch_size", "tubelet_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_frames % self.tubelet_size:
            raise ValueError(
                f"num_frames {self.num_frames} is not a multiple of "
                f"tubelet_size {self.tubelet_size}"
            )
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std positive")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid `(T / tubelet, H / patch, W / patch)`."""
        side = self.img_size // self.patch_size
        return (self.num_frames // self.tubelet_size, side, side)

    @property
    def num_tokens(self) -> int:
        """Number of tokens of one clip, `prod(grid)`."""
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_dim(self) -> int:
        """Pixel values in one token: `tubelet * patch * patch * 3`."""
        return self.tubelet_size * self.patch_size * self.patch_size * 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def as_spec(cfg: Any) -> ModelSpec:
    """A `ModelSpec` from a `ModelSpec`, a `ModelConfig`, a mapping or any object with its fields.

    Missing fields take the `ModelSpec` defaults; unknown keys of a mapping are an error.
    """
    if isinstance(cfg, ModelSpec):
        return cfg
    names = [f.name for f in fields(ModelSpec)]
    if isinstance(cfg, dict):
        unknown = sorted(set(cfg) - set(names))
        if unknown:
            raise ValueError(f"unknown model settings: {', '.join(unknown)}")
        values = dict(cfg)
    else:
        values = {name: getattr(cfg, name) for name in names if hasattr(cfg, name)}
    for name in ("mean", "std"):
        if name in values:
            values[name] = tuple(float(v) for v in values[name])
    return ModelSpec(**values)


def token_grid(cfg: Any) -> tuple[int, int, int]:
    """Token grid `(T / tubelet, H / patch, W / patch)` of a model config (or `ModelSpec`)."""
    return as_spec(cfg).grid
