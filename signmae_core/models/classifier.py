"""Video classifier for finetuning: the encoder on all tokens, pooling, a linear head.

As in VideoMAE's finetuning: the encoder's last norm is replaced by a norm after pooling
(`fc_norm`), and the head starts small. Pooling is VideoMAE's mean over tokens or a max over
tokens (`model.pool`): from scratch on signing clips, where a few hand tokens carry the class
among hundreds of body and background tokens, the mean does not learn and the max does
(docs/results.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

from .registry import VariantSpec
from .spec import ModelSpec
from .vit import LAYER_NORM_EPS, VideoViTEncoder, resize_pos_embed

HEAD_INIT_SCALE = 0.001  # VideoMAE's finetuning head init scale


class VideoClassifier(nn.Module):
    """Encoder + pooling (`spec.pool`: mean or max over tokens) + linear head, timm's contract.

    - `forward_features(clips)`: `(B, 3, T, H, W)` -> token features `(B, N, D)`;
    - `forward_head(features, pre_logits=False)`: -> logits `(B, K)` (or pooled `(B, D)`);
    - `forward(clips)`: -> logits `(B, K)`.
    Clips are uint8 in [0, 255] or float in [0, 1]; the model normalizes them.
    """

    def __init__(self, spec: ModelSpec, variant: VariantSpec, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.spec = spec
        self.num_classes = num_classes
        self.num_features = variant.embed_dim
        self.encoder = VideoViTEncoder(spec, variant, final_norm=False)
        self.fc_norm = nn.LayerNorm(variant.embed_dim, eps=LAYER_NORM_EPS)
        self.head_drop = nn.Dropout(spec.head_dropout)
        self.head = nn.Linear(variant.embed_dim, num_classes)
        self._init_head()

    def _init_head(self) -> None:
        trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.weight.mul_(HEAD_INIT_SCALE)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one for `num_classes` classes."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes).to(self.fc_norm.weight.device)
        self._init_head()

    def forward_features(self, clips: Tensor) -> Tensor:
        """Clips `(B, 3, T, H, W)` -> token features `(B, N, D)`."""
        return self.encoder(clips)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Token features `(B, N, D)` -> logits `(B, K)`, or the pooled `(B, D)` if `pre_logits`."""
        pooled = self.fc_norm(pool_tokens(features, self.spec.pool))
        if pre_logits:
            return pooled
        return self.head(self.head_drop(pooled))

    def forward(self, clips: Tensor) -> Tensor:
        """Clips `(B, 3, T, H, W)` -> logits `(B, K)`."""
        return self.forward_head(self.forward_features(clips))

    def load_encoder_state_dict(
        self,
        state: Mapping[str, Tensor],
        source_grid: tuple[int, int, int] | None = None,
    ) -> None:
        """Load pretrained encoder weights (from `mae.encoder.state_dict()` or a full MAE state).

        Keys may carry an `encoder.` prefix (a full pretraining state dict; other keys are
        ignored). The encoder's last norm is not used here (`fc_norm` replaces it). A position
        table for another token grid is interpolated; `source_grid` names that grid when it
        cannot be inferred (see `adapt_pos_embed`). Any other missing or extra key is an error.
        """
        encoder_state = encoder_part(state)
        encoder_state = {k: v for k, v in encoder_state.items() if not k.startswith("norm.")}
        encoder_state = adapt_pos_embed(encoder_state, self.encoder.grid, source_grid)
        self.encoder.load_state_dict(encoder_state, strict=True)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay (besides biases and norms)."""
        return {"encoder.pos_embed"}

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm's layer grouping (for layer-wise lr decay, `timm.optim.create_optimizer_v2`):
        embeddings 0, block i -> i + 1, the rest (norms, head) last."""
        return {
            "stem": r"^encoder\.(?:patch_embed|pos_embed)",
            "blocks": r"^encoder\.blocks\.(\d+)",
        }


def pool_tokens(features: Tensor, kind: str) -> Tensor:
    """Token features `(B, N, D)` -> `(B, D)`: the mean over tokens, or the max per feature."""
    if kind == "max":
        return features.amax(dim=1)
    return features.mean(dim=1)


def encoder_part(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The encoder's entries of a state dict: `encoder.`-prefixed keys stripped, or all keys."""
    if any(key.startswith("encoder.") for key in state):
        return {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    return dict(state)


def adapt_pos_embed(
    state: Mapping[str, Tensor],
    grid: tuple[int, int, int],
    source_grid: tuple[int, int, int] | None = None,
) -> dict[str, Tensor]:
    """Resize `state["pos_embed"]` `(1, N0, D)` to `grid` if its token count differs.

    Without `source_grid`, the source grid is inferred when only time or only space changed
    (square images): `N0 = T0 * H * W` or `N0 = T * S * S`; otherwise pass it explicitly.
    """
    state = dict(state)
    pos = state.get("pos_embed")
    t, h, w = grid
    if pos is None or (pos.shape[1] == t * h * w and source_grid is None):
        return state
    if source_grid is None:
        count = pos.shape[1]
        side = round((count / t) ** 0.5)
        if count % (h * w) == 0 and count // (h * w) != t:
            source_grid = (count // (h * w), h, w)
        elif side * side * t == count:
            source_grid = (t, side, side)
        else:
            raise ValueError(
                f"cannot infer the token grid of a {count}-token position table for grid {grid}; "
                "pass source_grid"
            )
    state["pos_embed"] = resize_pos_embed(pos, tuple(source_grid), grid)
    return state
