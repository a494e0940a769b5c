"""The staging file behind a file that is written through FUSE passthrough (store/staging.py),
as the core sees it: its fd, the kernel's backing id while the file is open, and the few
operations the daemon still does on it itself (the kernel passes reads, writes, mmap and
splice through, but not truncate, fsync or fallocate).

``Passthrough`` is what the core asks of the kernel side, implemented by the FUSE adapter
(fuse/passthrough.py) and absent without a mount, so the core stays free of pyfuse3.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import Protocol

import trio

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def punch_hole(fd: int, off: int, length: int) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as zeros and takes no space."""
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Passthrough(Protocol):
    """Registering files with the kernel as passthrough backing files."""

    def available(self) -> bool: ...
    def why_not(self) -> str: ...
    def open(self, fd: int) -> int: ...
    def close(self, backing_id: int) -> None: ...


class NoPassthrough:
    """No kernel at hand (tools, tests of the core): every open goes through the daemon."""

    def __init__(self, why: str = "not mounted") -> None:
        self._why = why

    def available(self) -> bool:
        return False

    def why_not(self) -> str:
        return self._why

    def open(self, fd: int) -> int:
        raise OSError(errno.ENOSYS, "no FUSE passthrough here")

    def close(self, backing_id: int) -> None:
        return None


class Backing:
    """One staging file, open for as long as its FileMap lives. What runs on a worker thread
    works on a duplicate of the fd taken on the trio thread: a settle may close the file
    meanwhile (the commit's sync once failed with EBADF that way)."""

    def __init__(self, ino: int, fd: int) -> None:
        self.ino = ino
        self.fd = fd
        self.backing_id: int | None = None  # registered with the kernel while opened
        self.synced = False  # its data is on disk as of the last commit

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def disk_bytes(self) -> int:
        return os.fstat(self.fd).st_blocks * 512

    def dup(self) -> int:
        """A duplicate of the fd, for a worker thread (which closes it)."""
        return os.dup(self.fd)

    async def read(self, off: int, n: int) -> bytes:
        fd = self.dup()

        def pread() -> bytes:
            try:
                return os.pread(fd, n, off)
            finally:
                os.close(fd)

        return await trio.to_thread.run_sync(pread)

    async def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        """A write that came through the daemon (an open the kernel could not pass through)."""
        self.synced = False
        fd = self.dup()

        def pwrite_all() -> None:
            try:
                view, pos = memoryview(data), off
                while view:
                    n = os.pwrite(fd, view, pos)
                    view, pos = view[n:], pos + n
            finally:
                os.close(fd)

        await trio.to_thread.run_sync(pwrite_all)

    def truncate(self, size: int) -> None:
        self.synced = False
        os.ftruncate(self.fd, size)

    def punch(self, off: int, length: int) -> None:
        self.synced = False
        punch_hole(self.fd, off, length)


    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
