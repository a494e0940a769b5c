"""The store directory: what `lzfs mkfs` lays down, its versioned config, and its lock.

    STORE/
      lzfs.json     format marker, version, chunking parameters (fixed at mkfs: they decide
                    which pages dedup against which)
      meta.db       SQLite (WAL): namespace, block maps, block and frame tables
      packs/        append-only pack files of compressed frames
      lock          flock()ed by the one process that has the store open for writing
      lzfs.log      the daemon's log when it runs in the background

Everything is private to its owner (0700 directories, 0600 files): a store holds process memory.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lzfs.errors import FormatVersionError, LzfsError, NotAStoreError, StoreBusyError
from lzfs.store.codec import FRAME_MAX, PAGE

FORMAT_NAME = "lzfs"
FORMAT_VERSION = 1
CONFIG = "lzfs.json"
DB = "meta.db"
PACKS = "packs"
LOCK = "lock"
LOG = "lzfs.log"
PACE = "pace.json"  # the disk's write rate as last measured (store/pace.py); a hint only
CONFIG_LIMIT = 64 << 10  # a config larger than this is not ours (and is not read whole)
MAX_PAGES = FRAME_MAX // PAGE  # a block fits in one frame (docs/format.md)


@dataclass(frozen=True)
class StoreConfig:
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    avg_pages: int = 16
    max_pages: int = 64
    created: float = 0.0


def mkfs(path: str | os.PathLike, avg_pages: int = 16, max_pages: int = 64,
         allow_log: bool = False) -> StoreConfig:
    """Create an empty store at ``path`` (which may exist but must be empty; with
    ``allow_log``, it may hold the log of the daemon creating it: a node cache)."""
    root = Path(path)
    check_chunking(avg_pages, max_pages, root)
    try:
        return _mkfs(root, avg_pages, max_pages, allow_log)
    except OSError as exc:
        raise LzfsError(f"cannot create a store at {root}: {exc.strerror}") from None


def _mkfs(root: Path, avg_pages: int, max_pages: int, allow_log: bool) -> StoreConfig:
    if root.exists():
        if not root.is_dir():
            raise NotAStoreError(f"{root} exists and is not a directory")
        if any(e.name != LOG or not allow_log for e in root.iterdir()):
            if (root / CONFIG).exists():
                raise NotAStoreError(f"{root} already holds an lzfs store")
            raise NotAStoreError(f"{root} is not empty; mkfs wants an empty or new directory")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    (root / PACKS).mkdir(mode=0o700, exist_ok=True)
    cfg = StoreConfig(avg_pages=avg_pages, max_pages=max_pages, created=time.time())
    tmp = root / (CONFIG + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(cfg), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, root / CONFIG)
    # the schema is created by the first open, inside one transaction
    from lzfs.store.db import MetaDB

    MetaDB(root / DB, create=True).close()
    _fsync_dir(root)
    return cfg


def check_chunking(avg_pages: object, max_pages: object, where: object) -> None:
    """Chunking parameters decide where blocks are cut: a power-of-two average, and blocks
    no larger than one frame."""
    if not (type(avg_pages) is int and type(max_pages) is int and 1 <= avg_pages <= max_pages
            <= MAX_PAGES and avg_pages & (avg_pages - 1) == 0):
        raise NotAStoreError(
            f"{where}: need avg_pages a power of two and avg_pages <= max_pages <= {MAX_PAGES}"
            f" (got {avg_pages!r} and {max_pages!r})")


def read_config(path: str | os.PathLike) -> StoreConfig:
    """The store's config. Anything that is not a config this lzfs wrote raises an LzfsError
    (NotAStoreError, FormatVersionError); nothing is written."""
    root = Path(path)
    cfg_path = root / CONFIG
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise NotAStoreError(f"{root} is not a directory, so not an lzfs store")
        with open(cfg_path, "rb") as f:
            text = f.read(CONFIG_LIMIT + 1)
    except FileNotFoundError as exc:
        if exc.filename == str(root):
            raise NotAStoreError(f"{root}: no such directory") from None
        raise NotAStoreError(f"{root} is not an lzfs store (no {CONFIG}); create one with "
                             f"'lzfs mkfs {root}'") from None
    except OSError as exc:
        raise NotAStoreError(f"{exc.filename}: {exc.strerror}") from None
    try:
        if len(text) > CONFIG_LIMIT:
            raise ValueError(f"larger than {CONFIG_LIMIT} bytes")
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise NotAStoreError(f"{cfg_path} is unreadable: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise NotAStoreError(f"{cfg_path} is not an lzfs store config")
    version = raw.get("version")
    if type(version) is not int or version < 1:
        raise NotAStoreError(f"{cfg_path}: {version!r} is not a store format version")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{root} has store format version {version}; this lzfs reads up to "
            f"{FORMAT_VERSION}: upgrade lzfs")
    known = {k: raw[k] for k in StoreConfig.__dataclass_fields__ if k in raw}
    cfg = StoreConfig(**known)
    check_chunking(cfg.avg_pages, cfg.max_pages, cfg_path)
    if type(cfg.created) not in (int, float):
        raise NotAStoreError(f"{cfg_path}: 'created' is not a time")
    return cfg


class StoreLock:
    """An exclusive flock on STORE/lock, held for as long as a daemon (or fsck, gc) has the
    store open. `lzfs umount` waits on it: once it can take the lock, the daemon has written
    everything and exited."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK
        self.fd = -1

    def acquire(self, wait: float = 0.0, record: bool = True) -> None:
        """Take the lock (raise StoreBusyError after ``wait`` seconds). ``record`` writes our
        pid into the file for `lzfs umount` and error messages; a check that must write
        nothing (fsck without --repair) takes the lock without it, and without creating it."""
        if record:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        else:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return  # never locked: no daemon can hold it
        deadline = time.monotonic() + wait
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = -1
                    raise self.busy() from None
                time.sleep(0.05)
        if record:
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())

    def held(self) -> bool:
        """Whether another process holds the lock now; never creates the lock file."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)  # closing drops a lock taken above
        return False

    def busy(self) -> StoreBusyError:
        holder = self.holder()
        who = f" (pid {holder})" if holder else ""
        return StoreBusyError(f"store {self.path.parent} is in use by another lzfs process{who}; "
                              f"unmount it first ('lzfs umount MOUNTPOINT')")

    def holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
