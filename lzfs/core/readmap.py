"""Reads the kernel gets answered without the core: READs of a file mapped onto decoded frames,
inside the ranges its readers were prefetched to, are answered in pyfuse3's own callback
(third_party/: ``fast_read_*``, wired in fuse/fastread.py) from the frame cache's buffers.

Every READ that reached Python cost a trio task, a handler, a reply buffer and a copy on the
one thread that holds the GIL: 1.4 CPU-s per GiB restored, and 5 s for a lazy restore of 1 GiB
whose 64 KiB reads each made the trip (docs/benchmarks.md). Answered in the callback, a READ is
a lookup and an iovec over buffers the cache already holds, sent with the GIL released.

The core keeps what only it can decide:

* which bytes a file is made of: the whole map of its runs as gapless (offset, length, frame,
  offset in frame) quadruples, holes as ``HOLE``, registered at the first read that may use it
  and forgotten first thing in every change of the file (FileMap calls ``forget`` before it
  touches its runs, size or pending bytes; a file with pending bytes or a staging file is
  never mapped);
* how far each reader may run on its own: a readahead stream's bound stops half a window
  short of what was prefetched, so the read that crosses it comes to the core, which
  prefetches the next stretch while the reader goes on. A frame the cache does not hold (not
  decoded yet, evicted, lost) sends its READ to the core as well, which decodes it or
  answers with the error.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from lzfs.core.prefetch import Readahead
from lzfs.store.blockmap import Run

HOLE = -2      # a quadruple's frame for bytes that read as zeros
STREAMS = 4    # bounds kept per file (readers of one file that read in different places)


class Replier(Protocol):
    """What answers READs without the core (fuse/fastread.py: pyfuse3's fast reads)."""

    def frames(self, frames: dict[int, bytes]) -> None: ...
    def map(self, ino: int, size: int, segs: array) -> None: ...
    def bounds(self, ino: int, bounds: list[tuple[int, int]]) -> None: ...
    def forget(self, ino: int) -> None: ...
    def figures(self) -> tuple[int, int, int]: ...


class NoReplier:
    """Every READ comes to the core (a pyfuse3 without fast reads, tools, plain trio tests)."""

    def frames(self, frames: dict[int, bytes]) -> None:
        return None

    def map(self, ino: int, size: int, segs: array) -> None:
        return None

    def bounds(self, ino: int, bounds: list[tuple[int, int]]) -> None:
        return None

    def forget(self, ino: int) -> None:
        return None

    def figures(self) -> tuple[int, int, int]:
        return (0, 0, 0)


def segments(exts: Sequence[Run], size: int) -> array:
    """The quadruples of a file of ``size`` bytes whose sorted runs are ``exts``."""
    out = array("q")
    pos = 0
    for r in exts:
        if r.off >= size:
            break
        if r.off > pos:
            out.extend((pos, r.off - pos, HOLE, 0))
        n = min(r.len, size - r.off)
        out.extend((r.off, n, r.frame, r.foff))
        pos = r.off + n
    if pos < size:
        out.extend((pos, size - pos, HOLE, 0))
    return out


class ReadWindows:
    """The maps and bounds the replier holds, per inode."""

    def __init__(self, replier: Replier | None = None) -> None:
        self.replier: Replier = replier or NoReplier()
        self._mapped: set[int] = set()
        self._bounds: dict[int, OrderedDict[int, tuple[int, int]]] = {}

    def serve_from(self, frames: dict[int, bytes]) -> None:
        self.replier.frames(frames)

    def offer(self, ino: int, size: int, exts: Sequence[Run], ra: Readahead) -> None:
        """After the core answered a read of ``ino`` (clean: runs only) for the reader whose
        readahead is ``ra``: let the reader's next reads up to its bound be answered without
        the core."""
        bound = ra.bound()
        if bound is None:
            return
        if ino not in self._mapped:
            self.replier.map(ino, size, segments(exts, size))
            self._mapped.add(ino)
        mine = self._bounds.setdefault(ino, OrderedDict())
        mine[id(ra)] = bound
        mine.move_to_end(id(ra))
        while len(mine) > STREAMS:
            mine.popitem(last=False)
        self.replier.bounds(ino, list(mine.values()))

    def forget(self, ino: int) -> None:
        """``ino``'s bytes, size or runs are about to change: no READ of it is answered
        without the core until it is mapped again."""
        if ino in self._mapped:
            self.replier.forget(ino)
            self._mapped.discard(ino)
        self._bounds.pop(ino, None)

    def figures(self) -> dict[str, int]:
        served, nbytes, passed = self.replier.figures()
        return {"answered": served, "bytes": nbytes, "to_core": passed,
                "mapped_files": len(self._mapped)}
