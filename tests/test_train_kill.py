"""The pretraining stage killed for real (SIGKILL) in the middle of a run, then run again: it
resumes from its newest checkpoint and ends where an uninterrupted run ends (final weights and
the per-step loss curve within 1e-6). Killed once between the micro-batches of a step (gradient
accumulation), once while a checkpoint folder is written (before its rename into place).

Each run is a `signmae run pretrain` subprocess on a copy of one store holding the tiny config's
decoded clips; `tests/cli_runs.py` stops it at the named point and kills it there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import (
    assert_same_run,
    copy_store,
    kill_at,
    make_tiny_data,
    metrics_rows,
    run_cli,
    run_folder,
)

GRAD_ACCUM = 2
STEPS = 4  # 3 training clips, batch 1 x 2 micro-batches: one step per epoch
TRAIN = [
    "masking.sampler=tube",  # pretraining reads decoded clips only
    "model.drop_path=0.1",  # the global torch RNG matters: a resume must restore it
    "pretrain.batch_size=1", f"pretrain.grad_accum={GRAD_ACCUM}", f"pretrain.epochs={STEPS}",
    "pretrain.checkpoint_every=1", "pretrain.keep_checkpoints=2", "pretrain.num_workers=1",
    "pretrain.device=cpu",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> tuple[Path, list[str]]:
    """The store with the decoded clips, and the arguments of the pretraining command."""
    root = tmp_path_factory.mktemp("train-kill")
    args = make_tiny_data(root, ["ingest", "decode", "shard"], TRAIN)
    return root / "store", ["run", "pretrain", *args]


@pytest.fixture(scope="module")
def reference(data: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of an uninterrupted run."""
    store, args = data
    folder = tmp_path_factory.mktemp("reference")
    target = folder / "store"
    run_cli([*args, *copy_store(store, target)], cwd=folder)
    run = run_folder(target, "pretrain")
    assert [r["step"] for r in metrics_rows(run)] == list(range(1, STEPS + 1))
    return run


def checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def record_extra(run: Path) -> dict:
    return json.loads((run / "_stage.json").read_text(encoding="utf-8"))["extra"]


def rerun_and_compare(args: list[str], tmp_path: Path, run: Path, reference: Path) -> None:
    """Run the command again: it resumes from step 1 (the rows it logged up to there stay as they
    were) and ends as the uninterrupted run did, with no temporary folder left."""
    kept = metrics_rows(run)[:1]
    assert [r["step"] for r in kept] == [1]
    run_cli(args, cwd=tmp_path)
    assert record_extra(run)["resumed_from"] == 1
    assert metrics_rows(run)[:1] == kept  # not started over: step 1 was not trained again
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert checkpoints(run) == [f"step_{s:08d}" for s in (STEPS - 1, STEPS)]
    assert_same_run(run, reference)


def test_killed_between_micro_batches_resumes_to_the_uninterrupted_run(
    data: tuple[Path, list[str]], reference: Path, tmp_path: Path
) -> None:
    store, args = data
    args = [*args, *copy_store(store, tmp_path / "store")]
    # step 2's first micro-batch has gone forward and backward; its second has not
    seen = kill_at(args, f"backward:{GRAD_ACCUM + 1}", cwd=tmp_path)
    assert seen["backward_passes"] == GRAD_ACCUM + 1
    run = run_folder(tmp_path / "store", "pretrain")
    assert checkpoints(run) == ["step_00000001"]
    assert not (run / "_stage.json").exists()
    rerun_and_compare(args, tmp_path, run, reference)


def test_killed_while_a_checkpoint_is_written_resumes_to_the_uninterrupted_run(
    data: tuple[Path, list[str]], reference: Path, tmp_path: Path
) -> None:
    store, args = data
    args = [*args, *copy_store(store, tmp_path / "store")]
    seen = kill_at(args, "rename:step_00000002", cwd=tmp_path)
    run = run_folder(tmp_path / "store", "pretrain")
    tmp = Path(seen["tmp"])
    assert tmp.parent == run / "checkpoints" and "model.safetensors" in seen["files"]
    # the kill left the unfinished checkpoint under its temporary name, and step 2's metrics
    assert tmp.is_dir() and checkpoints(run) == sorted(["step_00000001", tmp.name])
    assert [r["step"] for r in metrics_rows(run)] == [1, 2]
    assert not (run / "_stage.json").exists()
    rerun_and_compare(args, tmp_path, run, reference)


# ---- the streaming reader ---------------------------------------------------------------------
STREAM = [  # 3 training clips; an epoch of the stream: 6 clips = 3 steps of 2 clips (1 per
    # partition), so a run of 4 steps crosses into epoch 1; 2 views per clip, decoded by the
    # device path (on the CPU), 2 DataLoader processes reading the partitions
    "pretrain.batch_size=2", "pretrain.grad_accum=1", f"pretrain.epochs={STEPS}",
    "data.reader=stream", "data.stream_partitions=2", "data.stream_epoch_clips=6",
    "data.stream_buffer=2", "data.stream_workers=2", "data.repeated_views=2",
    "data.decode_on=device",
]


@pytest.fixture(scope="module")
def stream_reference(data: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory
                     ) -> Path:
    store, args = data
    folder = tmp_path_factory.mktemp("stream-reference")
    target = folder / "store"
    run_cli([*args, *[a for o in STREAM for a in ("--set", o)],
             *copy_store(store, target)], cwd=folder)
    run = run_folder(target, "pretrain")
    assert [r["step"] for r in metrics_rows(run)] == list(range(1, STEPS + 1))
    return run


def test_a_killed_stream_run_resumes_mid_epoch_to_the_uninterrupted_run(
    data: tuple[Path, list[str]], stream_reference: Path, tmp_path: Path
) -> None:
    """`data.reader: stream`: killed inside step 3 (epoch 0, its checkpoint at step 2), the
    rerun re-draws epoch 0's partitions, skips the 2 clips per partition already trained on,
    crosses into epoch 1, and ends with the uninterrupted run's losses and weights."""
    store, args = data
    args = [*args, *[a for o in STREAM for a in ("--set", o)],
            *copy_store(store, tmp_path / "store")]
    seen = kill_at(args, "backward:3", cwd=tmp_path)
    assert seen["backward_passes"] == 3
    run = run_folder(tmp_path / "store", "pretrain")
    assert checkpoints(run) == ["step_00000001", "step_00000002"]
    kept = metrics_rows(run)[:2]
    run_cli(args, cwd=tmp_path)
    assert record_extra(run)["resumed_from"] == 2
    assert metrics_rows(run)[:2] == kept
    assert_same_run(run, stream_reference)
