"""The training input pipeline over WebDataset shard sets (docs/SHARDS.md, "Training reader").

Two readers over the same shards, one per-clip transform (`signmae_core.data.dataset.clip_items`,
the one `ClipDataset` uses for clip files):

- `ShardClips`: a map-style `ClipDataset` whose clips are shard members, read by byte range
  (where each member lies comes from the set's `samples.parquet`; sets without member offsets
  have their tar headers scanned). Training's default (`data.reader: shards`): `EpochBatches`
  gives its deterministic per-epoch permutation of the stable ids, so a run is the same for
  any number of workers and loader threads and resumes exactly.
- `ShardStream`: a WebDataset streaming pipeline (an `IterableDataset` for a torch DataLoader):
  shard shuffle, sample shuffle buffer, split by node and by DataLoader worker, or resampled
  shards with a known epoch length for distributed training; each clip shard is zipped with its
  field shard (same name, same keys in order). For training (`data.reader: stream`),
  `StreamBatches` reads it in seeded partitions (`ShardStream.partitioned`): batches that do
  not depend on the worker split, resumable at any step.

`decode=False` readers leave the JPEG frames undecoded for the training device
(`signmae_core.data.device`).

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
import itertools
import json
import logging
import random
import tarfile
import threading
import zlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import torch

from signmae_core.errors import InputError
from signmae_core.shards.format import load_npy, video_id_of

from .dataset import MISSING, BytesClip, ClipDataset, ClipRecord, Sampling, clip_items
from .device import collate_items, decode_jpegs, device_clip_views  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

# what a damaged member or shard raises while it is read or parsed
DAMAGE = (tarfile.TarError, ValueError, OSError, EOFError, zlib.error, KeyError)


class MissingShardError(InputError):
    """A shard listed in an index is not in the store."""


# ---- shard sets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardRef:
    """One clip shard (+ its field shard) and the stable id of its first sample; `rel` is its
    path in the set's folder (`shards/<split>-<n>.tar`), `bytes` its size in the index."""

    url: str
    samples: int
    first_id: int
    dataset: str = ""
    label_offset: int = 0
    fields_url: str | None = None
    rel: str = ""
    bytes: int | None = None


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
                                 s.dataset, s.label_offset, fields, entry["path"],
                                 entry.get("bytes")))
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

    def sizes(self, paths: Sequence[str]) -> list[int]:
        """The sizes of `paths` (`get_file_info`: a metadata request per path on object
        stores, no data read); a missing one raises `MissingShardError`."""
        infos = self.fs.get_file_info(list(paths))
        for info in infos:
            if info.type == pafs.FileType.NotFound:
                raise MissingShardError(f"shard {info.path} is missing")
        return [int(info.size) for info in infos]

    def table(self, path: str) -> Any:
        """A Parquet table of the store (None when there is none)."""
        import pyarrow.parquet as pq

        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        return pq.read_table(path, filesystem=self.fs)


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
                 repeats: int = 1, decode: bool = True, clip: BytesClip | None = None
                 ) -> list[dict[str, Any]]:
    """A shard sample (+ its field sample) -> `repeats` augmented training items, drawn from
    `default_rng([seed, epoch, stable_id])` (`sample_index` = `stable_id`); `decode=False`:
    undecoded items for a device decoder (`clip_items`). `clip`: the sample's clip parsed
    already."""
    if clip is None:
        clip = BytesClip.parse(sample["smclip"], f"{ref.url}:{sample['__key__']}")
    fields = sample_field_array(field_sample) if with_fields else MISSING
    rng = np.random.default_rng([seed, epoch, stable_id])
    items = clip_items(clip, sampling, fields, rng, repeats=repeats, decode=decode)
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
                 world_size: int | None = None, labelled_only: bool = False,
                 decode: bool = True) -> None:
        if resample and not samples_per_epoch:
            raise ValueError("resampled shards need samples_per_epoch (the epoch length)")
        self.refs, self.sampling, self.opener = list(refs), sampling, opener
        self.seed, self.with_fields, self.repeats, self.buffer = seed, with_fields, repeats, buffer
        self.shuffle_shards, self.resample = shuffle_shards, resample
        self.samples_per_epoch = samples_per_epoch
        self.rank, self.world_size = rank, world_size
        self.labelled_only, self.decode = labelled_only, decode
        self.epoch = 0
        self.skipped = SkipCounter()
        self.plan: StreamPlan | None = None  # set: the training mode (`partitioned`)

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

        if self.plan is not None:
            yield from self._partitioned()
            return
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
            if self.labelled_only and "cls" not in clip:
                continue
            try:
                items = sample_items(clip, fsample, stable_id, self.epoch, ref, self.sampling,
                                     self.seed, self.with_fields, self.repeats, self.decode)
            except DAMAGE as exc:
                self.skipped(f"sample {clip.get('__key__')} of {ref.url}", exc)
                continue
            yield from items
            produced += 1
            if limit is not None and produced >= limit:
                return


    # ---- the training mode: partitioned, resampled, resumable -------------------------------
    def partitioned(self, plan: StreamPlan) -> ShardStream:
        """A copy of this stream that reads `plan` (what `StreamBatches` hands a DataLoader)."""
        out = object.__new__(ShardStream)
        out.__dict__.update(self.__dict__)
        out.plan, out.epoch, out.skipped = plan, plan.epoch, SkipCounter()
        return out

    def _resampled(self, partition: int) -> Iterator[tuple[dict, dict | None, int, ShardRef]]:
        """Partition `partition`'s samples in this epoch: shards drawn with replacement
        (weighted by their samples) from an RNG of (seed, epoch, partition), then the shuffle
        buffer seeded the same way. Raises when many draws in a row give no sample."""
        from webdataset.filters import _shuffle

        draw = random.Random(_stream_seed(self.seed, self.epoch, partition, 0))
        weights = [max(ref.samples, 1) for ref in self.refs]

        def source() -> Iterator[tuple[dict, dict | None, int, ShardRef]]:
            empty = 0
            while empty < 4 * len(self.refs) + 16:
                ref = draw.choices(self.refs, weights)[0]
                clips = _shard_samples(self.opener, ref.url, self.skipped)
                fields = None
                if self.with_fields and ref.fields_url:
                    fields = _shard_samples(self.opener, ref.fields_url, self.skipped)
                empty += 1
                for position, (clip, fsample) in enumerate(zip_fields(clips, fields)):
                    empty = 0
                    yield clip, fsample, ref.first_id + position, ref
            raise InputError("the stream's shards gave no sample in many draws")

        samples = source()
        if self.buffer > 1:
            shuffle = random.Random(_stream_seed(self.seed, self.epoch, partition, 1))
            samples = _shuffle(samples, bufsize=self.buffer, initial=self.buffer, rng=shuffle)
        return samples

    def _usable(self, sample: dict[str, Any], fsample: dict[str, Any] | None, ref: ShardRef
                ) -> tuple[BytesClip, dict[str, Any] | None] | None:
        """(parsed clip, field sample with its array decoded) when the sample counts as a clip
        of the stream (the same test for a resume's skipped clips as for trained ones): it
        parses, fields included, and has a label when only labelled clips are read; None
        otherwise (damage is warned about and counted)."""
        if self.labelled_only and "cls" not in sample:
            return None
        try:
            clip = BytesClip.parse(sample["smclip"], f"{ref.url}:{sample['__key__']}")
            fields = sample_field_array(fsample) if self.with_fields else None
        except DAMAGE as exc:
            self.skipped(f"sample {sample.get('__key__')} of {ref.url}", exc)
            return None
        return clip, None if fields is None else {"fields.npy.gz": fields}

    def partition_clips(self, partition: int) -> Iterator[list[dict[str, Any]]]:
        """The items (k per clip) of partition `partition`'s clips `plan.skip` to `plan.clips`
        of this epoch. A clip's `sample_index` is its draw id `partition * plan.clips +
        position`, which also seeds its augmentation (a clip drawn twice gets other views and
        masks). Clips before `plan.skip` are read and parsed, not decoded."""
        plan = self.plan
        assert plan is not None
        position, unusable = 0, 0
        limit = max(1000, 4 * sum(ref.samples for ref in self.refs))
        if plan.skip >= plan.clips:
            return
        for sample, fsample, _, ref in self._resampled(partition):
            usable = self._usable(sample, fsample, ref)
            if usable is None:
                unusable += 1
                if unusable > limit:
                    raise InputError(f"no usable clip in {limit} samples of the stream")
                continue
            unusable = 0
            if position >= plan.skip:
                draw = partition * plan.clips + position
                try:
                    items = sample_items(sample, usable[1], draw, self.epoch, ref,
                                         self.sampling, self.seed, self.with_fields,
                                         self.repeats, self.decode, clip=usable[0])
                except DAMAGE as exc:  # only decoding showed it: the partition moves on
                    self.skipped(f"sample {sample.get('__key__')} of {ref.url}", exc)
                    continue
                yield items
            position += 1
            if position >= plan.clips:
                return

    def _partitioned(self) -> Iterator[dict[str, Any]]:
        """This DataLoader worker's share of the plan's partitions, a chunk of each in turn,
        one element per clip: {"partition", "views": [k items], "skipped": (worker, damaged
        samples so far)}."""
        plan = self.plan
        assert plan is not None
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        streams = [(p, self.partition_clips(p)) for p in plan.partitions[worker::workers]]
        while streams:
            alive = []
            for partition, clips in streams:
                given = 0
                for views in itertools.islice(clips, plan.chunk):
                    given += 1
                    yield {"partition": partition, "views": views,
                           "skipped": (worker, self.skipped.count)}
                if given == plan.chunk:
                    alive.append((partition, clips))
            streams = alive


def _as_is(element: Any) -> Any:
    """The DataLoader's per-element conversion: none (items stay as the stream made them)."""
    return element


def _stream_seed(*parts: int) -> int:
    """A 63-bit seed for `random.Random` from integers (stable across processes and Pythons)."""
    return int(np.random.default_rng(list(parts)).integers(2**63))


@dataclass(frozen=True)
class StreamPlan:
    """What one epoch of a training worker reads from a partitioned `ShardStream`: its
    `partitions`, `clips` clips per partition this epoch, the first `skip` of them already
    trained on (resume), handed out `chunk` clips of a partition at a time."""

    epoch: int
    partitions: tuple[int, ...]
    clips: int
    skip: int
    chunk: int


class StreamBatches:
    """Resumable training batches from a `ShardStream` (`data.reader: stream`).

    Each epoch has `partitions` sample streams (`ShardStream.partition_clips`: resampled shards
    and a shuffle buffer seeded by (seed, epoch, partition)), of `epoch_clips // partitions`
    clips each. Global batch i of an epoch is clips `[i*c, (i+1)*c)` of every partition, c =
    batch_size / partitions, so `batches_per_epoch = (epoch_clips // partitions) // c`; worker
    r of W reads partitions r, r+W, ... (W must divide `partitions`) and its rows are their
    chunks in partition order, k views each. A batch's clips, augmentations and masks therefore
    do not depend on W or on how many DataLoader processes (`workers`) read the partitions.

    Resume (`start_at(samples)`): the epoch and the batches done in it follow from the global
    view count; every partition re-draws its stream and skips the clips already trained on
    (read and parsed, not decoded), so the run continues exactly, at any step.
    """

    def __init__(self, stream: ShardStream, batch_size: int, partitions: int, epoch_clips: int,
                 views: int = 1, rank: int = 0, world_size: int = 1, workers: int = 0,
                 start_sample: int = 0) -> None:
        if batch_size % partitions:
            raise InputError(f"batch_size {batch_size} is not a multiple of "
                             f"data.stream_partitions {partitions}")
        if partitions % world_size:
            raise InputError(f"data.stream_partitions {partitions} is not a multiple of "
                             f"{world_size} training workers")
        self.stream, self.batch_size, self.partitions = stream, batch_size, partitions
        self.views, self.rank, self.world_size = views, rank, world_size
        self.workers, self.start_sample, self.epoch_clips = workers, start_sample, epoch_clips
        self.chunk = batch_size // partitions
        self.per_partition = epoch_clips // partitions
        if self.per_partition < self.chunk:
            raise InputError(f"an epoch of {epoch_clips} clips is less than one batch of "
                             f"{batch_size}")
        self.skipped_done = 0  # damaged samples counted in finished epochs
        self._skipped_now: dict[int, int] = {}

    @property
    def batches_per_epoch(self) -> int:
        return self.per_partition // self.chunk

    @property
    def samples_per_epoch(self) -> int:
        """Global items (views) per epoch."""
        return self.batches_per_epoch * self.batch_size * self.views

    @property
    def skipped(self) -> int:
        """Damaged samples this worker's streams skipped so far."""
        return self.skipped_done + sum(self._skipped_now.values())

    def start_at(self, samples: int) -> StreamBatches:
        """The same batches from global item count `samples` on (a whole number of batches)."""
        if samples % (self.batch_size * self.views):
            raise ValueError(f"cannot resume at sample {samples}: not a multiple of the batch")
        out = object.__new__(StreamBatches)
        out.__dict__.update(self.__dict__)
        out.start_sample, out._skipped_now = samples, {}
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        done = self.start_sample // (self.batch_size * self.views)
        epoch, first = divmod(done, self.batches_per_epoch)
        while True:
            yield from self._epoch(epoch, first)
            epoch, first = epoch + 1, 0

    def _epoch(self, epoch: int, first: int) -> Iterator[dict[str, Any]]:
        """The rest of epoch `epoch` from its batch `first`."""
        mine = tuple(range(self.rank, self.partitions, self.world_size))
        plan = StreamPlan(epoch, mine, self.batches_per_epoch * self.chunk, first * self.chunk,
                          self.chunk)
        stream = self.stream.partitioned(plan)
        workers = min(self.workers, len(mine))
        source: Any = stream
        if workers > 0:  # its own generator: the global torch RNG (dropout) stays untouched
            generator = torch.Generator().manual_seed(_stream_seed(self.stream.seed, epoch, 2))
            source = torch.utils.data.DataLoader(
                stream, batch_size=None, num_workers=workers, collate_fn=_as_is,
                prefetch_factor=max(2, 2 * self.chunk), persistent_workers=False,
                generator=generator)
        pending: dict[int, list[list[dict[str, Any]]]] = {p: [] for p in mine}
        for element in source:
            pending[int(element["partition"])].append(element["views"])
            worker, count = element["skipped"]
            self._skipped_now[worker] = count
            if all(len(pending[p]) >= self.chunk for p in mine):
                clips = [views for p in mine for views in pending[p][: self.chunk]]
                for p in mine:
                    del pending[p][: self.chunk]
                yield collate_items([item for views in clips for item in views])
        self.skipped_done += sum(self._skipped_now.values())
        self._skipped_now = {}
@dataclass(frozen=True)
class Member:
    """Where one tar member's bytes are: (offset, size) in the shard file."""

    offset: int
    size: int


Located = list[tuple[str, dict[str, Member]]]  # (key, {ext: Member}) per sample, in order


def member_index(opener: ShardOpener, folder: str | None, ext: str
                 ) -> tuple[dict[str, Located], dict[str, int]] | None:
    """Where member `ext` of every sample lies, from the shard set's `samples.parquet`
    (`signmae_core.shards.MEMBER_COLUMNS`): ({shard rel: [(key, {ext: Member})]}, {key: label
    id} for clip sets); None when the set has no such table or it predates member offsets (the
    reader then scans the tar headers)."""
    from signmae_core.shards import MEMBER_COLUMNS, SAMPLES_NAME

    table = None if folder is None else opener.table(f"{folder}/{SAMPLES_NAME}")
    offset, size = MEMBER_COLUMNS[ext]
    if table is None or offset not in table.column_names:
        return None
    rows = table.to_pydict()
    located: dict[str, Located] = {}
    for i, key in enumerate(rows["key"]):
        at = rows[offset][i]
        members = {} if at is None else {ext: Member(int(at), int(rows[size][i]))}
        located.setdefault(rows["shard"][i], []).append((key, members))
    labels = {}
    if "label_id" in rows:
        labels = {k: -1 if v is None else int(v) for k, v in zip(rows["key"], rows["label_id"],
                                                                   strict=True)}
    return located, labels


def scan_shard(opener: ShardOpener, url: str, skip: SkipCounter) -> Located:
    """(key, {ext: Member}) of every sample of a shard, in order, from its tar headers only
    (a read per member: the fallback when the set's samples.parquet has no member offsets).
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

    Where each sample's `.smclip` (and `.fields.npy.gz`) lies comes from the sets'
    `samples.parquet` (one read per set, and each shard's size looked up; a missing shard
    raises); sets without member offsets have their tar headers scanned instead. Items as
    `ClipDataset` gives them (the same transform); a sample whose member is damaged is replaced
    by the next readable one in stable-id order (warned, counted in `skipped.count`), so batches
    keep their size and no step crashes. `decode=False` gives undecoded items for a device
    decoder (`signmae_core.data.device`). `labelled_only` and `only` (video ids) keep a subset
    of the samples, in their order.
    """

    def __init__(self, sets: Sequence[ShardSet], sampling: Sampling, opener: ShardOpener,
                 with_fields: bool = False, train: bool = True, seed: int = 0,
                 labelled_only: bool = False, decode: bool = True,
                 only: Collection[str] | None = None) -> None:
        self.opener = opener
        self.skipped = SkipCounter()
        self.files: dict[str, Any] = {}
        self._files_lock = threading.Lock()
        refs = shard_refs(sets)
        self._check_sizes(refs, with_fields)
        records, at = [], 0
        for shard_set in sets:
            clips = member_index(opener, shard_set.folder, "smclip")
            fields = None
            if with_fields:
                fields = member_index(opener, shard_set.fields_folder, "fields.npy.gz")
            for ref in refs[at : at + len(shard_set.shards)]:  # shard_refs: set by set
                records += self._records(ref, with_fields, clips, fields)
            at += len(shard_set.shards)
        if labelled_only:
            records = [r for r in records if r.label >= 0]
        if only is not None:
            records = [r for r in records if r.video_id in only]
        super().__init__(records, sampling, fields={} if with_fields else None, train=train,
                         seed=seed, decode=decode)

    def _check_sizes(self, refs: Sequence[ShardRef], with_fields: bool) -> None:
        """Every shard is there (`MissingShardError` names the first that is not); a clip shard
        whose size is not its index's is warned about (its damaged members are skipped)."""
        urls = [r.url for r in refs] + [r.fields_url for r in refs if with_fields and r.fields_url]
        sizes = self.opener.sizes(urls)
        for ref, size in zip(refs, sizes, strict=False):  # the clip shards come first
            if ref.bytes is not None and size != ref.bytes:
                log.warning("%s: %d bytes, its index says %d", ref.url, size, ref.bytes)

    def _records(self, ref: ShardRef, with_fields: bool, clips: Any, fields: Any
                 ) -> list[ShardRecord]:
        """The shard's samples as records: member offsets from the set's samples.parquet when
        it has them (`member_index`), else from the tar headers."""
        labels: dict[str, int] = {}
        if clips is not None:
            located, labels = clips[0].get(ref.rel, []), clips[1]
        else:
            located = scan_shard(self.opener, ref.url, self.skipped)
        field_members: dict[str, Member] = {}
        if with_fields and ref.fields_url:
            scanned = (fields[0].get(ref.rel, []) if fields is not None
                       else scan_shard(self.opener, ref.fields_url, self.skipped))
            field_members = {k: m["fields.npy.gz"] for k, m in scanned if "fields.npy.gz" in m}
        if len(located) < ref.samples:
            log.warning("%s: %d of %d samples readable", ref.url, len(located), ref.samples)
        out = []
        for position, (key, members) in enumerate(located):
            label = labels.get(key, -1)
            if clips is None and "cls" in members:
                label = int(self.read(ref.url, members["cls"]))
            out.append(ShardRecord(video_id_of(key), ref.url,
                                   label + ref.label_offset if label >= 0 else -1, "",
                                   ref.dataset, ref.first_id + position, members.get("smclip"),
                                   ref.fields_url, field_members.get(key)))
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
        flat = [{**view, "sample_epoch": item["sample_epoch"],
                 "sample_index": item["sample_index"]}
                for item in items for view in item["views"]]
        return collate_items(flat)

    def start_at(self, samples: int) -> RepeatedViews:
        out = object.__new__(RepeatedViews)
        out.views, out.inner = self.views, self.inner.start_at(samples // self.views)
        return out

    @property
    def samples_per_epoch(self) -> int:
        return self.inner.samples_per_epoch * self.views

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.inner)
