"""Video ViT building blocks: tube patches, fixed or learned positions, pre-norm blocks, encoder.

Token order everywhere is the row-major order of the token grid `(T', H', W')` =
`(T / tubelet, H / patch, W / patch)`: token `n = (t * H' + h) * W' + w`. The pixels of one token
are ordered `(tubelet, patch, patch, channel)`, as in VideoMAE, so the patch embedding and the
reconstruction targets share one layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from .registry import VariantSpec
from .spec import ModelSpec

LAYER_NORM_EPS = 1e-6  # VideoMAE's LayerNorm epsilon


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """VideoMAE's fixed 1-D sin-cos table over the flat token index, `(1, num_positions, dim)`.

    Entry `[n, j]` is `sin` (even `j`) or `cos` (odd `j`) of `n / 10000 ** (2 * (j // 2) / dim)`,
    computed in float64 and returned as float32, exactly as VideoMAE and `transformers` build it.
    """
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angles = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(torch.float32)[None]


def resize_pos_embed(
    pos_embed: Tensor, src_grid: tuple[int, int, int], dst_grid: tuple[int, int, int]
) -> Tensor:
    """Interpolate a position table from one token grid to another.

    pos_embed: `(1, T0*H0*W0, D)` in token order -> `(1, T1*H1*W1, D)`. Space is resized
    bicubically per time slot, then time linearly; an equal grid returns the input unchanged.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    t0, h0, w0 = src_grid
    t1, h1, w1 = dst_grid
    dim = pos_embed.shape[-1]
    if pos_embed.shape[1] != t0 * h0 * w0:
        raise ValueError(
            f"position table has {pos_embed.shape[1]} tokens, grid {src_grid} needs {t0 * h0 * w0}"
        )
    table = pos_embed.detach().float().reshape(t0, h0, w0, dim)
    if (h0, w0) != (h1, w1):
        table = table.permute(0, 3, 1, 2)  # (T0, D, H0, W0)
        table = F.interpolate(table, size=(h1, w1), mode="bicubic", align_corners=False)
        table = table.permute(0, 2, 3, 1)  # (T0, H1, W1, D)
    if t0 != t1:
        table = table.permute(1, 2, 3, 0).reshape(1, h1 * w1 * dim, t0)  # time last
        table = F.interpolate(table, size=t1, mode="linear", align_corners=False)
        table = table.reshape(h1, w1, dim, t1).permute(3, 0, 1, 2)
    return table.reshape(1, t1 * h1 * w1, dim).to(pos_embed.dtype)


def patchify(clips: Tensor, tubelet: int, patch: int) -> Tensor:
    """Cut clips into tube tokens: `(B, C, T, H, W)` -> `(B, N, tubelet * patch * patch, C)`.

    Keeps the dtype (uint8 stays uint8, so the copy is cheap).
    """
    b, c, t, h, w = clips.shape
    x = clips.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, T', H', W', tubelet, patch, patch, C)
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch, c)


def unpatchify(
    tokens: Tensor, grid: tuple[int, int, int], tubelet: int, patch: int, channels: int = 3
) -> Tensor:
    """Inverse of `patchify`: `(B, N, P * C)` or `(B, N, P, C)` -> `(B, C, T, H, W)`."""
    t, h, w = grid
    b = tokens.shape[0]
    x = tokens.reshape(b, t, h, w, tubelet, patch, patch, channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, T', tubelet, H', patch, W', patch)
    return x.reshape(b, channels, t * tubelet, h * patch, w * patch)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Pick tokens per row: x `(B, N, *rest)`, index `(B, n)` long -> `(B, n, *rest)`.

    One `index_select` of whole token rows over the flattened batch (a row copy, cheaper than
    an element-wise gather).
    """
    b, n = index.shape
    num_tokens = x.shape[1]
    offsets = torch.arange(b, device=index.device)[:, None] * num_tokens
    rows = x.reshape(b * num_tokens, *x.shape[2:]).index_select(0, (index + offsets).flatten())
    return rows.reshape(b, n, *x.shape[2:])


def to_unit_range(pixels: Tensor) -> Tensor:
    """uint8 in [0, 255] -> float32 in [0, 1]; floating input is taken as [0, 1] already."""
    if pixels.dtype == torch.uint8:
        return pixels.float().div_(255.0)
    return pixels.float()


class Attention(nn.Module):
    """Multi-head self-attention with PyTorch SDPA and VideoMAE's bias layout.

    The fused `qkv` projection has no bias of its own; `q_bias` and `v_bias` are separate and the
    key bias is fixed at zero (it would not change the attention anyway), as in VideoMAE.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: `(B, n, D)` -> `(B, n, D)`."""
        b, n, d = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, n, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.

    With `layer_scale`, each branch is first multiplied by a learned per-channel factor that
    starts at that value (LayerScale, VideoMAE's `init_values`; `gamma_1`, `gamma_2`), so the
    block starts close to the identity.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if layer_scale is None:
            self.gamma_1 = self.gamma_2 = None
        else:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor) -> Tensor:
        """x: `(B, n, D)` -> `(B, n, D)`."""
        if self.gamma_1 is None:
            x = x + self.drop_path(self.attn(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


def init_vit_weights(module: nn.Module) -> None:
    """MAE-style init: xavier-uniform linears (the fused qkv as three D x D maps), zero biases."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            if name.endswith("attn.qkv"):
                bound = math.sqrt(6.0 / float(sub.weight.shape[0] // 3 + sub.weight.shape[1]))
                nn.init.uniform_(sub.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


class PatchEmbed(nn.Module):
    """Linear embedding of tube tokens: `(B, n, tubelet*patch*patch*3)` -> `(B, n, D)`.

    Equal to VideoMAE's Conv3d with kernel = stride = (tubelet, patch, patch), applied to tokens
    already cut out, so only the tokens the encoder sees are embedded.
    """

    def __init__(self, patch_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(patch_dim, embed_dim)

    def forward(self, patches: Tensor, token_index: Tensor | None = None) -> Tensor:
        """Tokens `(B, n, P * 3)` -> `(B, n, D)`; each token alone (`token_index` unused)."""
        return self.proj(patches)


def conv_stem_blocks(spec: ModelSpec) -> tuple[nn.Sequential, int]:
    """`log2(patch)` blocks of 3x3x3 convolution + BatchNorm + ReLU, each halving the frame (the
    last `log2(tubelet)` ones halving time too): `(B, 3, T, H, W)` -> `(B, C, T / tubelet,
    H / patch, W / patch)`. Returns the blocks and `C`."""
    patch, tubelet = spec.patch_size, spec.tubelet_size
    spatial, temporal = int(math.log2(patch)), int(math.log2(tubelet))
    if 2**spatial != patch or 2**temporal != tubelet or temporal > spatial or spatial < 2:
        raise ValueError(
            f"a conv stem needs a power-of-two patch_size >= 4 ({patch}) and a power-of-two "
            f"tubelet_size ({tubelet}) of at most the patch size"
        )
    blocks, channels = [], 3
    for i in range(spatial):
        out = min(32 * 2**i, 256)
        stride = (2 if i >= spatial - temporal else 1, 2, 2)
        blocks += [nn.Conv3d(channels, out, 3, stride, 1), nn.BatchNorm3d(out), nn.ReLU()]
        channels = out
    return nn.Sequential(*blocks), channels


class ConvPatchEmbed(nn.Module):
    """A 3-D convolutional stem down to the token grid: `(B, n, P * 3)` -> `(B, n, D)`.

    `conv_stem_blocks` over the whole clip, then a linear map to the width: the same hand
    gives the same features wherever it is, which a linear patch embedding has to learn per
    position (docs/results.md). The tokens given are put back on the full grid with every other
    token zero, so a token's features depend on the given tokens only: under MAE masking no
    masked pixel reaches a visible token (in training mode BatchNorm's statistics pool over the
    batch, zeros included: one mean and variance per channel, not a token's content).
    """

    def __init__(self, spec: ModelSpec, embed_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.convs, channels = conv_stem_blocks(spec)
        self.proj = nn.Linear(channels, embed_dim)

    def forward(self, patches: Tensor, token_index: Tensor | None = None) -> Tensor:
        """Tokens `(B, n, P * 3)` at grid positions `token_index` `(B, n)` (None: all, in grid
        order) -> `(B, n, D)`."""
        spec = self.spec
        b = patches.shape[0]
        if token_index is None:
            full = patches
        else:
            full = patches.new_zeros(b, spec.num_tokens, patches.shape[2])
            full.scatter_(1, token_index[:, :, None].expand(-1, -1, patches.shape[2]), patches)
        clips = unpatchify(full, spec.grid, spec.tubelet_size, spec.patch_size)
        features = self.convs(clips).flatten(2).transpose(1, 2)  # (B, N, C), grid order
        if token_index is not None:
            features = gather_tokens(features, token_index)
        return self.proj(features)


class TokenConvEmbed(ConvPatchEmbed):
    """The conv stem run inside each token alone: `(B, n, P * 3)` -> `(B, n, D)`.

    Every token's `tubelet x patch x patch` pixels go through `conv_stem_blocks` on their own
    (zero padding at the token's border) down to one vector. Local, shared filters as the
    whole-clip stem (the same weights and names), but a token's features never depend on its
    neighbours: the stem sees the same inputs under MAE masking (the visible tokens only, no
    zero-filled grid) as when finetuning on every token, and pretraining pays for the visible
    tokens alone.
    """

    def forward(self, patches: Tensor, token_index: Tensor | None = None) -> Tensor:
        """Tokens `(B, n, P * 3)` -> `(B, n, D)`; each token alone (`token_index` unused)."""
        spec = self.spec
        b, n = patches.shape[:2]
        t, p = spec.tubelet_size, spec.patch_size
        tokens = patches.reshape(b * n, t, p, p, 3).permute(0, 4, 1, 2, 3)  # (B n, 3, t, p, p)
        features = self.convs(tokens).flatten(1)  # (B n, C): time and space are down to 1
        return self.proj(features).reshape(b, n, -1)


CONV_STEMS = {"conv": ConvPatchEmbed, "token_conv": TokenConvEmbed}


class VideoViTEncoder(nn.Module):
    """ViT over space-time tubes that runs on any subset of tokens (the visible ones in MAE).

    `forward(clips, token_index)` cuts clips into tokens, keeps the tokens named by
    `token_index`, normalizes them with the spec's mean/std, embeds them, adds their positions
    and runs the blocks. The mean/std buffers are not saved in the state dict (they are config).
    """

    def __init__(self, spec: ModelSpec, variant: VariantSpec, final_norm: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.grid = spec.grid
        self.num_tokens = spec.num_tokens
        self.patch_dim = spec.patch_dim
        self.embed_dim = variant.embed_dim
        self.depth = variant.depth
        self.register_buffer("pixel_mean", torch.tensor(spec.mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(spec.std), persistent=False)
        if spec.stem == "linear":
            self.patch_embed = PatchEmbed(self.patch_dim, self.embed_dim)
        else:
            self.patch_embed = CONV_STEMS[spec.stem](spec, self.embed_dim)
        if spec.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, self.embed_dim))
        else:  # saved with the weights, so a checkpoint carries the table it was trained with
            self.register_buffer("pos_embed", sinusoid_table(self.num_tokens, self.embed_dim))
        rates = torch.linspace(0, spec.drop_path, variant.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                self.embed_dim,
                variant.num_heads,
                variant.mlp_ratio,
                drop_path=rate,
                layer_scale=spec.layer_scale,
            )
            for rate in rates
        )
        self.norm = (
            nn.LayerNorm(self.embed_dim, eps=LAYER_NORM_EPS) if final_norm else nn.Identity()
        )
        init_vit_weights(self)
        nn.init.xavier_uniform_(self.patch_embed.proj.weight)
        if isinstance(self.pos_embed, nn.Parameter):
            trunc_normal_(self.pos_embed, std=0.02)

    def patch_pixels(self, clips: Tensor) -> Tensor:
        """Clips `(B, 3, T, H, W)` (uint8 or float in [0, 1]) -> raw tokens `(B, N, P, 3)`."""
        expected = (3, self.spec.num_frames, self.spec.img_size, self.spec.img_size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != expected:
            raise ValueError(
                f"clips must be (B, {', '.join(map(str, expected))}), got {tuple(clips.shape)}"
            )
        return patchify(clips, self.spec.tubelet_size, self.spec.patch_size)

    def normalize_pixels(self, pixels: Tensor) -> Tensor:
        """Raw tokens `(B, n, P, 3)` -> normalized, flattened `(B, n, P * 3)` float32."""
        x = (to_unit_range(pixels) - self.pixel_mean) / self.pixel_std
        return x.flatten(2)

    def forward_tokens(self, pixels: Tensor, token_index: Tensor | None = None) -> Tensor:
        """Encode raw tokens `(B, n, P, 3)` at grid positions `token_index` `(B, n)` -> `(B, n, D)`.

        `token_index=None` means all `N` tokens in grid order.
        """
        x = self.patch_embed(self.normalize_pixels(pixels), token_index)
        pos = self.pos_embed[0]  # (N, D)
        pos = pos if token_index is None else pos[token_index]
        x = x + pos.to(x.dtype)  # the residual stream stays in autocast's dtype
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, clips: Tensor, token_index: Tensor | None = None) -> Tensor:
        """Clips `(B, 3, T, H, W)` -> features `(B, n, D)` of the tokens `token_index` `(B, n)`."""
        pixels = self.patch_pixels(clips)
        if token_index is not None:
            pixels = gather_tokens(pixels, token_index)
        return self.forward_tokens(pixels, token_index)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay (besides biases and norms)."""
        return {"pos_embed"}
