"""`lzfs import` and `lzfs export`: checked copies of a CRIU images directory into or out of a
mount, or out of an unmounted store.

Both copy into a hidden sibling (``.NAME.partial-PID``), verify every file by reading it back
and comparing its XXH3-128 with the source's, and only then rename it into place: an interrupted
or failed transfer leaves no half snapshot under the real name (the partial directory is removed
on the way out). Data goes through the mount in 1 MiB writes, the size FUSE requests arrive in
anyway, so import is deduplicated against what the store already holds. Pages of zeros are
not written: the copy is sparse, as the images CRIU writes are (a 47 MiB snapshot with 20 MiB
of zero pages took 96,168 blocks exported before).

Out of an unmounted store (``lzfs export STORE/NAME``), the files are written from their runs,
holes left as holes, under the store's lock, so no daemon mounts it meanwhile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import xxhash

from lzfs.cli.common import command, store_of
from lzfs.errors import LzfsError
from lzfs.mount.mountinfo import lzfs_mounts
from lzfs.report.render import byte_bars
from lzfs.units import human

CHUNK = 1 << 20
PAGE = 4096
_ZERO = bytes(PAGE)
_ZEROS = bytes(CHUNK)


def inside_mount(path: Path) -> bool:
    path = path.resolve()
    return any(path == m.mountpoint or m.mountpoint in path.parents for m in lzfs_mounts())


def _entries(src: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        base = Path(dirpath)
        out.extend(base / d for d in dirnames)
        out.extend(base / f for f in sorted(filenames))
    return out


def write_sparse(fd: int, buf: bytes | memoryview, off: int) -> None:
    """Write ``buf`` at ``off``, leaving its whole pages of zeros unwritten (holes)."""
    view = memoryview(buf)
    n = len(view)
    start = -1  # where the data being gathered begins
    for i in range(0, n, PAGE):
        zero = view[i:i + PAGE] == _ZERO[:min(PAGE, n - i)]
        if zero and start >= 0:
            _pwrite_all(fd, view[start:i], off + start)
            start = -1
        elif not zero and start < 0:
            start = i
    if start >= 0:
        _pwrite_all(fd, view[start:], off + start)


def _pwrite_all(fd: int, view: memoryview, off: int) -> None:
    while view:
        n = os.pwrite(fd, view, off)
        view, off = view[n:], off + n


def _copy_file(src: Path, dst: Path, advance, limit: int | None = None) -> str:
    """Copy ``src`` (its first ``limit`` bytes) sparsely to a new ``dst``; returns the hash
    of what was read."""
    h = xxhash.xxh3_128()
    fd_in = os.open(src, os.O_RDONLY)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            off = 0
            while limit is None or off < limit:
                buf = os.read(fd_in, CHUNK if limit is None else min(CHUNK, limit - off))
                if not buf:
                    break
                h.update(buf)
                write_sparse(fd_out, buf, off)
                off += len(buf)
                advance(len(buf))
            os.ftruncate(fd_out, off)  # a file that ends in zeros ends in a hole
            os.fsync(fd_out)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)
    return h.hexdigest()


def _hash(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        while buf := f.read(CHUNK):
            h.update(buf)
    return h.hexdigest()


def _check_ends(src: Path, dst: Path) -> None:
    if not src.is_dir():
        raise LzfsError(f"{src} is not a directory")
    if dst.exists() or dst.is_symlink():
        raise LzfsError(f"{dst} already exists; choose a new name")
    if not dst.parent.is_dir():
        raise LzfsError(f"{dst.parent} does not exist")


def copy_tree(src: Path, dst: Path, *, show_progress: bool = True) -> tuple[int, int]:
    """Copy the directory ``src`` to ``dst`` (which must not exist), verified, atomically.
    Returns (files, bytes)."""
    src, dst = src.resolve(), dst.absolute()
    _check_ends(src, dst)
    entries = _entries(src)
    total = sum(p.lstat().st_size for p in entries if p.is_file() and not p.is_symlink())
    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    digests: dict[Path, str] = {}
    files = 0
    try:
        os.mkdir(tmp, 0o700)
        with byte_bars(quiet=not show_progress) as progress:
            task = progress.add_task(f"copy {src.name}", total=total)
            for p in entries:
                rel = p.relative_to(src)
                target = tmp / rel
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(p), target)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(target, 0o700)
                elif stat.S_ISREG(st.st_mode):
                    digests[rel] = _copy_file(p, target, lambda n: progress.advance(task, n))
                    files += 1
                else:
                    raise LzfsError(f"{p}: not a regular file, directory or symlink")
            verify = progress.add_task("verify", total=total)
            for rel, digest in digests.items():
                if _hash(tmp / rel) != digest:
                    raise LzfsError(f"{dst / rel}: read back differs from {src / rel}; "
                                    f"nothing was kept")
                progress.advance(verify, (tmp / rel).stat().st_size)
        for p in reversed(entries):  # modes and times last: a 0400 file was written first
            st = p.lstat()
            target = tmp / p.relative_to(src)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(target, stat.S_IMODE(st.st_mode))
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        st = src.stat()
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files, total


def export_from_store(root: Path, names: list[bytes], dst: Path, show_progress: bool = True
                      ) -> tuple[int, int]:
    """Write the snapshot ``names`` of the unmounted store at ``root`` to ``dst`` (which must
    not exist): files from their runs, holes left as holes, each read back and checked
    against the hash of what it must hold, then renamed into place. Holds the store's lock
    meanwhile, so no daemon mounts it. Returns (files, bytes)."""
    from lzfs.errors import CorruptDataError
    from lzfs.store.layout import StoreLock
    from lzfs.store.store import Store

    dst = dst.absolute()
    if dst.exists() or dst.is_symlink():
        raise LzfsError(f"{dst} already exists; choose a new name")
    lock = StoreLock(root.resolve())
    lock.acquire(record=False)  # a daemon has it: said in one line by StoreLock
    try:
        store = Store(root, readonly=True, exclusive=True, scratch=True)
        from lzfs.cluster.attach import attach_readonly

        node = attach_readonly(store)  # a node's cache: frames only the bucket has, fetched
        try:
            entries = list(store.ns.walk(_snapshot_dir(store, root, names)))
            total = sum(n.size for _, n in entries if n.is_reg)
            tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
            try:
                os.mkdir(tmp, 0o700)
                files = _write_tree(store, entries, tmp, total, names[-1], show_progress)
                os.rename(tmp, dst)
            except CorruptDataError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise LzfsError(f"exporting {dst.name}: {exc}; nothing was kept "
                                f"(lzfs fsck names what is damaged)") from None
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            store.close()
            if node is not None:
                node.close()
    finally:
        lock.release()
    return files, total


def _snapshot_dir(store, root: Path, names: list[bytes]) -> int:
    top = 1
    for name in names:
        child = store.ns.child(top, name)
        if child is None or not store.ns.get(child).is_dir:
            raise LzfsError(f"{root}: no snapshot directory "
                            f"{b'/'.join(names).decode(errors='replace')}")
        top = child
    return top


def _write_tree(store, entries: list, tmp: Path, total: int, name: bytes,
                show_progress: bool) -> int:
    """The files, directories and symlinks of ``entries`` under ``tmp``, checked, with their
    modes and times; returns how many files."""
    digests: dict[str, str] = {}
    with byte_bars(quiet=not show_progress) as progress:
        task = progress.add_task(f"export {name.decode(errors='replace')}", total=total)
        for path, node in entries:
            target = tmp / path
            if node.target is not None:
                os.symlink(os.fsdecode(node.target), target)
            elif node.is_dir:
                os.mkdir(target, 0o700)
            elif node.is_reg:
                digests[path] = _write_from_store(store, node.id, node.size, target)
                progress.advance(task, node.size)
    for path, digest in digests.items():
        if _hash(tmp / path) != digest:
            raise LzfsError(f"{path}: read back differs from the store; nothing was kept")
    for path, node in reversed(entries):
        if node.target is None:
            os.chmod(tmp / path, node.mode & 0o7777)
            os.utime(tmp / path, ns=(node.atime_ns, node.mtime_ns))
    return len(digests)


def _write_from_store(store, ino: int, size: int, target: Path) -> str:
    """One file, from its staging file or its runs; returns the hash of what it holds."""
    if store.staging.has(ino):
        return _copy_file(store.staging.path(ino), target, lambda n: None, size)
    h = xxhash.xxh3_128()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        pos = 0
        frame_id, frame = -1, b""
        for run in store.maps.load(ino):
            if run.off >= size:
                break
            _hash_zeros(h, run.off - pos)
            if run.frame != frame_id:
                if run.frame < 0:
                    from lzfs.errors import CorruptDataError

                    raise CorruptDataError(f"inode {ino} at {run.off}: its data is lost")
                frame_id, frame = run.frame, store.read_frame(store.frame_loc(run.frame))
            data = memoryview(frame)[run.foff:run.foff + min(run.len, size - run.off)]
            h.update(data)
            write_sparse(fd, data, run.off)
            pos = run.off + len(data)
        _hash_zeros(h, size - pos)
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    return h.hexdigest()


def _hash_zeros(h: Any, n: int) -> None:
    while n > 0:
        k = min(n, len(_ZEROS))
        h.update(_ZEROS[:k])
        n -= k


def register(sub: Any) -> None:
    s = command(sub, "import", "bring a plain CRIU images directory into a mount", """\
Copy a plain CRIU images directory into a new snapshot directory of a mount, then read the
copy back and compare it with the source.""", """\
  lzfs import /srv/plain-dump /mnt/ckpt/server-2""")
    s.add_argument("source", metavar="PLAIN_DIR", help="the images directory to copy")
    s.add_argument("dest", metavar="MNT/NAME",
                   help="the new directory inside an lzfs mount (must not exist)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=run_import)

    s = command(sub, "export", "write a plain copy any CRIU can restore from", """\
Copy a snapshot directory out of a mount, or out of an unmounted store, into a plain
directory that any CRIU restores from without lzfs, then read the copy back and compare it.
Pages of zeros are left as holes.""", """\
  lzfs export /mnt/ckpt/server-1 /srv/plain-copy
  lzfs export /var/lib/lzfs/store/server-1 /srv/plain-copy     the store unmounted
  criu restore -D /srv/plain-copy --shell-job -d""")
    s.add_argument("source", metavar="MNT/NAME",
                   help="the snapshot directory in an lzfs mount, or STORE/NAME for an "
                        "unmounted store")
    s.add_argument("dest", metavar="PLAIN_DIR", help="the directory to write (must not exist)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> None:
    dst = Path(args.dest)
    if not inside_mount(dst.parent):
        raise LzfsError(f"{dst} is not inside an lzfs mount")
    files, total = copy_tree(Path(args.source), dst, show_progress=not args.quiet)
    print(f"imported {files} files, {human(total)}, into {dst} (verified)")


def run_export(args: argparse.Namespace) -> None:
    src = Path(args.source)
    if inside_mount(src):
        files, total = copy_tree(src, Path(args.dest), show_progress=not args.quiet)
    elif (found := store_of(src)) is not None:
        root, names = found
        files, total = export_from_store(root, names, Path(args.dest),
                                         show_progress=not args.quiet)
    else:
        raise LzfsError(f"{src} is neither inside an lzfs mount nor STORE/NAME of a store")
    print(f"exported {files} files, {human(total)}, to {args.dest} (verified)")
