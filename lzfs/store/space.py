"""Keeping room on the store's file system for metadata to commit.

SQLite answers a full disk at COMMIT with SQLITE_FULL and may roll the transaction back on its
own, which would leave the daemon's block maps naming rows that no longer exist. So lzfs never
lets file data fill the disk: once free space falls below a reserve, writes fail with ENOSPC
(CRIU then fails its dump with its own error) while commits, deletes and gc still have room.
Data that writers handed over but that is not packed yet (up to 16 MiB per file being written)
counts as used; the reserve covers the database's growth for a commit and the bytes accepted
between two checks.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

DEFAULT_RESERVE = 64 << 20
CHECK_EVERY = 4 << 20  # bytes accepted between two statvfs calls


class SpaceGuard:
    def __init__(self, root: Path, reserve: int = DEFAULT_RESERVE) -> None:
        self.root = root
        self.reserve = reserve
        self._since_check = CHECK_EVERY  # check at the first write

    def free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def admit(self, nbytes: int, unpacked: Callable[[], int] = lambda: 0) -> None:
        """Raise ENOSPC if accepting ``nbytes`` more would eat into the reserve. ``unpacked``
        says how much accepted data is not in a pack yet (asked only when a check is due):
        it will land on the disk too, so it counts as used already."""
        self._since_check += nbytes
        if self._since_check < CHECK_EVERY:
            return
        if self.free() - nbytes - unpacked() < self.reserve:
            raise OSError(errno.ENOSPC, f"store file system is full (less than "
                          f"{self.reserve >> 20} MiB left, kept for metadata)", str(self.root))
        self._since_check = 0
