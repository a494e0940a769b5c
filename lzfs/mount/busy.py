"""What keeps a mount point busy, in one line: processes with files open under it (or their
working directory, root or a mapped file there) and mounts inside it.

`umount` only says EBUSY. The usual culprits with CRIU are a restored process still running
from the images directory and, after a CRIU restore that was killed, the cgroup yard CRIU
mounts inside the images directory (``.criu.cgyard.XXXXXX``), which nothing else shows.
Reads only /proc: symlinks and mountinfo, never a stat of a path under the mount (which a
hung FUSE daemon would block).
"""

from __future__ import annotations

import os
from pathlib import Path

from lzfs.mount.mountinfo import mount_points

SHOWN = 4  # holders named before "and N more"


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_files(mountpoint: str | os.PathLike) -> list[tuple[int, str, str]]:
    """(pid, command, what) of every process holding something under ``mountpoint``: what is
    "has PATH still open", "works in PATH" (working directory or root) or "maps PATH". This
    process counts too (a caller may hold a file there itself)."""
    root = os.fspath(mountpoint)
    found: list[tuple[int, str, str]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        held: list[tuple[str, str]] = []  # (how, path)
        try:
            for name in ("cwd", "root"):
                held.append(("works in", os.readlink(f"/proc/{pid}/{name}")))
            for fd in os.scandir(f"/proc/{pid}/fd"):
                held.append(("has", os.readlink(fd.path)))
            with open(f"/proc/{pid}/maps") as maps:
                held.extend(("maps", line.split(None, 5)[5].rstrip("\n"))
                            for line in maps if len(line.split(None, 5)) == 6)
        except OSError:  # gone, or a kernel thread; what was read so far still counts
            pass
        hit = next(((how, p.removesuffix(" (deleted)")) for how, p in held
                    if _under(p.removesuffix(" (deleted)"), root)), None)
        if hit is None:
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "?"
        how, path = hit
        found.append((pid, comm, f"has {path} still open" if how == "has" else f"{how} {path}"))
    return found


def mounts_inside(mountpoint: str | os.PathLike) -> list[str]:
    """Mount points strictly below ``mountpoint``."""
    root = os.fspath(mountpoint)
    return [p for p in mount_points() if p != root and _under(p, root)]


def busy_reason(mountpoint: str | os.PathLike) -> str:
    """One line naming what holds ``mountpoint``, with what to do about it."""
    parts = [f"mount {p} inside it" for p in mounts_inside(mountpoint)]
    parts += [f"pid {pid} ({comm}) {what}" for pid, comm, what in open_files(mountpoint)]
    if not parts:
        return (f"nothing found holding it now (a file still open there may have just closed; "
                f"'fuser -vm {mountpoint}' shows who holds it)")
    more = f", and {len(parts) - SHOWN} more" if len(parts) > SHOWN else ""
    return ("held by: " + "; ".join(parts[:SHOWN]) + more
            + " (end those processes and unmount the mounts inside, then retry)")
