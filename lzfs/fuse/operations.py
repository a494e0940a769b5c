"""The FUSE protocol adapter: turns pyfuse3 requests into calls on the core (core.py), the
namespace (names, attributes) and file maps (bytes), and failures into errnos.

It keeps only the state the kernel protocol itself needs: open handles and lookup counts.
Commits, gc, purging and what a cluster node does live in the core and its hooks, the `.lzfs`
tree in control.py; this class never asks what kind of store it serves.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pyfuse3

from lzfs.core.backing import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from lzfs.core.core import Core
from lzfs.core.metrics import Metrics
from lzfs.core.prefetch import Readahead
from lzfs.criu.opener import is_criu, is_lazy_pages_daemon
from lzfs.errors import CorruptDataError, LzfsError
from lzfs.fuse.control import CONTROL_DIR, CONTROL_NAME, ControlTree, is_control
from lzfs.report import dedup as report
from lzfs.store.namespace import ROOT_INODE, FsError, Inode, now_ns

log = logging.getLogger(__name__)

ATTR_TIMEOUT = 1.0
ENTRY_TIMEOUT = 5.0
Attrs = pyfuse3.EntryAttributes
XATTR_PREFIX = b"user.lzfs."
XATTRS = ("logical", "stored", "unique", "zero", "blocks", "ratio", "damaged")
# readdir offsets: `.` is 1, `..` is 2, an entry is its dentry id + DOTS (ids only grow, so an
# offset handed out stays valid while entries are added and removed)
DOTS = 2


@dataclass
class Handle:
    ino: int
    writable: bool
    ra: Readahead = field(default_factory=Readahead)
    content: bytes | None = None  # a .lzfs file's bytes as they were at open


def _file_mode(mode: int) -> int:
    """A regular file's mode without setuid and setgid. lzfs asks the kernel to leave killing
    them on a write to it (``handle_killpriv_v2``), and keeps none to kill: a store of CRIU
    images has no use for them, and FUSE mounts are nosuid."""
    return mode & ~(stat.S_ISUID | stat.S_ISGID) if stat.S_ISREG(mode) else mode


class LzfsOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    # ask the kernel for passthrough (the pyfuse3 of third_party/; others ignore it): a dump's
    # files then go to staging files without a byte through this process (Core.backing_for)
    enable_passthrough = True
    max_backing_stack_depth = 1  # staging files may sit on overlayfs (a container's disk)
    # lzfs clears setuid/setgid and security.capability itself (a regular file never has
    # them: _file_mode), so the kernel sets SB_NOSEC: without it, every write to a file
    # first asked this process for security.capability, a round trip per splice of a dump
    handle_killpriv_v2 = True

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.ns = core.ns
        self.control = ControlTree(core.figures, lambda: report.snapshot_report(core.store))
        self.handles: dict[int, Handle] = {}
        self.lookups: dict[int, int] = {}
        self._fhs = itertools.count(1)

    # ---- helpers -----------------------------------------------------------------------------

    def _attrs(self, node: Inode) -> Attrs:
        a = Attrs()
        a.st_ino = node.id
        a.entry_timeout = ENTRY_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        a.st_mode = _file_mode(node.mode)  # also of a file a version before this stored
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = node.rdev
        a.st_size, stored = self.core.sizes(node)
        a.st_blksize = 128 * 1024
        a.st_blocks = (stored + 511) // 512
        a.st_atime_ns = node.atime_ns
        a.st_mtime_ns = node.mtime_ns
        a.st_ctime_ns = node.ctime_ns
        return a

    def _control_attrs(self, ino: int) -> Attrs:
        a = Attrs()
        a.st_ino = ino
        a.st_mode = self.control.mode(ino)
        a.st_nlink = 2 if ino == CONTROL_DIR else 1
        a.st_uid, a.st_gid = os.getuid(), os.getgid()
        a.st_size = 0 if ino == CONTROL_DIR else len(self.control.content(ino))
        a.st_blksize = 4096
        a.entry_timeout = a.attr_timeout = 0
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = now_ns()
        return a

    def _any_attrs(self, ino: int) -> Attrs:
        return self._control_attrs(ino) if is_control(ino) else self._attrs(self.ns.get(ino))

    def _guard(self, parent: int, name: bytes | None = None, creating: bool = True) -> None:
        """Nothing is created, removed or renamed in or as `.lzfs`."""
        if is_control(parent):
            raise FsError(errno.EROFS)
        if parent == ROOT_INODE and name == CONTROL_NAME:
            raise FsError(errno.EEXIST if creating else errno.EPERM)

    def _counted(self, node: Inode) -> Attrs:
        self.lookups[node.id] = self.lookups.get(node.id, 0) + 1
        return self._attrs(node)

    def _maybe_purge(self, ino: int) -> None:
        """An inode the kernel no longer knows may go, if it is also nameless and closed."""
        if not self.lookups.get(ino):
            self.core.purge_if_unused(ino)

    def _top_level_gone(self, *entries: tuple[int, bytes]) -> None:
        for parent, name in entries:
            if parent == ROOT_INODE:
                self.core.hooks.on_top_level_gone(name)

    def _backing(self, ino: int, writable: bool) -> int | None:
        """The passthrough backing id for an open of ``ino``, or None. A kernel that refuses
        one (an error no check foresaw) leaves the open to this process, said in the log."""
        try:
            return self.core.backing_for(ino, writable)
        except OSError as exc:
            log.warning("%s: served by the daemon, the kernel refused passthrough: %s",
                        self.ns.path_of(ino), exc)
            return None

    def _observe(self, op: str, started: float, nbytes: int) -> None:
        m = self.core.metrics
        m.request_seconds.labels(op).observe(time.perf_counter() - started)
        m.request_bytes.labels(op).inc(nbytes)

    def _new_fh(self, handle: Handle) -> int:
        fh = next(self._fhs)
        self.handles[fh] = handle
        return fh

    # ---- names -------------------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Attrs:
        with _errno(self.core.metrics):
            if is_control(parent_inode):
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
                await self.core.hooks.enter_dir(parent_inode)
                try:
                    ino = self.ns.lookup(parent_inode, name)
                except FsError as exc:
                    if parent_inode != ROOT_INODE or exc.errno != errno.ENOENT:
                        raise
                    await self.core.hooks.maybe_refresh_root()  # published since we looked?
                    ino = self.ns.lookup(parent_inode, name)
            return self._counted(self.ns.get(ino))

    async def forget(self, inode_list: Any) -> None:
        for ino, n in inode_list:
            if is_control(ino):
                continue
            left = self.lookups.get(ino, 0) - n
            if left > 0:
                self.lookups[ino] = left
                continue
            self.lookups.pop(ino, None)
            try:
                self._maybe_purge(ino)
            except Exception:  # forget must not fail
                log.exception("forget of inode %d", ino)

    async def getattr(self, inode: int, ctx: Any = None) -> Attrs:
        with _errno(self.core.metrics):
            return self._any_attrs(inode)

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Attrs:
        with _errno(self.core.metrics):
            if is_control(inode):
                raise FsError(errno.EROFS)
            node = self.ns.get(inode)
            changes: dict[str, int] = {}
            t = now_ns()
            if fields.update_size:
                if not node.is_reg:
                    raise FsError(errno.EINVAL)
                await self.core.truncate(inode, attr.st_size)
                changes["mtime_ns"] = t
            if fields.update_mode:
                changes["mode"] = _file_mode((node.mode & ~0o7777) | (attr.st_mode & 0o7777))
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

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        with _errno(self.core.metrics):
            node = self.ns.get(inode)
            if node.target is None:
                raise FsError(errno.EINVAL)
            return node.target

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Attrs:
        with _errno(self.core.metrics):
            self._guard(parent_inode, name)
            node = self.ns.create(parent_inode, name, stat.S_IFDIR | (mode & ~ctx.umask & 0o7777),
                                  ctx.uid, ctx.gid)
            return self._counted(node)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Attrs:
        with _errno(self.core.metrics):
            self._guard(parent_inode, name)
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                raise FsError(errno.EPERM)  # no device nodes in a snapshot store
            node = self.ns.create(parent_inode, name, _file_mode(mode & ~ctx.umask), ctx.uid,
                                  ctx.gid, rdev)
            return self._counted(node)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Attrs:
        with _errno(self.core.metrics):
            self._guard(parent_inode, name)
            if len(target) > 4095:
                raise FsError(errno.ENAMETOOLONG)
            node = self.ns.create(parent_inode, name, stat.S_IFLNK | 0o777, ctx.uid, ctx.gid,
                                  target=target)
            return self._counted(node)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Attrs:
        with _errno(self.core.metrics):
            self._guard(new_parent_inode, new_name)
            if is_control(inode):
                raise FsError(errno.EROFS)
            return self._counted(self.ns.link(inode, new_parent_inode, new_name))

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with _errno(self.core.metrics):
            self._guard(parent_inode, name, creating=False)
            node = self.ns.unlink(parent_inode, name, want_dir=False)
            if node.nlink == 0:
                self._maybe_purge(node.id)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with _errno(self.core.metrics):
            self._guard(parent_inode, name, creating=False)
            if parent_inode == ROOT_INODE:  # a snapshot: a node publishes its deletion first
                ino = self.ns.lookup(ROOT_INODE, name)
                await self.core.hooks.enter_dir(ino)  # known by name only: empty in looks
                if self.ns.get(ino).is_dir and self.ns.is_empty(ino):
                    await self.core.hooks.before_snapshot_removed(name)
            node = self.ns.unlink(parent_inode, name, want_dir=True)
            self._top_level_gone((parent_inode, name))
            self._maybe_purge(node.id)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        with _errno(self.core.metrics):
            self._guard(parent_inode_old, name_old, creating=False)
            self._guard(parent_inode_new, name_new)
            if parent_inode_old == ROOT_INODE:  # a snapshot known by name only moves whole
                await self.core.hooks.enter_dir(self.ns.lookup(ROOT_INODE, name_old))
            replaced = self.ns.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                                      flags)
            self._top_level_gone((parent_inode_old, name_old), (parent_inode_new, name_new))
            if replaced is not None and replaced.nlink == 0:
                self._maybe_purge(replaced.id)

    # ---- directories -------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: Any) -> int:
        with _errno(self.core.metrics):
            if inode != CONTROL_DIR and not self.ns.get(inode).is_dir:
                raise FsError(errno.ENOTDIR)
            return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        """`.` and `..` first, then the entries; the kernel counts no lookup of the dots."""
        with _errno(self.core.metrics):
            if fh == ROOT_INODE and start_id == 0:
                await self.core.hooks.maybe_refresh_root()
            elif start_id == 0 and fh != CONTROL_DIR:
                await self.core.hooks.enter_dir(fh)
            parent = ROOT_INODE if fh == CONTROL_DIR else self.ns.parent_of(fh)
            fixed = [(b".", fh), (b"..", parent)]
            if fh == CONTROL_DIR:  # its entries never change: their index is their offset
                fixed += self.control.listing()
            for off, (name, ino) in enumerate(fixed, 1):
                if off > start_id and not pyfuse3.readdir_reply(
                        token, name, self._any_attrs(ino), off):
                    return
            if fh == CONTROL_DIR:
                return
            after = max(start_id - DOTS, 0)
            while rows := self.ns.readdir(fh, after):
                for dentry_id, name, ino in rows:
                    attrs = self._attrs(self.ns.get(ino))
                    if not pyfuse3.readdir_reply(token, name, attrs, dentry_id + DOTS):
                        return
                    self.lookups[ino] = self.lookups.get(ino, 0) + 1
                    after = dentry_id

    async def releasedir(self, fh: int) -> None:
        return None

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        """Commit; on a cluster node, syncing a snapshot directory also publishes it."""
        with _errno(self.core.metrics):
            await self.core.commit()
            await self.core.hooks.on_fsyncdir(fh)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        with _errno(self.core.metrics):
            vfs = os.statvfs(self.core.store.root)
            s = pyfuse3.StatvfsData()  # the disk under the store, and its inodes plus ours
            for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_ffree",
                      "f_favail"):
                setattr(s, k, getattr(vfs, k))
            # the reserve kept for metadata is not there for files: writes fail before it
            reserve = -(-self.core.space.reserve // max(vfs.f_frsize, 1))
            s.f_bavail = max(vfs.f_bavail - reserve, 0)
            s.f_files = self.ns.count() + vfs.f_ffree
            s.f_namemax = 255
            return s

    # ---- files -------------------------------------------------------------------------------
    # How an open is served (lzfs/criu/opener.py): a staged file by the kernel from its staging
    # file (passthrough); CRIU restoring with direct_io, so that its large preadv arrive whole
    # (up to 1 MiB) instead of as readahead pieces, except where it reads page by page
    # (`criu lazy-pages`, a forked worker's copy-on-write pages: Core.read_page_by_page);
    # everyone else through the page cache, kept across opens while the file did not change
    # behind the kernel's back (Core.kernel_cache_valid): a second read is the kernel's alone.

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        with _errno(self.core.metrics):
            if is_control(inode):
                if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
                    raise FsError(errno.EROFS)
                content = self.control.content(inode, fresh=True)
                fh = self._new_fh(Handle(inode, False, content=content))
                return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
            node = self.ns.get(inode)
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if not node.is_reg:
                raise FsError(errno.EINVAL)
            self.core.opened(inode)
            writable = (flags & os.O_ACCMODE) != os.O_RDONLY
            try:
                if flags & os.O_TRUNC and writable:
                    await self.core.truncate(inode, 0)
                    self.ns.set_attrs(inode, mtime_ns=now_ns(), ctime_ns=now_ns())
                backing = self._backing(inode, writable)
                criu = not writable and is_criu(ctx.pid)
                if criu:
                    self.core.restore_starts(inode)
                direct = (backing is None and criu and not is_lazy_pages_daemon(ctx.pid)
                          and not await self.core.read_page_by_page(inode))
            except BaseException:
                self.core.unopened(inode)
                self._maybe_purge(inode)
                raise
            fh = self._new_fh(Handle(inode, writable))
            if backing is not None:
                return pyfuse3.FileInfo(fh=fh, backing_id=backing)
            return pyfuse3.FileInfo(fh=fh, direct_io=direct,
                                    keep_cache=not direct and self.core.kernel_cache_valid(inode))

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
                     ) -> tuple[pyfuse3.FileInfo, Attrs]:
        with _errno(self.core.metrics):
            self._guard(parent_inode, name)
            node = self.ns.create(parent_inode, name,
                                  _file_mode(stat.S_IFREG | (mode & ~ctx.umask & 0o7777)),
                                  ctx.uid, ctx.gid)
            self.core.created(parent_inode)
            self.core.opened(node.id)
            try:
                backing = self._backing(node.id, True)
            except BaseException:
                self.core.unopened(node.id)
                raise
            fh = self._new_fh(Handle(node.id, True))
            info = (pyfuse3.FileInfo(fh=fh, backing_id=backing) if backing is not None else
                    pyfuse3.FileInfo(fh=fh, keep_cache=False))
            return info, self._counted(node)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        with _errno(self.core.metrics):
            h = self.handles[fh]
            if h.content is not None:
                return h.content[off:off + size]
            self.core.request_sizes["read", _bucket(size)] += 1
            started = time.perf_counter()
            try:  # a view, not a copy: pyfuse3 takes any buffer
                data = cast(bytes, await self.core.files[h.ino].read(off, size, h.ra,
                                                                     reply=True))
            except CorruptDataError as exc:
                raise CorruptDataError(f"{self.ns.path_of(h.ino)} at offset {off} "
                                       f"(+{size}): {exc}") from None
            self._observe("read", started, len(data))
            return data

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        with _errno(self.core.metrics):
            h = self.handles[fh]
            self.core.request_sizes["write", _bucket(len(buf))] += 1
            started = time.perf_counter()
            self.core.admit(len(buf))
            await self.core.files[h.ino].write(off, buf)
            self._observe("write", started, len(buf))
            return len(buf)

    async def flush(self, fh: int) -> None:
        with _errno(self.core.metrics):
            h = self.handles[fh]
            if h.writable:
                await self.core.files[h.ino].flush()

    async def fsync(self, fh: int, datasync: bool) -> None:
        with _errno(self.core.metrics):
            h = self.handles[fh]
            if h.content is None:
                await self.core.files[h.ino].flush()
            await self.core.commit()

    async def release(self, fh: int) -> None:
        with _errno(self.core.metrics):
            h = self.handles.pop(fh)
            if h.content is None:
                await self.core.closed(h.ino, h.writable)
                self._maybe_purge(h.ino)

    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """Punching a hole (with KEEP_SIZE, as CRIU's --auto-dedup does) gives the range's
        pages back; any other mode is not supported (EOPNOTSUPP, never a silent no-op)."""
        with _errno(self.core.metrics):
            h = self.handles[fh]
            if mode != FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE or h.content is not None:
                raise FsError(errno.EOPNOTSUPP)
            if not h.writable:
                raise FsError(errno.EBADF)
            if offset < 0 or length <= 0:
                raise FsError(errno.EINVAL)
            await self.core.punch(h.ino, offset, length)

    # ---- extended attributes: per-file figures, and gc on demand ----------------------------

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        with _errno(self.core.metrics):
            if is_control(inode) or not self.ns.get(inode).is_reg:
                return []
            return [XATTR_PREFIX + k.encode() for k in XATTRS]

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        with _errno(self.core.metrics):
            if is_control(inode) or not name.startswith(XATTR_PREFIX):
                raise FsError(pyfuse3.ENOATTR)
            key = name[len(XATTR_PREFIX):].decode(errors="replace")
            node = self.ns.get(inode)
            value = self.core.hooks.dir_xattr(inode, key) if node.is_dir else None
            if value is not None:
                return value
            if key not in XATTRS or not node.is_reg:
                raise FsError(pyfuse3.ENOATTR)
            figure = self.core.file_figures(node)[key]
            return (f"{figure:.2f}" if key == "ratio" else str(round(figure))).encode()

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        with _errno(self.core.metrics):
            if inode != CONTROL_DIR or name not in (b"user.lzfs.gc", b"user.lzfs.settle"):
                raise FsError(errno.ENOTSUP)
            await self.core.settle()  # staged data is space to give back too
            if name == b"user.lzfs.gc":
                await self.core.gc()

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        with _errno(self.core.metrics):
            raise FsError(errno.ENOTSUP)


def _bucket(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class _errno:
    """Context manager mapping failures to FUSEError: FsError carries its errno, OSError
    (ENOSPC from a pack write, say) keeps its own, corrupt data is EIO and is logged. Every
    error answered is counted by errno (the metrics)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __enter__(self) -> None:
        return None

    def __exit__(self, etype: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            self._map(exc)
        except pyfuse3.FUSEError as err:
            self.metrics.error(err.errno)
            raise

    def _map(self, exc: BaseException | None) -> None:
        if exc is None:
            return
        if isinstance(exc, pyfuse3.FUSEError):
            raise exc
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

