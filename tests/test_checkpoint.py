"""Checkpoints: a killed and resumed run continues exactly; files are atomic and pickle-free."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from signmae_core.config import ModelConfig, TrainConfig
from signmae_core.masking import SampleKeys
from signmae_core.models import create_classifier, create_pretrain_model, token_grid
from signmae_core.train import EpochBatches, FinetuneTask, PretrainTask, Trainer, read_metrics
from signmae_core.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from signmae_core.train.optim import build_optimizer

# drop_path > 0: training draws from torch's RNG too, which the checkpoint must restore
MODEL = ModelConfig(
    variant="tiny", num_frames=4, img_size=32, patch_size=8, tubelet_size=2, drop_path=0.1
)


class Killed(Exception):
    """Stands for the process dying in the middle of a step."""


def killed_after(batches: Iterable, count: int) -> Iterator:
    """Yield `count` batches, then die while the next one is asked for."""
    for i, batch in enumerate(batches):
        if i == count:
            raise Killed
        yield batch


def load_item(index: int, rng: np.random.Generator) -> dict:
    """A random clip whose pixels depend on (seed, epoch, index) only."""
    clip = rng.integers(0, 256, size=(3, 4, 32, 32), dtype=np.uint8)
    return {"clips": torch.from_numpy(clip), "label": index % 3}


def source() -> EpochBatches:
    return EpochBatches(10, load_item, batch_size=2, seed=3, threads=2)


def plain_batches() -> Iterator[dict]:
    """A deterministic source without `start_at`: the engine skips consumed batches."""
    rng = np.random.default_rng(11)
    for batch in itertools.count():
        yield {
            "clips": torch.from_numpy(rng.integers(0, 256, (2, 3, 4, 32, 32), dtype=np.uint8)),
            "label": torch.tensor([0, 1]),
            "sample_epoch": torch.zeros(2, dtype=torch.int64),
            "sample_index": torch.arange(2 * batch, 2 * batch + 2),
        }


def mask_fn(batch, grid, device):
    """24 masked tokens per clip, from the clip's own keys (no state: nothing to checkpoint)."""
    tokens = grid[0] * grid[1] * grid[2]
    noise = SampleKeys.of(7, batch["sample_epoch"], batch["sample_index"]).uniform(tokens, 2)
    chosen = noise.topk(24, dim=1).indices
    return torch.zeros_like(noise, dtype=torch.bool).scatter_(1, chosen, True)


def make_trainer(run_dir: Path, init_seed: int, grad_accum: int) -> Trainer:
    torch.manual_seed(init_seed)
    cfg = TrainConfig(
        batch_size=2, grad_accum=grad_accum, lr=1e-3, warmup_steps=2, checkpoint_every=2,
        log_every=1, seed=5,
    )
    model = create_pretrain_model(MODEL)
    task = PretrainTask(mask_fn, token_grid(MODEL))
    return Trainer(model, task, cfg, total_steps=6, run_dir=run_dir, meta={"note": "test"})


def flat_params(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


@pytest.mark.parametrize(
    ("make_source", "grad_accum"),
    [(source, 1), (plain_batches, 2)],
    ids=["resumable-source", "skipping-plain-iterable"],
)
def test_kill_and_resume_equals_a_straight_run(tmp_path: Path, make_source, grad_accum) -> None:
    straight = make_trainer(tmp_path / "straight", init_seed=0, grad_accum=grad_accum)
    expected = straight.fit(make_source())

    # the first run dies during step 4: steps 1-3 ran, the checkpoint of step 2 is on disk
    first = make_trainer(tmp_path / "resumed", init_seed=0, grad_accum=grad_accum)
    with pytest.raises(Killed):
        first.fit(killed_after(make_source(), 3 * grad_accum))
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [
        "step_00000002"
    ]
    # a new process: other initial weights and RNG state, everything comes from the checkpoint
    second = make_trainer(tmp_path / "resumed", init_seed=123, grad_accum=grad_accum)
    torch.manual_seed(999)
    resumed = second.fit(make_source())

    assert resumed.resumed_from == 2 and resumed.state.step == 6
    assert resumed.state.samples == expected.state.samples == 6 * 2 * grad_accum
    steps = range(3, 7)
    np.testing.assert_allclose(
        [resumed.losses[s] for s in steps], [expected.losses[s] for s in steps], rtol=1e-6
    )
    torch.testing.assert_close(flat_params(second), flat_params(straight), rtol=1e-6, atol=1e-7)
    # the metrics file holds every step once: the killed run's step 3 line was dropped
    rows = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(rows[-1]["loss"], expected.losses[6], rtol=1e-5)


def test_checkpoint_files_are_complete_pickle_free_and_pruned(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    model = create_classifier(MODEL, 3)
    cfg = TrainConfig(layer_decay=0.75)
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    model(torch.zeros(1, 3, 4, 32, 32)).sum().backward()
    optimizer.step()
    torch.manual_seed(1)
    saved_rng = torch.get_rng_state()
    (root / ".tmp-1234-step_00000009").mkdir(parents=True)  # a killed save
    (root / "step_00000010").mkdir()  # no meta.json: not a checkpoint
    for step in (1, 2, 3):
        save_checkpoint(root, step, model, optimizer, {"a": 1}, keep=2)
    assert [p.name for p in list_checkpoints(root)] == ["step_00000002", "step_00000003"]
    assert not list(root.glob(".tmp-*"))
    latest = latest_checkpoint(root)
    assert latest is not None and latest.name == "step_00000003"
    assert sorted(p.name for p in latest.iterdir()) == [
        "meta.json", "model.safetensors", "optimizer.safetensors", "rng.safetensors"
    ]
    meta = json.loads((latest / "meta.json").read_text())
    assert meta["step"] == 3 and meta["a"] == 1

    # round trip into fresh objects: weights, optimizer state (layer-decay groups) and RNG
    other = create_classifier(MODEL, 3)
    other_optimizer = build_optimizer(other, cfg, torch.device("cpu"))
    torch.manual_seed(2)
    load_checkpoint(latest, other, other_optimizer)
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    for group, other_group in zip(
        optimizer.param_groups, other_optimizer.param_groups, strict=True
    ):
        assert group["lr_scale"] == other_group["lr_scale"]
        assert group["weight_decay"] == other_group["weight_decay"]
        assert len(group["params"]) == len(other_group["params"])
    for param, other_param in zip(model.parameters(), other.parameters(), strict=True):
        for key, value in optimizer.state[param].items():
            torch.testing.assert_close(other_optimizer.state[other_param][key], value)
    assert torch.equal(torch.get_rng_state(), saved_rng)


def test_resume_refuses_a_checkpoint_of_another_task(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, init_seed=0, grad_accum=1)
    trainer.fit(source())
    classifier = create_classifier(MODEL, 3)
    other = Trainer(classifier, FinetuneTask(), trainer.cfg, total_steps=6, run_dir=tmp_path)
    with pytest.raises(ValueError, match="pretrain checkpoint"):
        other.fit(source())


# ---- the pretrain stage: resume only on the data a run started with ------------------------------
def _grow_dataset(root: Path, name: str) -> None:
    """Add a copy of the first training video under a new name (a changed dataset)."""
    labels = (root / "labels.csv").read_text(encoding="utf-8").splitlines()
    header, first = labels[0], next(r for r in labels[1:] if r.endswith(",train"))
    source = first.split(",", 1)[0]
    (root / "videos" / f"{name}.mp4").write_bytes((root / source).read_bytes())
    row = first.replace(source, f"videos/{name}.mp4")
    (root / "labels.csv").write_text("\n".join([header, *labels[1:], row]) + "\n", "utf-8")


@pytest.mark.slow
def test_pretraining_resumes_on_the_same_data_and_starts_over_on_changed_data(
    tmp_path: Path, ray_local: None
) -> None:
    from pipelines.runner import run_stages
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_generated

    data = tmp_path / "data"
    cfg = load_config("ci_tiny", [
        f"store.root={tmp_path / 'store'}", f"datasets.0.root={data}",
        "masking.sampler=tube",  # no mask fields: the data stages are ingest, decode, shard
        "pretrain.max_steps=3", "pretrain.checkpoint_every=1",
    ])
    ensure_generated(data, cfg.synth)

    def pretrain() -> tuple[dict, Path]:
        record = run_stages(cfg, ["ingest", "decode", "shard", "pretrain"])[-1].record
        folder = tmp_path / "store" / "_train" / "pretrain" / record.version
        return record.model_dump(mode="json"), folder

    first, folder = pretrain()
    assert first["extra"]["resumed_from"] is None and first["counts"]["steps"] == 3
    train_clips = first["counts"]["ok"]

    # killed after step 2 (newest checkpoint step 2, no record): the same data resumes there
    (folder / "_stage.json").unlink()
    shutil.rmtree(folder / "checkpoints" / "step_00000003")
    resumed, _ = pretrain()
    assert resumed["extra"]["resumed_from"] == 2 and resumed["counts"]["steps"] == 3

    # killed, then the dataset grew: same version, other inputs, no resume
    (folder / "_stage.json").unlink()
    _grow_dataset(data, "added_one")
    grown, grown_folder = pretrain()
    assert grown_folder == folder  # a version is known before the data is read
    assert grown["inputs"] != first["inputs"]
    assert grown["extra"]["resumed_from"] is None and grown["counts"]["ok"] == train_clips + 1
    assert [r["step"] for r in read_metrics(folder / "metrics.jsonl")] == [1, 2, 3]

    # finished, then the dataset grew again: the record's inputs differ, no resume
    _grow_dataset(data, "added_two")
    again, _ = pretrain()
    assert again["extra"]["resumed_from"] is None and again["counts"]["ok"] == train_clips + 2
    assert json.loads((folder / "inputs.json").read_text()) == again["inputs"]
