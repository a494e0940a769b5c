"""The frame table: where each frame's record lies in which pack, its shape (record, payload
and raw lengths, codec), the dedup domain and page table it was written with, whether it was
staged or found lost, and how many runs name it.

This module is the only code that reads or writes the ``frames`` table (fsck and the schema
upgrades aside). Reference counts change only through ``BlockMaps`` (blockmap.py), which calls
``add_refs`` as it records and drops runs; rows are added by ``Store.add_frame`` and removed
by gc (``Store.collect_garbage``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from lzfs.store.db import MetaDB

_IN = 500  # parameters per IN (...) query


class FrameRow(NamedTuple):
    """A frame as a manifest carries it (no local flags)."""

    pack: int
    off: int
    rlen: int
    stored: int
    raw: int
    codec: int
    pages: bytes | None


class DeadFrame(NamedTuple):
    id: int
    pack: int
    off: int
    rlen: int
    pages: bytes | None


class FrameFigures(NamedTuple):
    live: int      # frames some run names
    raw: int       # their raw bytes
    rlen: int      # their record bytes
    garbage: int   # frames nobody names (gc removes them)
    staged: int    # raw bytes of live staged frames


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    fs = sorted(set(ids))
    for i in range(0, len(fs), _IN):
        yield fs[i:i + _IN]


class FrameTable:
    def __init__(self, db: MetaDB) -> None:
        self.db = db

    # ---- rows ----------------------------------------------------------------------------

    def insert(self, pack: int, off: int, rlen: int, stored: int, raw: int, codec: int,
               seed: int, pages: bytes | None, staged: bool = False) -> int:
        cur = self.db.execute(
            "INSERT INTO frames(pack, off, rlen, stored, raw, codec, seed, pages, staged) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (pack, off, rlen, stored, raw, codec, seed, pages, int(staged)))
        assert cur.lastrowid is not None  # an INSERT into a rowid table always sets it
        return cur.lastrowid

    def at(self, pack: int, off: int) -> int | None:
        """The frame whose record starts at ``off`` in ``pack``, if the table has it."""
        row = self.db.execute("SELECT id FROM frames WHERE pack=? AND off=?",
                              (pack, off)).fetchone()
        return None if row is None else row[0]

    def location(self, fid: int) -> tuple[int, int, int, int, int, int, int, int] | None:
        """(pack, off, rlen, stored, raw, seed, staged, lost) of a frame, None if gone."""
        return self.db.execute("SELECT pack, off, rlen, stored, raw, seed, staged, lost "
                               "FROM frames WHERE id=?", (fid,)).fetchone()

    def locations(self, ids: Iterable[int]
                  ) -> Iterator[tuple[int, int, int, int, int, int, int, int, int]]:
        """(id, pack, off, rlen, stored, raw, seed, staged, lost) of each frame of ``ids``
        that exists, 500 to a query."""
        for part in _chunks(ids):
            yield from self.db.execute(
                "SELECT id, pack, off, rlen, stored, raw, seed, staged, lost FROM frames "
                f"WHERE id IN ({','.join('?' * len(part))})", part).fetchall()

    def row(self, fid: int) -> FrameRow | None:
        """A live frame as a manifest names it; None when it is gone or lost."""
        r = self.db.execute("SELECT pack, off, rlen, stored, raw, codec, pages FROM frames "
                            "WHERE id=? AND lost=0", (fid,)).fetchone()
        if r is None:
            return None
        return FrameRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]) if r[6] else None)

    def page_tables(self, ids: Iterable[int]) -> Iterator[tuple[int, bytes | None]]:
        """(id, page table) of the live frames among ``ids``."""
        for part in _chunks(ids):
            yield from self.db.execute(
                f"SELECT id, pages FROM frames WHERE id IN ({','.join('?' * len(part))}) "
                "AND lost = 0", part).fetchall()

    def alive(self, ids: Iterable[int]) -> set[int]:
        """Of these frames, those that exist and are not marked lost."""
        out: set[int] = set()
        for part in _chunks(ids):
            out.update(r[0] for r in self.db.execute(
                f"SELECT id FROM frames WHERE lost = 0 AND id IN ({','.join('?' * len(part))})",
                part))
        return out

    def shapes(self) -> dict[int, tuple[int, int]]:
        """frame -> (record bytes, raw bytes) of every frame that holds data (not lost)."""
        return {f: (rlen, raw) for f, rlen, raw in self.db.execute(
            "SELECT id, rlen, raw FROM frames WHERE lost = 0")}

    def pack_ends(self, first_pack: int) -> list[tuple[int, int]]:
        """(pack, end of its last frame record) for packs numbered from ``first_pack``."""
        return self.db.execute("SELECT pack, MAX(off + rlen) FROM frames WHERE pack >= ? "
                               "GROUP BY pack", (first_pack,)).fetchall()

    # ---- reference counts (BlockMaps) ----------------------------------------------------

    def add_refs(self, counts: Iterable[tuple[int, int]]) -> None:
        """(frame, delta) pairs: runs that name it were recorded or dropped."""
        self.db.executemany("UPDATE frames SET refs = refs + ? WHERE id = ?",
                            [(n, f) for f, n in counts])

    def set_refs(self, counts: Iterable[tuple[int, int]]) -> None:
        """(frame, count) pairs recomputed from the runs (fsck --repair)."""
        self.db.executemany("UPDATE frames SET refs=? WHERE id=?", [(n, f) for f, n in counts])

    def refs(self, fid: int) -> int | None:
        row = self.db.execute("SELECT refs FROM frames WHERE id=?", (fid,)).fetchone()
        return None if row is None else row[0]

    def staged_live(self) -> list[int]:
        """Staged frames some run still names (the settler's work)."""
        return [r[0] for r in self.db.execute(
            "SELECT id FROM frames WHERE staged = 1 AND refs > 0")]

    # ---- gc and figures ------------------------------------------------------------------

    def dead(self) -> list[DeadFrame]:
        return [DeadFrame(*r) for r in self.db.execute(
            "SELECT id, pack, off, rlen, pages FROM frames WHERE refs <= 0").fetchall()]

    def delete(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM frames WHERE id = ?", [(f,) for f in ids])

    def figures(self) -> FrameFigures:
        q = self.db.execute
        live, raw, rlen = q("SELECT COUNT(*), COALESCE(SUM(raw),0), COALESCE(SUM(rlen),0) "
                            "FROM frames WHERE refs > 0").fetchone()
        garbage = q("SELECT COUNT(*) FROM frames WHERE refs <= 0").fetchone()[0]
        staged = q("SELECT COALESCE(SUM(raw),0) FROM frames WHERE staged = 1 AND refs > 0"
                   ).fetchone()[0]
        return FrameFigures(live, raw, rlen, garbage, staged)
