"""Inodes, directory entries and symlinks, as rows of the metadata DB.

This module is the only code that reads or writes the ``inodes`` and ``dentries`` tables (fsck
and the schema upgrades aside): the mount, snapshot walks (snapshot.py), manifests and the
cluster exchange all come through ``Namespace``. Only names and attributes live here; a file's
bytes are the block maps' (blockmap.py). Every method is synchronous and runs on the DB thread;
failures are FsError with the errno the FUSE layer returns.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lzfs.store.db import MetaDB

ROOT_INODE = 1
_S_IFMT = 0o170000
NAME_MAX = 255  # bytes in one name, as on every Linux file system (pjdfstest checks it)


class FsError(Exception):
    """An errno for the FUSE layer to return."""

    def __init__(self, err: int) -> None:
        super().__init__(os.strerror(err))
        self.errno = err


@dataclass(slots=True)
class Inode:
    id: int
    mode: int
    uid: int
    gid: int
    rdev: int
    nlink: int
    size: int
    stored: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: bytes | None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)


_COLS = "id, mode, uid, gid, rdev, nlink, size, stored, atime_ns, mtime_ns, ctime_ns, target"


def now_ns() -> int:
    return time.time_ns()


def check_name(name: bytes) -> None:
    """The one check of a name's length. The kernel leaves it to the file system and asks
    lookup first for every path operation, so a name that cannot exist must fail there with
    ENAMETOOLONG (as ext4 and tmpfs do), not ENOENT: otherwise create, link or rename would be
    asked to make it next."""
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)


def path_of(db: MetaDB, ino: int) -> str:
    """A path of ``ino`` from the mount root (its first name at each level), for messages
    that must say which file is hurt. Reads only: fsck uses it on a read-only database."""
    parts: list[str] = []
    seen = set()
    while ino != ROOT_INODE and ino not in seen:
        seen.add(ino)
        row = db.execute("SELECT parent, name FROM dentries WHERE ino=? LIMIT 1",
                         (ino,)).fetchone()
        if row is None:
            parts.append(f"<inode {ino}, unlinked>")
            break
        ino = row[0]
        name = row[1]
        parts.append(name.decode(errors="replace") if isinstance(name, bytes) else str(name))
    return "/" + "/".join(reversed(parts))


class Namespace:
    def __init__(self, db: MetaDB) -> None:
        self.db = db

    def ensure_root(self) -> None:
        """Make the root directory if the store has none yet (a new store, or one fsck found
        without it): done by a mount, never by a read-only look."""
        if self.db.execute("SELECT 1 FROM inodes WHERE id=?", (ROOT_INODE,)).fetchone() is None:
            t = now_ns()
            self.db.execute(
                "INSERT INTO inodes(id, mode, uid, gid, nlink, atime_ns, mtime_ns, ctime_ns) "
                "VALUES (?,?,?,?,2,?,?,?)",
                (ROOT_INODE, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), t, t, t))

    # ---- reading ---------------------------------------------------------------------------

    def get(self, ino: int) -> Inode:
        row = self.db.execute(f"SELECT {_COLS} FROM inodes WHERE id=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        return Inode(*row)

    def lookup(self, parent: int, name: bytes) -> int:
        check_name(name)
        row = self.db.execute("SELECT ino FROM dentries WHERE parent=? AND name=?",
                              (parent, name)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        return row[0]

    def child(self, parent: int, name: bytes) -> int | None:
        """The inode ``name`` names in ``parent``, or None (no errno: a question, not a
        lookup the kernel made)."""
        row = self.db.execute("SELECT ino FROM dentries WHERE parent=? AND name=?",
                              (parent, name)).fetchone()
        return None if row is None else row[0]

    def parent_of(self, ino: int) -> int:
        entry = self.dentry_of(ino)
        return entry[0] if entry else ROOT_INODE

    def path_of(self, ino: int) -> str:
        return path_of(self.db, ino)

    def dentry_of(self, ino: int) -> tuple[int, bytes] | None:
        """(parent, name) of one of the names of ``ino``, or None if it has none."""
        row = self.db.execute("SELECT parent, name FROM dentries WHERE ino=? LIMIT 1",
                              (ino,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def readdir(self, parent: int, after: int, limit: int = 256) -> list[tuple[int, bytes, int]]:
        """(dentry id, name, ino) after dentry id ``after``, in id order."""
        return self.db.execute(
            "SELECT id, name, ino FROM dentries WHERE parent=? AND id>? ORDER BY id LIMIT ?",
            (parent, after, limit)).fetchall()

    def is_empty(self, ino: int) -> bool:
        return self.db.execute("SELECT 1 FROM dentries WHERE parent=? LIMIT 1",
                               (ino,)).fetchone() is None

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM inodes").fetchone()[0]

    def figures(self) -> tuple[int, int, int]:
        """(regular files, their bytes, directories) of the whole store."""
        q = self.db.execute
        files, logical = q("SELECT COUNT(*), COALESCE(SUM(size),0) FROM inodes "
                           f"WHERE (mode & {_S_IFMT}) = {stat.S_IFREG}").fetchone()
        dirs = q(f"SELECT COUNT(*) FROM inodes WHERE (mode & {_S_IFMT}) = {stat.S_IFDIR}"
                 ).fetchone()[0]
        return files, logical, dirs

    def children(self, ino: int) -> list[tuple[bytes, int]]:
        """(name, ino) of every entry of directory ``ino``, in creation order."""
        return [(bytes(name), child) for name, child in self.db.execute(
            "SELECT name, ino FROM dentries WHERE parent=? ORDER BY id", (ino,))]

    def walk(self, top: int) -> Iterator[tuple[str, Inode]]:
        """(path below ``top``, inode) of everything under directory ``top``, depth first, in
        one read with no checkpoint if the caller needs one consistent moment."""
        stack = [(top, "")]
        while stack:
            parent, base = stack.pop()
            for name, ino in self.children(parent):
                node = self.get(ino)
                path = base + name.decode("utf-8", "surrogateescape")
                yield path, node
                if node.is_dir:
                    stack.append((ino, path + "/"))

    def all_inodes(self) -> Iterator[tuple[int, int, int, int]]:
        """(ino, mode, size, mtime_ns) of every inode: for whole-store reports."""
        yield from self.db.execute("SELECT id, mode, size, mtime_ns FROM inodes")

    def all_dentries(self) -> Iterator[tuple[int, bytes, int]]:
        """(parent, name, ino) of every entry, in creation order: for whole-store reports."""
        yield from self.db.execute("SELECT parent, name, ino FROM dentries ORDER BY id")

    def top_dirs(self) -> dict[bytes, int]:
        """name -> inode of each directory at the root (a node's snapshots)."""
        return {bytes(name): ino for name, ino in self.db.execute(
            "SELECT d.name, d.ino FROM dentries d JOIN inodes i ON i.id = d.ino "
            f"WHERE d.parent = ? AND (i.mode & {_S_IFMT}) = {stat.S_IFDIR}", (ROOT_INODE,))}

    # ---- changing --------------------------------------------------------------------------

    def check_new(self, parent: int, name: bytes) -> None:
        """Whether ``name`` can be made in ``parent``, in the order Linux reports it: the
        directory (ENOENT, ENOTDIR), the name's length (ENAMETOOLONG), then EEXIST. A caller
        that refuses a kind of file (mknod of a device: EPERM) asks this before refusing."""
        self._check_dir(parent)
        check_name(name)
        if self.db.execute("SELECT 1 FROM dentries WHERE parent=? AND name=?",
                           (parent, name)).fetchone():
            raise FsError(errno.EEXIST)

    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
               rdev: int = 0, target: bytes | None = None) -> Inode:
        self.check_new(parent, name)
        t = now_ns()
        nlink = 2 if stat.S_ISDIR(mode) else 1
        size = len(target) if target is not None else 0
        cur = self.db.execute(
            "INSERT INTO inodes(mode, uid, gid, rdev, nlink, size, atime_ns, mtime_ns, ctime_ns,"
            " target) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (mode, uid, gid, rdev, nlink, size, t, t, t, target))
        ino = cur.lastrowid
        assert ino is not None  # an INSERT into a rowid table always sets it
        self.db.execute("INSERT INTO dentries(parent, name, ino) VALUES (?,?,?)",
                        (parent, name, ino))
        self._touch_dir(parent, t, nlink_delta=1 if stat.S_ISDIR(mode) else 0)
        return self.get(ino)

    def create_dirs(self, parent: int, names: list[bytes], mode: int, uid: int, gid: int
                    ) -> list[int]:
        """Empty directories of new names (the caller knows none exists), in one batch: a
        cluster node makes thousands at mount. Returns their inodes."""
        t = now_ns()
        inos = []
        for name in names:
            check_name(name)
            cur = self.db.execute(
                "INSERT INTO inodes(mode, uid, gid, nlink, atime_ns, mtime_ns, ctime_ns) "
                "VALUES (?,?,?,2,?,?,?)", (stat.S_IFDIR | (mode & 0o7777), uid, gid, t, t, t))
            assert cur.lastrowid is not None
            inos.append(cur.lastrowid)
        self.db.executemany("INSERT INTO dentries(parent, name, ino) VALUES (?,?,?)",
                            [(parent, n, i) for n, i in zip(names, inos, strict=True)])
        if names:
            self._touch_dir(parent, t, nlink_delta=len(names))
        return inos

    def link(self, ino: int, parent: int, name: bytes) -> Inode:
        self.check_new(parent, name)
        node = self.get(ino)
        if node.is_dir:
            raise FsError(errno.EPERM)
        t = now_ns()
        self.db.execute("INSERT INTO dentries(parent, name, ino) VALUES (?,?,?)",
                        (parent, name, ino))
        self.db.execute("UPDATE inodes SET nlink=nlink+1, ctime_ns=? WHERE id=?", (t, ino))
        self._touch_dir(parent, t)
        return self.get(ino)

    def unlink(self, parent: int, name: bytes, want_dir: bool) -> Inode:
        """Remove a name. Returns the inode as it is afterwards (nlink 0: no name left)."""
        ino = self.lookup(parent, name)
        node = self.get(ino)
        if want_dir:
            if not node.is_dir:
                raise FsError(errno.ENOTDIR)
            if not self.is_empty(ino):
                raise FsError(errno.ENOTEMPTY)
        elif node.is_dir:
            raise FsError(errno.EISDIR)
        t = now_ns()
        self.db.execute("DELETE FROM dentries WHERE parent=? AND name=?", (parent, name))
        nlink = 0 if node.is_dir else node.nlink - 1
        self.db.execute("UPDATE inodes SET nlink=?, ctime_ns=? WHERE id=?", (nlink, t, ino))
        self._touch_dir(parent, t, nlink_delta=-1 if node.is_dir else 0)
        node.nlink = nlink
        return node

    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes,
               flags: int) -> Inode | None:
        """Move a name. Returns the inode that lost its name to the move (replaced), if any."""
        ino = self.lookup(old_parent, old_name)
        node = self.get(ino)
        self._check_dir(new_parent)
        check_name(new_name)
        if node.is_dir and self._is_ancestor(ino, new_parent):
            raise FsError(errno.EINVAL)
        try:
            target_ino = self.lookup(new_parent, new_name)
        except FsError:
            target_ino = None
        if flags & _RENAME_EXCHANGE:
            if target_ino is None:
                raise FsError(errno.ENOENT)
            target = self.get(target_ino)
            if target.is_dir and self._is_ancestor(target_ino, old_parent):
                raise FsError(errno.EINVAL)
            self.db.execute("UPDATE dentries SET ino=? WHERE parent=? AND name=?",
                            (target_ino, old_parent, old_name))
            self.db.execute("UPDATE dentries SET ino=? WHERE parent=? AND name=?",
                            (ino, new_parent, new_name))
            t = now_ns()
            # a directory swapped for a file moves one subdirectory link between the parents
            delta = int(target.is_dir) - int(node.is_dir) if old_parent != new_parent else 0
            self._touch_dir(old_parent, t, nlink_delta=delta)
            self._touch_dir(new_parent, t, nlink_delta=-delta)
            return None
        if target_ino == ino:
            return None
        replaced = None
        if target_ino is not None:
            if flags & _RENAME_NOREPLACE:
                raise FsError(errno.EEXIST)
            target = self.get(target_ino)
            if target.is_dir != node.is_dir:
                raise FsError(errno.EISDIR if target.is_dir else errno.ENOTDIR)
            replaced = self.unlink(new_parent, new_name, want_dir=target.is_dir)
        t = now_ns()
        self.db.execute("UPDATE dentries SET parent=?, name=? WHERE parent=? AND name=?",
                        (new_parent, new_name, old_parent, old_name))
        self.db.execute("UPDATE inodes SET ctime_ns=? WHERE id=?", (t, ino))
        if node.is_dir and old_parent != new_parent:
            self._touch_dir(old_parent, t, nlink_delta=-1)
            self._touch_dir(new_parent, t, nlink_delta=1)
        else:
            self._touch_dir(old_parent, t)
            self._touch_dir(new_parent, t)
        return replaced

    def set_attrs(self, ino: int, **fields: int) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE inodes SET {cols} WHERE id=?", (*fields.values(), ino))

    def delete(self, ino: int) -> None:
        """Drop an inode row whose last name is gone (its extents are the caller's)."""
        self.db.execute("DELETE FROM inodes WHERE id=? AND nlink=0", (ino,))

    def remove_tree(self, top: int, drop_data: Callable[[int], None]) -> None:
        """Drop a top-level directory and everything under it at once, names and inodes,
        calling ``drop_data`` for each inode first (its runs go through the block maps). Only
        where the kernel holds none of these inodes: a node replacing an imported snapshot at
        mount."""
        inos, stack = [], [top]
        while stack:
            d = stack.pop()
            inos.append(d)
            stack.extend(ino for _, ino in self.children(d))
        for ino in inos:
            drop_data(ino)
            self.db.execute("DELETE FROM dentries WHERE ino=? OR parent=?", (ino, ino))
            self.db.execute("DELETE FROM inodes WHERE id=?", (ino,))
        self.db.execute("UPDATE inodes SET nlink = nlink - 1 WHERE id=?", (ROOT_INODE,))

    def orphans(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM inodes WHERE nlink=0")]

    # ---- helpers ---------------------------------------------------------------------------

    def _check_dir(self, ino: int) -> None:
        row = self.db.execute("SELECT mode, nlink FROM inodes WHERE id=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT)
        if not stat.S_ISDIR(row[0]):
            raise FsError(errno.ENOTDIR)
        if row[1] == 0:
            raise FsError(errno.ENOENT)  # a removed directory takes no new names

    def _touch_dir(self, ino: int, t: int, nlink_delta: int = 0) -> None:
        self.db.execute("UPDATE inodes SET mtime_ns=?, ctime_ns=?, nlink=nlink+? WHERE id=?",
                        (t, t, nlink_delta, ino))

    def _is_ancestor(self, ino: int, of: int) -> bool:
        cur = of
        while True:
            if cur == ino:
                return True
            if cur == ROOT_INODE:
                return False
            cur = self.parent_of(cur)


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
