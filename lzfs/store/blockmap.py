"""Block maps: which frame bytes make up each file, and how many runs name each frame.

This module is the only code that reads or writes the ``extents`` table, and the only caller
of the frame table's reference counts (frames.py): a file map, a purge, a manifest import, a
report and fsck all come through here, so a reference count cannot drift from the runs that
justify it, and every drop of a count tells gc it has work (the bug of format 1's `rm`: a purge
that lowered counts with its own SQL never woke the collector).

A run says "file bytes [off, off+len) are raw bytes [foff, foff+len) of frame F". Runs never
span frames. A run whose frame is gone or marked lost reads as EIO, never as zeros.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from lzfs.errors import CorruptDataError
from lzfs.store.codec import PAGE
from lzfs.store.db import MetaDB
from lzfs.store.frames import FrameTable

LOST_FRAME = -1  # a run whose frame is known lost (a repaired store, an upgraded placeholder)


class Run(NamedTuple):
    off: int    # file offset
    len: int
    frame: int
    foff: int   # offset in the frame's raw data

    @property
    def end(self) -> int:
        return self.off + self.len


class FrameShape(NamedTuple):
    rlen: int  # record bytes in the pack
    raw: int   # decompressed bytes


ShapeFn = Callable[[int], "FrameShape | None"]  # frame id -> its shape, None if it is gone


def _slots(r: Run) -> range:
    return range(r.foff // PAGE, (r.foff + r.len - 1) // PAGE + 1)


class Coverage:
    """Which 4 KiB slots of which frames one file (or group of files) references, counted, and
    their compressed share: a page a file holds several times is stored once, so it is counted
    once (st_blocks and du agree with getfattr and the report)."""

    def __init__(self, shape: ShapeFn) -> None:
        self._shape = shape
        self._counts: dict[int, tuple[FrameShape, array]] = {}  # frame -> shape, slot counts
        self.stored = 0.0

    def _slot_share(self, s: FrameShape, slot: int) -> float:
        n = min(PAGE, s.raw - slot * PAGE)
        return n * s.rlen / s.raw if s.raw and n > 0 else 0.0

    def add(self, runs: Iterable[Run], sign: int = 1) -> None:
        for r in runs:
            if r.len <= 0:
                continue
            known = self._counts.get(r.frame)
            if known is None:
                shape = self._shape(r.frame) if sign > 0 else None
                if shape is None:  # lost (it takes no space), or never added
                    continue
                known = self._counts[r.frame] = (shape, array("I", bytes(4 * max(
                    1, (shape.raw + PAGE - 1) // PAGE))))
            shape, counts = known
            for slot in _slots(r):
                if slot >= len(counts):
                    break
                c = counts[slot]
                if sign > 0:
                    counts[slot] = c + 1
                    if c == 0:
                        self.stored += self._slot_share(shape, slot)
                elif c:
                    counts[slot] = c - 1
                    if c == 1:
                        self.stored -= self._slot_share(shape, slot)

    def remove(self, runs: Iterable[Run]) -> None:
        self.add(runs, -1)


class BlockMaps:
    """Reads and writes block maps and frame reference counts (DB thread only)."""

    def __init__(self, db: MetaDB, frames: FrameTable, shape: ShapeFn) -> None:
        self.db = db
        self.frames = frames
        self.shape = shape
        self.garbage = False  # set when a reference count drops: gc has work

    # ---- one file ----------------------------------------------------------------------------

    def load(self, ino: int) -> list[Run]:
        return [Run(*r) for r in self.db.execute(
            "SELECT off, len, frame, foff FROM extents WHERE ino=? ORDER BY off", (ino,))]

    def all_runs(self) -> Iterator[tuple[int, Run]]:
        """(inode, run) of every file, by inode then offset: for reports and fsck, which look
        at every block map at once."""
        for ino, *r in self.db.execute(
                "SELECT ino, off, len, frame, foff FROM extents ORDER BY ino, off"):
            yield ino, Run(*r)

    def mark_lost(self, places: list[tuple[int, int]]) -> None:
        """Runs (inode, offset) whose frame row is gone keep their place, naming LOST_FRAME:
        reads there fail with EIO, as lost data must, never read zeros (fsck --repair)."""
        self.db.executemany("UPDATE extents SET frame=? WHERE ino=? AND off=?",
                            [(LOST_FRAME, ino, off) for ino, off in places])

    def set_refs(self, counts: dict[int, int]) -> None:
        """Reference counts recomputed from the runs (fsck --repair)."""
        self.frames.set_refs(counts.items())

    def runs_between(self, ino: int, lo: int, hi: int) -> list[Run]:
        """The runs of ``ino`` that touch [lo, hi), by the primary key (ino, off): the last run
        starting at or before ``lo``, then every one starting before ``hi``."""
        first = self.db.execute("SELECT max(off) FROM extents WHERE ino=? AND off<=?",
                                (ino, lo)).fetchone()[0]
        return [Run(*r) for r in self.db.execute(
            "SELECT off, len, frame, foff FROM extents WHERE ino=? AND off>=? AND off<? "
            "ORDER BY off", (ino, lo if first is None else first, hi))]

    def insert(self, ino: int, runs: list[Run]) -> None:
        """Record runs (which must not overlap the file's others) and count their frames."""
        if not runs:
            return
        self.db.executemany("INSERT INTO extents(ino, off, len, frame, foff) VALUES (?,?,?,?,?)",
                            [(ino, *r) for r in runs])
        self._count(Counter(r.frame for r in runs), +1)

    def extend(self, ino: int, run: Run, new_len: int) -> None:
        """Lengthen a run in place (the bytes that follow it in its frame now belong to the
        file too): no reference count changes, the run still names its frame once."""
        self.db.execute("UPDATE extents SET len=? WHERE ino=? AND off=?", (new_len, ino, run.off))

    def delete(self, ino: int, runs: list[Run]) -> None:
        if not runs:
            return
        self.db.executemany("DELETE FROM extents WHERE ino=? AND off=?",
                            [(ino, r.off) for r in runs])
        self._count(Counter(r.frame for r in runs), -1)

    def purge(self, ino: int) -> None:
        """Drop every run of a file that is going away, and wake gc."""
        counts = Counter(dict(self.db.execute(
            "SELECT frame, COUNT(*) FROM extents WHERE ino=? GROUP BY frame", (ino,))))
        self.db.execute("DELETE FROM extents WHERE ino=?", (ino,))
        self._count(counts, -1)

    def _count(self, counts: Counter[int], sign: int) -> None:
        self.frames.add_refs((f, sign * n) for f, n in counts.items())
        if sign < 0:
            self.garbage = True

    def staged_files(self) -> list[int]:
        """Files holding runs in staged frames (settled by the daemon when idle)."""
        staged = self.frames.staged_live()
        inos: dict[int, None] = {}
        for i in range(0, len(staged), 500):
            part = staged[i:i + 500]
            inos.update((r[0], None) for r in self.db.execute(
                f"SELECT DISTINCT ino FROM extents WHERE frame IN ({','.join('?' * len(part))})",
                part))
        return list(inos)

    # ---- figures -----------------------------------------------------------------------------

    def coverage(self, runs: Iterable[Run]) -> Coverage:
        cov = Coverage(self.shape)
        cov.add(runs)
        return cov

    def file_figures(self, ino: int, size: int) -> dict[str, float]:
        """Per-file figures for getfattr: what it holds, stores, and alone stores (the frames
        only it names: what deleting it gives back)."""
        runs = self.load(ino)
        cov = self.coverage(runs)
        mine = Counter(r.frame for r in runs)
        unique = 0.0
        lost = self.lost_frames(mine)
        for f, n in mine.items():
            shape = self.shape(f)
            if f in lost or shape is None:
                continue
            refs = self.frames.refs(f)
            if refs is not None and refs <= n:
                unique += shape.rlen
        damaged = sum(r.len for r in runs if r.frame in lost)
        referenced = sum(r.len for r in runs)
        return {"logical": size, "referenced": referenced, "zero": size - referenced,
                "blocks": len(runs), "stored": cov.stored, "unique": unique,
                "damaged": damaged, "ratio": size / cov.stored if cov.stored else 0.0}

    def lost_frames(self, frames: Iterable[int]) -> set[int]:
        """Of these frames, those that are gone or marked lost (their runs read as EIO)."""
        fs = set(frames)
        return fs - self.frames.alive(fs)

    def referenced(self) -> int:
        """Bytes of frame data all files reference, repeats included."""
        return self.db.execute("SELECT COALESCE(SUM(len),0) FROM extents").fetchone()[0]

    # ---- whole files -------------------------------------------------------------------------

    def read_file(self, ino: int, size: int, read_frame: Callable[[int], bytes]) -> bytes:
        """A whole (small) file's bytes, straight from the store: for parsing images. A run in
        a lost frame raises CorruptDataError, as a read through the mount gives EIO."""
        out = bytearray(size)
        decoded: dict[int, bytes] = {}  # several runs of a small file share one frame
        for r in self.load(ino):
            if r.off >= size:
                break
            if r.frame not in decoded:
                if r.frame == LOST_FRAME:
                    raise CorruptDataError(f"inode {ino} at {r.off}: its data is lost")
                decoded[r.frame] = read_frame(r.frame)
            n = min(r.len, size - r.off)
            out[r.off:r.off + n] = decoded[r.frame][r.foff:r.foff + n]
        return bytes(out)
