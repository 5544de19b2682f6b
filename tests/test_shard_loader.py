"""The training input pipeline over shards (`signmae_core.data.shards`, docs/SHARDS.md).

The data and shard stages run once on the tiny config (oracle extraction, mask fields). The
expectations come from the decode stage's clip files and the masks stage's field files read
their own way (`ClipDataset` over the clip files, `FieldReader`), from `tarfile`, and from the
documented flip rule, never from the shard reader under test.
"""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from signmae_core.config import load_config
from signmae_core.data import ClipDataset, ClipRecord, Sampling
from signmae_core.data.shards import (
    MissingShardError,
    RepeatedViews,
    ShardClips,
    ShardOpener,
    ShardSet,
    ShardStream,
    decode_jpegs,
    device_clip_views,
    shard_refs,
)
from signmae_core.masking.fields import FIELD_NAMES
from signmae_core.masking.storage import FieldReader
from signmae_core.train.batches import EpochBatches, collate

STAGES = ["ingest", "decode", "extract", "masks", "shard", "shard_fields"]
OVERRIDES = ["extract.backend=oracle", "masking.sampler=segmentation"]
CLIPS = 6


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> dict[str, Any]:
    """The tiny config's data and shard stages; the folders of their outputs."""
    from pipelines.runner import run_stages
    from signmae_core.synth import ensure_generated

    root = tmp_path_factory.mktemp("shard-loader")
    overrides = [f"store.root={root / 'store'}", f"datasets.0.root={root / 'data'}", *OVERRIDES]
    cfg = load_config("ci_tiny", overrides)
    ensure_generated(root / "data", cfg.synth)
    run_stages(cfg, STAGES)

    def folder(stage: str) -> Path:
        found = [p for p in (root / "store" / "synthetic" / stage).iterdir()
                 if (p / "_stage.json").is_file()]
        assert len(found) == 1
        return found[0]

    return {"cfg": cfg, "overrides": overrides, "root": root,
            **{stage: folder(stage) for stage in STAGES}}


def _sets(store: dict[str, Any], shard_folder: Path | None = None, fields: bool = True
          ) -> list[ShardSet]:
    folder = shard_folder or store["shard"]
    index = json.loads((store["shard"] / "index.json").read_text())
    return [ShardSet.from_index("synthetic", str(folder), index,
                                fields_folder=str(store["shard_fields"]) if fields else None)]


def _sampling(store: dict[str, Any], **changes: Any) -> Sampling:
    from dataclasses import replace

    return replace(Sampling.from_config(store["cfg"]), **changes)


def _file_reader(store: dict[str, Any], video_ids: list[str], sampling: Sampling) -> ClipDataset:
    """The map-style reader over the decode stage's clip files and the masks stage's fields."""
    rows = {r["video_id"]: r for r in pq.read_table(store["decode"] / "clips.parquet").to_pylist()}
    labels = {r["video_id"]: r["label_id"]
              for r in pq.read_table(store["shard"] / "samples.parquet").to_pylist()}
    records = [ClipRecord(v, str(store["decode"] / rows[v]["clip"]), labels[v], "", "synthetic")
               for v in video_ids]
    fields = FieldReader(sorted(str(p) for p in (store["masks"] / "fields").iterdir()))
    return ClipDataset(records, sampling, fields={"synthetic": fields})


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["video_id"] == b["video_id"] and a["label"] == b["label"]
    assert torch.equal(a["clips"], b["clips"]), a["video_id"]
    assert a["has_fields"] and b["has_fields"]
    np.testing.assert_array_equal(a["fields"], b["fields"])


# ---- the readers ------------------------------------------------------------------------------
def test_both_shard_readers_give_the_clip_files_items_for_the_same_clip(store) -> None:
    sampling = _sampling(store)
    indexed = ShardClips(_sets(store), sampling, ShardOpener(), with_fields=True)
    ids = [r.video_id for r in indexed.records]
    assert len(ids) == CLIPS and [r.stable_id for r in indexed.records] == list(range(CLIPS))
    files = _file_reader(store, ids, sampling)
    stream = ShardStream(shard_refs(_sets(store)), sampling, ShardOpener(), seed=3,
                         with_fields=True, buffer=4)
    stream.set_epoch(2)
    streamed = {item["video_id"]: item for item in stream}
    assert sorted(streamed) == sorted(ids)  # every clip once, whatever the buffer's order
    for i, video_id in enumerate(ids):
        expected = files.load(i, np.random.default_rng([3, 2, i]))  # (seed, epoch, stable id)
        _same(indexed.load(i, np.random.default_rng([3, 2, i])), expected)
        _same(streamed[video_id], expected)
        assert streamed[video_id]["sample_index"] == i and streamed[video_id]["sample_epoch"] == 2


def test_a_flip_swaps_the_hand_fields(store) -> None:
    keep = _sampling(store, flip_prob=0.0)
    flip = _sampling(store, flip_prob=1.0)
    a = ShardClips(_sets(store), keep, ShardOpener(), with_fields=True)
    b = ShardClips(_sets(store), flip, ShardOpener(), with_fields=True)
    left, right = FIELD_NAMES.index("left_hand"), FIELD_NAMES.index("right_hand")
    seen_hands = 0
    for i in range(len(a)):
        x = a.load(i, np.random.default_rng([0, 0, i]))
        y = b.load(i, np.random.default_rng([0, 0, i]))
        assert torch.equal(y["clips"], x["clips"].flip(-1))
        np.testing.assert_array_equal(y["fields"][left], x["fields"][right][..., ::-1])
        np.testing.assert_array_equal(y["fields"][right], x["fields"][left][..., ::-1])
        seen_hands += int(x["fields"][left].any() or x["fields"][right].any())
    assert seen_hands > 0  # the test saw hands to swap


# ---- damage -----------------------------------------------------------------------------------
def _damaged_copy(store: dict[str, Any], tmp_path: Path, how: str) -> tuple[Path, str]:
    """A copy of the clip shard set with one `.smclip` member damaged (`corrupt`: its header
    overwritten in place) or the first shard cut in that member (`truncate`); returns the copy
    and the damaged sample's key."""
    target = tmp_path / "shard"
    shutil.copytree(store["shard"], target)
    shard = sorted((target / "shards").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".smclip")]
    victim = members[1]
    data = bytearray(shard.read_bytes())
    if how == "corrupt":
        data[victim.offset_data : victim.offset_data + 16] = b"\xff" * 16
    else:
        del data[victim.offset_data + victim.size // 2 :]
    shard.write_bytes(bytes(data))
    return target, victim.name.split(".")[0]


@pytest.mark.parametrize("how", ["corrupt", "truncate"])
def test_a_damaged_member_is_skipped_with_a_warning_and_counted(
    store, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder, key = _damaged_copy(store, tmp_path, how)
    sampling = _sampling(store)
    with caplog.at_level(logging.WARNING, logger="signmae_core.data.shards"):
        stream = ShardStream(shard_refs(_sets(store, folder)), sampling, ShardOpener(),
                             with_fields=True, shuffle_shards=False)
        got = [item["video_id"] for item in stream]
    assert key not in got and stream.skipped.count >= 1
    if how == "corrupt":  # only that sample is lost
        assert len(got) == CLIPS - 1 and stream.skipped.count == 1
    assert any("skipping" in r.message for r in caplog.records)
    indexed = ShardClips(_sets(store, folder), sampling, ShardOpener(), with_fields=True)
    items = [indexed.load(i, np.random.default_rng(i)) for i in range(len(indexed))]
    assert key not in {item["video_id"] for item in items}  # replaced by the next readable one
    assert indexed.skipped.count >= 1


def test_a_missing_shard_is_an_error_naming_it(store, tmp_path: Path) -> None:
    folder = tmp_path / "shard"
    shutil.copytree(store["shard"], folder)
    gone = sorted((folder / "shards").glob("*.tar"))[-1]
    gone.unlink()
    with pytest.raises(MissingShardError, match=str(gone)):
        list(ShardStream(shard_refs(_sets(store, folder)), _sampling(store), ShardOpener()))
    with pytest.raises(MissingShardError, match=str(gone)):
        ShardClips(_sets(store, folder), _sampling(store), ShardOpener())


# ---- splitting and epochs ---------------------------------------------------------------------
def test_split_by_node_and_worker_reads_every_clip_once_and_resampling_has_a_known_length(
    store,
) -> None:
    refs = shard_refs(_sets(store, fields=False))
    assert len(refs) >= 2
    seen = []
    for rank in range(2):
        stream = ShardStream(refs, _sampling(store), ShardOpener(), rank=rank, world_size=2)
        seen += [item["sample_index"] for item in stream]
    assert sorted(seen) == list(range(CLIPS))
    resampled = ShardStream(refs, _sampling(store), ShardOpener(), resample=True,
                            samples_per_epoch=10, rank=1, world_size=2)
    assert len(list(resampled)) == 5
    loader = torch.utils.data.DataLoader(
        ShardStream(refs, _sampling(store), ShardOpener()), batch_size=None, num_workers=2)
    assert sorted(item["sample_index"] for item in loader) == list(range(CLIPS))


# ---- training ---------------------------------------------------------------------------------
def test_training_from_shards_gives_the_clip_files_first_step_loss(store) -> None:
    from signmae_core.train.build import build_pretraining

    cfg = store["cfg"]
    sampling = Sampling.from_config(cfg)
    indexed = ShardClips(_sets(store), sampling, ShardOpener(), with_fields=True)
    files = _file_reader(store, [r.video_id for r in indexed.records], sampling)
    losses = []
    for reader in (indexed, files):
        batch = next(iter(EpochBatches(len(reader), reader.load, 4, seed=cfg.pretrain.seed,
                                       collate_fn=collate)))
        torch.manual_seed(cfg.pretrain.seed)
        model, task, _ = build_pretraining(cfg, with_fields=True)
        loss, _ = task(model, batch, torch.device("cpu"))
        losses.append(float(loss.detach()))
    assert losses[0] == losses[1] and np.isfinite(losses[0])


def test_k_views_of_a_clip_differ_in_crop_and_mask_and_resume_exactly(store) -> None:
    from signmae_core.models import token_grid
    from signmae_core.train.build import make_mask_fn

    cfg = store["cfg"]
    reader = ShardClips(_sets(store), Sampling.from_config(cfg), ShardOpener(), with_fields=True)
    batches = RepeatedViews(reader, 2, views=3, seed=1)
    source = iter(batches)
    first, second = next(source), next(source)
    assert first["clips"].shape[0] == 6
    assert first["sample_view"].tolist() == [0, 1, 2, 0, 1, 2]
    assert first["sample_index"][0] == first["sample_index"][1] == first["sample_index"][2]
    assert not torch.equal(first["clips"][0], first["clips"][1])
    assert not torch.equal(first["clips"][1], first["clips"][2])
    mask, _ = make_mask_fn(cfg, "tube")(first, token_grid(cfg.model), torch.device("cpu"))
    assert not torch.equal(mask[0], mask[1]) and not torch.equal(mask[1], mask[2])
    # view 0 is the single-view item of the same clip and epoch
    one = reader.load(int(first["sample_index"][0]),
                      np.random.default_rng([1, 0, int(first["sample_index"][0])]))
    assert torch.equal(one["clips"], first["clips"][0])
    resumed = next(iter(batches.start_at(first["clips"].shape[0])))  # the trainer counts views
    assert torch.equal(resumed["clips"], second["clips"])


# ---- device decode ----------------------------------------------------------------------------
def _clip_and_draws(store: dict[str, Any]) -> tuple[Any, list[Any], Sampling]:
    from signmae_core.data.dataset import BytesClip, draw_view

    sampling = _sampling(store)
    shard = sorted((store["shard"] / "shards").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".smclip"))
        clip = BytesClip.parse(tar.extractfile(member).read())
    rng = np.random.default_rng(5)
    return clip, [draw_view(clip, sampling, rng, 0, 1) for _ in range(2)], sampling


def test_the_batched_decode_path_matches_the_per_clip_transform_on_the_cpu(store) -> None:
    from signmae_core.data.dataset import clip_items

    clip, draws, sampling = _clip_and_draws(store)
    items = clip_items(clip, sampling, rng=np.random.default_rng(5), repeats=2)
    views = device_clip_views(clip.jpegs, clip.height, clip.width, draws, sampling.img_size,
                              "cpu")
    assert views.shape == (2, 3, sampling.num_frames, sampling.img_size, sampling.img_size)
    for v in range(2):  # libjpeg-turbo in both decoders; resize rounding may move a level
        diff = (views[v].int() - items[v]["clips"].int()).abs()
        assert diff.max() <= 2 and diff.float().mean() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvjpeg)")
def test_gpu_decode_matches_the_cpu_decode(store) -> None:
    clip, draws, sampling = _clip_and_draws(store)
    cpu = decode_jpegs(clip.jpegs[:4], "cpu")
    gpu = decode_jpegs(clip.jpegs[:4], "cuda").cpu()
    assert (cpu.int() - gpu.int()).abs().float().mean() < 1.0
    views = device_clip_views(clip.jpegs, clip.height, clip.width, draws, sampling.img_size,
                              "cuda")
    assert views.device.type == "cuda" and views.dtype == torch.uint8


# ---- member offsets from samples.parquet -------------------------------------------------------
class _CountingOpener(ShardOpener):
    """A local opener that counts the reads made on tar files (what an object store bills as
    requests)."""

    def __init__(self) -> None:
        super().__init__()
        self.tar_reads = 0

    def file(self, path: str) -> Any:
        handle, opener = super().file(path), self

        class Counted:
            def read_at(self, size: int, offset: int) -> bytes:
                opener.tar_reads += 1
                return handle.read_at(size, offset)

            def read(self, *args: Any) -> bytes:
                opener.tar_reads += 1
                return handle.read(*args)

            def __getattr__(self, name: str) -> Any:
                return getattr(handle, name)

        return Counted()


def test_shard_clips_find_members_in_samples_parquet_without_reading_the_tars(
    store, tmp_path: Path
) -> None:
    sampling = _sampling(store)
    opener = _CountingOpener()
    indexed = ShardClips(_sets(store), sampling, opener, with_fields=True)
    assert opener.tar_reads == 0 and len(indexed) == CLIPS  # no header scan at start
    # where tarfile finds the members (the expectation, not the reader's own bookkeeping)
    where = {}
    for stage in ("shard", "shard_fields"):
        for tar_path in sorted((store[stage] / "shards").glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                where.update({(str(tar_path), m.name.split(".", 1)[0], m.name.split(".", 1)[1]):
                              (m.offset_data, m.size) for m in tar.getmembers()})
    for r in indexed.records:
        key = r.video_id
        assert (r.clip.offset, r.clip.size) == where[r.clip_path, key, "smclip"]
        assert (r.fields.offset, r.fields.size) == where[r.fields_path, key, "fields.npy.gz"]
    # a set without the table (older shard versions) is scanned and gives the same items
    old_shard, old_fields = tmp_path / "shard", tmp_path / "fields"
    shutil.copytree(store["shard"], old_shard)
    shutil.copytree(store["shard_fields"], old_fields)
    (old_shard / "samples.parquet").unlink()
    (old_fields / "samples.parquet").unlink()
    index = json.loads((old_shard / "index.json").read_text())
    scanned = ShardClips([ShardSet.from_index("synthetic", str(old_shard), index,
                                              fields_folder=str(old_fields))],
                         sampling, opener, with_fields=True)
    assert opener.tar_reads > 0
    assert [r.label for r in scanned.records] == [r.label for r in indexed.records]
    for i in range(len(indexed)):
        _same(scanned.load(i, np.random.default_rng([0, 0, i])),
              indexed.load(i, np.random.default_rng([0, 0, i])))


# ---- decoding on the device -------------------------------------------------------------------
def test_the_device_decoder_gives_the_loaders_batches_on_the_cpu(store) -> None:
    """The same items through both paths: clips decoded and cut in the loader, and JPEG bytes +
    draws decoded and cut by `decode_batch` on the CPU. Measured here: identical (max 0)."""
    from signmae_core.data.device import decode_batch

    sampling = _sampling(store)
    loader = ShardClips(_sets(store), sampling, ShardOpener(), with_fields=True)
    raw = ShardClips(_sets(store), sampling, ShardOpener(), with_fields=True, decode=False)
    worst, pooled, referenced = 0, 0, 0
    for a, b in zip(RepeatedViews(loader, 2, views=2, seed=4, epochs=2),
                    RepeatedViews(raw, 2, views=2, seed=4, epochs=2), strict=True):
        assert "clips" not in b
        assert len({id(j) for j in b["jpegs"]}) == len(b["jpegs"])  # each frame object once
        assert set(b["frame_ref"].flatten().tolist()) == set(range(len(b["jpegs"])))
        pooled, referenced = pooled + len(b["jpegs"]), referenced + b["frame_ref"].numel()
        fields, b = b["fields"], decode_batch(b, sampling.img_size, "cpu")
        assert b["clips"].shape == a["clips"].shape and b["clips"].dtype == torch.uint8
        worst = max(worst, int((b["clips"].int() - a["clips"].int()).abs().max()))
        assert torch.equal(fields, a["fields"]) and torch.equal(b["fields"], a["fields"])
        for key in ("label", "sample_index", "sample_epoch", "sample_view", "has_fields"):
            assert torch.equal(b[key], a[key]), key
        assert b["video_id"] == a["video_id"]
    assert worst <= 1, worst  # measured: 0 (both decoders are libjpeg-turbo)
    assert pooled < referenced  # views of a clip share their decoded frames


def test_training_with_device_decode_on_the_cpu_follows_the_cpu_loader(store) -> None:
    from signmae_core.config import TrainConfig
    from signmae_core.data.device import DeviceDecode
    from signmae_core.train import Trainer
    from signmae_core.train.build import build_pretraining

    cfg = store["cfg"]
    losses = []
    for decode in (True, False):
        reader = ShardClips(_sets(store), Sampling.from_config(cfg), ShardOpener(),
                            with_fields=True, decode=decode)
        torch.manual_seed(0)
        model, task, _ = build_pretraining(cfg, with_fields=True)
        train = TrainConfig(batch_size=2, device="cpu", lr=1e-3, log_every=1)
        prepare = None if decode else DeviceDecode(cfg.model.img_size)
        result = Trainer(model, task, train, total_steps=3, prepare=prepare).fit(
            RepeatedViews(reader, 2, views=2, seed=1))
        losses.append([result.losses[s] for s in sorted(result.losses)])
    assert len(losses[0]) == 3 and losses[0] == losses[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvjpeg)")
def test_cuda_decode_batch_is_close_to_the_cpu_path(store) -> None:
    from signmae_core.data.device import decode_batch

    sampling = _sampling(store)
    raw = ShardClips(_sets(store), sampling, ShardOpener(), with_fields=True, decode=False)
    batch = next(iter(RepeatedViews(raw, 2, views=2, seed=4)))
    cpu = decode_batch(dict(batch), sampling.img_size, "cpu")["clips"]
    gpu = decode_batch(dict(batch), sampling.img_size, "cuda")["clips"]
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    diff = (gpu.cpu().int() - cpu.int()).abs().float()
    assert diff.mean() < 1.0 and diff.max() <= 16, (diff.mean(), diff.max())


# ---- the stream as a training reader ----------------------------------------------------------
def _stream_batches(store: dict[str, Any], **kwargs: Any) -> Any:
    from signmae_core.data.shards import StreamBatches

    stream = ShardStream(shard_refs(_sets(store)), _sampling(store), ShardOpener(), seed=3,
                         with_fields=True, repeats=2, buffer=3)
    return StreamBatches(stream, batch_size=4, partitions=2, epoch_clips=12, views=2, **kwargs)


def _take(source: Any, count: int) -> list[dict[str, Any]]:
    import itertools

    return list(itertools.islice(iter(source), count))


def test_stream_batches_resume_exactly_and_do_not_depend_on_workers(store) -> None:
    batches = _take(_stream_batches(store), 8)  # 3 batches per epoch: 12 clips / 2 / 2
    assert [int(b["sample_epoch"][0]) for b in batches] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert all(b["clips"].shape[0] == 8 for b in batches)  # 4 clips x 2 views
    # an item is the clip files' item of its clip, drawn from (seed, epoch, draw id)
    files = _file_reader(store, [r.video_id for r in ShardClips(
        _sets(store), _sampling(store), ShardOpener()).records], _sampling(store))
    ids = [r.video_id for r in files.records]
    first = batches[4]
    for row in (0, 2, 4, 6):
        draw, epoch = int(first["sample_index"][row]), int(first["sample_epoch"][row])
        views = files.load_views(ids.index(first["video_id"][row]),
                                 np.random.default_rng([3, epoch, draw]), repeats=2)
        for v in range(2):
            assert torch.equal(first["clips"][row + v], views[v]["clips"])
            np.testing.assert_array_equal(first["fields"][row + v].numpy(), views[v]["fields"])

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return (torch.equal(a["clips"], b["clips"]) and a["video_id"] == b["video_id"]
                and torch.equal(a["sample_index"], b["sample_index"]))

    resumed = _take(_stream_batches(store).start_at(4 * 8), 4)  # mid-epoch 1
    assert all(same(a, b) for a, b in zip(resumed, batches[4:], strict=True))
    rng = torch.get_rng_state()
    in_processes = _take(_stream_batches(store, workers=2), 8)
    assert all(same(a, b) for a, b in zip(in_processes, batches, strict=True))
    assert torch.equal(torch.get_rng_state(), rng)  # dropout's RNG untouched: resume holds
    halves = [_take(_stream_batches(store, rank=r, world_size=2), 8) for r in range(2)]
    for whole, first_half, second_half in zip(batches, *halves, strict=True):
        rows = torch.cat([first_half["sample_index"], second_half["sample_index"]])
        assert sorted(rows.tolist()) == sorted(whole["sample_index"].tolist())


def test_the_stream_settings_shape_the_data_hash_only_with_the_stream_reader() -> None:
    from signmae_core.config import DataConfig

    default = DataConfig()
    assert "reader" not in default.output_dump()  # versions made before the stream stay
    assert default.model_copy(update={"stream_partitions": 4}).output_hash() == \
        default.output_hash()
    assert default.model_copy(update={"decode_on": "device"}).output_hash() == \
        default.output_hash()
    stream = DataConfig(reader="stream")
    assert stream.output_hash() != default.output_hash()
    assert stream.model_copy(update={"stream_partitions": 4}).output_hash() != \
        stream.output_hash()
    assert stream.model_copy(update={"stream_workers": 0}).output_hash() == stream.output_hash()
