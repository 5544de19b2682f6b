"""The training input pipeline over WebDataset shard sets (docs/SHARDS.md, "Training reader").

Two readers over the same shards, one per-clip transform (`signmae_core.data.dataset.clip_items`,
the one `ClipDataset` uses for clip files):

- `ShardClips`: a map-style `ClipDataset` whose clips are shard members, read by byte range
  (each shard's tar headers are scanned once, a few hundred bytes per member). Training's
  default: `EpochBatches` gives its deterministic per-epoch permutation of the stable ids, so a
  run is the same for any number of workers and loader threads and resumes exactly.
- `ShardStream`: a WebDataset streaming pipeline (an `IterableDataset` for a torch DataLoader):
  shard shuffle, sample shuffle buffer, split by node and by DataLoader worker, or resampled
  shards with a known epoch length for distributed training; each clip shard is zipped with its
  field shard (same name, same keys in order).

Every item has `sample_epoch`, `sample_index` (the clip's **stable id**: its position in the
concatenation of the shard sets' shards, in index order) and `sample_view`; its augmentation
is drawn from `default_rng([seed, epoch, stable id])` in both readers, so the same clip in the
same epoch gives the same item, and masks stay a function of (seed, epoch, clip, view).

Shards are opened through a pyarrow filesystem (`ShardOpener`): a local root and `s3://` read
the same way. A missing shard is an error that names it; a corrupt or truncated member is
skipped with a warning and counted (`SkipCounter`), never a crash.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import tarfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import torch

from signmae_core.errors import InputError
from signmae_core.shards.format import load_npy

from .dataset import MISSING, BytesClip, ClipDataset, ClipRecord, Sampling, clip_items

log = logging.getLogger(__name__)

# what a damaged member or shard raises while it is read or parsed
DAMAGE = (tarfile.TarError, ValueError, OSError, EOFError, zlib.error, KeyError)


class MissingShardError(InputError):
    """A shard listed in an index is not in the store."""


# ---- shard sets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardRef:
    """One clip shard (+ its field shard) and the stable id of its first sample."""

    url: str
    samples: int
    first_id: int
    dataset: str = ""
    label_offset: int = 0
    fields_url: str | None = None


@dataclass
class ShardSet:
    """One dataset's shard set, as plain data (it travels to workers): the shards of `splits`
    from its `index.json` (`shards` entries), the folder of its field shards (None: no fields)
    and the offset of its labels in a combined class list."""

    dataset: str
    folder: str
    shards: list[dict[str, Any]]
    fields_folder: str | None = None
    label_offset: int = 0

    @classmethod
    def from_index(cls, dataset: str, folder: str, index: dict[str, Any],
                   splits: Sequence[str] | None = None, fields_folder: str | None = None,
                   label_offset: int = 0) -> ShardSet:
        """The shards of `splits` (all when None), in the index's order."""
        shards = [s for s in index["shards"] if splits is None or s["split"] in splits]
        return cls(dataset, folder, shards, fields_folder, label_offset)


def shard_refs(sets: Sequence[ShardSet]) -> list[ShardRef]:
    """Every shard of `sets` in order, with cumulative stable ids."""
    refs, first = [], 0
    for s in sets:
        for entry in s.shards:
            fields = f"{s.fields_folder}/{entry['path']}" if s.fields_folder else None
            refs.append(ShardRef(f"{s.folder}/{entry['path']}", int(entry["samples"]), first,
                                 s.dataset, s.label_offset, fields))
            first += int(entry["samples"])
    return refs


# ---- opening shards ----------------------------------------------------------------------------
@dataclass
class ShardOpener:
    """Opens shards through a pyarrow filesystem (picklable: LocalFileSystem, S3FileSystem)."""

    fs: pafs.FileSystem = field(default_factory=pafs.LocalFileSystem)

    def _check(self, path: str, exc: Exception) -> None:
        if isinstance(exc, FileNotFoundError) or (
            self.fs.get_file_info(path).type == pafs.FileType.NotFound
        ):
            raise MissingShardError(f"shard {path} is missing") from None
        raise exc

    def stream(self, path: str) -> Any:
        """A sequential input stream (one read of the shard)."""
        try:
            return self.fs.open_input_stream(path)
        except (OSError, FileNotFoundError) as exc:
            self._check(path, exc)

    def file(self, path: str) -> Any:
        """A random-access file (member reads by byte range)."""
        try:
            return self.fs.open_input_file(path)
        except (OSError, FileNotFoundError) as exc:
            self._check(path, exc)


class SkipCounter:
    """Counts damaged members skipped by a reader (per process), warning once per member."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.count += 1
        log.warning("skipping %s: %s: %s", what, type(exc).__name__, exc)

    def __getstate__(self) -> dict[str, Any]:
        return {"count": self.count}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.count = state["count"]
        self.lock = threading.Lock()


# ---- one sample -> items -----------------------------------------------------------------------
def sample_label(sample: dict[str, Any], offset: int) -> int:
    """The `.cls` label shifted onto a combined class list; -1 when the clip has none."""
    raw = sample.get("cls")
    return -1 if raw is None else int(raw) + offset


def sample_field_array(field_sample: dict[str, Any] | None) -> np.ndarray | None:
    """A field sample's (F, T, Hc, Wc) float16 fields, or None (no sample, status failed)."""
    if field_sample is None or "fields.npy.gz" not in field_sample:
        return None
    data = field_sample["fields.npy.gz"]
    if isinstance(data, np.ndarray):
        return data
    return load_npy(gzip.decompress(data))


def sample_items(sample: dict[str, Any], field_sample: dict[str, Any] | None, stable_id: int,
                 epoch: int, ref: ShardRef, sampling: Sampling, seed: int, with_fields: bool,
                 repeats: int = 1) -> list[dict[str, Any]]:
    """A shard sample (+ its field sample) -> `repeats` augmented training items."""
    clip = BytesClip.parse(sample["smclip"], f"{ref.url}:{sample['__key__']}")
    fields = sample_field_array(field_sample) if with_fields else MISSING
    rng = np.random.default_rng([seed, epoch, stable_id])
    items = clip_items(clip, sampling, fields, rng, repeats=repeats)
    meta = json.loads(sample["json"]) if "json" in sample else {}
    for item in items:
        item.update(label=sample_label(sample, ref.label_offset),
                    video_id=meta.get("video_id", sample["__key__"]),
                    sample_epoch=epoch, sample_index=stable_id)
    return items


# ---- the streaming reader ----------------------------------------------------------------------
def _shard_samples(opener: ShardOpener, url: str, skip: SkipCounter) -> Iterator[dict[str, Any]]:
    """The samples of one shard through WebDataset's tar expander; damage is skipped + counted
    (a truncated shard ends early), a missing shard raises."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def handler(exc: Exception) -> bool:
        skip(f"a damaged member of {url}", exc)
        return True

    stream = opener.stream(url)
    try:
        files = tar_file_expander([{"url": url, "stream": stream}], handler=handler)
        yield from group_by_keys(files, handler=handler)
    finally:
        stream.close()


def zip_fields(clips: Iterator[dict[str, Any]], fields: Iterator[dict[str, Any]] | None
               ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Pair each clip sample with the field sample of its key (keys increase in both shards;
    a key missing on the field side pairs with None)."""
    pending: dict[str, Any] | None = None
    for clip in clips:
        key = clip["__key__"]
        while fields is not None:
            if pending is None:
                pending = next(fields, None)
                if pending is None:
                    fields = None
                    break
            if pending["__key__"] < key:
                pending = None
                continue
            break
        match = pending if pending is not None and pending["__key__"] == key else None
        yield clip, match


class ShardStream(torch.utils.data.IterableDataset):
    """WebDataset streaming reader over shard sets (see the module docstring).

    Per epoch (`set_epoch`): without `resample`, the shards in a permutation drawn from
    (seed, epoch) (`shuffle_shards`), split by node (rank) and by DataLoader worker, then a
    sample shuffle buffer of `buffer` samples (0: none) seeded by (seed, epoch, rank, worker).
    With `resample`, each (rank, worker) draws shards with replacement from its own seeded RNG
    and stops after `samples_per_epoch / (world * workers)` clips (WebDataset's `with_epoch`;
    each clip gives `repeats` items). Items carry `sample_epoch`, `sample_index` (stable id)
    and `sample_view`; `skipped.count` counts damaged members this iterator skipped.
    """

    def __init__(self, refs: Sequence[ShardRef], sampling: Sampling, opener: ShardOpener,
                 seed: int = 0, with_fields: bool = False, repeats: int = 1, buffer: int = 0,
                 shuffle_shards: bool = True, resample: bool = False,
                 samples_per_epoch: int | None = None, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if resample and not samples_per_epoch:
            raise ValueError("resampled shards need samples_per_epoch (the epoch length)")
        self.refs, self.sampling, self.opener = list(refs), sampling, opener
        self.seed, self.with_fields, self.repeats, self.buffer = seed, with_fields, repeats, buffer
        self.shuffle_shards, self.resample = shuffle_shards, resample
        self.samples_per_epoch = samples_per_epoch
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skipped = SkipCounter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _split(self) -> tuple[int, int, int, int]:
        """(rank, world, worker, workers) of this iterator."""
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            import torch.distributed as dist

            ready = dist.is_available() and dist.is_initialized()
            rank, world = (dist.get_rank(), dist.get_world_size()) if ready else (0, 1)
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, worker, workers

    def shard_order(self) -> Iterator[ShardRef]:
        """The shards this (rank, worker) reads in this epoch."""
        rank, world, worker, workers = self._split()
        if self.resample:
            rng = random.Random(hash((self.seed, self.epoch, rank, worker)) & 0xFFFFFFFF)
            while True:
                yield self.refs[rng.randrange(len(self.refs))]
        order = list(range(len(self.refs)))
        if self.shuffle_shards:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order).tolist()
        yield from (self.refs[i] for i in order[rank::world][worker::workers])

    def samples(self) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, int, ShardRef]]:
        """(clip sample, field sample or None, stable id, shard) in shard order."""
        for ref in self.shard_order():
            clips = _shard_samples(self.opener, ref.url, self.skipped)
            fields = None
            if self.with_fields and ref.fields_url:
                fields = _shard_samples(self.opener, ref.fields_url, self.skipped)
            for position, (clip, fsample) in enumerate(zip_fields(clips, fields)):
                yield clip, fsample, ref.first_id + position, ref

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from webdataset.filters import _shuffle

        rank, world, worker, workers = self._split()
        source = self.samples()
        if self.buffer > 1:
            rng = random.Random(hash((self.seed, self.epoch, rank, worker)) & 0xFFFFFFFF)
            source = _shuffle(source, bufsize=self.buffer, initial=self.buffer, rng=rng)
        limit = None
        if self.samples_per_epoch:
            limit = max(1, self.samples_per_epoch // (world * workers))
        produced = 0
        for clip, fsample, stable_id, ref in source:
            try:
                items = sample_items(clip, fsample, stable_id, self.epoch, ref, self.sampling,
                                     self.seed, self.with_fields, self.repeats)
            except DAMAGE as exc:
                self.skipped(f"sample {clip.get('__key__')} of {ref.url}", exc)
                continue
            yield from items
            produced += 1
            if limit is not None and produced >= limit:
                return


# ---- the map-style reader ----------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """Where one tar member's bytes are: (offset, size) in the shard file."""

    offset: int
    size: int


def scan_shard(opener: ShardOpener, url: str, skip: SkipCounter
               ) -> list[tuple[str, dict[str, Member]]]:
    """(key, {ext: Member}) of every sample of a shard, in order, from its tar headers only.
    A truncated shard keeps the samples before the break (warned and counted)."""
    handle = opener.file(url)
    samples: list[tuple[str, dict[str, Member]]] = []
    try:
        with tarfile.open(fileobj=handle, mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                base = info.name.rsplit("/", 1)[-1]
                key, _, ext = base.partition(".")
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][ext] = Member(info.offset_data, info.size)
    except DAMAGE as exc:
        skip(f"the rest of {url} (after {len(samples)} samples)", exc)
    finally:
        handle.close()
    return samples


@dataclass(frozen=True)
class ShardRecord(ClipRecord):
    """A `ClipRecord` whose clip is a shard member (`clip_path` is the shard)."""

    stable_id: int = 0
    clip: Member | None = None
    fields_path: str | None = None
    fields: Member | None = None


class ShardClips(ClipDataset):
    """Map-style reader of shard sets: index i is the sample with stable id i (module docstring).

    Items as `ClipDataset` gives them (the same transform); a sample whose member is damaged is
    replaced by the next readable one in stable-id order (warned, counted in `skipped.count`),
    so batches keep their size and no step crashes.
    """

    def __init__(self, sets: Sequence[ShardSet], sampling: Sampling, opener: ShardOpener,
                 with_fields: bool = False, train: bool = True, seed: int = 0,
                 labelled_only: bool = False) -> None:
        self.opener = opener
        self.skipped = SkipCounter()
        self.files: dict[str, Any] = {}
        self._files_lock = threading.Lock()
        records = []
        for ref in shard_refs(sets):
            records += self._scan(ref, with_fields)
        if labelled_only:
            records = [r for r in records if r.label >= 0]
        super().__init__(records, sampling, fields={} if with_fields else None, train=train,
                         seed=seed)

    def _scan(self, ref: ShardRef, with_fields: bool) -> list[ShardRecord]:
        clips = scan_shard(self.opener, ref.url, self.skipped)
        fields: dict[str, Member] = {}
        if with_fields and ref.fields_url:
            for key, members in scan_shard(self.opener, ref.fields_url, self.skipped):
                if "fields.npy.gz" in members:
                    fields[key] = members["fields.npy.gz"]
        if len(clips) < ref.samples:
            log.warning("%s: %d of %d samples readable", ref.url, len(clips), ref.samples)
        out = []
        for position, (key, members) in enumerate(clips):
            label = -1
            if "cls" in members:
                label = int(self.read(ref.url, members["cls"])) + ref.label_offset
            out.append(ShardRecord(key, ref.url, label, "", ref.dataset, ref.first_id + position,
                                   members.get("smclip"), ref.fields_url, fields.get(key)))
        return out

    def read(self, path: str, member: Member) -> bytes:
        """A member's bytes by byte range (one open file per shard, shared by threads)."""
        with self._files_lock:
            handle = self.files.get(path)
            if handle is None:
                handle = self.files[path] = self.opener.file(path)
        data = handle.read_at(member.size, member.offset)
        if len(data) < member.size:
            raise EOFError(f"{path}: member truncated at {len(data)} of {member.size} bytes")
        return bytes(data)

    def open_clip(self, record: ClipRecord) -> BytesClip:
        assert isinstance(record, ShardRecord)
        if record.clip is None:
            raise KeyError(f"{record.clip_path}: sample {record.video_id} has no .smclip")
        return BytesClip.parse(self.read(record.clip_path, record.clip),
                               f"{record.clip_path}:{record.video_id}")

    def _fields_of(self, record: ClipRecord) -> np.ndarray | None:
        assert isinstance(record, ShardRecord)
        if record.fields is None or record.fields_path is None:
            return None
        data = self.read(record.fields_path, record.fields)
        return sample_field_array({"fields.npy.gz": data})

    def load_views(self, index: int, rng: np.random.Generator | None, view: int = 0,
                   num_views: int = 1, repeats: int = 1) -> list[dict[str, Any]]:
        """As `ClipDataset.load_views`; a damaged sample gives the next readable one's views."""
        for step in range(len(self.records)):
            at = (index + step) % len(self.records)
            try:
                return super().load_views(at, rng, view, num_views, repeats)
            except DAMAGE as exc:
                self.skipped(f"sample {self.records[at].video_id} of "
                             f"{self.records[at].clip_path}", exc)
        raise InputError("no readable sample in the shard sets")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["files"], state["_files_lock"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._files_lock = threading.Lock()


# ---- repeated sampling over the deterministic order --------------------------------------------
class RepeatedViews:
    """Batches of `views` views per clip over `EpochBatches` (k = `views`): each clip is read and
    decoded once and gives `views` items with independent crops, flips and masks
    (`sample_view` 0..k-1). A batch holds `batch_size` clips, so `batch_size * k` items; the
    trainer counts items, so `start_at(samples)` resumes at `samples / k` clips."""

    def __init__(self, dataset: ClipDataset, batch_size: int, views: int = 1, **kwargs: Any):
        from signmae_core.train.batches import EpochBatches

        self.views = views
        self.inner = EpochBatches(len(dataset), self._load(dataset, views), batch_size,
                                  collate_fn=self._collate, **kwargs)

    @staticmethod
    def _load(dataset: ClipDataset, views: int) -> Any:
        def load(index: int, rng: np.random.Generator) -> dict[str, Any]:
            return {"views": dataset.load_views(index, rng, repeats=views)}

        return load

    @staticmethod
    def _collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from signmae_core.train.batches import collate

        flat = [{**view, "sample_epoch": item["sample_epoch"],
                 "sample_index": item["sample_index"]}
                for item in items for view in item["views"]]
        return collate(flat)

    def start_at(self, samples: int) -> RepeatedViews:
        out = object.__new__(RepeatedViews)
        out.views, out.inner = self.views, self.inner.start_at(samples // self.views)
        return out

    @property
    def samples_per_epoch(self) -> int:
        return self.inner.samples_per_epoch * self.views

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.inner)


# ---- device decode ------------------------------------------------------------------------------
def decode_jpegs(jpegs: Sequence[bytes], device: torch.device | str = "cpu") -> torch.Tensor:
    """JPEG frames -> (N, 3, H, W) uint8 on `device`, one batched call (nvjpeg on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    out = decode_jpeg(data, mode=ImageReadMode.RGB, device=torch.device(device))
    return torch.stack(list(out))


def device_clip_views(jpegs: Sequence[bytes], height: int, width: int, draws: Sequence[Any],
                      out_size: int, device: torch.device | str) -> torch.Tensor:
    """The views of one clip decoded and transformed on `device`: (k, 3, T, S, S) uint8.

    `draws` are `dataset.draw_view` results (frame indices, box, flip); only the frames the
    views use are decoded. Same crop/resize/flip as `transform_clip` (antialiased bilinear)."""
    import torch.nn.functional as F

    wanted = np.concatenate([d[0] for d in draws])
    unique, inverse = np.unique(wanted, return_inverse=True)
    frames = decode_jpegs([jpegs[int(t)] for t in unique], device)[torch.as_tensor(inverse)]
    views = []
    for r, (_, (y0, x0, h, w), flip) in enumerate(draws):
        part = frames[r * len(draws[0][0]) : (r + 1) * len(draws[0][0]), :, y0:y0 + h, x0:x0 + w]
        if (h, w) != (out_size, out_size):
            part = F.interpolate(part.float(), size=(out_size, out_size), mode="bilinear",
                                 antialias=True, align_corners=False)
            part = part.round_().clamp_(0, 255).to(torch.uint8)
        views.append((part.flip(-1) if flip else part).permute(1, 0, 2, 3))
    return torch.stack(views)
