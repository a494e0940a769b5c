"""Snapshots in a namespace: a snapshot is a directory that directly holds CRIU images
(inventory.img, pagemap-*.img or pages-*.img). ``load_tree`` reads the whole namespace once and
says which directories are snapshots and which snapshot each file belongs to (reports, fsck);
``Namespace.walk`` reads one snapshot's tree (manifests).
"""

from __future__ import annotations

import re
import stat
from collections import defaultdict
from dataclasses import dataclass

from lzfs.store.namespace import ROOT_INODE, Namespace

IMAGE_NAME = re.compile(rb"^(inventory\.img|pagemap-\d+\.img|pages-\d+\.img)$")
OUTSIDE = "(outside snapshots)"  # the group of files in no snapshot


@dataclass
class Tree:
    """Paths of the namespace, computed once from the dentries table."""
    path: dict[int, str]          # ino -> path (first name found)
    is_dir: dict[int, bool]
    size: dict[int, int]
    snapshot_of: dict[int, str]   # file ino -> snapshot name (or OUTSIDE)
    snapshots: dict[str, int]     # snapshot name -> its directory inode
    children: dict[int, list[tuple[bytes, int]]]
    mtime_ns: dict[int, int]

    def created(self, snapshot: str) -> float:
        """When a snapshot was written, in seconds since the epoch: the newest modification of
        its directory or a file in it (the end of its dump; what `lzfs import` kept of it)."""
        top = self.snapshots[snapshot]
        newest = max((self.mtime_ns.get(ino, 0) for _, ino in self.children.get(top, [])),
                     default=0)
        return max(newest, self.mtime_ns.get(top, 0)) / 1e9


def load_tree(ns: Namespace) -> Tree:
    """The whole namespace at once, with its snapshots found: for reports and fsck."""
    modes: dict[int, tuple[int, int]] = {}
    mtime_ns: dict[int, int] = {}
    for i, m, s, t in ns.all_inodes():
        modes[i] = (m, s)
        mtime_ns[i] = t
    children: dict[int, list[tuple[bytes, int]]] = defaultdict(list)
    for parent, name, ino in ns.all_dentries():
        # names are BLOBs; a damaged row may hold text, which must not stop a report or fsck
        if ino in modes:  # a dangling entry (fsck reports it) names nothing to count
            children[parent].append((name if isinstance(name, bytes) else str(name).encode(),
                                     ino))
    path = {ROOT_INODE: ""}
    is_dir = {i: stat.S_ISDIR(m) for i, (m, _) in modes.items()}
    snapshots: dict[str, int] = {}
    snapshot_of: dict[int, str] = {}
    stack = [ROOT_INODE]
    while stack:
        d = stack.pop()
        kids = children.get(d, [])
        base = path[d]
        if any(IMAGE_NAME.match(name) for name, _ in kids):
            snapshots[base or "."] = d
        for name, ino in kids:
            if ino in path:
                continue
            path[ino] = f"{base}/{name.decode(errors='replace')}".lstrip("/")
            if is_dir.get(ino):
                stack.append(ino)
    for ino, p in path.items():
        if stat.S_ISREG(modes.get(ino, (0, 0))[0]):  # a fresh store has no root row yet
            home = p.rpartition("/")[0] or "."
            snapshot_of[ino] = home if home in snapshots else OUTSIDE
    return Tree(path, is_dir, {i: s for i, (_, s) in modes.items()}, snapshot_of, snapshots,
                children, mtime_ns)
