"""One file's bytes: its block map (runs of frames), a pending tail being written, and how the
two change on write, truncate and flush.

Appends (every image CRIU writes) are buffered in ``_pend`` and returned at once; a background
encoder hashes, dedups, compresses and stores whole pages while the writer goes on, so
compression overlaps the FUSE request path instead of adding to it. Memory stays bounded: the
writer waits when more than ``MAX_PENDING`` bytes are queued. Any other write (an overwrite, a
write into a hole) first drains the queue, then stores the pages it touches again.

The runs themselves are read and written only through ``store.maps`` (store/blockmap.py).

A file a dump wrote through FUSE passthrough has no runs yet: its bytes are in a staging file
(``backing``, core/backing.py and store/staging.py), which reads, writes and truncates go to
until ``settle`` stores them as runs and lets the staging file go.

Durability contract: the inode's stored size only ever covers bytes that are in runs (or, for a
staged file, in its synced staging file), so a crash between commits leaves a shorter file,
never a file whose tail reads as zeros that were never written.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable

import trio

from lzfs.core.backing import Backing
from lzfs.core.policy import BATCH, MAX_PENDING, SETTLE_BYTES
from lzfs.core.prefetch import FrameCache, Readahead
from lzfs.core.readmap import ReadWindows
from lzfs.errors import CorruptDataError
from lzfs.store.blockmap import Coverage, Run
from lzfs.store.codec import PAGE
from lzfs.store.grid import BLOCK, Segment, TarGrid, is_tar
from lzfs.store.store import Store

log = logging.getLogger(__name__)


PersistFn = Callable[[int, int, int], None]  # (ino, size, stored bytes)
_ZEROS = bytes(1 << 20)  # what holes in a read are filled from


class _Settling:
    """How far the settling of a staged file got: resumed after a pause while the file stays
    unopened, dropped (its frames to gc) once someone opens it."""

    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.pos = 0
        self.runs: list[Run] = []
        self.pinned: set[int] = set()


class FileMap:
    def __init__(self, ino: int, size: int, store: Store, cache: FrameCache,
                 exts: list[Run], persist: PersistFn, stored: float | None = None) -> None:
        self.ino = ino
        self.size = size
        self.store = store
        self.cache = cache
        self.exts = exts
        self.offs = [e.off for e in exts]
        self._persist = persist
        self._pend: list[bytes] = []
        self._pend_len = 0
        self._pend_off = size
        self._lock = trio.Lock()
        self._encoding = False
        self._idle = trio.Event()
        self._idle.set()
        self._progress = trio.Event()
        self._error: BaseException | None = None
        # bytes to hand to one non-final encode: enough that it always holds a whole page
        self._batch = BATCH + PAGE
        # which frame slots the file holds, for st_blocks: built on the first change of its runs
        # (a slot loop over the whole file: 0.5 s on the request thread at the open of a 2 GiB
        # pages image, which a restore only reads); until then the figure the inode row keeps
        self._cover: Coverage | None = None
        self._stored_hint = stored
        self.nursery: trio.Nursery | None = None
        self.opens = 0
        self.gone = False  # purged (deleted): settle() must not touch its runs any more
        self._grid: TarGrid | None = None  # a checkpoint archive: pages cut per member
        self._grid_checked = False
        self.staged = 0    # bytes this map staged (for the daemon's figures)
        self.backing: Backing | None = None  # the staging file holding its bytes, if any
        self.open_gen = 0  # counts opens: a settle that saw another number must start over
        self._settling: _Settling | None = None
        self._reply = bytearray()  # reused by FUSE reads (_reply_buffer)
        # reads the kernel may get answered without the core (core/readmap.py); told
        # through _changed() before the runs, the size or the pending bytes change
        self.windows: ReadWindows | None = None

    @classmethod
    def load(cls, ino: int, size: int, store: Store, cache: FrameCache,
             persist: PersistFn, stored: float | None = None) -> FileMap:
        """A file's map from the store; ``stored`` is the figure its inode row keeps."""
        return cls(ino, size, store, cache, store.maps.load(ino), persist, stored)

    @property
    def cover(self) -> Coverage:
        if self._cover is None:
            self._cover = self.store.maps.coverage(self.exts)
        return self._cover

    # ---- figures ----------------------------------------------------------------------------

    def live_size(self) -> int:
        """The file's size now: a staged file's is its staging file's, which passthrough
        writes change without a word to the daemon."""
        if self.backing is not None:
            self.size = self.backing.size()
        return self.size

    @property
    def stored(self) -> float:
        """Compressed bytes of the pages it holds, each page once (st_blocks, du); for a
        staged file, what its staging file occupies."""
        if self.backing is not None:
            return self.backing.disk_bytes()
        if self._cover is None and self._stored_hint is not None:
            return self._stored_hint
        return self.cover.stored

    @property
    def pending_bytes(self) -> int:
        """Bytes handed to write() that are not in a pack yet."""
        return self._pend_len

    @property
    def dirty(self) -> bool:
        """Holds bytes only memory has (pending, or being encoded)."""
        return self._pend_len > 0 or self._encoding

    @property
    def settling(self) -> bool:
        """A settle is half done: its frames are pinned until it finishes or is dropped."""
        return self._settling is not None

    def broken_invariants(self) -> list[str]:
        """What is wrong with this map's runs, if anything: they must be sorted, must not
        overlap, must end inside the file, and must not overlap the pending bytes (the
        exerciser checks this after every change; fsck checks the same on disk)."""
        out = []
        end = 0
        if self.offs != [e.off for e in self.exts]:
            out.append("offset index out of step with the runs")
        for r in self.exts:
            if r.len <= 0:
                out.append(f"empty run at {r.off}")
            if r.off < end:
                out.append(f"run at {r.off} overlaps the one before (ends at {end})")
            end = max(end, r.end)
        if end > self.size:
            out.append(f"runs end at {end}, past the size {self.size}")
        if self._pend_len and end > self._pend_off:
            out.append(f"runs end at {end}, past the pending bytes' start {self._pend_off}")
        return out

    def check_error(self) -> None:
        """Re-raise a failure of the background encoder (ENOSPC, EIO) to the writer."""
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    # ---- reading ---------------------------------------------------------------------------

    async def read(self, off: int, size: int, ra: Readahead | None = None,
                   reply: bool = False) -> bytes | bytearray | memoryview:
        """Bytes [off, off+size) clipped to the file size, as a bytes-like object: a read that
        falls inside one decoded frame is a zero-copy view of it (pyfuse3 replies from any
        buffer), so the FUSE hot path copies each byte once, into the reply. ``reply``: the
        caller sends the bytes before its next checkpoint (the FUSE read handler), so they
        may be assembled in the file's reusable reply buffer."""
        if self.backing is not None:
            return await self.backing.read(off, max(0, min(size, self.live_size() - off)))
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
            self._read_ahead(ra, off, end)
        frames = await self.cache.get(list(dict.fromkeys(p[1] for p in parts)))
        if (ra is not None and reply and self.windows is not None and self.backing is None
                and not self.dirty):
            self.windows.offer(self.ino, self.size, self.exts, ra)
        if len(parts) == 1 and pend is None and parts[0][3] == end - off:
            _, fid, src, n = parts[0]
            return memoryview(frames[fid])[src:src + n]
        out = self._reply_buffer(end - off, parts) if reply else memoryview(bytearray(end - off))
        for dst, fid, src, m in parts:
            out[dst:dst + m] = memoryview(frames[fid])[src:src + m]
        if pend is not None:
            out[pend[0]:pend[0] + len(pend[1])] = pend[1]
        return out

    def _reply_buffer(self, n: int, parts: list[tuple[int, int, int, int]]) -> memoryview:
        """The file's reply buffer, reused by every FUSE read of it. A fresh 1 MiB bytearray
        per READ cost the request thread more than all the rest of a restore's READ (glibc
        maps and unmaps it, and the kernel zeroes and faults in each of its pages: 1.1 of
        2.0 s for 1 GiB, profiled). Safe because pyfuse3 sends the reply before the handler's
        task yields again, and nothing awaits between filling the buffer and returning it.
        The bytes ``parts`` (dst, frame, src, length) will not cover are zeroed here."""
        if len(self._reply) < n:
            self._reply = bytearray(max(n, 1 << 20))
        out = memoryview(self._reply)[:n]
        filled = 0
        for dst, _, _, m in [*parts, (n, 0, 0, 0)]:
            while filled < dst:  # a hole, or the tail of a zero page that stores nothing
                k = min(dst - filled, len(_ZEROS))
                out[filled:filled + k] = _ZEROS[:k]
                filled += k
            filled = max(filled, dst + m)
        return out

    def frames_ahead(self, lo: int, want: int) -> tuple[list[int], int]:
        """Frame ids of the next ``want`` bytes of stored pages from ``lo`` on, in file order
        without repeats, and the offset they reach. Pages that store nothing (zeros, holes)
        are stepped over rather than counted: a model server's zeroed KV cache is a third of
        its image, and CRIU reads through it at memory speed, so a window counted in file
        bytes ran dry inside it and left the decoding threads idle meanwhile."""
        i = max(bisect_right(self.offs, lo) - 1, 0)
        out: dict[int, None] = {}
        exts = self.exts
        got = 0
        reach = lo
        while i < len(exts) and got < want:
            e = exts[i]
            s = max(lo, e.off)
            if s < e.off + e.len:
                n = min(e.off + e.len - s, want - got)
                out[e.frame] = None
                got += n
                reach = s + n
            i += 1
        if got < want:  # the last stored page is in: the window reaches the end of the file
            reach = max(lo + want, self.size)
        return list(out), reach

    def _read_ahead(self, ra: Readahead, off: int, end: int) -> None:
        """Tell the reader's readahead about a read of [off, end), and start decoding the
        window it asks for."""
        ahead = ra.advise(off, end)
        if ahead is None:
            return
        fids, reach = self.frames_ahead(ahead[0], ahead[1] - ahead[0])
        ra.reached(reach)
        self.cache.prefetch(fids)

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

    def _changed(self) -> None:
        """The file's bytes, size or runs are about to change: the kernel's READs of it must
        come to the core until it is mapped again (core/readmap.py)."""
        if self.windows is not None:
            self.windows.forget(self.ino)

    async def write(self, off: int, data: bytes) -> None:
        self.check_error()
        if not data:
            return
        self._changed()
        if self.backing is not None:  # an open the kernel did not pass through
            await self.backing.write(off, data)
            self.size = max(self.size, off + len(data))
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
        self._changed()  # again: a read may have mapped the file while the writer waited
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
                    break  # no whole page yet (cannot happen past _batch, but never spin)
                self._progress.set()
        except Exception as exc:  # noqa: BLE001 - reported to the writer at its next write
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

    async def _ingest(self, buf: bytes | bytearray, base: int, final: bool
                      ) -> tuple[list[Run], int]:
        """Store a batch: through ``ingest`` (dedup, compression), or, while the writer is
        more than STAGE_BACKLOG ahead of the encoder (a dump running at full speed on few
        cores) and the disk takes raw bytes faster than the encoder compresses them
        (store/pace.py), through ``stage``: raw, settled later. Only appends stage; an
        overwrite has drained the queue first and is always ingested."""
        backlog = self.store.stage_backlog
        if backlog is not None and self._pend_len > backlog and self.store.pace.staging_pays():
            runs, consumed = await self.store.stage(buf, base, final)
            self.staged += consumed
            return runs, consumed
        return await self.store.ingest(buf, base, final, await self._segments(buf, base, final))

    async def _segments(self, buf: bytes | bytearray | memoryview, base: int, final: bool
                        ) -> list[Segment] | None:
        """Where pages start in [base, base + len(buf)) when the file is a tar (grid.py);
        None for any other file (file pages). A grid not known from this daemon's writes (a
        remount, a settle) is read back from the stored headers first."""
        if not self._grid_checked:
            first = bytes(buf[:BLOCK]) if base == 0 else bytes(await self.read(0, BLOCK))
            if len(first) < BLOCK and base == 0 and not final:
                return None  # too early to tell; the next batch looks again
            self._grid_checked = True
            self._grid = TarGrid() if is_tar(first) else None
        grid = self._grid
        if grid is None:
            return None
        while not grid.done and grid.walk < base:  # headers before this batch: stored ones
            head = bytes(await self.read(grid.walk, BLOCK))
            if len(head) < BLOCK:
                break
            grid.feed(head, grid.walk)
        grid.feed(buf, base)
        end = base + len(buf)
        segments, known = grid.segments(base, end)
        if final and known < end:  # the file ends inside a header: plain bytes
            segments.append(Segment(known, end, 0))
        return segments

    # ---- settling staged data ----------------------------------------------------------------

    def _is_staged(self, r: Run) -> bool:
        try:
            return bool(self.store.frame_loc(r.frame).staged)
        except CorruptDataError:
            return False  # lost: nothing to settle

    def _staged_group(self, start: int) -> tuple[int, int] | None:
        """Index range [i, j) of the next runs from file offset ``start`` that lie in staged
        frames, one after another (zero gaps between them allowed), SETTLE_BYTES at most."""
        exts = self.exts
        i = bisect_right(self.offs, start - 1) if start > 0 else 0
        while i < len(exts) and not self._is_staged(exts[i]):
            i += 1
        if i == len(exts):
            return None
        j = i + 1
        while (j < len(exts) and self._is_staged(exts[j])
               and exts[j].end - exts[i].off <= SETTLE_BYTES):
            j += 1
        return i, j

    async def settle(self, busy: Callable[[], bool]) -> int:
        """Store again, deduplicated and compressed, what was staged, a few MiB at a time while
        ``busy()`` stays false and nobody opens the file. The new runs replace the staged ones
        in one step with no checkpoint, at a moment the file has no open handle (so no read of
        it is in flight); the staged frames then go to gc. Returns the bytes settled."""
        if self.backing is not None:
            return await self._settle_backing(busy)
        done = 0
        pos = 0
        async with self._lock:
            while not busy() and not self.gone:
                group = self._staged_group(pos)
                if group is None:
                    break
                i, j = group
                lo, hi = self.exts[i].off, self.exts[j - 1].end
                data = bytes(await self.read(lo, hi - lo))
                new, _ = await self.store.ingest(data, lo, True,
                                                 await self._segments(data, lo, True),
                                                 timed=False)
                # no checkpoint from here on until the runs are recorded
                if self.opens or self.gone:
                    break  # a reader came (or the file went): its new frames go to gc
                gone = self.exts[i:j]
                self._changed()
                self.store.maps.delete(self.ino, gone)
                self.cover.remove(gone)
                self.store.maps.insert(self.ino, new)
                self.cover.add(new)
                self.exts[i:j] = new
                self.offs[i:j] = [e.off for e in new]
                self._persist_now()
                done += hi - lo
                pos = hi
        return done

    async def _settle_backing(self, busy: Callable[[], bool]) -> int:
        """Store a staging file's bytes as runs, SETTLE_BYTES at a time while ``busy()`` stays
        false; a pause keeps what was done (its frames pinned) for the next call, an open of
        the file drops it. The runs replace the staging file in one step, with no checkpoint,
        once all of it is stored. Returns the bytes settled (0 until the file is done)."""
        async with self._lock:
            backing = self.backing
            if backing is None or self.gone:
                return 0  # another settle (the daemon's own, or gc's) got here first
            st = self._settling
            if st is None or st.gen != self.open_gen:
                self._drop_settling()
                st = self._settling = _Settling(self.open_gen)
            size = backing.size()
            while st.pos < size:
                if busy() or self.opens or self.gone:
                    return 0
                data = await backing.read(st.pos, min(SETTLE_BYTES, size - st.pos))
                final = st.pos + len(data) >= size
                runs, consumed = await self.store.ingest(
                    data, st.pos, final, await self._segments(data, st.pos, final),
                    timed=False)
                fresh = {r.frame for r in runs} - st.pinned
                self.store.pin(fresh)  # until recorded: gc must not take them meanwhile
                st.pinned |= fresh
                st.runs.extend(runs)
                st.pos += consumed
            # no checkpoint from here on until the runs are recorded
            if self.opens or self.gone or st.gen != self.open_gen or backing.size() != size:
                return 0  # opened meanwhile: the next settle starts over
            self._settling = None
            self.backing = None
            self.store.staging.remove(self.ino)
            backing.close()
            self.size = size
            self._add_exts(_coalesced(st.runs))
            self.store.unpin(st.pinned)
            self._persist_now()
        return size

    def _drop_settling(self) -> None:
        """Forget a settle in progress: its frames go to gc."""
        if self._settling is not None:
            self.store.unpin(self._settling.pinned)
            self._settling = None

    def _add_exts(self, new: list[Run]) -> None:
        """Insert runs (which must not overlap existing ones) through the block maps. A first
        run that continues the file's last one (same frame, next bytes: a file written again
        with pages that were stored in order) extends it instead of adding a row."""
        if not new:
            return
        self._changed()
        maps = self.store.maps
        if self.exts and new[0].off >= self.exts[-1].off:
            last = self.exts[-1]
            first = new[0]
            if (last.frame == first.frame and last.end == first.off
                    and last.foff + last.len == first.foff):
                maps.extend(self.ino, last, last.len + first.len)
                merged = Run(last.off, last.len + first.len, last.frame, last.foff)
                # coverage counts (run, slot) pairs: the two may share a slot at the seam
                self.cover.remove([last])
                self.cover.add([merged])
                self.exts[-1] = merged
                new = new[1:]
                if not new:
                    return
        maps.insert(self.ino, new)
        self.cover.add(new)
        if not self.exts or new[0].off >= self.exts[-1].off:
            self.exts.extend(new)
            self.offs.extend(e.off for e in new)
        else:
            self.exts = sorted(self.exts + new, key=lambda e: e.off)
            self.offs = [e.off for e in self.exts]

    def _remove_exts(self, lo: int, hi: int) -> None:
        """Drop the runs with index in [lo, hi) and their references."""
        gone = self.exts[lo:hi]
        if not gone:
            return
        self._changed()
        self.store.maps.delete(self.ino, gone)
        self.cover.remove(gone)
        del self.exts[lo:hi]
        del self.offs[lo:hi]

    def _split_at(self, pos: int) -> None:
        """Make ``pos`` a run boundary: a run across it becomes two runs of its frame."""
        i = bisect_right(self.offs, pos) - 1
        if i < 0:
            return
        r = self.exts[i]
        if not r.off < pos < r.end:
            return
        k = pos - r.off
        self._changed()
        head = Run(r.off, k, r.frame, r.foff)
        tail = Run(pos, r.len - k, r.frame, r.foff + k)
        # in place, never through _add_exts: its merge of a run that continues the one before
        # it (meant for appends) would glue the head back onto a neighbour cut a moment ago,
        # and a rewrite of [lo, hi) in the file's last run then replaced nothing (a page of
        # zeros written there was lost, and a truncate left stale bytes past the new end)
        maps = self.store.maps
        maps.delete(self.ino, [r])
        maps.insert(self.ino, [head, tail])
        self.cover.remove([r])
        self.cover.add([head, tail])
        self.exts[i:i + 1] = [head, tail]
        self.offs[i:i + 1] = [head.off, tail.off]

    async def _drain(self) -> None:
        """Wait for the encoder, then store everything pending (with a final cut)."""
        while self._encoding:
            await self._idle.wait()
        self.check_error()
        if self._pend_len:
            await self._encode_pending(final=True)

    async def _rewrite(self, off: int, data: bytes) -> None:
        """Overwrite inside the stored runs: the pages the write touches are stored again,
        the runs around them are cut at those pages and keep their frames."""
        end = off + len(data)
        lo = off - off % PAGE
        hi = min(-(-end // PAGE) * PAGE, max(self.size, end))
        buf = bytearray(await self.read(lo, max(0, min(hi, self.size) - lo)))
        buf.extend(bytes(hi - lo - len(buf)))
        buf[off - lo:end - lo] = data
        new, _ = await self._ingest(buf, lo, True)
        self._split_at(lo)
        self._split_at(hi)
        i = bisect_right(self.offs, lo - 1) if lo > 0 else 0
        j = bisect_right(self.offs, hi - 1) if hi > 0 else 0
        self._remove_exts(i, j)
        self._add_exts(new)
        # in the same step as the runs (no checkpoint): a commit between the two recorded
        # runs past the file's size, which fsck rightly calls damage after a crash
        self.size = max(self.size, end)
        self._persist_now()

    async def truncate(self, size: int) -> None:
        self._changed()
        if self.backing is not None:
            self.backing.truncate(size)
            self.size = size
            self._persist_now()
            return
        async with self._lock:
            await self._drain()
            if size < self.size:
                self._split_at(size)
                i = bisect_right(self.offs, size - 1) if size > 0 else 0
                self._remove_exts(i, len(self.exts))
            self._changed()  # a file made longer changes no run
            self.size = size
            self._pend_off = max(self._pend_off, size) if self._pend_len else size
            self._persist_now()

    async def punch(self, off: int, length: int) -> None:
        """fallocate(PUNCH_HOLE | KEEP_SIZE): [off, off+length) reads as zeros from now on and
        holds no frame (CRIU's --auto-dedup gives back what it restored). Whole pages lose
        their runs; the pages at the two ends are written again with their bytes zeroed."""
        self._changed()
        if self.backing is not None:
            self.backing.punch(off, length)
            self._persist_now()
            return
        async with self._lock:
            await self._drain()
            end = min(off + length, self.size)
            if off >= end:
                return
            lo = -(-off // PAGE) * PAGE
            hi = end if end == self.size else end - end % PAGE
            edges = [(off, end)]
            if lo < hi:
                self._split_at(lo)
                self._split_at(hi)
                i = bisect_right(self.offs, lo - 1) if lo > 0 else 0
                j = bisect_right(self.offs, hi - 1)
                self._remove_exts(i, j)
                edges = [(off, lo), (hi, end)]
            for a, b in edges:
                if a < b:
                    await self._rewrite(a, bytes(b - a))
            self._persist_now()

    async def flush(self) -> None:
        """Store everything pending and record the final size (uncommitted: see Store.commit)."""
        if self.backing is not None:
            self._persist_now()
            return
        async with self._lock:
            await self._drain()
            self._persist_now()

    def _persist_now(self) -> None:
        if self.backing is not None:
            self._persist(self.ino, self.live_size(), int(self.stored))
            return
        covered = self.size if not self._pend_len else min(self.size, self._pend_off)
        self._persist(self.ino, covered, int(self.stored))

    def flush_size(self) -> None:
        """A staged file's size and disk use into its inode row (before a commit)."""
        if self.backing is not None:
            self._persist_now()

    def release_backing(self) -> Backing | None:
        """The file goes away (purged) or its map is dropped: let go of the staging file."""
        self._drop_settling()
        b, self.backing = self.backing, None
        if b is not None:
            b.close()
        return b


def _coalesced(runs: list[Run]) -> list[Run]:
    """Runs with neighbours that continue each other in one frame joined (batches of a
    settle are cut apart; the bytes they hold are not)."""
    out: list[Run] = []
    for r in runs:
        last = out[-1] if out else None
        if (last is not None and last.frame == r.frame and last.end == r.off
                and last.foff + last.len == r.foff):
            out[-1] = Run(last.off, last.len + r.len, last.frame, last.foff)
        else:
            out.append(r)
    return out
