"""Staging files: the bytes of a file that a dump wrote straight to disk, through FUSE
passthrough, before they are deduplicated and compressed.

While CRIU dumps, each pages image it creates is opened with a file of its own,
``STORE/staging/<inode>``, as its kernel-side backing file: CRIU's writes (and any read or mmap
of that open) go to it at the disk's speed, and no byte crosses the daemon. Once no one has the
file open and the daemon is idle, the settler stores its bytes as frames like any other write
(FileMap.settle) and the staging file goes.

An inode listed in the ``staging`` table (this module is its only owner) has no runs: its bytes
are the staging file's, up to the inode's size. A commit syncs the staging files it names before
it commits the rows, and a staging file is unlinked only after the commit that drops its row,
so a crash leaves every listed inode with its file. At the next mount ``recover`` makes each
file agree with its committed size: bytes written after the last commit are cut, as they are
for any other file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from lzfs.store.db import MetaDB

log = logging.getLogger(__name__)

DIR = "staging"


class StagingFiles:
    def __init__(self, root: Path, db: MetaDB) -> None:
        self.dir = root / DIR
        self.db = db
        self._unlink_after_commit: list[Path] = []
        self._new = False  # a staging file was created since the directory was last synced

    def path(self, ino: int) -> Path:
        return self.dir / str(ino)

    def inodes(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT ino FROM staging ORDER BY ino")]

    def has(self, ino: int) -> bool:
        return self.db.execute("SELECT 1 FROM staging WHERE ino=?", (ino,)).fetchone() is not None

    def create(self, ino: int) -> int:
        """A new, empty staging file for ``ino`` (listed from the next commit on); its fd."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.path(ino), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.db.execute("INSERT OR IGNORE INTO staging(ino) VALUES (?)", (ino,))
        self._new = True
        return fd

    def open(self, ino: int) -> int:
        return os.open(self.path(ino), os.O_RDWR | os.O_CLOEXEC)

    def remove(self, ino: int) -> None:
        """``ino`` no longer lives in its staging file (settled, or deleted): the row goes now,
        the file once that is committed (``committed``)."""
        self.db.execute("DELETE FROM staging WHERE ino=?", (ino,))
        self._unlink_after_commit.append(self.path(ino))

    def before_commit(self) -> None:
        """Make the names of new staging files durable (any thread): a committed row must
        never name a file a crash could lose. The caller syncs each file's data."""
        if self._new:
            self._new = False
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def committed(self) -> None:
        """The rows removed before the last commit are gone for good: so go their files."""
        gone, self._unlink_after_commit = self._unlink_after_commit, []
        for p in gone:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def recover(self, sizes: dict[int, int]) -> dict[int, int]:
        """At mount: files no committed row names are left over from a crash (removed); each
        listed inode's file is cut to its committed size, or the size is cut to the file's
        (a file shorter than its size lost its unsynced tail to a crash of the machine).
        ``sizes``: inode -> committed size. Returns the inodes whose size must change."""
        listed = set(self.inodes())
        if self.dir.is_dir():
            for entry in self.dir.iterdir():
                if not entry.name.isdigit() or int(entry.name) not in listed:
                    log.warning("recovery: removed staging file %s that no commit names", entry)
                    entry.unlink()
        fixed: dict[int, int] = {}
        for ino in listed:
            want = sizes.get(ino, 0)
            try:
                have = os.stat(self.path(ino)).st_size
            except FileNotFoundError:
                have = 0
                self.dir.mkdir(mode=0o700, exist_ok=True)
                os.close(os.open(self.path(ino), os.O_WRONLY | os.O_CREAT, 0o600))
                log.error("recovery: staging file of inode %d is missing; it reads as empty",
                          ino)
            if have > want:
                os.truncate(self.path(ino), want)
            elif have < want:
                fixed[ino] = have
        return fixed

    def disk_bytes(self) -> tuple[int, int]:
        """(logical bytes, bytes on disk) of all staging files."""
        size = used = 0
        if self.dir.is_dir():
            for entry in self.dir.iterdir():
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    size += st.st_size
                    used += st.st_blocks * 512
        return size, used
