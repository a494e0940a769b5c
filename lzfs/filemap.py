"""One file's bytes: its block map (extents), a pending tail being written, and how the two
change on write, truncate and flush.

Appends (every image CRIU writes) are buffered in ``_pend`` and returned at once; a background
encoder cuts, hashes, compresses and stores complete blocks while the writer goes on, so
compression overlaps the FUSE request path instead of adding to it. Memory stays bounded: the
writer waits when more than ``MAX_PENDING`` bytes are queued. Any other write (an overwrite, a
write into a hole) first drains the queue, then rewrites the affected blocks.

Durability contract: the inode's stored size only ever covers bytes that are in extents, so a
crash between commits leaves a shorter file, never a file whose tail reads as zeros that were
never written.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import trio

from .codec import PAGE
from .errors import CorruptDataError
from .prefetch import FrameCache, Readahead
from .store import BlockRef, Store

log = logging.getLogger(__name__)

BATCH = 4 << 20        # encode once this much is pending
MAX_PENDING = 16 << 20  # writers wait beyond this


class Ext(NamedTuple):
    off: int
    len: int
    block: int
    frame: int
    foff: int


PersistFn = Callable[[int, int, int], None]  # (ino, size, stored bytes)


class FileMap:
    def __init__(self, ino: int, size: int, store: Store, cache: FrameCache,
                 exts: list[Ext], persist: PersistFn, gate: trio.Lock | None = None) -> None:
        self.ino = ino
        self.size = size
        self.store = store
        self.cache = cache
        self.exts = exts
        self.offs = [e.off for e in exts]
        self._persist = persist
        self._gate = gate if gate is not None else trio.Lock()
        self._pend: list[bytes] = []
        self._pend_len = 0
        self._pend_off = size
        self._lock = trio.Lock()
        self._encoding = False
        self._idle = trio.Event()
        self._idle.set()
        self._progress = trio.Event()
        self._error: BaseException | None = None
        # bytes to hand to one non-final encode: enough that it always holds a cut point (a
        # block is at most max_pages pages, plus an unaligned head)
        self._batch = BATCH + (store.chunker.max_pages + 1) * PAGE
        self._uses: Counter[int] = Counter(e.block for e in exts)
        self.stored = sum(self._share(e) for e in {e.block: e for e in exts}.values())
        self.nursery: trio.Nursery | None = None
        self.opens = 0

    @classmethod
    def load(cls, ino: int, size: int, store: Store, cache: FrameCache,
             persist: PersistFn, gate: trio.Lock | None = None) -> FileMap:
        # LEFT JOIN: an extent whose block row is gone must read as EIO (frame -1 is in no
        # table), never vanish and read as zeros
        rows = store.db.execute(
            "SELECT e.off, e.len, e.block, COALESCE(b.frame, -1), COALESCE(b.foff, 0) "
            "FROM extents e LEFT JOIN blocks b ON b.id = e.block WHERE e.ino=? ORDER BY e.off",
            (ino,)).fetchall()
        return cls(ino, size, store, cache, [Ext(*r) for r in rows], persist, gate)

    # ---- figures ---------------------------------------------------------------------------

    def _share(self, e: Ext) -> float:
        """The compressed bytes of ``e``'s block. A block the file holds several times (a page
        repeated across a pages image) is stored once, so it is counted once: st_blocks, and so
        ``du``, agree with the getfattr figures (Store.file_figures)."""
        try:
            loc = self.store.frame_loc(e.frame)
        except CorruptDataError:  # a block lost to damage (fsck): it takes no space
            return 0.0
        return e.len * loc.rlen / loc.raw if loc.raw else 0.0

    @property
    def pending_bytes(self) -> int:
        """Bytes handed to write() that are not in a pack yet."""
        return self._pend_len

    @property
    def dirty(self) -> bool:
        return self._pend_len > 0 or self._encoding

    def check_error(self) -> None:
        """Re-raise a failure of the background encoder (ENOSPC, EIO) to the writer."""
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    # ---- reading ---------------------------------------------------------------------------

    async def read(self, off: int, size: int, ra: Readahead | None = None
                   ) -> bytes | bytearray | memoryview:
        """Bytes [off, off+size) clipped to the file size, as a bytes-like object: a read that
        falls inside one decoded frame is a zero-copy view of it (pyfuse3 replies from any
        buffer), so the FUSE hot path copies each byte once, into the reply."""
        end = min(off + size, self.size)
        if off >= end:
            return b""
        exts = self.exts
        i = max(bisect_right(self.offs, off) - 1, 0)
        parts: list[tuple[int, int, int, int]] = []  # (dst, frame, src, length)
        while i < len(exts) and exts[i].off < end:
            e = exts[i]
            lo = max(off, e.off)
            hi = min(end, e.off + e.len)
            if lo < hi:
                parts.append((lo - off, e.frame, e.foff + lo - e.off, hi - lo))
            i += 1
        pend = None
        p_lo, p_hi = max(off, self._pend_off), min(end, self._pend_off + self._pend_len)
        if self._pend_len and p_lo < p_hi:
            pend = (p_lo - off, self._pending_slice(p_lo, p_hi))
        if ra is not None:
            ahead = ra.advise(off, end)
            if ahead is not None:
                self.cache.prefetch(self.frames_between(*ahead))
        frames = await self.cache.get(list(dict.fromkeys(p[1] for p in parts)))
        if len(parts) == 1 and pend is None and parts[0][3] == end - off:
            _, fid, src, n = parts[0]
            return memoryview(frames[fid])[src:src + n]
        out = bytearray(end - off)
        for dst, fid, src, n in parts:
            out[dst:dst + n] = memoryview(frames[fid])[src:src + n]
        if pend is not None:
            out[pend[0]:pend[0] + len(pend[1])] = pend[1]
        return out

    def frames_between(self, lo: int, hi: int) -> list[int]:
        """Frame ids of the extents overlapping [lo, hi), in file order, without repeats."""
        i = max(bisect_right(self.offs, lo) - 1, 0)
        out: dict[int, None] = {}
        exts = self.exts
        while i < len(exts) and exts[i].off < hi:
            out[exts[i].frame] = None
            i += 1
        return list(out)

    def _pending_slice(self, lo: int, hi: int) -> bytes:
        """Bytes [lo, hi) of the file from the pending list (absolute offsets)."""
        out = []
        pos = self._pend_off
        for chunk in self._pend:
            end = pos + len(chunk)
            if end > lo and pos < hi:
                out.append(chunk[max(lo - pos, 0):min(hi, end) - pos])
            if end >= hi:
                break
            pos = end
        return b"".join(out)

    # ---- writing ---------------------------------------------------------------------------

    async def write(self, off: int, data: bytes) -> None:
        self.check_error()
        if not data:
            return
        async with self._lock:
            pend_end = self._pend_off + self._pend_len
            ext_end = self.exts[-1].off + self.exts[-1].len if self.exts else 0
            if self._pend_len and off == pend_end:
                self._append(data)
            elif not self._pend_len and not self._encoding and off >= ext_end:
                self._pend_off = off
                self._append(data)
            else:
                await self._drain()
                ext_end = self.exts[-1].off + self.exts[-1].len if self.exts else 0
                if off >= ext_end:
                    self._pend_off = off
                    self._append(data)
                else:
                    await self._rewrite(off, data)
            self.size = max(self.size, off + len(data))
            if self._pend_len >= self._batch and not self._encoding:
                self._start_encoder()
        while self._pend_len > MAX_PENDING and self._encoding:
            self._progress = trio.Event()
            await self._progress.wait()
            self.check_error()

    def _append(self, data: bytes) -> None:
        self._pend.append(data)
        self._pend_len += len(data)

    def _start_encoder(self) -> None:
        self._encoding = True
        self._idle = trio.Event()
        if self.nursery is not None:
            self.nursery.start_soon(self._encoder)
        else:  # no background nursery (tools, tests): the next drain() does the work
            self._encoding = False
            self._idle.set()

    async def _encoder(self) -> None:
        try:
            while self._pend_len >= self._batch and self._error is None:
                if not await self._encode_pending(final=False):
                    break  # no cut point yet (cannot happen past _batch, but never spin)
                self._progress.set()
        except Exception as exc:  # reported to the writer at its next write/flush
            log.error("inode %d: storing data at offset %d failed: %s", self.ino,
                      self._pend_off, exc)
            self._error = exc
        finally:
            self._encoding = False
            self._idle.set()
            self._progress.set()

    async def _encode_pending(self, final: bool) -> int:
        """Store the pending bytes as blocks: all of them if ``final``, else a batch of them up
        to its last cut point. The pending list shrinks only once the extents are recorded, so
        readers see every byte in exactly one of the two places at any checkpoint."""
        take, n = 0, 0
        for chunk in self._pend:  # whole write requests, so each byte is copied once here
            take += 1
            n += len(chunk)
            if n >= self._batch and not final:
                break
        buf = self._pend[0] if take == 1 else b"".join(self._pend[:take])
        base = self._pend_off
        new_exts, consumed = await self._ingest(buf, base, final and take == len(self._pend))
        if consumed:
            self._add_exts(new_exts)
            del self._pend[:take]
            if consumed < len(buf):
                self._pend.insert(0, buf[consumed:])
            self._pend_len -= consumed
            self._pend_off = base + consumed
            self._persist_now()
        if final and self._pend_len:
            consumed += await self._encode_pending(final=True)
        return consumed

    async def _ingest(self, buf: bytes, base: int, final: bool) -> tuple[list[Ext], int]:
        store = self.store
        cuts, consumed = await trio.to_thread.run_sync(store.prepare, buf, base, final)
        refs = store.resolve([c.hash for c in cuts if c.hash])
        store.pin(r.id for r in refs.values())  # gc must not take them before _add_exts
        try:
            new = store.new_blocks(cuts, refs)
            if new:
                frames = await trio.to_thread.run_sync(store.pack_new, buf, new)
                async with self._gate:  # not while a commit is syncing packs (fs.commit)
                    fresh = store.register(frames)
                store.pin(r.id for r in fresh.values())
                refs.update(fresh)
        finally:
            # Callers record the extents (incref) right after this returns, with no
            # checkpoint in between, so gc (which runs on this thread) cannot slip in.
            store.unpin(r.id for r in refs.values())
        exts = []
        for c in cuts:
            if c.hash:
                r: BlockRef = refs[c.hash]
                exts.append(Ext(base + c.start, c.length, r.id, r.frame, r.foff))
        return exts, consumed

    def _add_exts(self, new: list[Ext]) -> None:
        """Insert extents (which must not overlap existing ones) and count their references."""
        if not new:
            return
        self.store.incref([e.block for e in new])
        self.store.db.executemany("INSERT INTO extents(ino, off, len, block) VALUES (?,?,?,?)",
                                  [(self.ino, e.off, e.len, e.block) for e in new])
        for e in new:
            self._uses[e.block] += 1
            if self._uses[e.block] == 1:
                self.stored += self._share(e)
        if not self.exts or new[0].off >= self.exts[-1].off:
            self.exts.extend(new)
            self.offs.extend(e.off for e in new)
        else:
            merged = sorted(self.exts + new, key=lambda e: e.off)
            self.exts = merged
            self.offs = [e.off for e in merged]

    def _remove_exts(self, lo: int, hi: int) -> None:
        """Drop the extents with index in [lo, hi) and their references."""
        gone = self.exts[lo:hi]
        if not gone:
            return
        self.store.decref([e.block for e in gone])
        self.store.db.executemany("DELETE FROM extents WHERE ino=? AND off=?",
                                  [(self.ino, e.off) for e in gone])
        for e in gone:
            self._uses[e.block] -= 1
            if not self._uses[e.block]:
                del self._uses[e.block]
                self.stored -= self._share(e)
        del self.exts[lo:hi]
        del self.offs[lo:hi]

    async def _drain(self) -> None:
        """Wait for the encoder, then store everything pending (with a final cut)."""
        while self._encoding:
            await self._idle.wait()
        self.check_error()
        if self._pend_len:
            await self._encode_pending(final=True)

    async def _rewrite(self, off: int, data: bytes) -> None:
        """Overwrite inside the stored extents: re-cut the blocks the write touches."""
        end = off + len(data)
        i = max(bisect_right(self.offs, off) - 1, 0)
        if i < len(self.exts) and self.exts[i].off + self.exts[i].len <= off:
            i += 1
        j = i
        while j < len(self.exts) and self.exts[j].off < end:
            j += 1
        lo = min(off, self.exts[i].off) if i < j else off
        hi = max(end, self.exts[j - 1].off + self.exts[j - 1].len) if i < j else end
        buf = bytearray(await self.read(lo, max(0, min(hi, self.size) - lo)))
        buf.extend(bytes(hi - lo - len(buf)))
        buf[off - lo:end - lo] = data
        new, _ = await self._ingest(bytes(buf), lo, True)
        self._remove_exts(i, j)
        self._add_exts(new)

    async def truncate(self, size: int) -> None:
        async with self._lock:
            await self._drain()
            if size < self.size:
                i = bisect_right(self.offs, size - 1) if size > 0 else 0
                # i = first extent starting at or after size; the one before may straddle it
                if i > 0 and self.exts[i - 1].off + self.exts[i - 1].len > size:
                    e = self.exts[i - 1]
                    head = bytes(await self.read(e.off, size - e.off))
                    self._remove_exts(i - 1, len(self.exts))
                    new, _ = await self._ingest(head, e.off, True)
                    self._add_exts(new)
                else:
                    self._remove_exts(i, len(self.exts))
            self.size = size
            self._pend_off = max(self._pend_off, size) if self._pend_len else size
            self._persist_now()

    async def flush(self) -> None:
        """Store everything pending and record the final size (uncommitted: see Store.commit)."""
        async with self._lock:
            await self._drain()
            self._persist_now()

    async def release_all(self) -> None:
        """The file is deleted: drop every extent."""
        async with self._lock:
            await self._drain()
            self._remove_exts(0, len(self.exts))
            self.size = 0

    def _persist_now(self) -> None:
        covered = self.size if not self._pend_len else min(self.size, self._pend_off)
        self._persist(self.ino, covered, int(self.stored))
