"""The page index: which frame already holds a page, found without a row per page.

Dedup is per page, but an index row per page is what made page-granular dedup too costly in
format 1 (`mkfs --avg-pages 1`: meta.db 13 MB plus a 9 MB WAL for 340 MB written) and what
would hold a dump back: one SQLite insert into a 16-byte-keyed B-tree costs 4.6 us here, more
than hashing the page (0.24 us) and about 1.2 s per GiB written. So the index is sparse, in the
spirit of sparse indexing (Lillibridge et al., FAST'09):

* every frame keeps its own page table (``frames.pages``: u32 offset + 16-byte hash per
  page, written once with the frame's row);
* only *hooks* go into a B-tree: pages whose hash has its low 3 bits zero (1 in 8, chosen by
  content, so the same page is a hook wherever it appears), each naming the newest frame that
  holds it;
* to dedup a batch of pages, its hooks are looked up, the page tables of the frames they name
  are loaded into a bounded cache of recent frames, and every page of the batch is matched
  against that cache by its full 128-bit hash. Frames this daemon wrote recently are in the
  cache already, so repeats inside one dump need no lookup at all.

Pages that change between two dumps of one server are scattered, but the pages around them sit
in the same order in both dumps, so the old frames are found through their other pages: a
64-page frame has no hook with probability (7/8)^64 = 0.02%. What a sparse index gives up is a
lone page shared with a frame none of whose other pages come along; docs/format.md has the
measured effect.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from lzfs.store.db import MetaDB
from lzfs.store.frames import FrameTable
from lzfs.store.pagetable import decode_table, hook_key, hook_rows

RECENT_FRAMES = 4096            # page tables kept in memory (4096 x 64 pages: 1 GiB of data)
_IN = 500                       # parameters per IN (...) query


class Supplier(Protocol):
    """Finds frames beyond this store (a cluster node: the bucket's published index,
    cluster/hookindex.py) and adds them to it, so that ``PageIndex.match`` finds them."""

    async def supply(self, missing: Sequence[bytes]) -> None:
        """Look for pages the store lacks and add the frames that hold them."""
        ...


class PageIndex:
    """Finds pages the store already holds (DB thread only)."""

    def __init__(self, db: MetaDB, frames: FrameTable, recent_frames: int = RECENT_FRAMES
                 ) -> None:
        self.db = db
        self.frames = frames
        self.limit = recent_frames
        self._recent: OrderedDict[int, list[bytes]] = OrderedDict()  # frame -> its hashes
        self._where: dict[bytes, tuple[int, int]] = {}               # hash -> (frame, foff)
        self.lookups = 0  # hook queries sent to SQLite (for the benchmark's accounting)

    def match(self, hashes: Sequence[bytes]) -> dict[bytes, tuple[int, int]]:
        """hash -> (frame, offset in its raw data) for each page the store holds."""
        where = self._where
        keys = {k for h in hashes if h not in where and (k := hook_key(h)) is not None}
        if keys:
            found: set[int] = set()
            ks = list(keys)
            for i in range(0, len(ks), _IN):
                part = ks[i:i + _IN]
                self.lookups += 1
                found.update(r[0] for r in self.db.execute(
                    f"SELECT frame FROM hooks WHERE key IN ({','.join('?' * len(part))})",
                    part))
            self._load(found - self._recent.keys())
        out = {h: loc for h in hashes if (loc := where.get(h)) is not None}
        for f in {loc[0] for loc in out.values()}:
            self._recent.move_to_end(f)
        return out

    def _load(self, frames: set[int]) -> None:
        for fid, blob in self.frames.page_tables(frames):
            self._remember(fid, decode_table(blob))

    def _remember(self, frame: int, entries: list[tuple[int, bytes]]) -> None:
        if not entries:
            return
        self._recent[frame] = [h for _, h in entries]
        self._where.update([(h, (frame, foff)) for foff, h in entries])
        while len(self._recent) > self.limit:
            self._evict(*self._recent.popitem(last=False))

    def _evict(self, frame: int, hashes: list[bytes]) -> None:
        where = self._where
        for h in hashes:
            loc = where.get(h)
            if loc is not None and loc[0] == frame:
                del where[h]

    def add(self, frame: int, entries: list[tuple[int, bytes]]) -> None:
        """A new frame's pages (its row, with the table, is written by the caller)."""
        self.db.executemany("INSERT OR REPLACE INTO hooks(key, frame) VALUES (?,?)",
                            hook_rows(frame, entries))
        self._remember(frame, entries)

    def forget(self, frames: Sequence[tuple[int, bytes | None]]) -> None:
        """Frames gc removed, with their page tables: their hooks go (where still theirs)."""
        rows = [(k, fid) for fid, blob in frames for k, _ in hook_rows(fid, decode_table(blob))]
        self.db.executemany("DELETE FROM hooks WHERE key=? AND frame=?", rows)
        for fid, _ in frames:
            hashes = self._recent.pop(fid, None)
            if hashes is not None:
                self._evict(fid, hashes)

    def clear(self) -> None:
        """Forget the cache (after fsck marks frames lost, say): SQLite is the truth."""
        self._recent.clear()
        self._where.clear()
