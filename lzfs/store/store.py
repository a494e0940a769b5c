"""The block store: pages deduplicated by content, compressed in frames, packed.

Writing a run of file data (``ingest``) takes four steps, split so the expensive ones run off
the trio thread and the database is touched only from it:

1. split (worker thread): cut at file pages, drop zero pages, hash each page (chunker.py);
2. match (DB thread): which pages the store holds already (store/index.py);
3. pack (worker thread): compress the new pages into frames and append them to a pack;
4. register (DB thread, under ``gate``): record the frames and their page tables.

It returns the runs (blockmap.Run) that now hold the data; the caller records them at once,
with no checkpoint in between, through ``maps`` (store/blockmap.py), the one owner of block
maps and reference counts. Frames found or made are pinned while the data is in flight, so gc
(which runs on the same thread) never takes a frame a write is about to name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import trio

from lzfs.errors import CorruptDataError
from lzfs.store import chunker, layout
from lzfs.store.blockmap import BlockMaps, FrameShape, Run
from lzfs.store.codec import FRAME_MAX, FrameHeader, block_hash, decode_record, encode_frame_parts
from lzfs.store.db import MetaDB
from lzfs.store.frames import FrameTable
from lzfs.store.grid import Segment
from lzfs.store.index import PageIndex, Supplier
from lzfs.store.namespace import Namespace
from lzfs.store.pace import Pace
from lzfs.store.packs import REMOTE_BASE, PackSet
from lzfs.store.pagetable import encode_table
from lzfs.store.staging import StagingFiles

log = logging.getLogger(__name__)


class FrameWrite(NamedTuple):
    header: FrameHeader
    pack: int
    off: int
    rlen: int


class FrameLoc(NamedTuple):
    pack: int
    off: int
    rlen: int
    stored: int
    raw: int
    seed: int = 0  # the dedup domain its page hashes were computed in
    staged: int = 0  # written raw, not deduplicated: the settler stores it again


@dataclass
class StoreStats:
    files: int
    directories: int
    logical: int          # sum of file sizes
    referenced: int       # bytes of frame data the files reference (with repeats)
    unique: int           # raw bytes of the frames files reference (after dedup)
    stored: int           # record bytes of those frames (after compression)
    zero: int             # logical bytes not backed by any frame (zero pages, holes)
    pages: int            # pages held by live frames
    frames: int
    garbage_frames: int   # frames no file references (gc removes them)
    pack_bytes: int       # bytes the pack files (and staging files) occupy on disk
    staged: int = 0       # raw bytes a dump staged, not yet compressed and deduplicated


class Store:
    def __init__(self, root: str | os.PathLike, *, domain: str | None = None,
                 readonly: bool = False, lock_wait: float = 0.0, exclusive: bool = False,
                 recover: bool = True, upgradable: bool = False, scratch: bool = False
                 ) -> None:
        """Open a store. ``readonly`` opens it beside a running daemon (for stats and
        reports): no lock, no recovery, nothing written; with ``exclusive`` the caller holds
        the store's lock itself (fsck), so nobody writes meanwhile. ``recover`` False leaves
        pack tails past the committed sizes alone (fsck --repair decides what they are).
        ``scratch`` (read-only) upgrades an older schema in a private in-memory copy.
        ``domain`` names the dedup domain new pages are hashed in: pages only ever dedup
        against pages of the same domain."""
        self.root = Path(root).resolve()
        self.config = layout.read_config(self.root)
        self.readonly = readonly
        self.lock = layout.StoreLock(self.root)
        db_path = self.root / layout.DB
        # Nobody writes it and no committed transaction waits in the WAL (a daemon that died
        # leaves one): SQLite may read meta.db alone and create no -wal/-shm beside it. A
        # daemon that starts meanwhile can at worst make this read fail as damaged.
        quiet = ((exclusive or not self.lock.held())
                 and _empty(db_path.with_name(db_path.name + "-wal")))
        if readonly:
            # upgradable: a look before a mount, which will upgrade an older schema
            self.db = MetaDB(db_path, readonly=True, immutable=quiet, upgradable=upgradable,
                             scratch=scratch)
        elif quiet:
            # look before taking the lock: a store that cannot be opened is left as it was
            MetaDB(db_path, readonly=True, immutable=True, upgradable=True).conn.close()
        if not readonly:
            self.lock.acquire(wait=lock_wait)
        try:
            if not readonly:
                self.db = MetaDB(db_path)
            self.domain = domain or ""
            self.seed = domain_seed(domain)
            self.packs = PackSet(self.root / layout.PACKS)
            committed = dict(self.db.execute("SELECT id, size FROM packs").fetchall())
            self.recovered: list[str] = []  # what opening cut off (fsck --repair reports it)
            if not readonly and recover:
                self.recovered = self.packs.recover(committed)
                for action in self.recovered:
                    log.warning("recovery: %s", action)
                self.packs.start(committed)
            self._frame_locs: OrderedDict[int, FrameLoc] = OrderedDict()
            self._pins: Counter[int] = Counter()  # frames named by writes not yet recorded
            self.frames = FrameTable(self.db)
            self.maps = BlockMaps(self.db, self.frames, self.frame_shape)
            self.index = PageIndex(self.db, self.frames)
            # frames from beyond the store, matched when the index misses (a cluster node)
            self.supplier: Supplier | None = None
            self.ns = Namespace(self.db)
            self.staging = StagingFiles(self.root, self.db)
            # held while a commit syncs packs: no frame is registered meanwhile, so a
            # committed row never names pack bytes that are not on disk
            self.gate = trio.Lock()
            # how far a writer may run ahead of the encoder before its data is staged (stored
            # raw, settled later; filemap.STAGE_BACKLOG under a mount); None: never. A cluster
            # node never stages: its manifests name the frames it wrote
            self.stage_backlog: int | None = None
            self.pace = Pace(self.packs.behind)  # whether staging pays on this disk
            self.pace.load(self.root)
        except BaseException:
            self.lock.release()
            raise

    # ---- writing ---------------------------------------------------------------------------

    @property
    def garbage(self) -> bool:
        """Whether a reference count dropped since the last collection: gc has work."""
        return self.maps.garbage

    async def ingest(self, buf: bytes | bytearray | memoryview, base: int, final: bool,
                     segments: Sequence[Segment] | None = None, timed: bool = True
                     ) -> tuple[list[Run], int]:
        """Store ``buf`` (file bytes from offset ``base``) and return the runs that hold it
        and how many bytes of ``buf`` they cover (all of them if ``final``, else up to the
        last whole page). ``segments`` (grid.py) say where pages start when that is not at
        file pages (members of a tar). The caller records the runs (``maps.insert``) before
        its next checkpoint. ``timed``: the time it takes counts in the encoder's rate
        (store/pace.py); settling, which runs while the daemon is otherwise idle, does not
        say how fast the encoder keeps up with a dump."""
        started = time.monotonic()
        pieces, consumed = await trio.to_thread.run_sync(
            _split_segments, buf, base, final, self.seed, segments)
        busy = time.monotonic() - started  # the encoder's own time, not the waits between
        data = [p for p in pieces if p[2] is not None]
        hashes: list[bytes] = [p[2] for p in data]  # type: ignore[misc]
        where = self.index.match(hashes)
        if self.supplier is not None and len(where) < len(set(hashes)):
            await self.supplier.supply([h for h in hashes if h not in where])
            # match again whatever it found: gc may have run while it waited
            where = self.index.match(hashes)
        pinned = {f for f, _ in where.values()}
        self.pin(pinned)  # gc must not take them before the caller records its runs
        try:
            new = self.new_pieces(data, where)
            if new:
                started = time.monotonic()
                frames = await trio.to_thread.run_sync(self.pack_new, buf, new)
                busy += time.monotonic() - started
                async with self.gate:  # not while a commit is syncing packs
                    fresh = self.register(frames)
                fresh_frames = {f for f, _ in fresh.values()} - pinned
                self.pin(fresh_frames)
                pinned |= fresh_frames
                where.update(fresh)
        finally:
            # Callers record the runs right after this returns, with no checkpoint in
            # between, so gc (which runs on this thread) cannot slip in.
            self.unpin(pinned)
        if timed:
            self.pace.encoded(consumed, busy)
        return _runs(base, data, where), consumed

    async def stage(self, buf: bytes | bytearray | memoryview, base: int, final: bool
                    ) -> tuple[list[Run], int]:
        """Like ``ingest``, for a writer that outruns the encoder: the non-zero data goes into
        raw frames as it is (one content hash per frame, no page hashes, no index), marked
        staged. The settler (``FileMap.settle``) stores it again through ``ingest`` once the
        daemon is idle, and gc gives the staged frames back. A dump so pays a copy and a
        hash per 256 KiB while it runs, and compression and dedup after it."""
        spans, consumed = await trio.to_thread.run_sync(chunker.spans, buf, base, final,
                                                        FRAME_MAX)
        if not spans:
            return [], consumed
        frames = await trio.to_thread.run_sync(self._pack_staged, buf, spans)
        async with self.gate:  # not while a commit is syncing packs
            ids = [self._add_written(fw, None, staged=True) for fw in frames]
            self._note_pack_sizes()
        # no checkpoint from here until the caller records the runs: gc cannot slip in
        return [Run(base + start, n, f, 0) for (start, n), f in zip(spans, ids, strict=True)], \
            consumed

    def _pack_staged(self, buf: bytes | bytearray | memoryview, spans: list[tuple[int, int]]
                     ) -> list[FrameWrite]:
        view = memoryview(buf)
        encoded = [encode_frame_parts(view[s:s + n], [(n, block_hash(view[s:s + n], self.seed))],
                                      compressed=False) for s, n in spans]
        places = self.packs.append([parts for _, parts in encoded], staged=True)
        return [FrameWrite(head, pack, off, head.record_len)
                for (head, _), (pack, off) in zip(encoded, places, strict=True)]

    def _add_written(self, fw: FrameWrite, entries: list[tuple[int, bytes]] | None,
                     staged: bool = False) -> int:
        h = fw.header
        return self.add_frame(fw.pack, fw.off, fw.rlen, h.stored_len, h.raw_len, h.codec,
                              entries, seed=self.seed, staged=staged)

    def add_frame(self, pack: int, off: int, rlen: int, stored: int, raw: int, codec: int,
                  entries: list[tuple[int, bytes]] | None, seed: int = 0,
                  staged: bool = False) -> int:
        """Record a frame (refs 0) that is in a pack already, with its page table, and index
        its pages: the one way a frame enters the store, for what this daemon writes and for
        frames a manifest names (cluster/manifest.py)."""
        table = encode_table(entries) if entries else None
        fid = self.frames.insert(pack, off, rlen, stored, raw, codec, seed, table, staged)
        if entries:
            self.index.add(fid, entries)
        return fid

    def _note_pack_sizes(self) -> None:
        self.db.executemany("INSERT OR REPLACE INTO packs(id, size) VALUES (?,?)",
                            list(self.packs.sizes().items()))

    @staticmethod
    def new_pieces(data: Sequence[tuple[int, int, bytes | None]],
                   known: dict[bytes, tuple[int, int]]) -> list[tuple[int, int, bytes]]:
        """The pieces the store lacks, each content once, in file order."""
        new: dict[bytes, tuple[int, int, bytes]] = {}
        for start, length, h in data:
            if h is not None and h not in known and h not in new:
                new[h] = (start, length, h)
        return list(new.values())

    def pack_new(self, buf: bytes | bytearray | memoryview,
                 pieces: Sequence[tuple[int, int, bytes | None]]) -> list[FrameWrite]:
        """Compress ``pieces`` (of ``buf``, in order) into frames of at most FRAME_MAX raw
        bytes, and append them to a pack. A frame whose pieces lie back to back in ``buf``
        (the usual case: new data arrives in file order) is compressed from a view of it,
        without joining them first."""
        view = memoryview(buf)
        frames: list[tuple[list[tuple[int, bytes]], list[list[int]]]] = []  # (table, spans)
        size = FRAME_MAX + 1
        for start, length, h in pieces:
            assert h is not None
            if size + length > FRAME_MAX:
                frames.append(([], []))
                size = 0
            table, spans = frames[-1]
            table.append((length, h))
            if spans and spans[-1][1] == start:
                spans[-1][1] += length
            else:
                spans.append([start, start + length])
            size += length
        encoded = []
        for table, spans in frames:
            raw = (view[spans[0][0]:spans[0][1]] if len(spans) == 1
                   else b"".join(view[lo:hi] for lo, hi in spans))
            encoded.append(encode_frame_parts(raw, table))
        places = self.packs.append([parts for _, parts in encoded])
        return [FrameWrite(head, pack, off, head.record_len)
                for (head, _), (pack, off) in zip(encoded, places, strict=True)]

    def register(self, frames: list[FrameWrite]) -> dict[bytes, tuple[int, int]]:
        """Record new frames (refs 0) with their page tables, and index their pages.
        Returns hash -> (frame, offset in its raw data)."""
        out: dict[bytes, tuple[int, int]] = {}
        for fw in frames:
            entries: list[tuple[int, bytes]] = []
            foff = 0
            for n, h in fw.header.blocks:
                entries.append((foff, h))
                foff += n
            frame_id = self._add_written(fw, entries)
            for foff, h in entries:
                out[h] = (frame_id, foff)
        if frames:
            self._note_pack_sizes()
        return out

    # ---- reading ---------------------------------------------------------------------------

    def frame_loc(self, frame_id: int) -> FrameLoc:
        loc = self._frame_locs.get(frame_id)
        if loc is None:
            row = self.frames.location(frame_id)
            if row is None:
                raise CorruptDataError(f"frame {frame_id} is not in the frame table")
            if row[7]:
                raise CorruptDataError(f"frame {frame_id} was found damaged by lzfs fsck; "
                                       f"its data is lost")
            loc = FrameLoc(*row[:7])
            self._frame_locs[frame_id] = loc
            if len(self._frame_locs) > 200_000:
                self._frame_locs.popitem(last=False)
        return loc

    def know_frames(self, frame_ids: Iterable[int]) -> None:
        """Look up the locations of these frames in as few queries as it takes, ahead of
        ``frame_loc`` asking for each: one query per frame cost a restore's request thread
        a third of its time (prefetch asks for every frame of the next MiBs)."""
        todo = [f for f in frame_ids if f not in self._frame_locs]
        for fid, *row in self.frames.locations(todo):
            if not row[7]:  # a lost frame keeps failing in frame_loc, with its message
                self._frame_locs[fid] = FrameLoc(*row[:7])
        while len(self._frame_locs) > 200_000:
            self._frame_locs.popitem(last=False)

    def frame_shape(self, frame_id: int) -> FrameShape | None:
        """(record bytes, raw bytes) of a frame, None when it is gone or lost."""
        try:
            loc = self.frame_loc(frame_id)
        except CorruptDataError:
            return None
        return FrameShape(loc.rlen, loc.raw)

    def read_frame(self, loc: FrameLoc) -> bytes:
        """Read, verify and decompress one frame (any thread)."""
        record = self.packs.read(loc.pack, loc.off, loc.rlen)
        try:
            raw_len, stored_len, raw = decode_record(record, loc.seed)
        except CorruptDataError:
            self.packs.distrust(loc.pack, loc.off, loc.rlen)  # a cached GET: never again
            # An own pack that was uploaded: gc may have punched this frame out of the local
            # copy after another node's snapshot came to name it; its object still holds it.
            again = self.packs.read_object(loc.pack, loc.off, loc.rlen)
            if again is None:
                raise
            try:
                raw_len, stored_len, raw = decode_record(again, loc.seed)
            except CorruptDataError:
                self.packs.distrust(loc.pack, loc.off, loc.rlen)  # its cached GET as well
                raise
        if raw_len != loc.raw or stored_len != loc.stored:
            raise CorruptDataError("frame header disagrees with the frame table")
        return raw

    def read_file(self, ino: int, size: int) -> bytes:
        """A whole (small) file, decoded here: for reading CRIU images in reports."""
        if self.staging.has(ino):  # written through passthrough, not settled yet
            with open(self.staging.path(ino), "rb") as f:
                return f.read(size).ljust(size, b"\0")
        return self.maps.read_file(ino, size, lambda f: self.read_frame(self.frame_loc(f)))

    # ---- durability ------------------------------------------------------------------------

    def sync_packs(self) -> None:
        """fsync pack data (any thread). Must precede `commit_meta` for the same changes."""
        self.packs.sync()

    def commit_meta(self) -> None:
        self.db.commit()

    def commit(self) -> None:
        self.sync_packs()
        self.commit_meta()

    def close(self, commit: bool = True) -> None:
        """Close; with ``commit`` False, drop every change since the last commit (what a
        daemon whose commit failed does: the next open recovers packs to match)."""
        if self.readonly:
            self.db.conn.close()
            self.packs.close()
            return
        try:
            if commit:
                self.packs.sync()
            self.db.close(commit=commit)
            self.packs.close()
        finally:
            self.lock.release()

    # ---- accounting ------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        files, logical, dirs = self.ns.figures()
        referenced = self.maps.referenced()
        fr = self.frames.figures()
        staged_size, staged_disk = self.staging.disk_bytes()
        pack_bytes = staged_disk
        for entry in (self.root / layout.PACKS).iterdir():
            with contextlib.suppress(OSError):
                pack_bytes += entry.stat().st_blocks * 512
        pages = (fr.raw + 4095) // 4096
        return StoreStats(files, dirs, logical, referenced + staged_size, fr.raw, fr.rlen,
                          logical - referenced - staged_size, pages, fr.live, fr.garbage,
                          pack_bytes, fr.staged + staged_size)

    def collect_garbage(self) -> tuple[int, list[tuple[int, int, int, int]]]:
        """Drop frames no run references (except pinned ones, which a write in flight has
        just named), with their hooks. Returns (frames removed, frames to punch); punch them
        only after the next commit, when no committed row names them. A frame holding one
        live page stays whole: its dead pages are reclaimed when its last page dies."""
        pinned = {f for f, n in self._pins.items() if n > 0}
        dead = [r for r in self.frames.dead() if r.id not in pinned]
        self.index.forget([(r.id, r.pages) for r in dead])
        self.frames.delete(r.id for r in dead)
        for r in dead:
            self._frame_locs.pop(r.id, None)
        self.maps.garbage = False
        return len(dead), [(r.id, r.pack, r.off, r.rlen) for r in dead]

    def punch(self, frames: list[tuple[int, int, int, int]]) -> int:
        """Give back the space of collected frames (any thread). Returns bytes freed."""
        freed = 0
        for pack, lo, hi in _merged(frames):
            if pack >= REMOTE_BASE:  # an object: immutable; lzfs gc on the bucket removes it
                continue
            self.packs.punch(pack, lo, hi - lo)
            freed += hi - lo
        return freed

    def gc(self) -> tuple[int, int]:
        """Offline gc: collect, commit, punch. Returns (frames removed, bytes given back)."""
        removed, frames = self.collect_garbage()
        self.commit()
        return removed, self.punch(frames)

    def pin(self, frames) -> None:
        for f in frames:
            self._pins[f] += 1

    def unpin(self, frames) -> None:
        for f in frames:
            self._pins[f] -= 1
            if self._pins[f] <= 0:
                del self._pins[f]

    def file_figures(self, ino: int, size: int) -> dict[str, float]:
        """Per-file figures for getfattr (blockmap.BlockMaps.file_figures)."""
        return self.maps.file_figures(ino, size)


def _split_segments(buf: bytes | bytearray | memoryview, base: int, final: bool, seed: int,
                    segments: Sequence[Segment] | None
                    ) -> tuple[list[tuple[int, int, bytes | None]], int]:
    """chunker.split over each segment, with pages cut from the segment's phase; every
    segment but the last ends where its member does (a final cut)."""
    if not segments:
        return chunker.split(buf, base, final, seed)
    view = memoryview(buf)
    out: list[tuple[int, int, bytes | None]] = []
    consumed = 0
    for i, seg in enumerate(segments):
        a, b = seg.start - base, seg.end - base
        last = i == len(segments) - 1
        pieces, n = chunker.split(view[a:b], seg.start - seg.phase, final or not last, seed)
        out.extend((start + a, length, h) for start, length, h in pieces)
        consumed = a + n
        if n < b - a:
            break
    return out, consumed


def _runs(base: int, data: Sequence[tuple[int, int, bytes | None]],
          where: dict[bytes, tuple[int, int]]) -> list[Run]:
    """The runs that hold ``data`` (pieces from file offset ``base``): consecutive pieces that
    lie back to back in one frame make one run. A loop over plain ints: it runs per page."""
    out: list[Run] = []
    cf = -1
    coff = cfo = clen = 0
    for start, length, h in data:
        f, fo = where[h]  # type: ignore[index]
        off = base + start
        if f == cf and off == coff + clen and fo == cfo + clen:
            clen += length
            continue
        if clen:
            out.append(Run(coff, clen, cf, cfo))
        cf, coff, cfo, clen = f, off, fo, length
    if clen:
        out.append(Run(coff, clen, cf, cfo))
    return out


def _empty(path: Path) -> bool:
    try:
        return os.stat(path).st_size == 0
    except FileNotFoundError:
        return True


def domain_seed(domain: str | None) -> int:
    """The XXH3 seed of a dedup domain: 0 for the default one. Seeds are stored per frame
    (reads must verify each block in the domain it was hashed in); the 63-bit range keeps
    them SQLite integers."""
    if not domain:
        return 0
    import xxhash

    return (xxhash.xxh3_64_intdigest(b"lzfs-domain\0" + domain.encode()) >> 1) or 1


def _merged(frames: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int]]:
    """(pack, start, end) ranges of dead frames, neighbours merged: punched one by one, two
    dead frames back to back kept the 4 KiB block they share (a settled staging pack kept
    one block per frame)."""
    out: list[list[int]] = []
    for _, pack, off, rlen in sorted(frames, key=lambda f: (f[1], f[2])):
        if out and out[-1][0] == pack and off <= out[-1][2]:
            out[-1][2] = max(out[-1][2], off + rlen)
        else:
            out.append([pack, off, off + rlen])
    return [(p, lo, hi) for p, lo, hi in out]
