"""WebDataset shards (`signmae run shard`, `signmae run shard_fields`; docs/SHARDS.md).

The data stages run once on the tiny config (oracle extraction); each test shards a copy of that
store. Expectations come from the decode and masks outputs read their own way (the clip files as
bytes, `FieldReader`), from `tarfile`, and from the two WebDataset readers, never from the shard
code under test.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from cli_runs import kill_at

from pipelines.cli import main
from pipelines.dag import Plan
from signmae_core.config import ShardConfig, load_config
from signmae_core.masking.storage import FieldReader
from signmae_core.shards import (
    ShardWriter,
    cut,
    iter_shard_samples,
    sample_fields,
    sample_key,
    video_id_of,
)

DATA_STAGES = ["ingest", "decode", "extract", "masks"]
SHARD_STAGES = ["shard", "shard_fields"]
CLIPS = 6  # ci_tiny: 2 signers x 3 classes, one split each


def _overrides(store: str | Path, data: Path) -> list[str]:
    return [f"store.root={store}", f"datasets.0.root={data}", "extract.backend=oracle"]


def _args(store: str | Path, data: Path, *extra: str) -> list[str]:
    sets = [*_overrides(store, data), *extra]
    return ["-c", "ci_tiny", *[a for o in sets for a in ("--set", o)]]


def _plan(store: str | Path, data: Path, *extra: str) -> Plan:
    return Plan.from_config(load_config("ci_tiny", [*_overrides(store, data), *extra]))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder(store: Path, stage: str) -> Path:
    folders = [p for p in (store / "synthetic" / stage).iterdir() if (p / "_stage.json").is_file()]
    assert len(folders) == 1, folders
    return folders[0]


def _tars(folder: Path) -> list[Path]:
    return sorted((folder / "shards").glob("*.tar"))


def _files(folder: Path) -> dict[str, str]:
    """sha256 of every file of a stage folder but its record (which holds times)."""
    return {str(p.relative_to(folder)): _sha(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "_stage.json"}


@pytest.fixture(scope="module")
def data_store(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> tuple[Path, Path]:
    """(store with the data stages done, synthetic data folder)."""
    from signmae_core.synth import ensure_generated

    root = tmp_path_factory.mktemp("shards")
    data, store = root / "synthetic", root / "store"
    ensure_generated(data, load_config("ci_tiny").synth)
    assert main(["run", *DATA_STAGES, *_args(store, data)]) == 0
    return store, data


def _copy(data_store: tuple[Path, Path], target: Path) -> Path:
    shutil.copytree(data_store[0], target, copy_function=shutil.copy2)
    return target


@pytest.fixture(scope="module")
def sharded(data_store: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the data store with both shard stages run."""
    store = _copy(data_store, tmp_path_factory.mktemp("sharded") / "store")
    assert main(["run", *SHARD_STAGES, *_args(store, data_store[1])]) == 0
    return store


# ---- the format, on its own ---------------------------------------------------------------------
def test_keys_are_dot_free_one_to_one_and_readable_ids_stay_as_they_are() -> None:
    ids = ["videos__s00_c000_r00", "a.b", "a~2eb", "a/b", "a b", "ünï", "~", "a-b_c"]
    keys = [sample_key(v) for v in ids]
    assert keys[0] == ids[0] and keys[-1] == ids[-1]
    assert keys[1] == "a~2eb" and keys[2] == "a~7e2eb"  # "~" itself is escaped
    assert len(set(keys)) == len(ids)
    assert all("." not in k and "/" not in k and " " not in k for k in keys)
    assert all(k.isascii() for k in keys)
    assert [video_id_of(k) for k in keys] == ids


def test_cut_closes_a_shard_at_max_samples_or_before_max_bytes() -> None:
    assert cut([10] * 7, max_samples=3, max_bytes=10**9) == [(0, 3), (3, 6), (6, 7)]
    assert cut([4, 4, 4, 9, 1], max_samples=100, max_bytes=10) == [(0, 2), (2, 3), (3, 5)]
    assert cut([50, 1], max_samples=100, max_bytes=10) == [(0, 1), (1, 2)]  # alone when too big
    assert cut([], max_samples=1, max_bytes=1) == []


def test_a_shard_is_a_plain_tar_with_fixed_headers_and_the_same_bytes_every_time() -> None:
    def write() -> bytes:
        out = io.BytesIO()
        shard = ShardWriter(out)
        shard.add("a", {"smclip": b"x" * 700, "json": b"{}", "cls": b"2"})
        shard.add("b", {"smclip": b"y" * 3, "json": b"{}"})  # unlabeled: no cls
        shard.close()
        assert shard.bytes == len(out.getvalue())
        assert shard.sha256 == hashlib.sha256(out.getvalue()).hexdigest()
        return out.getvalue()

    first = write()
    time.sleep(1.1)  # a header carrying the time would differ now
    assert write() == first
    assert len(first) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a.cls", "a.json", "a.smclip", "b.json", "b.smclip"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
            (0, 0, 0, "", "", 0o644)}
        assert tar.extractfile("a.smclip").read() == b"x" * 700
    samples = list(iter_shard_samples(io.BytesIO(first)))
    assert [s["__key__"] for s in samples] == ["a", "b"] and "cls" not in samples[1]
    shard = ShardWriter(io.BytesIO())
    shard.add("b", {"x": b""})
    with pytest.raises(ValueError, match="keys must increase"):
        shard.add("a", {"x": b""})


def test_member_headers_are_the_ones_tarfile_writes_long_names_included() -> None:
    from signmae_core.shards.format import member_header

    for name, size in [("a.cls", 1), ("k" * 96 + ".json", 0), ("k" * 150 + ".smclip", 512),
                       ("k~2e.fields.npy.gz", 8**11 - 1), ("x.smclip", 8**11 + 5)]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o644, "", ""
        assert member_header(name, size) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
    out = io.BytesIO()
    shard = ShardWriter(out)
    shard.add("k" * 150, {"json": b"{}"})
    shard.close()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getnames() == ["k" * 150 + ".json"]


def _clip_file(path: Path, video_id: str, frames: int = 3) -> bytes:
    from signmae_core.clips import ClipMeta, write_clip_jpegs

    meta = ClipMeta(video_id=video_id, fps=25.0, height=8, width=8, num_frames=frames,
                    source_path=f"{video_id}.mp4", source_width=16, source_height=16,
                    source_fps=50.0, window=(4, 4 + 2 * frames),
                    frame_indices=list(range(4, 4 + 2 * frames, 2)), crop_box=(0.0, 0.0, 16.0),
                    jpeg_quality=90)
    write_clip_jpegs(path, [bytes([i]) * (10 + i) for i in range(frames)], meta)
    return path.read_bytes()


def test_a_clip_sample_has_its_clip_as_it_is_metadata_and_a_label_only_when_labelled(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from pipelines.shard import ShardJob, write_clip_samples
    from signmae_core.store import ArtifactStore

    labelled = _clip_file(tmp_path / "a.smclip", "a")
    unlabelled = _clip_file(tmp_path / "b.smclip", "b", frames=2)
    (tmp_path / "c.smclip").write_bytes(_clip_file(tmp_path / "c.smclip", "c")[:-5])  # truncated
    specs = [
        {"video_id": v, "key": v, "path": str(tmp_path / f"{v}.smclip"), "split": "train",
         "signer": "s1", "label": label, "label_id": label_id}
        for v, label, label_id in (("a", "hello", 7), ("b", None, None), ("c", "x", 1))
    ]
    ctx = SimpleNamespace(store=ArtifactStore(str(tmp_path / "store")),
                          key=SimpleNamespace(dataset="d"))
    out = io.BytesIO()
    shard = ShardWriter(out)
    rows = write_clip_samples(ctx, ShardJob("shards/train-000000.tar", "train", "", specs), shard)
    shard.close()
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert "truncated" in rows[2]["error"]
    samples = list(iter_shard_samples(io.BytesIO(out.getvalue())))
    assert [s["__key__"] for s in samples] == ["a", "b"]
    assert samples[0]["smclip"] == labelled and samples[1]["smclip"] == unlabelled
    assert samples[0]["cls"] == b"7" and "cls" not in samples[1]
    info = json.loads(samples[1]["json"])
    assert info == {"key": "b", "video_id": "b", "dataset": "d", "split": "train",
                    "signer": "s1", "label": None, "label_id": None, "window": [4, 8],
                    "fps": 25.0, "source_fps": 50.0, "num_frames": 2, "size": [8, 8]}


def test_shard_settings_shape_the_clip_shards_and_masks_only_the_field_shards() -> None:
    assert ShardConfig.runtime_fields() == ["workers"]
    base = _plan("/s", Path("/d"))
    versions = {s: base.version(base.key(s, "synthetic")) for s in SHARD_STAGES}
    more = _plan("/s", Path("/d"), "shard.workers=1")
    assert {s: more.version(more.key(s, "synthetic")) for s in SHARD_STAGES} == versions
    masks = _plan("/s", Path("/d"), "masks.dilation=2")
    assert masks.version(masks.key("shard", "synthetic")) == versions["shard"]
    assert masks.version(masks.key("shard_fields", "synthetic")) != versions["shard_fields"]
    small = _plan("/s", Path("/d"), "shard.max_samples=1")
    assert small.version(small.key("shard", "synthetic")) != versions["shard"]


# ---- what the stages write ----------------------------------------------------------------------
def _decode_rows(store: Path) -> dict[str, dict[str, Any]]:
    rows = pq.read_table(_folder(store, "decode") / "clips.parquet").to_pylist()
    return {r["video_id"]: r for r in rows if r["status"] == "ok"}


def test_webdataset_reads_both_shard_sets_as_they_are(sharded: Path,
                                                      data_store: tuple[Path, Path]) -> None:
    import webdataset as wds

    clips, fields = _folder(sharded, "shard"), _folder(sharded, "shard_fields")
    decode, rows = _folder(sharded, "decode"), _decode_rows(sharded)
    index = json.loads((clips / "index.json").read_text())
    assert [s["path"] for s in index["shards"]] == [
        f"shards/{p.name}" for p in _tars(clips)]
    assert [p.name for p in _tars(fields)] == [p.name for p in _tars(clips)]
    for entry in index["shards"]:
        assert _sha(clips / entry["path"]) == entry["sha256"]
        assert (clips / entry["path"]).stat().st_size == entry["bytes"]
    urls = [str(clips / s["path"]) for s in index["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert len(samples) == CLIPS == index["samples"]
    for sample in samples:
        row = rows[sample["json"]["video_id"]]
        assert sample["__key__"] == row["video_id"]  # ci_tiny's ids are keys as they are
        assert sample["smclip"] == (decode / row["clip"]).read_bytes()
        assert sample["cls"] == row["label_id"]
        assert {k: sample["json"][k] for k in ("split", "signer", "label", "label_id")} == {
            k: row[k] for k in ("split", "signer", "label", "label_id")}
        assert sample["json"]["num_frames"] == row["num_frames"]
        assert Path(sample["__url__"]).name.startswith(row["split"] + "-")
    for url in urls:  # sorted keys within a shard
        keys = [s["__key__"] for s in wds.WebDataset([url], shardshuffle=False)]
        assert keys == sorted(keys)

    field_urls = [str(fields / s["path"]) for s in index["shards"]]
    reader = FieldReader(sorted(str(p) for p in (_folder(sharded, "masks") / "fields").glob("*")))
    field_samples = list(wds.WebDataset(field_urls, shardshuffle=False).decode())
    assert [s["__key__"] for s in field_samples] == [s["__key__"] for s in samples]
    for sample in field_samples:
        expected = reader.get(sample["fields.json"]["video_id"])
        assert sample["fields.npy.gz"].dtype == np.float16
        np.testing.assert_array_equal(sample["fields.npy.gz"], expected)


def test_ray_data_reads_both_shard_sets_as_they_are(sharded: Path, ray_local: None) -> None:
    import ray.data

    clips, fields = _folder(sharded, "shard"), _folder(sharded, "shard_fields")
    decode, rows = _folder(sharded, "decode"), _decode_rows(sharded)
    got = ray.data.read_webdataset([str(p) for p in _tars(clips)]).take_all()
    assert sorted(r["__key__"] for r in got) == sorted(rows)
    for row in got:
        assert row["smclip"] == (decode / rows[row["__key__"]]["clip"]).read_bytes()
        assert row["cls"] == rows[row["__key__"]]["label_id"]
        assert row["json"]["video_id"] == row["__key__"]
    reader = FieldReader(sorted(str(p) for p in (_folder(sharded, "masks") / "fields").glob("*")))
    got = ray.data.read_webdataset([str(p) for p in _tars(fields)]).take_all()
    assert sorted(r["__key__"] for r in got) == sorted(rows)
    for row in got:  # Ray's decoder leaves .gz members as bytes
        np.testing.assert_array_equal(sample_fields(row), reader.get(row["__key__"]))


def test_a_reshard_is_byte_identical(sharded: Path, data_store: tuple[Path, Path],
                                     tmp_path: Path) -> None:
    other = _copy(data_store, tmp_path / "other")
    args = _args(other, data_store[1])
    time.sleep(1.1)  # anything that depends on the clock differs now
    assert main(["run", *SHARD_STAGES, *args]) == 0
    for stage in SHARD_STAGES:
        assert _files(_folder(other, stage)) == _files(_folder(sharded, stage)), stage
    tars = _tars(_folder(other, "shard"))
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tars}
    time.sleep(1.1)
    assert main(["run", *SHARD_STAGES, *args, "--force"]) == 0
    # written again (a freed inode number may be reused: the mtime tells it too)
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) != stamp for p, stamp in stamps.items())
    for stage in SHARD_STAGES:
        assert _files(_folder(other, stage)) == _files(_folder(sharded, stage)), stage


def test_samples_parquet_says_where_each_read_member_lies(sharded: Path) -> None:
    """Both sets' samples.parquet: one row per sample in shard order, with the offset and size
    of the member readers fetch by byte range, as tarfile finds them."""
    for stage, ext, columns in (("shard", "smclip", ("smclip_offset", "smclip_bytes")),
                                ("shard_fields", "fields.npy.gz",
                                 ("fields_offset", "fields_bytes"))):
        folder = _folder(sharded, stage)
        expected = []
        for tar_path in _tars(folder):
            with tarfile.open(tar_path) as tar:
                expected += [(f"shards/{tar_path.name}", m.name.split(".", 1)[0],
                              m.offset_data, m.size)
                             for m in tar.getmembers() if m.name.split(".", 1)[1] == ext]
        rows = pq.read_table(folder / "samples.parquet").to_pylist()
        assert len(rows) == len(expected) == CLIPS, stage
        assert [(r["shard"], r["key"], r[columns[0]], r[columns[1]]) for r in rows] == expected
        if stage == "shard_fields":
            assert {r["status"] for r in rows} == {"ok"}


# ---- a killed run --------------------------------------------------------------------------------
def test_a_killed_sharding_run_leaves_nothing_that_looks_complete_and_the_rerun_completes(
    data_store: tuple[Path, Path], tmp_path: Path
) -> None:
    settings = ["shard.max_samples=2", "shard.workers=1"]  # 4 shards of 2, 1, 2, 1 clips
    store = _copy(data_store, tmp_path / "store")
    args = ["run", "shard", *_args(store, data_store[1], *settings)]
    kill_at(args, "sample:3", tmp_path)  # SIGKILLed with the 2nd shard half written

    plan = _plan(store, data_store[1], *settings)
    key = plan.key("shard", "synthetic")
    folder = Path(plan.folder(key))
    assert plan.record(key) is None and plan.state(key).kind == "will run"
    assert not (folder / "_stage.json").exists()
    assert not (folder / "index.json").exists() and not (folder / "samples.parquet").exists()
    shards = sorted(p.name for p in (folder / "shards").iterdir())
    complete = [n for n in shards if not n.startswith(".tmp-")]
    assert complete == ["test-000000.tar"], shards
    assert [n for n in shards if n.startswith(".tmp-") and n.endswith("test-000001.tar")]
    kept = folder / "shards/test-000000.tar"
    kept_inode, kept_sha = kept.stat().st_ino, _sha(kept)

    assert main(args) == 0
    record = json.loads((folder / "_stage.json").read_text())
    assert record["counts"]["ok"] == CLIPS and record["counts"]["shards"] == 4
    assert record["counts"]["kept"] == 1 and record["counts"]["written"] == 3
    assert kept.stat().st_ino == kept_inode and _sha(kept) == kept_sha
    assert not [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]
    assert not (folder / "_shards.json").exists()
    index = json.loads((folder / "index.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [2, 1, 2, 1]

    fresh = _copy(data_store, tmp_path / "fresh")  # the same run, never killed
    assert main(["run", "shard", *_args(fresh, data_store[1], *settings)]) == 0
    assert _files(_folder(fresh, "shard")) == _files(folder)


def test_a_new_mask_version_rewrites_only_the_field_shards(sharded: Path,
                                                           data_store: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    store = _copy(data_store, tmp_path / "store")
    args = _args(store, data_store[1])
    assert main(["run", *SHARD_STAGES, *args]) == 0
    clips, old_fields = _folder(store, "shard"), _folder(store, "shard_fields")
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in clips.rglob("*")}
    old = _files(old_fields)

    new_args = [*args, "--set", "masks.dilation=2"]
    assert main(["run", "masks", *SHARD_STAGES, *new_args]) == 0
    assert list((store / "synthetic/shard").iterdir()) == [clips]  # the same clip shard set
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in clips.rglob("*")} == stamps
    field_folders = sorted(p for p in (store / "synthetic/shard_fields").iterdir()
                           if (p / "_stage.json").is_file())
    assert len(field_folders) == 2 and _files(old_fields) == old
    new_fields = next(p for p in field_folders if p != old_fields)
    assert [p.name for p in _tars(new_fields)] == [p.name for p in _tars(clips)]
    plan = _plan(store, data_store[1], "masks.dilation=2")
    masks_version = plan.version(plan.key("masks", "synthetic"))
    changed = 0
    for new_tar, old_tar, clip_tar in zip(_tars(new_fields), _tars(old_fields), _tars(clips),
                                          strict=True):
        new, before = list(iter_shard_samples(new_tar)), list(iter_shard_samples(old_tar))
        assert [s["__key__"] for s in new] == [s["__key__"] for s in iter_shard_samples(clip_tar)]
        assert {json.loads(s["fields.json"])["mask_version"] for s in new} == {masks_version}
        changed += sum(not np.array_equal(sample_fields(a), sample_fields(b))
                       for a, b in zip(new, before, strict=True))
    assert changed > 0


# ---- an object store ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A local S3-compatible server (moto) on 127.0.0.1 with a bucket `bucket`; yields the
    query string that points a store URI at it."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_EC2_METADATA_DISABLED", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        fs.create_dir("bucket")
        yield f"endpoint_override={endpoint}&scheme=http&region=us-east-1"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_shards_are_written_to_an_object_store(sharded: Path, data_store: tuple[Path, Path],
                                               s3_server: str) -> None:
    """The data stages' outputs copied into S3 keep their versions; the shard stages read them
    there and write the same bytes as into a local store."""
    from signmae_core.store import ArtifactStore

    root = f"s3://bucket/store?{s3_server}"
    s3 = ArtifactStore(root)
    assert not s3.is_local
    pafs.copy_files(str(data_store[0]), s3.base, destination_filesystem=s3.fs)
    plan = _plan(root, data_store[1])
    assert plan.state(plan.key("masks", "synthetic")).done
    assert main(["run", *SHARD_STAGES, *_args(root, data_store[1])]) == 0

    for stage in SHARD_STAGES:
        plan = _plan(root, data_store[1])
        key = plan.key(stage, "synthetic")
        assert plan.state(key).done, plan.state(key)
        folder = plan.folder(key)
        index = json.loads(s3.read_bytes(f"{folder}/index.json"))
        local = _folder(sharded, stage)
        assert index == json.loads((local / "index.json").read_text())
        for entry in index["shards"]:
            data = s3.read_bytes(f"{folder}/{entry['path']}")
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] == _sha(
                local / entry["path"])
        with s3.fs.open_input_stream(f"{folder}/{index['shards'][0]['path']}") as stream:
            assert len(list(iter_shard_samples(stream))) == index["shards"][0]["samples"]
        names = [i.base_name for i in s3.fs.get_file_info(
            pafs.FileSelector(folder, recursive=True))]
        assert not [n for n in names if n.startswith(".tmp-") or n == "_shards.json"]


def test_the_training_readers_read_shards_from_the_object_store(
    sharded: Path, data_store: tuple[Path, Path], s3_server: str
) -> None:
    """The shards written to S3 (previous test) read through the store's filesystem give the
    items of the same shards read locally: byte-range reads (ShardClips) and streams
    (ShardStream, WebDataset)."""
    import torch

    from signmae_core.data import Sampling
    from signmae_core.data.shards import (
        ShardClips,
        ShardOpener,
        ShardSet,
        ShardStream,
        shard_refs,
    )
    from signmae_core.store import ArtifactStore

    root = f"s3://bucket/store?{s3_server}"
    s3 = ArtifactStore(root)
    plan = _plan(root, data_store[1])
    if not plan.state(plan.key("shard_fields", "synthetic")).done:
        pytest.fail("run with the object-store writing test before it (same module)")

    def sets(shard: str, fields: str, index: dict[str, Any]) -> list[ShardSet]:
        return [ShardSet.from_index("synthetic", shard, index, fields_folder=fields)]

    remote_shard = plan.folder(plan.key("shard", "synthetic"))
    remote = sets(remote_shard, plan.folder(plan.key("shard_fields", "synthetic")),
                  json.loads(s3.read_bytes(f"{remote_shard}/index.json")))
    local = sets(str(_folder(sharded, "shard")), str(_folder(sharded, "shard_fields")),
                 json.loads((_folder(sharded, "shard") / "index.json").read_text()))
    sampling = Sampling.from_config(plan.cfg)
    from_s3 = ShardClips(remote, sampling, ShardOpener(s3.fs), with_fields=True)
    from_disk = ShardClips(local, sampling, ShardOpener(), with_fields=True)
    assert len(from_s3) == len(from_disk) > 0
    for i in range(len(from_disk)):
        a = from_s3.load(i, np.random.default_rng([0, 1, i]))
        b = from_disk.load(i, np.random.default_rng([0, 1, i]))
        assert a["video_id"] == b["video_id"] and torch.equal(a["clips"], b["clips"])
        np.testing.assert_array_equal(a["fields"], b["fields"])
    streamed = ShardStream(shard_refs(remote), sampling, ShardOpener(s3.fs), seed=0,
                           with_fields=True, buffer=2)
    streamed.set_epoch(0)
    ids = sorted(item["video_id"] for item in streamed)
    assert ids == sorted(r.video_id for r in from_disk.records)
