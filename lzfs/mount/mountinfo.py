"""What /proc/self/mountinfo says: every mount point, and the lzfs mounts among them (their
store and device). Reads /proc only, so it is safe from the daemon itself and cheap for
commands that only look for a mount."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    mountpoint: Path
    store: Path
    device: str = ""  # MAJ:MIN: the mount's backing device info (/sys/class/bdi/MAJ:MIN)


def unescape(field: str) -> str:
    """A path as mountinfo writes it: space, tab, newline and backslash escaped as \\ooo."""
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
                found.append(Mount(Path(unescape(fields[4])), Path(unescape(source)),
                                   fields[2]))
    return found


def mount_points() -> Iterator[str]:
    """Every mount point, unescaped."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            yield unescape(line.split()[4])


def find_mount(path: str | os.PathLike) -> Mount | None:
    target = Path(path).resolve()
    for m in lzfs_mounts():
        if m.mountpoint == target:
            return m
    return None
