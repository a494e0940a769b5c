"""`lzfs import` and `lzfs export`: checked copies of a CRIU images directory into or out of a
mount.

Both copy into a hidden sibling (``.NAME.partial-PID``), verify every file by reading it back
and comparing its XXH3-128 with the source's, and only then rename it into place: an interrupted
or failed transfer leaves no half snapshot under the real name (the partial directory is removed
on the way out). Data goes through the mount in 1 MiB writes, the size FUSE requests arrive in
anyway, so import is deduplicated against what the store already holds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import xxhash

from lzfs.cli.common import command
from lzfs.errors import LzfsError
from lzfs.mount.mountinfo import lzfs_mounts
from lzfs.report.render import byte_bars
from lzfs.units import human

CHUNK = 1 << 20


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


def _copy_file(src: Path, dst: Path, advance) -> str:
    h = xxhash.xxh3_128()
    fd_in = os.open(src, os.O_RDONLY)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while True:
                buf = os.read(fd_in, CHUNK)
                if not buf:
                    break
                h.update(buf)
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd_out, view):]
                advance(len(buf))
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
Copy a snapshot directory out of a mount into a plain directory that any CRIU restores from
without lzfs, then read the copy back and compare it.""", """\
  lzfs export /mnt/ckpt/server-1 /srv/plain-copy
  criu restore -D /srv/plain-copy --shell-job -d""")
    s.add_argument("source", metavar="MNT/NAME", help="the snapshot directory in an lzfs mount")
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
    if not inside_mount(src):
        raise LzfsError(f"{src} is not inside an lzfs mount")
    files, total = copy_tree(src, Path(args.dest), show_progress=not args.quiet)
    print(f"exported {files} files, {human(total)}, to {args.dest} (verified)")
