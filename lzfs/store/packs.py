"""Append-only pack files holding frame records.

A pack starts with a 16-byte header (``LZFSPACK``, u32 version, u32 pack id) followed by frame
records back to back (codec.encode_frame_parts). Records are only ever appended; the database
says how much of each pack is committed, and anything past that is a tail written by a daemon
that died before its commit: `recover()` cuts it off. Space is given back by gc punching holes
over dead frames (the file keeps its size and offsets, so no frame ever moves).

Appends come from worker threads (compression runs off the trio thread) and are serialised by a
lock; reads use pread on shared descriptors and need no lock.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lzfs.errors import CorruptDataError
from lzfs.store.pace import WriteBehind

PACK_MAGIC = b"LZFSPACK"
PACK_VERSION = 1
PACK_HEADER = struct.Struct("<8sII")
PACK_LIMIT = 1 << 30  # start a new pack past 1 GiB: keeps gc's hole punching and fsck local
# Pack ids from here up name packs that live only in an object store (lzfs/cluster): reads of
# them go to ``PackSet.remote``. A local store never has one.
REMOTE_BASE = 1 << 40
# POSIX_FADV_WILLNEED reads no more than the device's readahead size per call (8 MiB on the
# test machine, 128 KiB on many): a 256 MiB call read 8 MiB and dropped the rest (fincore)
FADVISE_CHUNK = 128 << 10


def _will_need(fd: int, lo: int, hi: int) -> None:
    """Ask the kernel to read [lo, hi) of ``fd`` into the page cache, in pieces it reads
    whole (FADVISE_CHUNK)."""
    for at in range(lo, hi, FADVISE_CHUNK):
        os.posix_fadvise(fd, at, min(FADVISE_CHUNK, hi - at), os.POSIX_FADV_WILLNEED)


class RemotePacks(Protocol):
    """Where frames of packs with ids >= REMOTE_BASE are read from (lzfs.cluster.node)."""

    def read(self, pack_id: int, off: int, length: int) -> bytes: ...
    def has(self, pack_id: int) -> bool: ...
    def warm(self, locs: list[tuple[int, int, int]]) -> None: ...
    def distrust(self, pack_id: int, off: int, length: int) -> None: ...


def pack_name(pack_id: int) -> str:
    return f"{pack_id:08d}.pack"


@dataclass
class _Target:
    """A pack being appended to: its id, write descriptor (-1: none yet) and end."""

    id: int = 0
    fd: int = -1
    end: int = 0


class PackSet:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._lock = threading.Lock()
        self._read_fds: dict[int, int] = {}
        # Two packs are appended to: frames that stay, and frames a dump staged, which die
        # once settled. Apart, a settled staging pack is punched whole; mixed, every border
        # between a live frame and a punched one kept a partly used 4 KiB block (1.8% of a
        # 2 GiB llm snapshot's disk use).
        self._main = _Target()
        self._staging = _Target()
        self._top = 0  # the highest pack id in use: new packs take the next
        self._dirty: set[int] = set()
        self._ends: dict[int, int] = {}
        self.remote: RemotePacks | None = None
        self._retired: list[int] = []  # descriptors of removed packs, closed at close()
        self.behind = WriteBehind(self.flush)  # writes appends out as they come, timed

    # ---- opening ---------------------------------------------------------------------------

    def recover(self, committed: dict[int, int]) -> list[str]:
        """Bring the pack files in line with the committed sizes. Returns what it did."""
        actions = []
        for entry in sorted(self.dir.iterdir()):
            if not entry.name.endswith(".pack"):
                continue
            try:
                pid = int(entry.name[:-5])
            except ValueError:
                continue
            if entry.name != pack_name(pid):  # "+5.pack", " 5.pack": not a name lzfs writes
                continue
            if not entry.is_file() or entry.is_symlink():
                raise CorruptDataError(f"{entry} is not a regular file; move it out of the "
                                       f"store and run 'lzfs fsck'")
            if pid not in committed:
                entry.unlink()
                actions.append(f"removed uncommitted pack {entry.name}")
                continue
            size = entry.stat().st_size
            if size > committed[pid]:
                os.truncate(entry, committed[pid])
                actions.append(f"cut uncommitted tail of {entry.name}: "
                               f"{size - committed[pid]} bytes")
        return actions

    def start(self, committed: dict[int, int]) -> None:
        """Choose the pack to append to: the newest if it has room, else a new one, made at
        the first append (as the staging pack is): a pack made at open and never written to
        had no committed size, and the next open removed it with a warning, after a clean
        unmount too."""
        self._top = max(committed, default=0)
        if committed:
            last = max(committed)
            if committed[last] < PACK_LIMIT and (self.dir / pack_name(last)).exists():
                self._open_for_write(self._main, last, committed[last])

    def _open_for_write(self, target: _Target, pack_id: int, end: int) -> None:
        if target.fd >= 0:
            os.close(target.fd)
        target.fd = os.open(self.dir / pack_name(pack_id), os.O_WRONLY)
        target.id = pack_id
        target.end = end

    def _new_pack(self, target: _Target) -> None:
        pack_id = self._top + 1
        path = self.dir / pack_name(pack_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION, pack_id))
        finally:
            os.close(fd)
        self._top = pack_id
        self._open_for_write(target, pack_id, PACK_HEADER.size)
        self._ends[pack_id] = PACK_HEADER.size
        self._dirty.add(pack_id)

    # ---- writing (any thread) --------------------------------------------------------------

    def append(self, records: list[Sequence[bytes | bytearray | memoryview]],
               staged: bool = False) -> list[tuple[int, int]]:
        """Append records, each given as its parts (written with one ``pwritev``, not joined),
        to the main pack or (``staged``) the staging pack; returns (pack id, offset) for
        each. Raises OSError (ENOSPC...) with nothing recorded: a partial record past the
        committed size is cut off at next open."""
        out = []
        total = 0
        with self._lock:
            t = self._staging if staged else self._main
            for parts in records:
                size = sum(len(p) for p in parts)
                if t.fd < 0 or (t.end + size > PACK_LIMIT and t.end > PACK_HEADER.size):
                    self._new_pack(t)
                off = t.end
                done = os.pwritev(t.fd, parts, off)
                if done < size:  # a short write (rare): finish the rest from one buffer
                    rest = memoryview(b"".join(parts))
                    while done < size:
                        done += os.pwrite(t.fd, rest[done:], off + done)
                t.end = off + size
                self._ends[t.id] = t.end
                self._dirty.add(t.id)
                out.append((t.id, off))
                total += size
        self.behind.appended(total)
        return out

    def seal(self) -> None:
        """Start a new pack, so every earlier one is final and can be uploaded as an immutable
        object. An append racing with this lands wholly before it (same lock)."""
        with self._lock:
            for t in (self._main, self._staging):  # the next append starts a pack of its own
                if t.fd >= 0:
                    os.close(t.fd)
                    t.fd = -1

    def warm(self, locs: list[tuple[int, int, int]], local: bool = True) -> None:
        """Start reading (pack, off, length) ranges ahead of their reads: GETs for remote
        packs, the kernel's readahead (POSIX_FADV_WILLNEED) for local ones (unless
        ``local`` is False), so the disk has the next frames queued while the decoder works
        on the current ones. Without it a restore on slow storage left the disk idle while
        each batch decoded."""
        if self.remote is not None:
            self.remote.warm(locs)
        if not local:
            return
        for pack, lo, hi in self.local_runs(sorted(locs)):  # the fewest requests
            fd = self._reader(pack)
            if fd is None:
                continue
            _will_need(fd, lo, hi)

    @staticmethod
    def local_runs(locs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """(pack, start, end) runs covering these (pack, off, length) ranges of local packs,
        in the order given, a range joined to the run before it where it follows within
        64 KiB in the same pack."""
        runs: list[list[int]] = []
        for pack, off, length in locs:
            if pack >= REMOTE_BASE:
                continue
            if runs and runs[-1][0] == pack and runs[-1][1] <= off <= runs[-1][2] + (64 << 10):
                runs[-1][2] = max(runs[-1][2], off + length)
            else:
                runs.append([pack, off, off + length])
        return [(p, lo, hi) for p, lo, hi in runs]

    def read_through(self, pack_id: int, lo: int, hi: int) -> None:
        """Read [lo, hi) of a local pack into the page cache and wait for it: unlike
        ``warm`` over a long range, this keeps no more than hi - lo queued at the disk, so
        that other reads (CRIU's own, of its images and of the files it maps) do not wait
        behind it. The kernel is asked for the range, then one byte at its end is read,
        which returns once the disk got there (no copy of the rest)."""
        fd = self._reader(pack_id)
        if fd is None or hi <= lo:
            return
        _will_need(fd, lo, hi)
        os.pread(fd, 1, hi - 1)

    def sizes(self) -> dict[int, int]:
        """End offsets of every pack appended to in this session (to record in the DB)."""
        with self._lock:
            return dict(self._ends)

    def flush(self) -> None:
        """Write the packs' dirty data to disk ahead of a commit, without holding anything:
        appends go on meanwhile, and the commit's own sync() then only has what came after
        (it still syncs every pack written since the last commit)."""
        with self._lock:
            dirty = list(self._dirty)
        for pid in dirty:
            _on_file(self.dir / pack_name(pid), os.O_RDONLY, os.fdatasync)

    def sync(self) -> None:
        """fsync every pack written to since the last sync (call before the DB commit)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        try:
            for pid in dirty:
                _on_file(self.dir / pack_name(pid), os.O_RDONLY, os.fsync)
            if dirty:
                _on_file(self.dir, os.O_RDONLY | os.O_DIRECTORY, os.fsync)
        except BaseException:
            with self._lock:  # not synced: a retry must sync them again
                self._dirty |= dirty
            raise

    # ---- reading (any thread) --------------------------------------------------------------

    def read(self, pack_id: int, off: int, length: int) -> bytes:
        if pack_id >= REMOTE_BASE:
            if self.remote is None:
                raise CorruptDataError(f"pack {pack_id} lives in an object store, and none is "
                                       f"attached (mount the s3:// store instead)")
            return self.remote.read(pack_id, off, length)
        fd = self._reader(pack_id)
        if fd is None:
            if self.remote is not None and self.remote.has(pack_id):
                return self.remote.read(pack_id, off, length)  # uploaded, then trimmed
            raise CorruptDataError(f"pack {pack_name(pack_id)} is missing")
        data = os.pread(fd, length, off)
        if len(data) != length:
            raise CorruptDataError(
                f"pack {pack_name(pack_id)} is truncated: wanted {length} bytes at {off}, "
                f"got {len(data)}")
        return data

    def read_object(self, pack_id: int, off: int, length: int) -> bytes | None:
        """The bytes of an own pack that was uploaded, from its object (None if it has none)."""
        if pack_id < REMOTE_BASE and self.remote is not None and self.remote.has(pack_id):
            return self.remote.read(pack_id, off, length)
        return None

    def distrust(self, pack_id: int, off: int, length: int) -> None:
        """Bytes read from here failed verification: a remote copy of them is not kept (the
        next read fetches them again; the object may have been repaired meanwhile)."""
        if self.remote is not None and self.remote.has(pack_id):
            self.remote.distrust(pack_id, off, length)

    def _reader(self, pack_id: int) -> int | None:
        """The shared read descriptor of a local pack; None if its file is not there."""
        fd = self._read_fds.get(pack_id)
        if fd is None:
            try:
                fd = os.open(self.dir / pack_name(pack_id), os.O_RDONLY)
            except FileNotFoundError:
                return None
            with self._lock:
                old = self._read_fds.setdefault(pack_id, fd)
            if old != fd:
                os.close(fd)
                fd = old
        return fd

    def punch(self, pack_id: int, off: int, length: int) -> None:
        """Give the space of a dead frame back to the file system."""
        try:
            fd = os.open(self.dir / pack_name(pack_id), os.O_RDWR)
        except FileNotFoundError:  # a node cache trimmed it (it is an object now)
            return
        try:
            if _libc.fallocate(fd, _FALLOC_PUNCH, ctypes.c_long(off), ctypes.c_long(length)):
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(self.dir / pack_name(pack_id)))
        finally:
            os.close(fd)

    def remove(self, pack_id: int) -> None:
        """Delete a pack file. A read in flight on it may still hold its descriptor, so that
        is closed only at close(); later reads open it anew (and find it gone)."""
        with self._lock:
            fd = self._read_fds.pop(pack_id, None)
            if fd is not None:
                self._retired.append(fd)
        (self.dir / pack_name(pack_id)).unlink(missing_ok=True)

    @property
    def write_id(self) -> int:
        """The main pack being appended to; 0 when the next append starts a new one."""
        return self._main.id if self._main.fd >= 0 else 0

    def close(self) -> None:
        self.behind.wait()
        for fd in [*self._read_fds.values(), *self._retired]:
            os.close(fd)
        self._read_fds.clear()
        self._retired.clear()
        for t in (self._main, self._staging):
            if t.fd >= 0:
                os.close(t.fd)
                t.fd = -1


def _on_file(path: Path, flags: int, call: Callable[[int], object]) -> None:
    """Open ``path``, run ``call`` on its descriptor (fsync, fdatasync), close it."""
    fd = os.open(path, flags)
    try:
        call(fd)
    finally:
        os.close(fd)


# FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (os has no fallocate(2), only posix_fallocate)
_FALLOC_PUNCH = 0x02 | 0x01
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
