"""Online verification: is every byte of a snapshot still what was written, checked while the
store stays mounted and restores go on? fsck answers that for a whole store, but only
unmounted; `lzfs verify MNT[/SNAP]` reads the frames a snapshot's files name (the packs on
disk, or the objects of a node's bucket), verifies each record's checksum and every page's
content hash, and names the files and byte ranges a bad frame hits. A daemon's scrub
(`-o scrub_hours=N`) does the same for every snapshot in the background.

It reads beside the daemon: the snapshot's files and runs come from one read-only look at the
metadata, and the packs are append-only, so what it reads cannot change under it. A frame that
fails is looked up again before it is reported: the daemon may have collected it meanwhile (a
file deleted while it was being verified), and a frame nobody names is no damage.

Reads are paced (``rate`` bytes per second of pack data, 100 MiB/s by default) and run at the
lowest CPU priority, so a restore beside it keeps its speed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lzfs.errors import CorruptDataError
from lzfs.store.namespace import ROOT_INODE
from lzfs.store.store import FrameLoc, Store

RATE = 100 << 20  # bytes of pack data read per second, by default
Progress = Callable[[int, int], None]


@dataclass
class Verified:
    snapshot: str
    files: int = 0
    frames: int = 0
    frame_bytes: int = 0
    bad: dict[int, str] = field(default_factory=dict)  # frame -> why
    # path from the store's root (as under the mount point) -> damaged byte ranges
    damaged: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    staged: int = 0  # files not yet stored as frames (their staging files are not checked)

    @property
    def clean(self) -> bool:
        return not self.damaged

    def to_json(self) -> dict:
        return {"snapshot": self.snapshot, "clean": self.clean, "files": self.files,
                "frames": self.frames, "frame_bytes": self.frame_bytes,
                "bad_frames": {str(k): v for k, v in self.bad.items()},
                "damaged": {k: [list(r) for r in v] for k, v in self.damaged.items()},
                "staged_files": self.staged}


def snapshot_files(store: Store, top: int, base: str) -> Iterable[tuple[str, int]]:
    """(path, inode) of every regular file under directory ``top``."""
    for path, node in store.ns.walk(top):
        if node.is_reg:
            yield f"{base}/{path}" if base else path, node.id


def verify(store: Store, top: int, name: str, rate: float = RATE,
           progress: Progress | None = None) -> Verified:
    """Verify every frame the files under directory ``top`` name (any thread: it owns
    ``store``, a read-only open beside the daemon)."""
    out = Verified(name)
    runs_of: dict[int, list] = {}
    paths: dict[int, str] = {}
    for path, ino in snapshot_files(store, top, "" if top == ROOT_INODE else name):
        out.files += 1
        if store.staging.has(ino):
            out.staged += 1
            continue
        paths[ino] = path
        runs_of[ino] = store.maps.load(ino)
    frames = sorted({r.frame for runs in runs_of.values() for r in runs})
    store.know_frames(f for f in frames if f >= 0)
    locs: list[tuple[int, FrameLoc]] = []
    for f in frames:
        try:
            locs.append((f, store.frame_loc(f)))
        except CorruptDataError as exc:  # gone, or marked lost by fsck --repair
            out.bad[f] = str(exc)
    locs.sort(key=lambda fl: (fl[1].pack, fl[1].off))
    total = sum(loc.rlen for _, loc in locs)
    out.frames, out.frame_bytes = len(locs), total
    started, done = time.monotonic(), 0
    for fid, loc in locs:
        try:
            store.read_frame(loc)
        except (CorruptDataError, OSError) as exc:
            out.bad[fid] = str(exc)
        done += loc.rlen
        if progress:
            progress(done, total)
        ahead = done / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    _locate(out, runs_of, paths)
    return out


def _locate(out: Verified, runs_of: dict[int, list], paths: dict[int, str]) -> None:
    for ino, runs in runs_of.items():
        hit = sorted((r.off, r.len) for r in runs if r.frame in out.bad or r.frame < 0)
        merged: list[tuple[int, int]] = []
        for off, n in hit:
            if merged and off <= merged[-1][0] + merged[-1][1]:
                last = merged[-1]
                merged[-1] = (last[0], max(last[0] + last[1], off + n) - last[0])
            else:
                merged.append((off, n))
        if merged:
            out.damaged[paths[ino]] = merged


def still_named(store: Store, frames: Iterable[int]) -> set[int]:
    """Of these frames, those a file still names: a bad frame nobody names any more (a file
    deleted while it was verified, collected by the daemon) is no damage."""
    fs = set(frames)
    named: set[int] = set()
    for _, run in store.maps.all_runs():
        if run.frame in fs:
            named.add(run.frame)
    return named


def lowest_priority() -> None:
    """The verifying process yields the CPU to everything else on the machine."""
    with contextlib.suppress(OSError):
        os.nice(19)
