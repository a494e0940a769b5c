"""Checkpoint archives as snapshots in `lzfs report`: a tar of CRIU images (Podman's
``--export``, the kubelet's checkpoint API) gets a row of its own, complete or not, and its
memory regions, instead of vanishing into "(outside snapshots)".

lzfs/report.py calls this from the snapshot and region reports; the tar parsing is
lzfs/criu/archive.py, which knows nothing of the store. The byte ranges of one file come from
its block map through ``store.maps`` (store/blockmap.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lzfs.criu import images
from lzfs.criu.archive import BLOCK, Archive, RangeFile, find_images, is_tar_header
from lzfs.errors import CorruptDataError, ImageFormatError
from lzfs.store.blockmap import Run
from lzfs.store.snapshot import OUTSIDE
from lzfs.store.store import Store

_FRAMES_KEPT = 8  # decoded frames kept while walking one archive's headers


class FileReader:
    """Reads byte ranges of one stored file (holes read as zeros), keeping the last few
    decoded frames: successive tar headers mostly fall in one frame."""

    def __init__(self, store: Store, ino: int, size: int) -> None:
        self.store, self.ino, self.size = store, ino, size
        self._frames: dict[int, bytes] = {}

    def __call__(self, off: int, n: int) -> bytes:
        n = max(min(n, self.size - off), 0)
        out = bytearray(n)
        for e_off, e_len, frame, foff in self.store.maps.runs_between(self.ino, off, off + n):
            lo, hi = max(off, e_off), min(off + n, e_off + e_len)
            if hi <= lo:
                continue
            raw = self._frame(frame)
            out[lo - off:hi - off] = raw[foff + lo - e_off:foff + hi - e_off]
        return bytes(out)

    def _frame(self, frame: int) -> bytes:
        raw = self._frames.get(frame)
        if raw is None:
            raw = self.store.read_frame(self.store.frame_loc(frame))
            if len(self._frames) >= _FRAMES_KEPT:
                self._frames.pop(next(iter(self._frames)))
            self._frames[frame] = raw
        return raw


@dataclass
class ArchiveSnapshot:
    ino: int
    archive: Archive
    read: Callable[[int, int], bytes]

    def problems(self, name: str) -> list[str]:
        return self.archive.problems(self.read, name)

    def image(self, name: str, what: str) -> bytes:
        m = self.archive.images[name]
        if m.size > 64 << 20:
            raise ImageFormatError(f"{what}: {m.size} bytes is too large for this image")
        return self.read(m.offset, m.size)


def find_archives(store: Store, tree) -> dict[str, ArchiveSnapshot]:
    """Every file outside snapshot directories that is a checkpoint archive, by its path;
    each is moved into a group of its own in ``tree.snapshot_of`` (named by that path)."""
    found: dict[str, ArchiveSnapshot] = {}
    for ino, group in list(tree.snapshot_of.items()):
        size = tree.size.get(ino, 0)
        if group != OUTSIDE or size < 3 * BLOCK:  # a header, some data, the end marker
            continue
        read = FileReader(store, ino, size)
        try:
            if not is_tar_header(read(0, BLOCK)):
                continue
            archive = find_images(RangeFile(read, size), size)
        except (CorruptDataError, OSError):
            continue  # an unreadable file is fsck's business, not the report's
        if archive is None:
            continue
        name = tree.path[ino]
        tree.snapshot_of[ino] = name
        found[name] = ArchiveSnapshot(ino, archive, read)
    return found


def archive_regions(store: Store, archives: dict[str, ArchiveSnapshot],
                    slots: dict[int, dict[int, set[str]]], attribute, errors: list[str]
                    ) -> list[dict]:
    """The region report's entries for archives: like a directory's, with the pages image's
    extents taken from the archive's block map, shifted by where the image starts in it."""
    out = []
    for snap, a in sorted(archives.items()):
        members = a.archive.images
        regions: dict[str, dict] = {}
        try:
            names = {}
            if "files.img" in members:
                names = images.parse_files(a.image("files.img", f"{snap}:files.img"),
                                           f"{snap}:files.img")
            for fname in sorted(members):
                if not (fname.startswith("pagemap-") and fname.endswith(".img")):
                    continue
                pid = fname[len("pagemap-"):-len(".img")]
                what = f"{snap}:{fname}"
                pm = images.parse_pagemap(a.image(fname, what), what)
                vmas = []
                if f"mm-{pid}.img" in members:
                    vmas = images.parse_mm(a.image(f"mm-{pid}.img", f"{snap}:mm-{pid}.img"),
                                           f"{snap}:mm-{pid}.img")
                pages = members.get(f"pages-{pm.pages_id}.img")
                exts = [] if pages is None else [
                    Run(r.off - pages.offset, r.len, r.frame, r.foff)
                    for r in store.maps.runs_between(a.ino, pages.offset,
                                                     pages.offset + pages.size)]
                attribute(snap, pm, vmas, names, exts, slots, regions)
        except (ImageFormatError, CorruptDataError) as exc:
            errors.append(str(exc))
            continue
        out.append({"snapshot": snap, "regions": [
            {"region": k, **v} for k, v in sorted(regions.items(),
                                                  key=lambda kv: -kv[1]["logical"])]})
    return out
