"""The video ViT models on CPU with the tiny variant: shapes, the masking contract, the loss,
the classifier and its layer-decay groups, position interpolation, and the import contract."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from signmae_core.config import ModelConfig, TrainConfig
from signmae_core.models import (
    ModelSpec,
    create_classifier,
    create_pretrain_model,
    get_variant,
    list_variants,
    norm_pix_target,
    patchify,
    resize_pos_embed,
    sinusoid_table,
    split_mask,
    token_grid,
    unpatchify,
)
from signmae_core.train.optim import build_optimizer

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = ModelSpec(variant="tiny", num_frames=4, img_size=32, patch_size=8, tubelet_size=2)
NUM_TOKENS = SPEC.num_tokens  # 2 x 4 x 4 = 32


def random_mask(batch: int, num_masked: int, seed: int = 0) -> torch.Tensor:
    """(B, N) bool with exactly `num_masked` True per row."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(batch, NUM_TOKENS, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, NUM_TOKENS, dtype=torch.bool)
    return mask.scatter_(1, order[:, :num_masked], True)


def random_clips(batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, 4, 32, 32), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def mae() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_pretrain_model(SPEC).eval()


def test_token_grid_follows_the_config() -> None:
    assert token_grid(ModelConfig()) == (8, 7, 7)
    cfg = ModelConfig(num_frames=8, img_size=64, patch_size=8, tubelet_size=4)
    assert token_grid(cfg) == (2, 8, 8)
    assert token_grid(SPEC) == (2, 4, 4)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        token_grid(ModelConfig(img_size=100, patch_size=16))
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        token_grid(ModelConfig(num_frames=15, tubelet_size=2))


def test_spec_mirrors_model_config() -> None:
    """ModelSpec (plain dataclass) and ModelConfig (pydantic) have the same fields and defaults."""
    spec_defaults = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    config_defaults = ModelConfig().model_dump()
    assert spec_defaults == config_defaults


def test_registry_variants() -> None:
    assert {"tiny", "small", "base"} <= set(list_variants())
    base = get_variant("base")
    assert (base.embed_dim, base.depth, base.num_heads) == (768, 12, 12)
    assert (base.decoder_dim, base.decoder_depth, base.decoder_heads) == (384, 4, 6)
    small = get_variant("small")
    assert (small.embed_dim, small.depth, small.num_heads, small.decoder_dim) == (384, 12, 6, 192)
    with pytest.raises(ValueError, match="known: .*base"):
        get_variant("huge")


def test_pretrain_forward_shapes(mae: torch.nn.Module) -> None:
    clips = random_clips()
    mask = random_mask(2, 24)
    out = mae(clips, mask)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["pred"].shape == (2, 24, SPEC.patch_dim) == out["target"].shape
    assert out["masked_index"].shape == (2, 24)
    # uint8 in [0, 255] and float in [0, 1] are the same input
    out_float = mae(clips.float() / 255.0, mask)
    torch.testing.assert_close(out_float["loss"], out["loss"])


def test_encoder_sees_exactly_the_visible_tokens(mae: torch.nn.Module) -> None:
    """The blocks run on Nv tokens, and the latent ignores masked pixels but not visible ones."""
    clips = random_clips()
    mask = random_mask(2, 24)
    seen: list[tuple[int, ...]] = []
    latents: list[torch.Tensor] = []
    hooks = [
        mae.encoder.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape)),
        mae.encoder.norm.register_forward_hook(lambda m, a, o: latents.append(o.detach())),
    ]
    try:
        with torch.no_grad():
            mae(clips, mask)
            tokens = patchify(clips, SPEC.tubelet_size, SPEC.patch_size).clone()
            tokens[mask] = 255 - tokens[mask]  # change every masked pixel
            changed_masked = unpatchify(tokens, SPEC.grid, SPEC.tubelet_size, SPEC.patch_size)
            mae(changed_masked, mask)
            tokens[~mask] = 255 - tokens[~mask]  # now the visible ones too
            mae(unpatchify(tokens, SPEC.grid, SPEC.tubelet_size, SPEC.patch_size), mask)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen[0] == (2, NUM_TOKENS - 24, get_variant("tiny").embed_dim)
    torch.testing.assert_close(latents[0], latents[1])
    assert not torch.allclose(latents[0], latents[2])


def test_masked_rows_and_targets_follow_the_mask(mae: torch.nn.Module) -> None:
    clips = random_clips()
    mask = random_mask(2, 20, seed=3)
    with torch.no_grad():
        out = mae(clips, mask)
    for row in range(2):
        assert out["masked_index"][row].tolist() == mask[row].nonzero().flatten().tolist()
    pixels = patchify(clips.float() / 255.0, SPEC.tubelet_size, SPEC.patch_size)
    expected = norm_pix_target(pixels)[mask].reshape(2, 20, -1)
    torch.testing.assert_close(out["target"], expected)


def test_split_mask_rejects_bad_masks() -> None:
    mask = random_mask(2, 10)
    visible, masked = split_mask(mask)
    assert visible.shape == (2, 22) and masked.shape == (2, 10)
    uneven = mask.clone()
    uneven[0, mask[0].nonzero()[0]] = False
    with pytest.raises(ValueError, match="as many tokens"):
        split_mask(uneven)
    with pytest.raises(ValueError, match="between 1 and"):
        split_mask(torch.zeros(2, NUM_TOKENS, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_masked=9"):
        split_mask(mask, num_masked=9)
    with pytest.raises(ValueError, match="bool"):
        split_mask(mask.int())


def test_patchify_token_order_and_roundtrip() -> None:
    """Token n = (t * H' + h) * W' + w holds frames [t*ts, (t+1)*ts), rows [h*p, (h+1)*p), ..."""
    t, h, w = SPEC.grid
    token_id = torch.arange(t * h * w).reshape(t, h, w).float()
    clip = token_id.repeat_interleave(2, 0).repeat_interleave(8, 1).repeat_interleave(8, 2)
    clips = clip[None, None].expand(1, 3, -1, -1, -1)
    tokens = patchify(clips, SPEC.tubelet_size, SPEC.patch_size)  # (1, N, P, 3)
    assert tokens.shape == (1, NUM_TOKENS, SPEC.patch_dim // 3, 3)
    assert torch.equal(tokens[0, :, 0, 0], torch.arange(NUM_TOKENS).float())
    assert torch.equal(tokens.amin(dim=(2, 3)), tokens.amax(dim=(2, 3)))
    noise = torch.rand(2, 3, 4, 32, 32)
    back = unpatchify(patchify(noise, 2, 8).flatten(2), SPEC.grid, 2, 8)
    assert torch.equal(back, noise)


def test_norm_pix_target_normalizes_each_token_and_channel() -> None:
    pixels = torch.rand(2, 5, 16, 3) * 0.5 + 0.2
    target = norm_pix_target(pixels).reshape(2, 5, 16, 3)
    torch.testing.assert_close(target.mean(dim=2), torch.zeros(2, 5, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.std(dim=2), torch.ones(2, 5, 3), atol=1e-4, rtol=0)


def test_hand_token_weight() -> None:
    torch.manual_seed(0)
    weighted = create_pretrain_model(dataclasses.replace(SPEC, hand_loss_weight=2.0)).eval()
    clips, mask = random_clips(), random_mask(2, 24)
    with torch.no_grad():
        plain = weighted(clips, mask)
        zeros = weighted(clips, mask, token_weight=torch.zeros(2, NUM_TOKENS))
        hand = torch.rand(2, NUM_TOKENS)
        out = weighted(clips, mask, token_weight=hand)
    torch.testing.assert_close(zeros["loss"], plain["loss"])
    per_token = (out["pred"] - out["target"]).pow(2).mean(dim=-1)
    weight = 1.0 + 2.0 * hand[mask].reshape(2, 24)
    torch.testing.assert_close(out["loss"], (per_token * weight).sum() / weight.sum())
    assert not torch.allclose(out["loss"], plain["loss"])
    with pytest.raises(ValueError, match="token_weight must be"):
        weighted(clips, mask, token_weight=torch.ones(2, NUM_TOKENS - 1))


def test_loss_decreases_on_a_small_batch() -> None:
    torch.manual_seed(0)
    model = create_pretrain_model(SPEC).train()
    generator = torch.Generator().manual_seed(1)
    smooth = torch.rand(2, 3, 2, 4, 4, generator=generator)
    clips = torch.nn.functional.interpolate(smooth, size=(4, 32, 32), mode="trilinear")
    mask = random_mask(2, 24, seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    losses = []
    for _ in range(40):
        loss = model(clips, mask)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # below 0.9: better than predicting zero (about 1 for per-token normalized targets)
    assert losses[-1] < 0.6 * losses[0] and losses[-1] < 0.9, losses


def test_reconstruct_pastes_predictions_into_masked_tokens(mae: torch.nn.Module) -> None:
    clips, mask = random_clips(), random_mask(2, 24)
    pictures = mae.reconstruct(clips, mask)
    assert set(pictures) == {"original", "masked", "reconstruction"}
    original = patchify(pictures["original"], 2, 8)
    torch.testing.assert_close(original, patchify(clips.float() / 255.0, 2, 8))
    recon = patchify(pictures["reconstruction"], 2, 8)
    masked_input = patchify(pictures["masked"], 2, 8)
    torch.testing.assert_close(recon[~mask], original[~mask])
    assert torch.all(masked_input[mask] == 0.5)
    assert 0.0 <= recon.min() and recon.max() <= 1.0


def test_classifier_contract() -> None:
    torch.manual_seed(0)
    clf = create_classifier(SPEC, num_classes=7).eval()
    clips = random_clips(3)
    features = clf.forward_features(clips)
    dim = get_variant("tiny").embed_dim
    assert features.shape == (3, NUM_TOKENS, dim)
    assert clf.forward_head(features, pre_logits=True).shape == (3, dim)
    assert clf(clips).shape == (3, 7)
    torch.testing.assert_close(clf(clips), clf.forward_head(features))
    clf.reset_classifier(4)
    assert clf(clips).shape == (3, 4)


def test_max_pooling_takes_each_feature_from_its_largest_token() -> None:
    torch.manual_seed(0)
    clf = create_classifier(dataclasses.replace(SPEC, pool="max"), num_classes=3).eval()
    features = torch.randn(2, NUM_TOKENS, get_variant("tiny").embed_dim)
    features[1, 5, :] = 50.0  # one token above all others in every feature
    pooled = clf.forward_head(features, pre_logits=True)
    expected = torch.stack(
        [
            torch.tensor([max(features[b, :, d].tolist()) for d in range(features.shape[2])])
            for b in range(2)
        ]
    )
    torch.testing.assert_close(pooled, clf.fc_norm(expected))
    torch.testing.assert_close(pooled[1], clf.fc_norm(features[1, 5]))
    with pytest.raises(ValueError, match="pool"):
        ModelSpec(pool="median")


CONV = dataclasses.replace(SPEC, stem="conv", layer_scale=0.1)  # 8 px patches: 3 conv blocks


def test_conv_stem_keeps_masked_pixels_from_the_visible_tokens() -> None:
    torch.manual_seed(0)
    mae = create_pretrain_model(CONV).eval()
    encoder = mae.encoder
    clips = random_clips(2)
    mask = random_mask(2, NUM_TOKENS // 2)
    visible = torch.stack([row.nonzero().flatten() for row in ~mask])  # (2, 16)
    other = clips.clone()  # the same visible pixels, other pixels under the mask
    tokens = patchify(other, 2, 8)  # (B, N, 128, 3) views into a copy
    noise = torch.randint(0, 256, tokens.shape, dtype=torch.uint8)
    tokens[mask] = noise[mask]
    other = unpatchify(tokens.flatten(2), (2, 4, 4), 2, 8)
    assert not torch.equal(other, clips)

    def visible_features(batch: torch.Tensor) -> torch.Tensor:
        return encoder(batch, visible)  # (2, 16, D)

    torch.testing.assert_close(visible_features(other), visible_features(clips))
    assert visible_features(clips).shape == (2, NUM_TOKENS // 2, get_variant("tiny").embed_dim)
    # the same as the whole clip with its masked tokens at the mean colour (zero once normalized)
    grey = patchify(clips.float() / 255, 2, 8)
    grey[mask] = torch.tensor(CONV.mean)
    grey = unpatchify(grey.flatten(2), (2, 4, 4), 2, 8)
    embed = encoder.patch_embed
    whole = embed(encoder.normalize_pixels(encoder.patch_pixels(grey)))  # (2, N, D), every token
    expected = torch.stack([whole[b, visible[b]] for b in range(2)])
    given = torch.stack([encoder.patch_pixels(clips)[b, visible[b]] for b in range(2)])
    embedded = embed(encoder.normalize_pixels(given), visible)
    torch.testing.assert_close(embedded, expected, atol=1e-5, rtol=1e-5)
    # a visible pixel does reach its neighbours (a linear embedding would not)
    first = int(visible[0, 0])
    nudged = patchify(clips.clone(), 2, 8)
    nudged[0, first] = 255 - nudged[0, first]
    nudged = unpatchify(nudged.flatten(2), (2, 4, 4), 2, 8)
    changed = (visible_features(nudged)[0] - visible_features(clips)[0]).abs().amax(dim=1) > 1e-6
    assert int(changed.sum()) > 1, changed
    # pretraining and the classifier run on it
    assert torch.isfinite(mae(clips, mask)["loss"])
    assert create_classifier(CONV, num_classes=4)(clips).shape == (2, 4)
    with pytest.raises(ValueError, match="power-of-two"):
        create_classifier(dataclasses.replace(CONV, img_size=36, patch_size=12), 4)


TOKEN_CONV = dataclasses.replace(CONV, stem="token_conv")


def test_token_conv_stem_embeds_each_token_alone() -> None:
    torch.manual_seed(0)
    mae = create_pretrain_model(TOKEN_CONV).eval()
    embed = mae.encoder.patch_embed
    clips = random_clips(2)
    normalized = (clips.float() / 255 - torch.tensor(TOKEN_CONV.mean)[:, None, None, None]) / (
        torch.tensor(TOKEN_CONV.std)[:, None, None, None]
    )  # (B, 3, T, H, W)
    # token 1 of grid (2, 4, 4) in grid order: frames 0-1, rows 0-7, columns 8-15, cut by hand
    alone = normalized[:, :, 0:2, 0:8, 8:16]  # (B, 3, 2, 8, 8)
    expected = embed.proj(embed.convs(alone).flatten(1))  # (B, D)
    features = embed(mae.encoder.normalize_pixels(mae.encoder.patch_pixels(clips)))  # (B, N, D)
    torch.testing.assert_close(features[:, 1], expected, atol=1e-5, rtol=1e-5)
    # the visible tokens' features under a mask are their features in the unmasked clip: the
    # stem sees the same inputs in pretraining and in finetuning (the whole-clip stem does not)
    mask = random_mask(2, NUM_TOKENS // 2)
    visible = torch.stack([row.nonzero().flatten() for row in ~mask])  # (2, 16)
    given = torch.stack([mae.encoder.patch_pixels(clips)[b, visible[b]] for b in range(2)])
    embedded = embed(mae.encoder.normalize_pixels(given), visible)
    whole = torch.stack([features[b, visible[b]] for b in range(2)])
    torch.testing.assert_close(embedded, whole, atol=1e-5, rtol=1e-5)
    # no pixel of a token reaches another token
    nudged = clips.clone()
    nudged[:, :, 0:2, 0:8, 8:16] = 255 - nudged[:, :, 0:2, 0:8, 8:16]
    changed = embed(mae.encoder.normalize_pixels(mae.encoder.patch_pixels(nudged))) != features
    assert changed.any(dim=2).nonzero()[:, 1].unique().tolist() == [1]
    assert torch.isfinite(mae(clips, mask)["loss"])
    assert create_classifier(TOKEN_CONV, num_classes=4)(clips).shape == (2, 4)
    assert ModelConfig(stem="token_conv").stem == "token_conv"


def test_layer_scale_starts_each_block_near_the_identity() -> None:
    torch.manual_seed(0)
    block = create_classifier(CONV, num_classes=3).encoder.blocks[0]
    assert torch.equal(block.gamma_1, torch.full((192,), 0.1))
    assert torch.equal(block.gamma_2, torch.full((192,), 0.1))
    x = torch.randn(2, 5, 192)
    after_attn = x + 0.1 * block.attn(block.norm1(x))
    expected = after_attn + 0.1 * block.mlp(block.norm2(after_attn))
    torch.testing.assert_close(block(x), expected)
    plain = create_classifier(SPEC, num_classes=3).encoder.blocks[0]
    assert plain.gamma_1 is None and "gamma_1" not in dict(plain.named_parameters())


def test_classifier_loads_pretrained_encoder(mae: torch.nn.Module) -> None:
    clf = create_classifier(SPEC, num_classes=5)
    clf.load_encoder_state_dict(mae.encoder.state_dict())
    for key, value in clf.encoder.state_dict().items():
        torch.testing.assert_close(value, mae.encoder.state_dict()[key])
    # a full pretraining state dict works too, and at twice the frames the table is interpolated
    longer = create_classifier(dataclasses.replace(SPEC, num_frames=8), num_classes=5)
    longer.load_encoder_state_dict(mae.state_dict())
    assert longer.encoder.pos_embed.shape == (1, 2 * NUM_TOKENS, get_variant("tiny").embed_dim)
    assert longer(torch.zeros(1, 3, 8, 32, 32, dtype=torch.uint8)).shape == (1, 5)
    # a grid that cannot be inferred (time and space both differ) needs source_grid
    other = create_classifier(dataclasses.replace(SPEC, num_frames=8, img_size=48), 5)
    with pytest.raises(ValueError, match="source_grid"):
        other.load_encoder_state_dict(mae.encoder.state_dict())
    other.load_encoder_state_dict(mae.encoder.state_dict(), source_grid=SPEC.grid)
    assert other.encoder.pos_embed.shape[1] == 4 * 6 * 6


def test_layer_decay_param_groups() -> None:
    clf = create_classifier(SPEC, num_classes=5)
    depth = get_variant("tiny").depth
    cfg = TrainConfig(weight_decay=0.05, layer_decay=0.5)
    groups = build_optimizer(clf, cfg, torch.device("cpu")).param_groups
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(clf.parameters()))
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(clf.named_parameters())
    assert scale_of[id(named["head.weight"])] == 1.0
    assert scale_of[id(named["encoder.patch_embed.proj.weight"])] == 0.5 ** (depth + 1)
    assert scale_of[id(named["encoder.blocks.0.attn.qkv.weight"])] == 0.5**depth
    assert scale_of[id(named[f"encoder.blocks.{depth - 1}.mlp.fc1.weight"])] == 0.5
    assert decay_of[id(named["encoder.blocks.0.attn.qkv.weight"])] == 0.05
    assert decay_of[id(named["encoder.blocks.0.attn.q_bias"])] == 0.0
    assert decay_of[id(named["encoder.blocks.0.norm1.weight"])] == 0.0
    assert decay_of[id(named["head.bias"])] == 0.0


def test_position_table_kinds_and_resizing() -> None:
    fixed = create_pretrain_model(SPEC)
    assert "encoder.pos_embed" in fixed.state_dict()
    assert "encoder.pos_embed" not in dict(fixed.named_parameters())
    torch.testing.assert_close(fixed.encoder.pos_embed, sinusoid_table(NUM_TOKENS, 192))
    learned = create_pretrain_model(dataclasses.replace(SPEC, pos_embed="learned"))
    assert "encoder.pos_embed" in dict(learned.named_parameters())
    table = torch.randn(1, 2 * 4 * 4, 8)
    assert resize_pos_embed(table, (2, 4, 4), (2, 4, 4)) is table
    constant_in_time = table.reshape(2, 16, 8)[:1].expand(2, 16, 8).reshape(1, 32, 8)
    longer = resize_pos_embed(constant_in_time, (2, 4, 4), (5, 4, 4)).reshape(5, 16, 8)
    torch.testing.assert_close(longer, longer[:1].expand(5, 16, 8))
    assert resize_pos_embed(table, (2, 4, 4), (3, 6, 6)).shape == (1, 108, 8)


def test_models_import_without_the_pipeline_stack() -> None:
    """GPU machines have torch + timm only: the models and the bench must not need the rest."""
    code = (
        "import sys\n"
        "for name in ('pydantic', 'ray', 'prefect', 'mediapipe', 'av', 'webdataset',"
        " 'transformers', 'pyarrow', 'cv2', 'pandas'):\n"
        "    sys.modules[name] = None\n"
        "import torch\n"
        "from signmae_core.models import create_pretrain_model, token_grid\n"
        "cfg = {'variant': 'tiny', 'num_frames': 4, 'img_size': 32, 'patch_size': 8}\n"
        "mae = create_pretrain_model(cfg)\n"
        "mask = torch.zeros(1, 32, dtype=torch.bool); mask[0, :24] = True\n"
        "out = mae(torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8), mask)\n"
        "assert token_grid(cfg) == (2, 4, 4) and out['pred'].shape == (1, 24, 384)\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "ok"


def test_pretrain_step_compiles_as_one_graph() -> None:
    """With `num_masked` given, forward + backward trace without graph breaks (as on a GPU)."""
    torch.manual_seed(0)
    model = create_pretrain_model(SPEC)
    clips, mask = random_clips(), random_mask(2, 24)
    expected = model(clips, mask)["loss"]
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss = compiled(clips, mask, num_masked=24)["loss"]
    loss.backward()
    torch.testing.assert_close(loss, expected)
    assert model.encoder.patch_embed.proj.weight.grad is not None


def test_bench_settings_and_flop_count() -> None:
    """The pretraining-step benchmark's implementation names and its analytic FLOP count."""
    import importlib.util

    path = REPO_ROOT / "bench" / "bench_pretrain_step.py"
    module_spec = importlib.util.spec_from_file_location("bench_pretrain_step", path)
    bench = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = bench  # its dataclasses look their module up
    try:
        module_spec.loader.exec_module(bench)
    finally:
        del sys.modules[module_spec.name]
    assert bench.impl_parts("ours-compiled-cudnn") == ("ours", {"compiled", "cudnn"})
    for bad in ("reference-compiled", "ours-fast", "ours-cudnn-flash", "theirs"):
        with pytest.raises(ValueError):
            bench.impl_parts(bad)
    args = bench.parse_args(["--variant", "base", "--frames", "16", "--size", "224"])
    assert args.impl_list == ["reference", "ours"]
    # ViT-B, 16x224x224, ratio 0.9: about 204 GFLOP per training clip (brief's figure)
    assert 195e9 < bench.analytic_flops_per_clip(args) < 210e9
