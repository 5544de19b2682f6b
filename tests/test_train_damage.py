"""Damage the pretraining stage meets in its shards is counted in the stage's record, and the run
goes on: a sample whose clip member does not parse (read past, `damaged_samples`) and frames
that do not decode on the training device (trained on as black, `undecodable_frames`).

The shards are damaged by hand in a copy of the tiny config's store, from what `tarfile` and
`labels.csv` say, not from the reader under test.
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import pytest
from cli_runs import copy_store, make_tiny_data, run_cli, run_folder

TRAIN = ["masking.sampler=tube", "pretrain.batch_size=1", "pretrain.epochs=2",
         "pretrain.device=cpu", "pretrain.num_workers=1", "data.decode_on=device"]
SOI = b"\xff\xd8\xff"  # the start of every JPEG frame

pytestmark = pytest.mark.slow


def _damage_shards(store: Path, broken_clip: str) -> int:
    """Break every JPEG frame's start marker in every clip member (none decodes) and the header
    of `broken_clip`'s member (it does not parse); returns the frames broken."""
    broken_frames = 0
    for shard in sorted(store.glob("synthetic/shard/*/shards/*.tar")):
        with tarfile.open(shard) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(".smclip")]
        data = bytearray(shard.read_bytes())
        for member in members:
            start, end = member.offset_data, member.offset_data + member.size
            at = data.find(SOI, start, end)
            while at != -1:
                data[at : at + 2] = b"\x00\x00"
                broken_frames += 1
                at = data.find(SOI, at + 3, end)
            if member.name.split(".")[0] == broken_clip:
                data[start : start + 16] = b"\xff" * 16
        shard.write_bytes(bytes(data))
    return broken_frames


def test_damaged_samples_and_undecodable_frames_are_counted_in_the_training_record(
    tmp_path: Path, ray_local: None
) -> None:
    args = make_tiny_data(tmp_path / "data", ["ingest", "decode", "shard"], TRAIN)
    with open(tmp_path / "data" / "synthetic" / "labels.csv", newline="") as handle:
        # a sample's key is its manifest path without the suffix, "/" as "__" (docs/SHARDS.md)
        train = sorted(Path(r["path"]).with_suffix("").as_posix().replace("/", "__")
                       for r in csv.DictReader(handle) if r["split"] == "train")
    assert len(train) >= 2  # one to break, the others to train on
    target = tmp_path / "store"
    copy_args = copy_store(tmp_path / "data" / "store", target)
    assert _damage_shards(target, broken_clip=train[0]) > 0
    run_cli(["run", "pretrain", *args, *copy_args], cwd=tmp_path)
    record = json.loads((run_folder(target, "pretrain") / "_stage.json").read_text())
    epochs, clips = 2, len(train)
    assert record["counts"]["steps"] == epochs * clips  # the run went on to its end
    # the broken clip is in every epoch's permutation: read past once per epoch
    assert record["counts"]["damaged_samples"] == epochs
    assert record["extra"]["skipped_samples"] == [epochs]
    # every frame is broken: each step's clip has its 8 frames (model.num_frames) counted
    assert record["counts"]["undecodable_frames"] == epochs * clips * 8
    assert record["extra"]["undecodable_frames"] == [epochs * clips * 8]
