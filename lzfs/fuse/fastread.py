"""READs answered inside pyfuse3 from the frame cache (core/readmap.py's ``Replier``), through
the ``fast_read_*`` functions the pyfuse3 of third_party/ adds: its READ callback sends an
iovec over cached frames with the GIL released, without a trio task. A pyfuse3 from PyPI
lacks them, and every READ goes to Operations.read as before."""

from __future__ import annotations

from array import array

import pyfuse3

PATCHED = hasattr(pyfuse3, "fast_read_map")


class KernelReplies:
    """Only where PATCHED: the daemon passes no replier otherwise."""

    def frames(self, frames: dict[int, bytes]) -> None:
        pyfuse3.fast_read_frames(frames)

    def map(self, ino: int, size: int, segs: array) -> None:
        pyfuse3.fast_read_map(ino, size, segs)

    def bounds(self, ino: int, bounds: list[tuple[int, int]]) -> None:
        pyfuse3.fast_read_bounds(ino, bounds)

    def forget(self, ino: int) -> None:
        pyfuse3.fast_read_forget(ino)

    def figures(self) -> tuple[int, int, int]:
        served, nbytes, passed = pyfuse3.fast_read_stats()
        return int(served), int(nbytes), int(passed)
