"""Finding lzfs mounts in /proc/self/mountinfo and taking them down cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lzfs.errors import LzfsError


@dataclass(frozen=True)
class Mount:
    mountpoint: Path
    store: Path
    device: str = ""  # MAJ:MIN: the mount's backing device info (/sys/class/bdi/MAJ:MIN)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def lzfs_mounts() -> list[Mount]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, source = right.split()[:2]
            if fstype == "fuse.lzfs":
                fields = left.split()
                found.append(Mount(Path(_unescape(fields[4])), Path(_unescape(source)),
                                   fields[2]))
    return found


# Reads through the page cache (the lazy-pages daemon's, forked workers' COW pages) reach the
# daemon as READs of at most the mount's readahead: 128 KiB by default, so every MiB of them
# is eight round trips through the one request thread. FUSE caps a READ at 1 MiB (256 pages).
READ_AHEAD_KB = 1024


def set_readahead(mountpoint: Path, kb: int = READ_AHEAD_KB) -> str | None:
    """Set the readahead of an lzfs mount (root only: /sys/class/bdi/MAJ:MIN/read_ahead_kb);
    returns why it could not, or None. Reads /proc only: a stat of the mount point from the
    daemon before it serves would wait on itself."""
    m = next((m for m in lzfs_mounts() if m.mountpoint == mountpoint), None)
    if m is None or not m.device:
        return f"{mountpoint} is not in /proc/self/mountinfo"
    try:
        Path(f"/sys/class/bdi/{m.device}/read_ahead_kb").write_text(f"{kb}\n")
    except OSError as exc:
        return str(exc)
    return None


def find_mount(path: str | os.PathLike) -> Mount | None:
    target = Path(path).resolve()
    for m in lzfs_mounts():
        if m.mountpoint == target:
            return m
    return None


def umount(mountpoint: str, timeout: float = 300.0, lazy: bool = False) -> Mount:
    """Unmount, then wait until the daemon has stored and committed everything and exited."""
    m = find_mount(mountpoint)
    if m is None:
        raise LzfsError(f"{mountpoint} is not an lzfs mount point")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u"] if tool else ["umount"]
    if lazy:
        cmd.append("-z")
    res = subprocess.run([*cmd, str(m.mountpoint)], capture_output=True, text=True)
    if res.returncode != 0:
        msg = " ".join((res.stderr or res.stdout).split())
        from lzfs.mount.busy import busy_reason  # names who holds it (lzfs/busy.py)
        raise LzfsError(f"cannot unmount {m.mountpoint}: {msg}; {busy_reason(m.mountpoint)}")
    from lzfs.store.layout import StoreLock  # not at the top: `lzfs publish` and other commands
    # that only look for mounts must not pay for importing the store (trio, numpy: 0.3 s)

    lock = StoreLock(m.store)
    lock.acquire(wait=timeout)  # the daemon holds it until its last commit is on disk
    lock.release()
    return m
