"""The training engine on the tiny model, on CPU: losses fall, schedule, accumulation, groups."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from signmae_core.config import ModelConfig, TrainConfig
from signmae_core.masking import SampleKeys
from signmae_core.models import create_classifier, create_pretrain_model, token_grid
from signmae_core.train import EpochBatches, FinetuneTask, PretrainTask, Trainer, read_metrics
from signmae_core.train.optim import build_optimizer, lr_at, set_lr

MODEL = ModelConfig(variant="tiny", num_frames=8, img_size=32, patch_size=8, tubelet_size=2)
NUM_CLASSES = 4


def moving_square(label: int, rng: np.random.Generator, frames: int = 8, size: int = 32) -> dict:
    """A clip (3, T, H, W) uint8: a bright square moving in the direction of its class over a
    smooth background (no pixel noise: normalized-pixel targets of noise are unpredictable)."""
    yy, xx = np.mgrid[0:size, 0:size]
    background = (40 + 3 * xx + 2 * yy + 20 * label).astype(np.uint8)
    clip = np.broadcast_to(background, (3, frames, size, size)).copy()
    dy, dx = [(0, 1), (1, 0), (0, -1), (-1, 0)][label]
    y, x = 12 + int(rng.integers(-2, 3)), 12 + int(rng.integers(-2, 3))
    for t in range(frames):
        top, left = (y + dy * t) % (size - 8), (x + dx * t) % (size - 8)
        clip[:, t, top : top + 8, left : left + 8] = 230
    return {"clips": torch.from_numpy(clip), "label": label}


def synthetic_source(num_items: int, batch_size: int, **kwargs) -> EpochBatches:
    return EpochBatches(
        num_items, lambda i, rng: moving_square(i % NUM_CLASSES, rng), batch_size, **kwargs
    )


def random_mask_fn(ratio: float = 0.75):
    """Uniform masks from each clip's own keys (a pure function of the batch, as the pipeline's)."""

    def mask_fn(batch, grid, device):
        tokens = grid[0] * grid[1] * grid[2]
        keys = SampleKeys.of(0, batch["sample_epoch"], batch["sample_index"])
        noise = keys.uniform(tokens, stream=2, device=device)
        mask = torch.zeros_like(noise, dtype=torch.bool)
        return mask.scatter_(1, noise.topk(int(ratio * tokens), dim=1).indices, True)

    return mask_fn


def test_pretraining_loss_decreases_on_a_small_synthetic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_pretrain_model(MODEL)
    cfg = TrainConfig(batch_size=4, lr=2e-3, warmup_steps=3, weight_decay=0.0, log_every=5)
    task = PretrainTask(random_mask_fn(), token_grid(MODEL))
    result = Trainer(model, task, cfg, total_steps=40, run_dir=tmp_path).fit(
        synthetic_source(4, 4, shuffle=False)
    )
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == 40
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.7 * first, (first, last)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert rows[-1]["samples"] == 160 and rows[-1]["clips_per_s"] > 0
    assert all(math.isfinite(r["grad_norm"]) for r in rows)
    assert (tmp_path / "checkpoints" / "step_00000040" / "model.safetensors").is_file()


def test_finetuning_learns_the_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_classifier(MODEL, NUM_CLASSES)
    cfg = TrainConfig(
        batch_size=4, lr=2e-3, weight_decay=0.0, layer_decay=0.75, label_smoothing=0.1,
        log_every=5,
    )
    result = Trainer(model, FinetuneTask(cfg.label_smoothing), cfg, total_steps=16).fit(
        synthetic_source(16, 4, epochs=None)
    )
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert losses[0] == pytest.approx(math.log(NUM_CLASSES), abs=0.05)  # the small head init
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])
    assert not (tmp_path / "metrics.jsonl").exists()  # no run_dir: nothing written


def test_gradient_accumulation_matches_the_full_batch() -> None:
    """Batch 4 in one pass == batch 2 accumulated twice (same clips, same update)."""
    finals = []
    for batch_size, accum in [(4, 1), (2, 2)]:
        torch.manual_seed(0)
        model = create_classifier(MODEL, NUM_CLASSES)
        cfg = TrainConfig(batch_size=batch_size, grad_accum=accum, lr=1e-3, grad_clip=0.5)
        result = Trainer(model, FinetuneTask(), cfg, total_steps=3).fit(
            synthetic_source(12, batch_size, shuffle=False)
        )
        finals.append((result, torch.cat([p.detach().flatten() for p in model.parameters()])))
    (full, full_params), (accumulated, accumulated_params) = finals
    np.testing.assert_allclose(
        list(full.losses.values()), list(accumulated.losses.values()), rtol=1e-5
    )
    torch.testing.assert_close(full_params, accumulated_params, rtol=1e-4, atol=1e-6)


def test_cosine_schedule_with_warmup() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=4)
    total = 14
    lrs = [lr_at(step, cfg, total) for step in range(total)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lr_at(total, cfg, total) == pytest.approx(0.1)


def test_layer_decay_scales_the_learning_rate_per_block() -> None:
    model = create_classifier(MODEL, NUM_CLASSES)
    cfg = TrainConfig(lr=1.0, layer_decay=0.5, weight_decay=0.05)
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    set_lr(optimizer, 1.0)
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = len(model.encoder.blocks)
    assert by_param[id(named["head.weight"])]["lr"] == 1.0
    assert by_param[id(named["head.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["head.weight"])]["weight_decay"] == 0.05
    first_block = next(n for n in named if n.startswith("encoder.blocks.0.") and "weight" in n)
    assert by_param[id(named[first_block])]["lr"] == pytest.approx(0.5**depth)
    assert len(by_param) == len(named)  # every parameter in exactly one group


def test_unlabelled_clips_cannot_be_finetuned_on() -> None:
    model = create_classifier(MODEL, NUM_CLASSES)
    clips = torch.zeros(2, 3, 8, 32, 32, dtype=torch.uint8)
    batch = {"clips": clips, "label": torch.tensor([0, -1])}
    trainer = Trainer(model, FinetuneTask(), TrainConfig(batch_size=2), total_steps=1)
    with pytest.raises(ValueError, match="unlabelled"):
        trainer.fit([batch])


def test_the_run_stops_cleanly_when_the_data_runs_out(tmp_path: Path) -> None:
    model = create_classifier(MODEL, NUM_CLASSES)
    cfg = TrainConfig(batch_size=4)
    result = Trainer(model, FinetuneTask(), cfg, total_steps=10, run_dir=tmp_path).fit(
        synthetic_source(8, 4, epochs=1)
    )
    assert result.ran_out_of_data and result.state.step == 2
    assert result.checkpoint is not None and result.checkpoint.name == "step_00000002"


def test_reconstruction_figures_are_drawn_without_changing_the_run(tmp_path: Path) -> None:
    from signmae_core.train.recon import save_reconstruction

    def figure_fn(model, batch, step, path):
        mask = random_mask_fn()(batch, token_grid(MODEL), torch.device("cpu"))
        save_reconstruction(path, model, batch["clips"], {"random": mask}, title=f"step {step}")

    runs = []
    for with_figures in (False, True):
        torch.manual_seed(0)
        cfg = TrainConfig(batch_size=2, lr=1e-3, recon_every=2)
        trainer = Trainer(
            create_pretrain_model(MODEL), PretrainTask(random_mask_fn(), token_grid(MODEL)), cfg,
            total_steps=3, run_dir=tmp_path / str(with_figures),
            figure_fn=figure_fn if with_figures else None,
        )
        runs.append(trainer.fit(synthetic_source(4, 2)).losses)
    assert runs[0] == runs[1]
    figures = sorted((tmp_path / "True" / "recon").iterdir())
    assert [p.name for p in figures] == ["step_00000002.png", "step_00000003.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in figures)
    assert not (tmp_path / "False" / "recon").exists()


def test_head_only_steps_leave_the_encoder_untouched_then_train_it() -> None:
    torch.manual_seed(0)
    model = create_classifier(MODEL, NUM_CLASSES)
    cfg = TrainConfig(batch_size=4, lr=1e-2, weight_decay=0.05)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}

    def changed(prefix: str) -> set[str]:
        return {name for name, p in model.named_parameters()
                if name.startswith(prefix) and not torch.equal(p, start[name])}

    trainer = Trainer(model, FinetuneTask(head_only_steps=3), cfg, total_steps=3)
    trainer.fit(synthetic_source(12, 4, epochs=1))
    assert changed("encoder.") == set()  # no update, no weight decay on the frozen encoder
    assert changed("head.") == {"head.weight", "head.bias"}

    trainer.total_steps = 4  # one more step, past the head-only ones: the encoder trains
    trainer.fit(synthetic_source(16, 4, epochs=1))
    encoder = {name for name, _ in model.named_parameters() if name.startswith("encoder.")}
    assert changed("encoder.") == encoder
