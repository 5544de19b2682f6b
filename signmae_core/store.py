"""The artifact store: one root, one layout, atomic outputs and a stage record per output.

Layout (see docs/STORE.md)::

    <root>/<dataset>/<stage>/<version>/      one folder per stage version
        _stage.json                           the stage record: written last, atomically
        <outputs...>                          written under a temporary name, then renamed
    <root>/_locks/                            one lock file per stage folder (local roots)

`version` is a short hash of everything the output depends on (the stage's config sections and
the versions of its inputs), so different configs live side by side and never overwrite each
other. The stage record is the one source of truth for "is this stage up to date": it carries the
stage name, config hash, input fingerprints, the stage's code version, start and end time, counts
(ok / failed / skipped) and the outputs. A stage is complete only when its record exists and
matches; a killed run leaves at most `.tmp-*` files, which the next run removes.

The root is a local path or a URI (`s3://bucket/prefix`, `gs://...`) reached through
`pyarrow.fs`. Writers always write a local file first (codecs and Parquet writers want paths);
`StageWriter.output` renames it into place locally or uploads it for a remote root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from pydantic import BaseModel, Field

from .config.runtime import StoreConfig

RECORD_NAME = "_stage.json"
TMP_PREFIX = ".tmp-"


class StoreError(RuntimeError):
    """A store operation that cannot go on (a lock held too long, an unusable root)."""


class OutputEntry(BaseModel):
    """One file a stage wrote, relative to its stage folder."""

    path: str
    bytes: int
    sha256: str | None = None


class StageRecord(BaseModel):
    """What produced a stage output: the completion marker and cache key of the stage."""

    stage: str
    dataset: str
    version: str
    config_hash: str
    code_version: int
    inputs: dict[str, str] = Field(default_factory=dict)
    started_at: str
    finished_at: str
    counts: dict[str, int] = Field(default_factory=dict)
    outputs: list[OutputEntry] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    def fingerprint(self) -> str:
        """Hash of what this stage wrote (its version and its outputs' paths, sizes and sums):
        what downstream stages record as their input. A rerun that writes the same bytes, for
        whatever reason it ran, keeps the fingerprint, so nothing downstream reruns for it."""
        payload = json.dumps(
            {
                "stage": self.stage,
                "version": self.version,
                "outputs": [o.model_dump() for o in self.outputs],
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def matches(self, config_hash: str, code_version: int, inputs: dict[str, str]) -> bool:
        """True when this record was made by the same config, code version and inputs."""
        return (
            self.config_hash == config_hash
            and self.code_version == code_version
            and self.inputs == inputs
        )


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class ArtifactStore:
    """A root folder (or URI) holding every dataset's stage outputs."""

    def __init__(self, root: str, lock_timeout_s: float = 600.0) -> None:
        self.root_uri = root
        self.lock_timeout_s = lock_timeout_s
        try:
            self.fs, base = pafs.FileSystem.from_uri(root)
        except ValueError:  # a plain relative path (pyarrow's ArrowInvalid is a ValueError)
            self.fs, base = pafs.LocalFileSystem(), str(Path(root).resolve())
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types here
            raise StoreError(f"cannot open store root {root!r}: {exc}") from None
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        self.base = base.rstrip("/")
        if self.is_local:
            try:
                Path(self.base).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store root {self.base}: {exc.strerror}") from None
            if not os.access(self.base, os.W_OK):
                raise StoreError(f"store root {self.base} is not writable")

    @classmethod
    def from_config(cls, config: StoreConfig) -> ArtifactStore:
        """The store a pipeline config names (`store.root`, `store.lock_timeout_s`)."""
        return cls(config.root, lock_timeout_s=config.lock_timeout_s)

    # ---- paths -------------------------------------------------------------------------------
    def stage_dir(self, dataset: str, stage: str, version: str | None = None) -> str:
        """Path (within the store's filesystem) of a stage output folder."""
        parts = [self.base, dataset, stage] + ([version] if version else [])
        return "/".join(parts)

    def local_path(self, path: str) -> Path:
        """A store path as a local `Path` (only for local roots)."""
        if not self.is_local:
            raise StoreError(f"{self.root_uri} is not a local store; use the store's filesystem")
        return Path(path)

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def sha256(self, path: str, chunk: int = 1 << 20) -> str:
        """Hex sha256 of a file in the store, read through the store's filesystem."""
        if self.is_local:
            return sha256_file(path)
        digest = hashlib.sha256()
        with self.fs.open_input_stream(path) as stream:
            while block := stream.read(chunk):
                digest.update(block)
        return digest.hexdigest()

    # ---- local copies (object-store roots) ---------------------------------------------------
    def cache_dir(self) -> Path:
        """This machine's folder for a remote root's local copies and training work folders:
        `$SIGNMAE_CACHE` or `$XDG_CACHE_HOME/signmae` (default `~/.cache/signmae`), then
        `store-<hash of the root URI>`."""
        base = os.environ.get("SIGNMAE_CACHE") or str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "signmae"
        )
        return Path(base) / f"store-{self._root_digest()}"

    def _root_digest(self) -> str:
        """12 hex digits naming this root in machine-local folders (cache, remote locks)."""
        return hashlib.sha256(self.root_uri.encode()).hexdigest()[:12]

    def _relative(self, folder: str) -> str:
        """A folder in the store, relative to the store's base (`<dataset>/<stage>/...`)."""
        return folder[len(self.base) + 1:]

    def work_dir(self, dataset: str, stage: str, version: str | None = None) -> Path:
        """Where a stage that writes local files as it goes works: the stage folder itself for a
        local root; for a remote root, `<cache_dir>/work/<dataset>/<stage>/<version>` on this
        machine (the stage publishes what it made into the store)."""
        folder = self.stage_dir(dataset, stage, version)
        if self.is_local:
            return Path(folder)
        return self.cache_dir() / "work" / self._relative(folder)

    def fetch(self, path: str, local: Path) -> Path:
        """Copy one store file to the local path `local` (a temporary name, then renamed, so a
        killed copy never leaves a whole-looking file); returns `local`."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{local.name}"
        try:
            with self.fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        return local

    def local_copy(self, folder: str, record: StageRecord, skip: tuple[str, ...] = ()) -> Path:
        """A local folder with the recorded outputs of the finished stage folder `folder`
        (those under the `skip` prefixes left out). A local root: `folder` itself. A remote
        root: `<cache_dir>/copies/<stage path>-<record fingerprint>`, files already there with
        the recorded size kept, the others fetched; a new record gets a new folder."""
        if self.is_local:
            return Path(folder)
        name = f"{self._relative(folder)}-{record.fingerprint()}"
        target = self.cache_dir() / "copies" / name
        for entry in record.outputs:
            if entry.path.endswith("/") or entry.path.startswith(skip):
                continue
            local = target / entry.path
            if not (local.is_file() and local.stat().st_size == entry.bytes):
                self.fetch(f"{folder}/{entry.path}", local)
        return target

    def versions(self, dataset: str, stage: str) -> list[str]:
        """Versions of a stage present under a dataset that have a stage record (complete)."""
        folder = self.stage_dir(dataset, stage)
        infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(
            Path(i.path).name
            for i in infos
            if i.type == pafs.FileType.Directory and self.exists(f"{i.path}/{RECORD_NAME}")
        )

    def datasets(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        return sorted(
            Path(i.path).name
            for i in infos
            if i.type == pafs.FileType.Directory and not Path(i.path).name.startswith(("_", "."))
        )

    # ---- records -----------------------------------------------------------------------------
    def read_record(
        self, dataset: str, stage: str, version: str | None = None
    ) -> StageRecord | None:
        """The stage record, or None when the stage is not complete."""
        path = f"{self.stage_dir(dataset, stage, version)}/{RECORD_NAME}"
        if not self.exists(path):
            return None
        return StageRecord.model_validate_json(self.read_bytes(path))

    # ---- writing -----------------------------------------------------------------------------
    def lock_path(self, dataset: str, stage: str, version: str | None = None) -> Path:
        """The file `lock` holds: `<root>/_locks/<dataset>__<stage>__<version>.lock` (a remote
        root's locks live in this machine's temp folder)."""
        name = "__".join(x for x in (dataset, stage, version) if x)
        if self.is_local:
            return Path(self.base) / "_locks" / f"{name}.lock"
        return Path(tempfile.gettempdir()) / f"signmae-locks-{self._root_digest()}" / f"{name}.lock"

    @contextlib.contextmanager
    def lock(self, dataset: str, stage: str, version: str | None = None) -> Iterator[None]:
        """Exclusive lock on one stage folder; a second writer waits, then fails clearly.

        A `flock` on a local file: the kernel releases it when the holder dies (even SIGKILL), so
        a killed run never leaves a stale lock. For remote roots the lock guards writers on this
        machine only (documented limitation).
        """
        lock_path = self.lock_path(dataset, stage, version)
        name = lock_path.stem
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as handle:
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "unknown"
                        raise StoreError(
                            f"stage {name} is being written by another run ({holder}); "
                            f"gave up after {self.lock_timeout_s:.0f} s"
                        ) from None
                    time.sleep(0.2)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def open_stage(
        self,
        dataset: str,
        stage: str,
        version: str | None,
        *,
        config_hash: str,
        code_version: int,
        inputs: dict[str, str] | None = None,
    ) -> Iterator[StageWriter]:
        """Lock a stage folder and hand out a writer; the record is written by `commit()`.

        On entry the old record is removed (the folder is no longer "complete") and leftover
        temporary files of killed runs are deleted. Outputs already in place stay: incremental
        stages skip the items whose outputs exist.
        """
        with self.lock(dataset, stage, version):
            writer = StageWriter(
                store=self,
                dataset=dataset,
                stage=stage,
                version=version,
                config_hash=config_hash,
                code_version=code_version,
                inputs=dict(inputs or {}),
            )
            writer.begin()
            yield writer


@dataclass
class StageWriter:
    """Writes one stage output folder: atomic files, counts, and finally the record."""

    store: ArtifactStore
    dataset: str
    stage: str
    version: str | None
    config_hash: str
    code_version: int
    inputs: dict[str, str]
    counts: Counter[str] = field(default_factory=Counter)
    outputs: dict[str, OutputEntry] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=_now)
    record: StageRecord | None = None

    @property
    def dir(self) -> str:
        return self.store.stage_dir(self.dataset, self.stage, self.version)

    def path(self, rel: str) -> str:
        """Final path of an output relative to the stage folder."""
        return f"{self.dir}/{rel}"

    def begin(self) -> None:
        fs = self.store.fs
        fs.create_dir(self.dir, recursive=True)
        record_path = self.path(RECORD_NAME)
        if self.store.exists(record_path):
            fs.delete_file(record_path)
        self.remove_temporaries()

    def remove_temporaries(self) -> None:
        """Delete `.tmp-*` leftovers of killed runs anywhere in the stage folder."""
        selector = pafs.FileSelector(self.dir, recursive=True, allow_not_found=True)
        for info in self.store.fs.get_file_info(selector):
            if Path(info.path).name.startswith(TMP_PREFIX):
                if info.type == pafs.FileType.Directory:
                    self.store.fs.delete_dir(info.path)
                elif info.type == pafs.FileType.File:
                    self.store.fs.delete_file(info.path)

    def exists(self, rel: str) -> bool:
        return self.store.exists(self.path(rel))

    @contextlib.contextmanager
    def output(self, rel: str, checksum: bool = False) -> Iterator[Path]:
        """Yield a local temporary path; on success it becomes `rel` in the stage folder.

        Nothing appears under the final name unless the block finished: an exception or a kill
        leaves only a `.tmp-*` file, removed by the next run.
        """
        with atomic_output(self.store, self.path(rel)) as tmp:
            yield tmp
            self.add(describe_output(rel, tmp, checksum))

    def add(self, entry: OutputEntry) -> None:
        """Register an output (e.g. one a Ray worker wrote with `atomic_output`)."""
        self.outputs[entry.path] = entry

    def add_existing(self, rel: str, checksum: bool = False) -> None:
        """Register an output that an earlier (incremental) run already put in place."""
        info = self.store.fs.get_file_info(self.path(rel))
        digest = self.store.sha256(self.path(rel)) if checksum else None
        self.outputs[rel] = OutputEntry(path=rel, bytes=info.size or 0, sha256=digest)

    def commit(self, **extra: Any) -> StageRecord:
        """Write the stage record last: from now on the stage counts as complete."""
        self.extra.update(extra)
        record = StageRecord(
            stage=self.stage,
            dataset=self.dataset,
            version=self.version or "",
            config_hash=self.config_hash,
            code_version=self.code_version,
            inputs=self.inputs,
            started_at=self.started_at,
            finished_at=_now(),
            counts={k: int(v) for k, v in sorted(self.counts.items())},
            outputs=sorted(self.outputs.values(), key=lambda o: o.path),
            extra=self.extra,
        )
        with tempfile.TemporaryDirectory() as tmpdir:
            local = Path(tmpdir) / RECORD_NAME
            local.write_text(record.model_dump_json(indent=2), encoding="utf-8")
            publish(self.store, local, self.path(RECORD_NAME))
        self.record = record
        return record


def describe_output(rel: str, local: Path, checksum: bool = False) -> OutputEntry:
    """An `OutputEntry` for a finished local file or folder that will be published as `rel`."""
    size = local.stat().st_size if local.is_file() else _tree_size(local)
    digest = sha256_file(local) if checksum and local.is_file() else None
    return OutputEntry(path=rel, bytes=size, sha256=digest)


@contextlib.contextmanager
def atomic_output(store: ArtifactStore, final: str) -> Iterator[Path]:
    """Yield a local temporary path; when the block succeeds, publish it as `final`.

    Usable in worker processes (the store pickles): workers write, the driver records.
    """
    final_name = final.rsplit("/", 1)[-1]
    if store.is_local:
        parent = Path(final).parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final_name}"
    else:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX)) / final_name
    try:
        yield tmp
        publish(store, tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def publish(store: ArtifactStore, local: Path, final: str) -> None:
    """Move a finished local file or folder to its final store path (atomic rename locally)."""
    if store.is_local:
        final_path = Path(final)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        if local.parent != final_path.parent:
            staged = final_path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final_path.name}"
            shutil.move(str(local), staged)
            local = staged
        if final_path.is_dir() and local.is_dir():
            old = final_path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-old-{final_path.name}"
            os.replace(final_path, old)
            os.replace(local, final_path)
            shutil.rmtree(old)
        else:
            os.replace(local, final_path)
        return
    # Remote object stores have no rename: upload under a temporary key, then move (copy +
    # delete on S3). The record is written last, so a half-uploaded output is never "complete".
    parent = final.rsplit("/", 1)[0]
    tmp_key = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.rsplit('/', 1)[-1]}"
    if local.is_dir():
        pafs.copy_files(str(local), tmp_key, destination_filesystem=store.fs)
    else:
        with open(local, "rb") as src, store.fs.open_output_stream(tmp_key) as dst:
            shutil.copyfileobj(src, dst)
    store.fs.move(tmp_key, final)


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
