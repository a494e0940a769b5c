"""Taking lzfs mounts down cleanly, and tuning a live one (its readahead)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lzfs.errors import LzfsError
from lzfs.mount.mountinfo import Mount, find_mount, lzfs_mounts

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
