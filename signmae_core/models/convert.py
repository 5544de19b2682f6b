"""Load Hugging Face `transformers` VideoMAE weights (safetensors) into our models.

Supported sources: `VideoMAEForPreTraining`, `VideoMAEModel` and `VideoMAEForVideoClassification`
state dicts, in the layout of public checkpoints (`q_bias` / `v_bias`) or of newer `transformers`
(`query.bias` / `value.bias`). VideoMAE's position table is not stored in those files: it is
VideoMAE's fixed sin-cos table of the source token grid, rebuilt here and interpolated when our
model uses another frame count or image size. Nothing here imports `transformers`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .classifier import VideoClassifier
from .mae import MaskedVideoAutoencoder
from .registry import VariantSpec
from .spec import ModelSpec
from .vit import VideoViTEncoder, resize_pos_embed, sinusoid_table

_LAYER_KEYS = {
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
}
_TOP_KEYS = {
    "embeddings.patch_embeddings.projection.bias": "encoder.patch_embed.proj.bias",
    "layernorm.weight": "encoder.norm.weight",
    "layernorm.bias": "encoder.norm.bias",
    "fc_norm.weight": "fc_norm.weight",
    "fc_norm.bias": "fc_norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
    "encoder_to_decoder.weight": "encoder_to_decoder.weight",
    "mask_token": "mask_token",
    "decoder.norm.weight": "decoder.norm.weight",
    "decoder.norm.bias": "decoder.norm.bias",
    "decoder.head.weight": "decoder.head.weight",
    "decoder.head.bias": "decoder.head.bias",
}
_LAYER_RE = re.compile(r"^(encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")


@dataclass
class LoadReport:
    """What a load did: our keys loaded, our keys left at their initial value, and the source's
    entries not used (source names, or our names for converted entries the model has no use
    for), plus the source token grid."""

    loaded: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    source_grid: tuple[int, int, int] | None = None


def videomae_config_kwargs(
    spec: ModelSpec, variant: VariantSpec, use_mean_pooling: bool = False
) -> dict[str, Any]:
    """Keyword arguments for `transformers.VideoMAEConfig` describing the same model."""
    return {
        "image_size": spec.img_size,
        "patch_size": spec.patch_size,
        "num_channels": 3,
        "num_frames": spec.num_frames,
        "tubelet_size": spec.tubelet_size,
        "hidden_size": variant.embed_dim,
        "num_hidden_layers": variant.depth,
        "num_attention_heads": variant.num_heads,
        "intermediate_size": int(variant.embed_dim * variant.mlp_ratio),
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "use_mean_pooling": use_mean_pooling,
        "decoder_hidden_size": variant.decoder_dim,
        "decoder_num_hidden_layers": variant.decoder_depth,
        "decoder_num_attention_heads": variant.decoder_heads,
        "decoder_intermediate_size": int(variant.decoder_dim * variant.mlp_ratio),
        "norm_pix_loss": spec.norm_pix_loss,
    }


def convert_videomae_state_dict(
    hf_state: Mapping[str, Tensor],
    source_num_frames: int,
    source_img_size: int,
    target_grid: tuple[int, int, int] | None = None,
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename and reshape a `transformers` VideoMAE state dict into our key layout.

    Returns `(state, ignored)`: `state` has keys of a `MaskedVideoAutoencoder` (`encoder.*`,
    `encoder_to_decoder.weight`, `mask_token`, `decoder.*`) and of a `VideoClassifier`
    (`fc_norm.*`, `head.*`), whichever the source has, plus `encoder.pos_embed`: VideoMAE's
    table of the source grid, interpolated to `target_grid` if given. `ignored` lists source keys
    with no counterpart (e.g. a key bias, which cannot change attention).
    """
    state = {_strip_prefix(k): v for k, v in hf_state.items()}
    proj_key = "embeddings.patch_embeddings.projection.weight"
    if proj_key not in state:
        raise ValueError(f"not a VideoMAE state dict: no {proj_key!r}")
    proj = state[proj_key]  # (D, C, tubelet, patch, patch)
    embed_dim, _, tubelet, patch, _ = proj.shape
    if source_num_frames % tubelet or source_img_size % patch:
        raise ValueError(
            f"source geometry {source_num_frames} frames x {source_img_size} px does not fit "
            f"tubelet {tubelet} x patch {patch}"
        )
    source_grid = (source_num_frames // tubelet, source_img_size // patch, source_img_size // patch)
    out: dict[str, Tensor] = {
        "encoder.patch_embed.proj.weight": proj.permute(0, 2, 3, 4, 1).reshape(embed_dim, -1)
    }
    ignored: list[str] = []
    qkv_parts: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key == proj_key:
            continue
        if key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = value
            continue
        match = _LAYER_RE.match(key)
        if match is None:
            ignored.append(key)
            continue
        stack, index, rest = match.groups()
        prefix = f"{'encoder' if stack == 'encoder.layer' else 'decoder'}.blocks.{index}."
        if rest.startswith("attention.attention."):
            part = rest[len("attention.attention.") :]
            qkv_parts.setdefault(prefix, {})[part] = value
            continue
        for hf_name, our_name in _LAYER_KEYS.items():
            if rest.startswith(hf_name + "."):
                out[prefix + our_name + rest[len(hf_name) :]] = value
                break
        else:
            ignored.append(key)
    for prefix, parts in qkv_parts.items():
        out.update(_convert_attention(prefix, parts, ignored))
    pos = sinusoid_table(source_grid[0] * source_grid[1] * source_grid[2], embed_dim)
    out["encoder.pos_embed"] = resize_pos_embed(pos, source_grid, target_grid or source_grid)
    return out, ignored


def _strip_prefix(key: str) -> str:
    return key[len("videomae.") :] if key.startswith("videomae.") else key


def _convert_attention(
    prefix: str, parts: dict[str, Tensor], ignored: list[str]
) -> dict[str, Tensor]:
    """HF's separate query/key/value (+ q/v biases) -> our fused `qkv.weight`, q_bias, v_bias."""
    try:
        weight = torch.cat([parts["query.weight"], parts["key.weight"], parts["value.weight"]])
    except KeyError as exc:
        raise ValueError(f"{prefix}: attention weight {exc.args[0]!r} missing") from None
    out = {prefix + "attn.qkv.weight": weight}
    q_bias = parts.get("q_bias", parts.get("query.bias"))
    v_bias = parts.get("v_bias", parts.get("value.bias"))
    if q_bias is not None and v_bias is not None:
        out[prefix + "attn.q_bias"] = q_bias
        out[prefix + "attn.v_bias"] = v_bias
    if "key.bias" in parts:
        ignored.append(prefix + "key.bias")
    return out


def read_videomae_source(
    source: str | Path | Mapping[str, Tensor],
    num_frames: int | None = None,
    img_size: int | None = None,
) -> tuple[dict[str, Tensor], int, int]:
    """State dict and source geometry from a checkpoint folder, a `.safetensors` file or a dict.

    A folder holds `model.safetensors` and `config.json` (as `save_pretrained` writes them); a
    file may have `config.json` beside it. `num_frames` / `img_size` override or replace the
    config's `num_frames` / `image_size`.
    """
    config: dict[str, Any] = {}
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        weights = path / "model.safetensors" if path.is_dir() else path
        if not weights.is_file():
            raise FileNotFoundError(f"no VideoMAE weights at {weights}")
        config_path = weights.parent / "config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
        from safetensors.torch import load_file

        state = load_file(str(weights))
    frames = num_frames or config.get("num_frames")
    size = img_size or config.get("image_size")
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise ValueError(f"only square source images are supported, got {size}")
        size = size[0]
    if frames is None or size is None:
        raise ValueError(
            "the source's frame count and image size are unknown (no config.json): "
            "pass num_frames and img_size"
        )
    return state, int(frames), int(size)


def load_videomae_pretrained(
    model: nn.Module,
    source: str | Path | Mapping[str, Tensor],
    num_frames: int | None = None,
    img_size: int | None = None,
) -> LoadReport:
    """Load VideoMAE weights from `transformers` into a pretraining model, classifier or encoder.

    Geometry and widths must match (tubelet, patch, width, depth); frame count and image size may
    differ (the position table is interpolated). What the source lacks stays at its initial
    value and is listed in the report: the decoder when loading a `VideoMAEModel` into a
    pretraining model, the head when the class count differs. Missing encoder blocks are an error.
    """
    encoder, prefix = _target_encoder(model)
    state, frames, size = read_videomae_source(source, num_frames, img_size)
    _check_geometry(state, encoder)
    converted, ignored = convert_videomae_state_dict(state, frames, size, encoder.grid)
    source_grid = (
        frames // encoder.spec.tubelet_size,
        size // encoder.spec.patch_size,
        size // encoder.spec.patch_size,
    )
    if prefix == "":
        wanted = {k[len("encoder.") :]: v for k, v in converted.items() if k.startswith("encoder.")}
        ignored += [k for k in converted if not k.startswith("encoder.")]
    else:
        wanted = dict(converted)
    own = model.state_dict()
    to_load: dict[str, Tensor] = {}
    for key, value in wanted.items():
        if key not in own:  # e.g. the encoder's last norm, which a classifier does not use
            ignored.append(key)
        elif own[key].shape != value.shape:
            if key.startswith("head."):  # another class count: keep our fresh head
                ignored.append(key)
            else:
                theirs, ours = tuple(value.shape), tuple(own[key].shape)
                raise ValueError(f"{key}: shape {theirs} != ours {ours}")
        else:
            to_load[key] = value
    missing = sorted(set(own) - set(to_load))
    required = [k for k in missing if k.startswith(f"{prefix}blocks.") or "patch_embed" in k]
    if required:
        raise ValueError(f"the source lacks encoder weights: {', '.join(required[:5])}")
    model.load_state_dict(to_load, strict=False)
    return LoadReport(
        loaded=sorted(to_load),
        initialized=missing,
        ignored=sorted(ignored),
        source_grid=source_grid,
    )


def _target_encoder(model: nn.Module) -> tuple[VideoViTEncoder, str]:
    if isinstance(model, (MaskedVideoAutoencoder, VideoClassifier)):
        return model.encoder, "encoder."
    if isinstance(model, VideoViTEncoder):
        return model, ""
    raise TypeError(f"cannot load VideoMAE weights into {type(model).__name__}")


def _check_geometry(state: Mapping[str, Tensor], encoder: VideoViTEncoder) -> None:
    """Tubelet, patch, width and depth of the source must equal the model's."""
    proj = state.get("videomae.embeddings.patch_embeddings.projection.weight")
    if proj is None:
        proj = state.get("embeddings.patch_embeddings.projection.weight")
    if proj is None:
        raise ValueError("not a VideoMAE state dict: no patch embedding projection")
    embed_dim, _, tubelet, patch, _ = proj.shape
    spec = encoder.spec
    depth = 1 + max(
        (
            int(m.group(2))
            for k in state
            if (m := _LAYER_RE.match(_strip_prefix(k))) and m.group(1) == "encoder.layer"
        ),
        default=-1,
    )
    ours = (encoder.embed_dim, encoder.depth, spec.tubelet_size, spec.patch_size)
    theirs = (embed_dim, depth, tubelet, patch)
    if ours != theirs:
        raise ValueError(
            "VideoMAE source (width, depth, tubelet, patch) = "
            f"{theirs} does not match the model's {ours}: pick the matching variant and sizes"
        )
