"""Our models against Hugging Face `transformers`' VideoMAE (random init, same config, CPU).

HF weights are converted with our converter; the encoder output, the pretraining loss and
predictions, and the classifier logits must match within float tolerance. Loading a saved
checkpoint at another frame count / image size interpolates the position table.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import (
    VideoMAEConfig,
    VideoMAEForPreTraining,
    VideoMAEForVideoClassification,
    VideoMAEModel,
)

from signmae_core.models import (
    ModelSpec,
    create_classifier,
    create_encoder,
    create_pretrain_model,
    get_variant,
    load_videomae_pretrained,
    resize_pos_embed,
    sinusoid_table,
    videomae_config_kwargs,
)

SPEC = ModelSpec(variant="tiny", num_frames=4, img_size=32, patch_size=8, tubelet_size=2)
NUM_TOKENS = SPEC.num_tokens
TOL = {"atol": 1e-4, "rtol": 1e-4}


def hf_config(spec: ModelSpec = SPEC, **overrides: object) -> VideoMAEConfig:
    kwargs = videomae_config_kwargs(spec, get_variant(spec.variant))
    kwargs.update(overrides)
    return VideoMAEConfig(**kwargs)


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every weight (biases, norms, mask token too) so each one is checked."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


def clips_and_mask(batch: int = 2, num_masked: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    clips = torch.rand(batch, 3, SPEC.num_frames, SPEC.img_size, SPEC.img_size, generator=generator)
    order = torch.rand(batch, NUM_TOKENS, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, NUM_TOKENS, dtype=torch.bool)
    return clips, mask.scatter_(1, order[:, :num_masked], True)


def hf_pixels(clips: torch.Tensor, spec: ModelSpec = SPEC) -> torch.Tensor:
    """Our clips `(B, 3, T, H, W)` in [0, 1] -> HF's normalized `(B, T, 3, H, W)`."""
    mean = torch.tensor(spec.mean)[None, :, None, None, None]
    std = torch.tensor(spec.std)[None, :, None, None, None]
    return ((clips - mean) / std).permute(0, 2, 1, 3, 4)


def test_encoder_matches_videomae_model() -> None:
    torch.manual_seed(0)
    hf = perturbed(VideoMAEModel(hf_config(use_mean_pooling=False)))
    ours = create_encoder(SPEC).eval()
    report = load_videomae_pretrained(ours, hf.state_dict(), SPEC.num_frames, SPEC.img_size)
    assert report.initialized == [] and report.ignored == []
    clips, mask = clips_and_mask()
    with torch.no_grad():
        expected = hf(hf_pixels(clips)).last_hidden_state
        torch.testing.assert_close(ours(clips), expected, **TOL)
        # visible tokens only: HF drops masked tokens by boolean indexing, we gather
        expected_visible = hf(hf_pixels(clips), bool_masked_pos=mask).last_hidden_state
        visible_index = (~mask).nonzero()[:, 1].reshape(2, -1)
        torch.testing.assert_close(ours(clips, visible_index), expected_visible, **TOL)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_pretraining_loss_matches_videomae(norm_pix_loss: bool) -> None:
    spec = dataclasses.replace(SPEC, norm_pix_loss=norm_pix_loss)
    torch.manual_seed(0)
    hf = perturbed(VideoMAEForPreTraining(hf_config(spec)))
    ours = create_pretrain_model(spec).eval()
    report = load_videomae_pretrained(ours, hf.state_dict(), spec.num_frames, spec.img_size)
    assert report.initialized == [] and report.ignored == []
    clips, mask = clips_and_mask()
    with torch.no_grad():
        expected = hf(hf_pixels(clips), bool_masked_pos=mask)
        out = ours(clips, mask)
    torch.testing.assert_close(out["pred"], expected.logits, **TOL)
    torch.testing.assert_close(out["loss"], expected.loss, **TOL)


def test_classifier_matches_videomae_classification() -> None:
    torch.manual_seed(0)
    hf = perturbed(VideoMAEForVideoClassification(hf_config(num_labels=6, use_mean_pooling=True)))
    ours = create_classifier(SPEC, num_classes=6).eval()
    report = load_videomae_pretrained(ours, hf.state_dict(), SPEC.num_frames, SPEC.img_size)
    assert report.initialized == []
    clips, _ = clips_and_mask()
    with torch.no_grad():
        torch.testing.assert_close(ours(clips), hf(hf_pixels(clips)).logits, **TOL)


def test_legacy_q_bias_layout_converts_the_same() -> None:
    """Public checkpoints store `q_bias` / `v_bias`; newer transformers `query.bias`."""
    torch.manual_seed(0)
    hf = perturbed(VideoMAEModel(hf_config(use_mean_pooling=False)))
    legacy = {
        key.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): value
        for key, value in hf.state_dict().items()
    }
    assert any(key.endswith("q_bias") for key in legacy)
    a, b = create_encoder(SPEC), create_encoder(SPEC)
    load_videomae_pretrained(a, hf.state_dict(), SPEC.num_frames, SPEC.img_size)
    load_videomae_pretrained(b, legacy, SPEC.num_frames, SPEC.img_size)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value)


def test_load_saved_checkpoint_at_another_geometry(tmp_path) -> None:
    """`save_pretrained` output (safetensors + config.json), loaded at 2x frames and 1.5x size."""
    torch.manual_seed(0)
    hf = perturbed(VideoMAEForPreTraining(hf_config()))
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    same = create_pretrain_model(SPEC).eval()
    load_videomae_pretrained(same, tmp_path)
    clips, mask = clips_and_mask()
    with torch.no_grad():
        expected = hf(hf_pixels(clips), bool_masked_pos=mask).loss
        torch.testing.assert_close(same(clips, mask)["loss"], expected, **TOL)

    bigger = dataclasses.replace(SPEC, num_frames=8, img_size=48)  # grid (4, 6, 6)
    model = create_pretrain_model(bigger).eval()
    report = load_videomae_pretrained(model, tmp_path / "model.safetensors")
    assert report.source_grid == (2, 4, 4) and report.initialized == []
    dim = get_variant("tiny").embed_dim
    expected_table = resize_pos_embed(sinusoid_table(NUM_TOKENS, dim), (2, 4, 4), (4, 6, 6))
    torch.testing.assert_close(model.encoder.pos_embed, expected_table)
    mask = torch.zeros(2, 4 * 6 * 6, dtype=torch.bool)
    mask[:, ::2] = True
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 3, 8, 48, 48), dtype=torch.uint8), mask)
    assert out["pred"].shape == (2, 72, SPEC.patch_dim) and torch.isfinite(out["loss"])

    clf = create_classifier(bigger, num_classes=3)
    report = load_videomae_pretrained(clf, tmp_path)
    assert "head.weight" in report.initialized and "encoder.norm.weight" in report.ignored
    assert clf(torch.zeros(1, 3, 8, 48, 48, dtype=torch.uint8)).shape == (1, 3)


def test_mismatched_source_is_a_clear_error(tmp_path) -> None:
    hf = VideoMAEModel(hf_config(patch_size=16))
    with pytest.raises(ValueError, match="does not match the model"):
        load_videomae_pretrained(create_encoder(SPEC), hf.state_dict(), 4, 32)
    hf.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="pass num_frames and img_size"):
        load_videomae_pretrained(create_encoder(SPEC), tmp_path)
    with pytest.raises(FileNotFoundError):
        load_videomae_pretrained(create_encoder(SPEC), tmp_path / "missing")
