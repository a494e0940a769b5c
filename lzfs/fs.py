"""The FUSE protocol adapter: turns pyfuse3 requests into namespace and file-map calls.

What a file looks like is decided in namespace.py (names, attributes) and filemap.py (bytes);
this class keeps only the state the kernel protocol itself needs (open handles, lookup counts)
and maps failures to errnos. Handlers run as trio tasks on one thread: SQLite is only touched
here, compression and decompression happen in worker threads started by the file maps.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from .control import CONTROL_DIR, CONTROL_NAME, ControlTree
from .criu.cow import read_page_by_page
from .criu.lazy import is_lazy_pages_daemon
from .errors import CorruptDataError, LzfsError
from .filemap import FileMap
from .namespace import ROOT_INODE, FsError, Inode, Namespace, now_ns
from .prefetch import FrameCache, Readahead
from .render import human
from .report import IMAGE_LIMIT
from .store import Store
from .store.space import DEFAULT_RESERVE, SpaceGuard

if TYPE_CHECKING:
    from .cluster.sync import ClusterSync

log = logging.getLogger(__name__)

ATTR_TIMEOUT = 1.0
ENTRY_TIMEOUT = 5.0
COMMIT_INTERVAL = 5.0  # seconds between background commits while anything changed
XATTR_PREFIX = b"user.lzfs."
XATTRS = ("logical", "stored", "unique", "zero", "blocks", "ratio", "damaged")


@dataclass
class Handle:
    ino: int
    writable: bool
    ra: Readahead = field(default_factory=Readahead)


class LzfsOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, store: Store, cache_bytes: int = 128 << 20,
                 reserve_bytes: int = DEFAULT_RESERVE,
                 commit_interval: float = COMMIT_INTERVAL,
                 cluster: ClusterSync | None = None) -> None:
        super().__init__()
        self.store = store
        self.cluster = cluster  # set when the store is a node of an object store
        self.commit_interval = commit_interval
        self.space = SpaceGuard(store.root, reserve_bytes)
        self.failed: BaseException | None = None  # a commit failed: stop, keep the last one
        self.ns = Namespace(store.db)
        self.cache = FrameCache(store, cache_bytes)
        self.files: dict[int, FileMap] = {}
        self.handles: dict[int, Handle] = {}
        self.lookups: dict[int, int] = {}
        self._next_fh = 1
        self.nursery: trio.Nursery | None = None
        self.gate = trio.Lock()  # held while committing: no frame is registered meanwhile
        self._committed_changes = -1
        # (op, size rounded up to a power of two) -> count: what the kernel really sends us
        self.request_sizes: Counter[tuple[str, int]] = Counter()
        self.control = ControlTree(self)
        self._control_cache: dict[int, tuple[float, bytes]] = {}
        self.control_handles: dict[int, bytes] = {}
        self._purge_orphans()
        self.store.commit()

    # ---- lifecycle ---------------------------------------------------------------------------

    def attach(self, nursery: trio.Nursery) -> None:
        """Give background work (encoders, prefetch, commits) a nursery to run in."""
        self.nursery = nursery
        self.cache.nursery = nursery
        for fm in self.files.values():
            fm.nursery = nursery

    async def committer(self) -> None:
        """Commit every few seconds while anything changed; give space back at once when a
        deletion left blocks nobody references."""
        while True:
            await trio.sleep(self.commit_interval)
            try:
                await self.commit()
                if self.store.garbage:
                    await self.gc()
            except Exception:
                log.exception("background commit failed")

    async def gc(self) -> tuple[int, int]:
        if self.cluster is not None and self.cluster.publishing:
            return 0, 0  # after the upload (store.garbage stays set: the committer retries)
        removed, frames = self.store.collect_garbage()
        self.cache.drop(f[0] for f in frames)
        await self.commit()  # no committed row names those frames any more: punch them
        freed = await trio.to_thread.run_sync(self.store.punch, frames)
        if removed or freed:
            log.info("gc: removed %d blocks, gave back %d bytes", removed, freed)
        return removed, freed

    async def commit(self) -> None:
        if self.failed is not None:
            raise FsError(errno.EIO)
        changes = self.store.db.conn.total_changes
        if changes == self._committed_changes:
            return
        async with self.gate:
            try:
                await trio.to_thread.run_sync(self.store.sync_packs)
                self.store.commit_meta()
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc)
            self._committed_changes = self.store.db.conn.total_changes

    def _unpacked(self) -> int:
        return sum(fm.pending_bytes for fm in self.files.values())

    def _fail(self, exc: BaseException) -> None:
        """A commit failed (disk error, or full despite the reserve). SQLite may have rolled
        back on its own, so what this daemon holds in memory can no longer be trusted: stop
        serving and keep the store exactly at its last commit (the next mount starts there)."""
        self.failed = exc
        log.critical("cannot commit (%s): unmounting; the store stays at its last commit", exc)
        pyfuse3.terminate()
        raise FsError(errno.EIO)

    async def shutdown(self) -> None:
        """Store every pending byte and commit: called after the kernel let go of the mount."""
        if self.failed is not None:
            return
        for ino, fm in list(self.files.items()):
            try:
                await fm.flush()
            except Exception:
                log.exception("inode %d: could not store its last bytes", ino)
        await self.commit()
        if self.cluster is not None:
            await self.cluster.publish_pending(self)
        if self.request_sizes:
            log.info("request sizes: %s", ", ".join(
                f"{op} <={human(size)}: {n}" for (op, size), n in sorted(
                    self.request_sizes.items())))

    def _purge_orphans(self) -> None:
        for ino in self.ns.orphans():
            log.info("removing orphan inode %d (unlinked while open before the last stop)", ino)
            self._purge(ino)

    # ---- helpers -----------------------------------------------------------------------------

    def _attrs(self, node: Inode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.id
        a.generation = 0
        a.entry_timeout = ENTRY_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        a.st_mode = node.mode
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = node.rdev
        fm = self.files.get(node.id)
        size, stored = (fm.size, int(fm.stored)) if fm is not None else (node.size, node.stored)
        a.st_size = size
        a.st_blksize = 128 * 1024
        a.st_blocks = (stored + 511) // 512
        a.st_atime_ns = node.atime_ns
        a.st_mtime_ns = node.mtime_ns
        a.st_ctime_ns = node.ctime_ns
        return a

    def _control_attrs(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = self.control.mode(ino)
        a.st_nlink = 2 if ino == CONTROL_DIR else 1
        a.st_uid, a.st_gid = os.getuid(), os.getgid()
        a.st_size = 0 if ino == CONTROL_DIR else len(self._control_content(ino))
        a.st_blksize = 4096
        a.entry_timeout = a.attr_timeout = 0
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = now_ns()
        return a

    def _control_content(self, ino: int, fresh: bool = False) -> bytes:
        hit = self._control_cache.get(ino)
        if hit is None or fresh or trio.current_time() - hit[0] > 1.0:
            hit = (trio.current_time(), self.control.content(ino))
            self._control_cache[ino] = hit
        return hit[1]

    def _guard(self, parent: int, name: bytes | None = None, creating: bool = True) -> None:
        """Nothing is created, removed or renamed in or as `.lzfs`."""
        if ControlTree.is_control(parent):
            raise FsError(errno.EROFS)
        if parent == ROOT_INODE and name == CONTROL_NAME:
            raise FsError(errno.EEXIST if creating else errno.EPERM)

    def _counted(self, node: Inode) -> pyfuse3.EntryAttributes:
        self.lookups[node.id] = self.lookups.get(node.id, 0) + 1
        return self._attrs(node)

    def _filemap(self, ino: int) -> FileMap:
        fm = self.files.get(ino)
        if fm is None:
            node = self.ns.get(ino)
            fm = FileMap.load(ino, node.size, self.store, self.cache, self._persist_size,
                              gate=self.gate)
            fm.nursery = self.nursery
            self.files[ino] = fm
        return fm

    def _persist_size(self, ino: int, size: int, stored: int) -> None:
        self.ns.set_attrs(ino, size=size, stored=stored)

    def _purge(self, ino: int) -> None:
        """Drop a nameless inode with no handles: its extents' references, then the row."""
        db = self.store.db
        db.execute("UPDATE blocks SET refs = refs - (SELECT COUNT(*) FROM extents "
                   "WHERE ino=? AND block=blocks.id) WHERE id IN "
                   "(SELECT block FROM extents WHERE ino=?)", (ino, ino))
        db.execute("DELETE FROM extents WHERE ino=?", (ino,))
        self.ns.delete(ino)
        self.files.pop(ino, None)

    def _maybe_purge(self, ino: int) -> None:
        fm = self.files.get(ino)
        if self.lookups.get(ino, 0) > 0 or (fm is not None and fm.opens > 0):
            return
        try:
            node = self.ns.get(ino)
        except FsError:
            return
        if node.nlink == 0:
            self._purge(ino)

    def _new_fh(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = handle
        return fh

    # ---- names -------------------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None):
        with _errno():
            if ControlTree.is_control(parent_inode):
                ino = self.control.lookup(name) if parent_inode == CONTROL_DIR else None
                if ino is None:
                    raise FsError(errno.ENOENT)
                return self._control_attrs(ino)
            if parent_inode == ROOT_INODE and name == CONTROL_NAME:
                return self._control_attrs(CONTROL_DIR)
            if name == b".":
                ino = parent_inode
            elif name == b"..":
                ino = self.ns.parent_of(parent_inode)
            else:
                ino = self.ns.lookup(parent_inode, name)
            return self._counted(self.ns.get(ino))

    async def forget(self, inode_list) -> None:
        for ino, n in inode_list:
            if ControlTree.is_control(ino):
                continue
            left = self.lookups.get(ino, 0) - n
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)
                try:
                    self._maybe_purge(ino)
                except Exception:  # forget must not fail
                    log.exception("forget of inode %d", ino)

    async def getattr(self, inode: int, ctx: Any = None):
        with _errno():
            if ControlTree.is_control(inode):
                return self._control_attrs(inode)
            return self._attrs(self.ns.get(inode))

    async def setattr(self, inode: int, attr, fields, fh, ctx):
        with _errno():
            if ControlTree.is_control(inode):
                raise FsError(errno.EROFS)
            node = self.ns.get(inode)
            changes: dict[str, int] = {}
            t = now_ns()
            if fields.update_size:
                if not node.is_reg:
                    raise FsError(errno.EINVAL)
                fm = self._filemap(inode)
                await fm.truncate(attr.st_size)
                changes["mtime_ns"] = t
                self._drop_idle(inode)
            if fields.update_mode:
                changes["mode"] = (node.mode & ~0o7777) | (attr.st_mode & 0o7777)
            if fields.update_uid:
                changes["uid"] = attr.st_uid
            if fields.update_gid:
                changes["gid"] = attr.st_gid
            if fields.update_atime:
                changes["atime_ns"] = attr.st_atime_ns
            if fields.update_mtime:
                changes["mtime_ns"] = attr.st_mtime_ns
            changes["ctime_ns"] = attr.st_ctime_ns if fields.update_ctime else t
            self.ns.set_attrs(inode, **changes)
            return self._attrs(self.ns.get(inode))

    async def readlink(self, inode: int, ctx):
        with _errno():
            node = self.ns.get(inode)
            if node.target is None:
                raise FsError(errno.EINVAL)
            return node.target

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx):
        with _errno():
            self._guard(parent_inode, name)
            node = self.ns.create(parent_inode, name, stat.S_IFDIR | (mode & ~ctx.umask & 0o7777),
                                  ctx.uid, ctx.gid)
            return self._counted(node)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx):
        with _errno():
            self._guard(parent_inode, name)
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                raise FsError(errno.EPERM)  # no device nodes in a snapshot store
            node = self.ns.create(parent_inode, name, mode & ~ctx.umask, ctx.uid, ctx.gid, rdev)
            return self._counted(node)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx):
        with _errno():
            self._guard(parent_inode, name)
            if len(target) > 4095:
                raise FsError(errno.ENAMETOOLONG)
            node = self.ns.create(parent_inode, name, stat.S_IFLNK | 0o777, ctx.uid, ctx.gid,
                                  target=target)
            return self._counted(node)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx):
        with _errno():
            self._guard(new_parent_inode, new_name)
            if ControlTree.is_control(inode):
                raise FsError(errno.EROFS)
            return self._counted(self.ns.link(inode, new_parent_inode, new_name))

    async def unlink(self, parent_inode: int, name: bytes, ctx):
        with _errno():
            self._guard(parent_inode, name, creating=False)
            node = self.ns.unlink(parent_inode, name, want_dir=False)
            if node.nlink == 0:
                self._maybe_purge(node.id)

    async def rmdir(self, parent_inode: int, name: bytes, ctx):
        with _errno():
            self._guard(parent_inode, name, creating=False)
            node = self.ns.unlink(parent_inode, name, want_dir=True)
            if self.cluster is not None and parent_inode == ROOT_INODE:
                self.cluster.forget(name)
            self._maybe_purge(node.id)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        with _errno():
            self._guard(parent_inode_old, name_old, creating=False)
            self._guard(parent_inode_new, name_new)
            replaced = self.ns.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                                      flags)
            if self.cluster is not None:  # top-level names moved: no longer what was imported
                for parent, nm in ((parent_inode_old, name_old), (parent_inode_new, name_new)):
                    if parent == ROOT_INODE:
                        self.cluster.forget(nm)
            if replaced is not None and replaced.nlink == 0:
                self._maybe_purge(replaced.id)

    # ---- directories -------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx):
        with _errno():
            if inode == CONTROL_DIR:
                return inode
            if not self.ns.get(inode).is_dir:
                raise FsError(errno.ENOTDIR)
            return inode

    async def readdir(self, fh: int, start_id: int, token) -> None:
        with _errno():
            if fh == CONTROL_DIR:
                for i, (name, ino) in enumerate(self.control.listing()):
                    if i >= start_id and not pyfuse3.readdir_reply(
                            token, name, self._control_attrs(ino), i + 1):
                        return
                return
            if self.cluster is not None and fh == ROOT_INODE and start_id == 0:
                await self.cluster.maybe_refresh(self)
            after = start_id
            while True:
                rows = self.ns.readdir(fh, after)
                if not rows:
                    return
                for dentry_id, name, ino in rows:
                    node = self.ns.get(ino)
                    if not pyfuse3.readdir_reply(token, name, self._attrs(node), dentry_id):
                        return
                    self.lookups[ino] = self.lookups.get(ino, 0) + 1
                    after = dentry_id

    async def releasedir(self, fh: int) -> None:
        return None

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        """Commit; on a cluster node, syncing a snapshot directory also publishes it."""
        with _errno():
            await self.commit()
            if self.cluster is not None:
                await self.cluster.on_fsyncdir(self, fh)

    async def statfs(self, ctx):
        with _errno():
            vfs = os.statvfs(self.store.root)
            s = pyfuse3.StatvfsData()
            s.f_bsize = vfs.f_bsize
            s.f_frsize = vfs.f_frsize
            s.f_blocks = vfs.f_blocks
            s.f_bfree = vfs.f_bfree
            s.f_bavail = vfs.f_bavail
            files = self.ns.count()
            s.f_files = files + vfs.f_ffree
            s.f_ffree = vfs.f_ffree
            s.f_favail = vfs.f_favail
            s.f_namemax = 255
            return s

    # ---- files -------------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx):
        with _errno():
            if ControlTree.is_control(inode):
                if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
                    raise FsError(errno.EROFS)
                fh = self._new_fh(Handle(inode, False))
                self.control_handles[fh] = self._control_content(inode, fresh=True)
                return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
            node = self.ns.get(inode)
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if not node.is_reg:
                raise FsError(errno.EINVAL)
            fm = self._filemap(inode)
            fm.opens += 1  # before any await: an idle FileMap may be dropped meanwhile
            writable = (flags & os.O_ACCMODE) != os.O_RDONLY
            try:
                if flags & os.O_TRUNC and writable:
                    await fm.truncate(0)
                    self.ns.set_attrs(inode, mtime_ns=now_ns(), ctime_ns=now_ns())
                # criu lazy-pages reads pages images in small pieces (lzfs/criu/lazy.py)
                page_cache = not writable and (is_lazy_pages_daemon(ctx.pid)
                                               or await self._read_page_by_page(inode))
            except BaseException:
                fm.opens -= 1
                if fm.opens == 0:
                    self._drop_idle(inode)
                    self._maybe_purge(inode)
                raise
            return self._file_info(self._new_fh(Handle(inode, writable)), writable, page_cache)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx):
        with _errno():
            self._guard(parent_inode, name)
            node = self.ns.create(parent_inode, name, stat.S_IFREG | (mode & ~ctx.umask & 0o7777),
                                  ctx.uid, ctx.gid)
            fm = self._filemap(node.id)
            fm.opens += 1
            fh = self._new_fh(Handle(node.id, True))
            return self._file_info(fh, True), self._counted(node)

    async def _read_page_by_page(self, ino: int) -> bool:
        """A pages image that CRIU will read one page at a time (a forked worker's memory,
        shared copy-on-write with its parent): served through the page cache, where the
        kernel's readahead batches those reads, instead of one FUSE round trip per page
        (lzfs/criu/cow.py has the measurements)."""
        entry = self.ns.dentry_of(ino)
        if entry is None:
            return False
        parent, name = entry
        loaded: list[int] = []

        async def sibling(n: str, limit: int | None = None) -> bytes | None:
            try:
                i = self.ns.lookup(parent, n.encode())
                node = self.ns.get(i)
            except FsError:
                return None
            if not node.is_reg or node.size > IMAGE_LIMIT:
                return None
            if i not in self.files:
                loaded.append(i)
            size = node.size if limit is None else min(node.size, limit)
            return bytes(await self._filemap(i).read(0, size))

        try:
            return await read_page_by_page(name, sibling)
        except Exception as exc:  # noqa: BLE001 - any failure (damaged or remote images,
            # the database) costs speed only, never the open itself
            log.warning("%s: cannot tell how CRIU will read it (%s); using direct_io",
                        self.ns.path_of(ino), exc)
            return False
        finally:
            for i in loaded:  # the images read here were not opened
                self._drop_idle(i)

    @staticmethod
    def _file_info(fh: int, writable: bool, page_cache: bool = False) -> pyfuse3.FileInfo:
        # Read-only opens bypass the page cache: CRIU reads each image once, with large preadv
        # calls that then arrive whole (up to 1 MiB) instead of as 128 KiB readahead pieces.
        # The exceptions are an image CRIU reads page by page (_read_page_by_page) and the
        # images criu lazy-pages reads (lzfs/criu/lazy.py).
        return pyfuse3.FileInfo(fh=fh, direct_io=not writable and not page_cache,
                                keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        with _errno():
            h = self.handles[fh]
            if fh in self.control_handles:
                return self.control_handles[fh][off:off + size]
            self.request_sizes["read", _bucket(size)] += 1
            try:
                return await self.files[h.ino].read(off, size, h.ra)
            except CorruptDataError as exc:
                raise CorruptDataError(f"{self.ns.path_of(h.ino)} at offset {off} "
                                       f"(+{size}): {exc}") from None

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        with _errno():
            h = self.handles[fh]
            self.request_sizes["write", _bucket(len(buf))] += 1
            self.space.admit(len(buf), self._unpacked)
            await self.files[h.ino].write(off, buf)
            return len(buf)

    async def flush(self, fh: int) -> None:
        with _errno():
            h = self.handles[fh]
            if h.writable and fh not in self.control_handles:
                await self.files[h.ino].flush()

    async def fsync(self, fh: int, datasync: bool) -> None:
        with _errno():
            h = self.handles[fh]
            if fh not in self.control_handles:
                await self.files[h.ino].flush()
            await self.commit()

    # ---- extended attributes: per-file figures, and gc on demand ----------------------------

    async def listxattr(self, inode: int, ctx):
        with _errno():
            if ControlTree.is_control(inode) or not self.ns.get(inode).is_reg:
                return []
            return [XATTR_PREFIX + k.encode() for k in XATTRS]

    async def getxattr(self, inode: int, name: bytes, ctx):
        with _errno():
            if ControlTree.is_control(inode) or not name.startswith(XATTR_PREFIX):
                raise FsError(pyfuse3.ENOATTR)
            key = name[len(XATTR_PREFIX):].decode(errors="replace")
            node = self.ns.get(inode)
            if node.is_dir and self.cluster is not None:
                value = self.cluster.xattr(self, inode, key)
                if value is None:
                    raise FsError(pyfuse3.ENOATTR)
                return value
            if key not in XATTRS or not node.is_reg:
                raise FsError(pyfuse3.ENOATTR)
            fm = self.files.get(inode)
            size = fm.size if fm is not None else node.size
            value = self.store.file_figures(inode, size)[key]
            return (f"{value:.2f}" if key == "ratio" else str(round(value))).encode()

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx):
        with _errno():
            if inode == CONTROL_DIR and name == b"user.lzfs.gc":
                await self.gc()
                return
            raise FsError(errno.ENOTSUP)

    async def removexattr(self, inode: int, name: bytes, ctx):
        with _errno():
            raise FsError(errno.ENOTSUP)

    async def release(self, fh: int) -> None:
        with _errno():
            h = self.handles.pop(fh)
            if self.control_handles.pop(fh, None) is not None:
                return
            fm = self.files.get(h.ino)
            if fm is None:
                return
            fm.opens -= 1
            if h.writable:
                await fm.flush()
            if fm.opens == 0:
                self._drop_idle(h.ino)
                self._maybe_purge(h.ino)

    def _drop_idle(self, ino: int) -> None:
        fm = self.files.get(ino)
        if fm is not None and fm.opens == 0 and not fm.dirty:
            del self.files[ino]


def _bucket(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class _errno:
    """Context manager mapping failures to FUSEError: FsError carries its errno, OSError
    (ENOSPC from a pack write, say) keeps its own, corrupt data is EIO and is logged."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, etype, exc, tb) -> bool:
        if exc is None or isinstance(exc, pyfuse3.FUSEError):
            return False
        if isinstance(exc, FsError):
            raise pyfuse3.FUSEError(exc.errno) from None
        if isinstance(exc, CorruptDataError):
            log.error("corrupt data: %s", exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        if isinstance(exc, LzfsError):  # the object store failed (cluster): said in the log
            log.error("%s", exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        if isinstance(exc, OSError) and exc.errno:
            log.error("I/O error: %s", exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        if isinstance(exc, KeyError):
            raise pyfuse3.FUSEError(errno.EBADF) from None
        if isinstance(exc, Exception):
            log.exception("internal error")
            raise pyfuse3.FUSEError(errno.EIO) from None
        return False
