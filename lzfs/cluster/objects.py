"""Which object holds each pack, and reading frames from those objects: the node's side of
``PackSet.remote`` (read, has, warm), through the segment cache; and trimming the local copies
of uploaded packs when the node's disk is over ``--cache-size``.

This module is the one owner of the ``pack_objects`` table.
"""

from __future__ import annotations

import time
from typing import Any

from lzfs.cluster.bucket import SEGMENTS
from lzfs.errors import CorruptDataError
from lzfs.objectstore.cache import SegmentCache
from lzfs.objectstore.protocol import Backend, Counters, RemoteError
from lzfs.store import layout
from lzfs.store.packs import REMOTE_BASE, pack_name
from lzfs.store.store import Store

# Segments fetched ahead of each one a read or the readahead asks for (within the object): a
# restore reads a pack mostly in order, so this keeps several GETs in flight from the start.
AHEAD_SEGMENTS = 3


class PackObjects:
    def __init__(self, store: Store, backend: Backend, cache_limit: int) -> None:
        self.store = store
        self.counters = Counters()
        self.segments = SegmentCache(backend, store.root / SEGMENTS, cache_limit, self.counters)
        db = store.db
        self.keys: dict[int, str] = dict(db.execute("SELECT pack, key FROM pack_objects"))
        self.ids: dict[str, int] = {k: p for p, k in self.keys.items()}
        for pack, end in store.frames.pack_ends(REMOTE_BASE):
            if pack in self.keys:
                self.segments.sizes[self.keys[pack]] = end
        # own packs this daemon uploaded or renewed -> when (a lower bound of LastModified):
        # a publication naming one of them again within half the grace period needs no HEAD
        self.written: dict[int, float] = {}
        # own packs uploaded and no longer on local disk: read from their objects
        self.trimmed: set[int] = {p for p in self.keys if p < REMOTE_BASE and not (
            store.root / layout.PACKS / pack_name(p)).exists()}

    # ---- remote reads (any thread), called by PackSet --------------------------------------

    def read(self, pack_id: int, off: int, length: int) -> bytes:
        key = self.keys.get(pack_id)
        if key is None:
            raise CorruptDataError(f"pack {pack_id} has no object key")
        try:
            data = self.segments.read(key, off, length)
        except RemoteError as exc:
            raise CorruptDataError(f"cannot read {key}: {exc}") from None
        if len(data) != length:
            self.segments.drop(key, off, length)
            raise CorruptDataError(f"object {key} is shorter than its frame at {off}")
        return data

    def has(self, pack_id: int) -> bool:
        return pack_id in self.keys

    def distrust(self, pack_id: int, off: int, length: int) -> None:
        """A frame read from an object failed its checksum or hashes: its cached segments go,
        so a GET after the object is repaired (or a transient fault passes) reads anew."""
        key = self.keys.get(pack_id)
        if key is not None:
            self.segments.drop(key, off, length)

    def warm(self, locs: list[tuple[int, int, int]]) -> None:
        self.segments.prefetch([(self.keys[p], off, n) for p, off, n in locs
                                if (p >= REMOTE_BASE or p in self.trimmed) and p in self.keys],
                               AHEAD_SEGMENTS)

    # ---- what the packs are ------------------------------------------------------------------

    def remote_id(self, key: str) -> int:
        """The pack id of an object another node published, given one on first sight."""
        pid = self.ids.get(key)
        if pid is None:
            pid = max([REMOTE_BASE - 1, *(p for p in self.keys if p >= REMOTE_BASE)]) + 1
            self.store.db.execute("INSERT INTO pack_objects(pack, key, verified) VALUES (?,?,?)",
                                  (pid, key, time.time()))
            self.keys[pid] = key
            self.ids[key] = pid
        return pid

    def saw_frame_end(self, key: str, end: int) -> None:
        """An object is at least ``end`` bytes long: prefetch may read up to there."""
        self.segments.sizes[key] = max(self.segments.sizes.get(key, 0), end)

    def young(self, pack_id: int, age: float) -> bool:
        """This daemon wrote or renewed the pack's object less than ``age`` seconds ago."""
        return self.written.get(pack_id, 0.0) > time.time() - age

    def record_uploads(self, uploaded: dict[int, str], at: float) -> None:
        """Own packs uploaded or renewed by a publication started at ``at``, now named by a
        manifest."""
        now = time.time()
        for p, k in uploaded.items():
            self.written[p] = at
            self.store.db.execute("INSERT OR REPLACE INTO pack_objects(pack, key, verified) "
                                  "VALUES (?,?,?)", (p, k, now))
            self.keys[p] = k
            self.ids[k] = p

    # ---- trimming ----------------------------------------------------------------------------

    def _usage(self) -> tuple[list[tuple[int, int]], int]:
        """(own uploaded pack, bytes on disk) oldest first, and those plus the segments."""
        packs_dir = self.store.root / layout.PACKS
        own = []
        for p in sorted(self.keys):
            if p >= REMOTE_BASE or p == self.store.packs.write_id or p in self.trimmed:
                continue
            try:
                own.append((p, (packs_dir / pack_name(p)).stat().st_blocks * 512))
            except FileNotFoundError:
                self.trimmed.add(p)
        return own, sum(n for _, n in own) + self.segments.cached_bytes

    def over_limit(self) -> bool:
        """Whether trim_own_packs would remove anything (blocking: stats the packs)."""
        return self._usage()[1] > self.segments.limit

    def trim_own_packs(self) -> list[int]:
        """Keep the node's disk within ``--cache-size``: delete the local copies of its own
        uploaded packs, oldest first, while they and the fetched segments are over the limit;
        their frames are read from the objects from then on (blocking)."""
        packs_dir = self.store.root / layout.PACKS
        own, total = self._usage()
        done = []
        for p, n in own:
            if total <= self.segments.limit:
                break
            self.segments.sizes[self.keys[p]] = (packs_dir / pack_name(p)).stat().st_size
            self.trimmed.add(p)
            self.store.packs.remove(p)
            total -= n
            done.append(p)
        return done

    def describe(self) -> dict[str, Any]:
        return dict(self.segments.describe())

    def close(self) -> None:
        self.segments.close()
