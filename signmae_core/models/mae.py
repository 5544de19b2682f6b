"""Masked video autoencoder for pretraining (VideoMAE objective, SignMAE hand weighting).

The encoder runs on the visible tokens only, picked by index gathers (no boolean indexing, no
per-sample Python); a narrow, shallow decoder runs on all tokens (encoded visible tokens plus a
shared mask token, each with its fixed position) and predicts the pixels of the masked tokens.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

from .registry import VariantSpec
from .spec import ModelSpec
from .vit import (
    LAYER_NORM_EPS,
    Block,
    VideoViTEncoder,
    gather_tokens,
    init_vit_weights,
    sinusoid_table,
    to_unit_range,
    unpatchify,
)

NORM_PIX_EPS = 1e-6  # added to the per-patch std, as VideoMAE does


def split_mask(mask: Tensor, num_masked: int | None = None) -> tuple[Tensor, Tensor]:
    """Token indices of a mask `(B, N)` bool (True = masked): visible `(B, Nv)`, masked `(B, Nm)`.

    Both index sets are in increasing token order (a stable sort), so the masked rows line up
    with `mask[b].nonzero()`. Every row must mask the same number of tokens. `num_masked`, when the
    caller knows it, saves reading it from the device (a sync) and keeps `torch.compile` graphs
    whole; the count of every row is checked on a CPU mask in eager mode.
    """
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a (B, N) bool tensor, got {mask.dtype} {tuple(mask.shape)}")
    eager_cpu = mask.device.type == "cpu" and not torch.compiler.is_compiling()
    if num_masked is None or eager_cpu:
        counts = mask.sum(dim=1)
        if eager_cpu and bool((counts != counts[0]).any()):
            raise ValueError(f"every row must mask as many tokens, got {counts.tolist()}")
        counted = int(counts[0])
        if num_masked is not None and num_masked != counted:
            raise ValueError(f"num_masked={num_masked} but the mask hides {counted} tokens per row")
        num_masked = counted
    num_tokens = mask.shape[1]
    if not 0 < num_masked < num_tokens:
        raise ValueError(f"mask must hide between 1 and {num_tokens - 1} tokens, got {num_masked}")
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first, then masked
    return order[:, : num_tokens - num_masked], order[:, num_tokens - num_masked :]


def norm_pix_target(pixels: Tensor) -> Tensor:
    """VideoMAE's normalized-pixel target: tokens `(B, n, P, C)` in [0, 1] -> `(B, n, P * C)`.

    Each token and channel is normalized over its `P = tubelet * patch * patch` pixels with the
    unbiased variance: `(x - mean) / (std + 1e-6)`.
    """
    var, mean = torch.var_mean(pixels, dim=-2, correction=1, keepdim=True)
    return ((pixels - mean) / (var.sqrt() + NORM_PIX_EPS)).flatten(2)


class VideoMAEDecoder(nn.Module):
    """Decoder blocks, final norm and pixel head: `(B, N, Dd)` -> `(B, n_last, P * 3)`."""

    def __init__(self, variant: VariantSpec, patch_dim: int) -> None:
        super().__init__()
        dim = variant.decoder_dim
        self.blocks = nn.ModuleList(
            Block(dim, variant.decoder_heads, variant.mlp_ratio)
            for _ in range(variant.decoder_depth)
        )
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(dim, patch_dim)

    def forward(self, x: Tensor, num_last: int) -> Tensor:
        """Run all blocks on `x` `(B, N, Dd)`; predict pixels for the last `num_last` tokens."""
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -num_last:]))


class MaskedVideoAutoencoder(nn.Module):
    """VideoMAE-style pretraining model; owns its input normalization and its loss.

    `forward(clips, mask, token_weight=None)`:
      - clips: `(B, 3, T, H, W)` uint8 in [0, 255] or float in [0, 1];
      - mask: `(B, N)` bool, True = masked (hidden from the encoder), the same count per row;
      - token_weight: optional `(B, N)` float >= 0, e.g. the hand presence of each token; the
        loss weight of a masked token is `1 + spec.hand_loss_weight * token_weight`;
      - returns `dict(loss, pred, target, masked_index)`: pred and target `(B, Nm, P * 3)` for the
        masked tokens in increasing token order, `masked_index` `(B, Nm)` their grid indices.
    """

    def __init__(self, spec: ModelSpec, variant: VariantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.variant = variant
        self.grid = spec.grid
        self.encoder = VideoViTEncoder(spec, variant, final_norm=True)
        self.encoder_to_decoder = nn.Linear(variant.embed_dim, variant.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, variant.decoder_dim))
        self.register_buffer(
            "decoder_pos_embed",
            sinusoid_table(spec.num_tokens, variant.decoder_dim),
            persistent=False,
        )
        self.decoder = VideoMAEDecoder(variant, spec.patch_dim)
        init_vit_weights(self.decoder)
        nn.init.xavier_uniform_(self.encoder_to_decoder.weight)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(
        self,
        clips: Tensor,
        mask: Tensor,
        token_weight: Tensor | None = None,
        num_masked: int | None = None,
    ) -> dict[str, Tensor]:
        """Masked reconstruction loss; see the class docstring for shapes.

        `num_masked` (optional): the masked count per row, when known, to skip reading it from
        the device.
        """
        pixels = self.encoder.patch_pixels(clips)  # (B, N, P, 3), input dtype
        if mask.shape != pixels.shape[:2]:
            raise ValueError(f"mask must be {tuple(pixels.shape[:2])}, got {tuple(mask.shape)}")
        if token_weight is not None and token_weight.shape != mask.shape:
            raise ValueError(
                f"token_weight must be {tuple(mask.shape)}, got {tuple(token_weight.shape)}"
            )
        visible_index, masked_index = split_mask(mask, num_masked)
        latent = self.encoder.forward_tokens(gather_tokens(pixels, visible_index), visible_index)
        pred = self.decode(latent, visible_index, masked_index)  # (B, Nm, P * 3)
        with torch.no_grad():
            target = self.target(gather_tokens(pixels, masked_index))
        loss = self.loss(pred, target, masked_index, token_weight)
        return {"loss": loss, "pred": pred, "target": target, "masked_index": masked_index}

    def decode(self, latent: Tensor, visible_index: Tensor, masked_index: Tensor) -> Tensor:
        """Encoded visible tokens `(B, Nv, D)` -> predicted pixels of masked tokens `(B, Nm, P*3)`.

        The decoder sees `[visible..., mask tokens...]` (order does not matter to attention; each
        token carries its own position) and predicts the trailing `Nm` tokens.
        """
        pos = self.decoder_pos_embed[0]  # (N, Dd)
        visible = self.encoder_to_decoder(latent)
        visible = visible + pos[visible_index].to(visible.dtype)
        hidden = (self.mask_token + pos[masked_index]).to(visible.dtype)
        tokens = torch.cat([visible, hidden], dim=1)
        return self.decoder(tokens, masked_index.shape[1])

    def target(self, masked_pixels: Tensor) -> Tensor:
        """Raw masked tokens `(B, Nm, P, 3)` -> targets `(B, Nm, P * 3)` float32.

        Normalized per token (`norm_pix_loss`), else the pixels in [0, 1].
        """
        pixels = to_unit_range(masked_pixels)
        return norm_pix_target(pixels) if self.spec.norm_pix_loss else pixels.flatten(2)

    def loss(
        self,
        pred: Tensor,
        target: Tensor,
        masked_index: Tensor,
        token_weight: Tensor | None = None,
    ) -> Tensor:
        """Mean squared error over masked tokens, optionally weighted per token (scalar)."""
        per_token = (pred.float() - target).pow(2).mean(dim=-1)  # (B, Nm)
        if token_weight is None or self.spec.hand_loss_weight == 0:
            return per_token.mean()
        extra = gather_tokens(token_weight.float(), masked_index)  # (B, Nm)
        weight = 1.0 + self.spec.hand_loss_weight * extra
        return (per_token * weight).sum() / weight.sum()

    def patchify(self, clips: Tensor) -> Tensor:
        """Clips `(B, 3, T, H, W)` (any dtype, any normalization) -> tokens `(B, N, P * 3)`."""
        return self.encoder.patch_pixels(clips).flatten(2)

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """Tokens `(B, N, P * 3)` -> clips `(B, 3, T, H, W)`; the inverse of `patchify`."""
        return unpatchify(tokens, self.grid, self.spec.tubelet_size, self.spec.patch_size)

    @torch.no_grad()
    def reconstruct(self, clips: Tensor, mask: Tensor, fill: float = 0.5) -> dict[str, Tensor]:
        """Pictures for people: original, masked input and reconstruction, each `(B, 3, T, H, W)`.

        All in [0, 1]. Masked tokens are `fill` grey in the masked input; in the reconstruction
        they are the prediction (un-normalized with the true token's own mean and std when the
        loss uses normalized pixels) and visible tokens are the original.
        """
        out = self.forward(clips, mask)
        pixels = to_unit_range(self.encoder.patch_pixels(clips))  # (B, N, P, 3)
        masked = gather_tokens(pixels, out["masked_index"])
        pred = out["pred"].float().reshape(masked.shape)
        if self.spec.norm_pix_loss:
            var, mean = torch.var_mean(masked, dim=-2, correction=1, keepdim=True)
            pred = pred * (var.sqrt() + NORM_PIX_EPS) + mean
        index = out["masked_index"][:, :, None].expand(-1, -1, pixels[0, 0].numel())
        flat = pixels.flatten(2)
        masked_input = flat.scatter(1, index, torch.full_like(pred.flatten(2), fill))
        recon = flat.scatter(1, index, pred.flatten(2).clamp(0, 1))
        return {
            "original": self.unpatchify(flat),
            "masked": self.unpatchify(masked_input),
            "reconstruction": self.unpatchify(recon),
        }

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay (besides biases and norms)."""
        return {"encoder.pos_embed", "mask_token"}
