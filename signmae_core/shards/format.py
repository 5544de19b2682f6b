"""The shard format: sample keys, deterministic tar files, and reading samples back.

A shard is an uncompressed POSIX (pax) tar file in the WebDataset layout: the members of one
sample are `<key>.<ext>`, next to each other, samples in key order. Writing is deterministic:
every member header has mtime 0, uid/gid 0, empty user and group names and mode 0644, members
come in a fixed order, and the archive ends as Python's `tarfile` ends one (two zero blocks,
padded to a multiple of 10240 bytes); the same samples give the same bytes, byte for byte.

Keys (`sample_key`): a video id as it is when it holds only ASCII letters, digits, `_` and `-`
(what ingest allows, `signmae_core.ingest.manifest.check_video_id`); any other byte of its UTF-8
form is written `~hh` (two lowercase hex digits), `~` included. The mapping is one to one (so
keys stay unique), has no dot (WebDataset splits a member name at the first dot of its base
name) and is undone by `video_id_of`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: a tar file's size is a multiple of it
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED = re.compile(r"~([0-9a-f]{2})")


# ---- keys ---------------------------------------------------------------------------------------
def sample_key(video_id: str) -> str:
    """The shard key of a video id: the id itself when it is `[A-Za-z0-9_-]+`, else every other
    byte of its UTF-8 form as `~hh` (e.g. `a.b` -> `a~2eb`). One to one, dot-free."""
    if not video_id:
        raise ValueError("an empty video id has no shard key")
    if _SAFE_ID.fullmatch(video_id):
        return video_id
    return "".join(chr(b) if b in _SAFE_BYTES else f"~{b:02x}" for b in video_id.encode("utf-8"))


def video_id_of(key: str) -> str:
    """The video id a key was made from (the inverse of `sample_key`)."""
    raw = bytearray()
    pos = 0
    for match in _ESCAPED.finditer(key):
        raw += key[pos : match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += key[pos:].encode("ascii")
    return raw.decode("utf-8")


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no spaces: one value, one byte string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def npy_bytes(array: np.ndarray) -> bytes:
    """`np.save` of an array (no pickle), as bytes; read back with `load_npy`."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """An `.npy` member -> its array (never unpickles)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """gzip with no file name and mtime 0: the same data gives the same bytes."""
    return gzip.compress(data, compresslevel=level, mtime=0)


# ---- writing ------------------------------------------------------------------------------------
def member_header(name: str, size: int) -> bytes:
    """The tar header block(s) of a regular file `name` of `size` bytes, with every field that
    could vary (times, owners, mode) fixed: what `tarfile` writes for such a member in pax
    format (a short ASCII name takes one ustar block, built directly; others go through
    `tarfile`, which adds a pax header for them)."""
    raw = name.encode("utf-8", "strict")
    if len(raw) > 100 or not name.isascii() or size >= 8**11:
        return _tarfile_header(name, size)
    head = raw.ljust(100, b"\0") + _FIXED_MODE_IDS + b"%011o\0" % size + _FIXED_MTIME
    tail = _FIXED_TAIL
    checksum = sum(head) + _SPACES_SUM + _TAIL_SUM
    return head + b"%06o\0 " % checksum + tail


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


# The constant parts of a ustar header as `tarfile` writes them for the members above.
_FIXED_MODE_IDS = b"0000644\0" + b"0000000\0" + b"0000000\0"  # mode, uid, gid
_FIXED_MTIME = b"00000000000\0"
_FIXED_TAIL = (
    tarfile.REGTYPE + bytes(100) + tarfile.POSIX_MAGIC  # type, link name, "ustar\x0000"
    + bytes(32) + bytes(32)  # user and group names
    + bytes(16)  # device numbers (empty for regular files)
    + bytes(155) + bytes(12)  # name prefix, padding to 512
)
_SPACES_SUM = 8 * ord(" ")  # the checksum field counts as spaces
_TAIL_SUM = sum(_FIXED_TAIL)


def tar_member_size(size: int) -> int:
    """Bytes a member of `size` bytes with a short name takes in a tar: header plus padded data."""
    return BLOCK + -(-size // BLOCK) * BLOCK


Members = dict[str, tuple[int, int]]  # ext -> (offset of the member's data, its size) in the tar


def sample_layout(key: str, sizes: Mapping[str, int], start: int) -> tuple[Members, int]:
    """Where a sample's members lie when `ShardWriter` writes it at byte `start` of a shard:
    ({ext: (data offset, size)}, the byte after the sample). A pure function of the key and the
    member sizes (the headers are fixed), so the offsets of a shard already written follow from
    its members' sizes alone."""
    members: Members = {}
    at = start
    for ext in sorted(sizes):
        size = sizes[ext]
        at += len(member_header(f"{key}.{ext}", size))
        members[ext] = (at, size)
        at += size + (-size % BLOCK)
    return members, at


class ShardWriter:
    """Writes one shard to a binary file, sample by sample, hashing what it writes.

    `add(key, {"ext": bytes, ...})` writes the sample's members in sorted extension order;
    `close()` ends the archive. `bytes` and `sha256` describe what was written; `members[i]`
    is where the i-th sample's members lie (`sample_layout`).
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.bytes = 0
        self.keys: list[str] = []
        self.members: list[Members] = []

    def _write(self, data: bytes | memoryview) -> None:
        self._handle.write(data)
        self._digest.update(data)
        self.bytes += len(data)

    def add(self, key: str, members: Mapping[str, bytes]) -> None:
        """Append one sample; keys are dot-free and strictly increasing (sorted, unique)."""
        if "." in key or "/" in key or not key:
            raise ValueError(f"bad shard key {key!r}")
        if self.keys and key <= self.keys[-1]:
            raise ValueError(f"shard key {key!r} after {self.keys[-1]!r}: keys must increase")
        start = self.bytes
        for ext in sorted(members):
            data = members[ext]
            self._write(member_header(f"{key}.{ext}", len(data)))
            self._write(data)
            pad = -len(data) % BLOCK
            if pad:
                self._write(bytes(pad))
        layout, end = sample_layout(key, {ext: len(data) for ext, data in members.items()}, start)
        if end != self.bytes:
            raise RuntimeError(f"sample_layout of {key!r} disagrees with the bytes written")
        self.keys.append(key)
        self.members.append(layout)

    def close(self) -> None:
        """Two zero blocks, then zeros up to a multiple of `RECORD` bytes (as `tarfile` does)."""
        end = self.bytes + 2 * BLOCK
        self._write(bytes(2 * BLOCK + (-end % RECORD)))

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


# ---- reading ------------------------------------------------------------------------------------
def _split_name(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    key, dot, ext = base.partition(".")
    if not dot or not key:
        raise ValueError(f"shard member {name!r} is not <key>.<ext>")
    return name[: len(name) - len(base)] + key, ext


def iter_shard_samples(source: str | Path | BinaryIO) -> Iterator[dict[str, Any]]:
    """The samples of one shard, in order: `{"__key__": key, "<ext>": bytes, ...}`.

    `source` is a local path or a readable binary stream (an object store's input stream); the
    tar is read as a stream, once. Members of a sample must be next to each other (a key seen
    again later is an error, as in the WebDataset readers). A truncated or damaged tar raises
    `tarfile.TarError` at the point where it breaks.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            yield from iter_shard_samples(handle)
        return
    current: dict[str, Any] | None = None
    seen: set[str] = set()
    with tarfile.open(fileobj=source, mode="r|*") as stream:
        for info in stream:
            if not info.isreg():
                continue
            key, ext = _split_name(info.name)
            if current is None or key != current["__key__"]:
                if current is not None:
                    yield current
                if key in seen:
                    raise ValueError(f"shard key {key!r} appears twice (members not together)")
                seen.add(key)
                current = {"__key__": key}
            member = stream.extractfile(info)
            assert member is not None
            current[ext] = member.read()
    if current is not None:
        yield current
