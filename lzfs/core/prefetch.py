"""Decoded-frame cache and restore-order readahead.

CRIU's restorer reads each pages image forward with large preadv calls (the premapped path
page by page, forward too). Decompressing on demand inside each FUSE request leaves the second
core idle and puts LZ4 on the critical path; instead, reads tell a per-handle `Readahead` where
they are, and it keeps frames ahead of the reader decoding on a worker thread, so the request
handler mostly copies bytes that are already there.

Hand-offs are batched (a few MiB of frames per thread call): a thread hand-off per 256 KiB
frame costs more than it saves (measured, see docs/benchmarks.md). lz4 and xxhash release the
GIL, so the worker decodes while the trio thread answers FUSE.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable

import trio

from lzfs.core.policy import STREAM_LEAD
from lzfs.errors import CorruptDataError
from lzfs.store.packs import REMOTE_BASE
from lzfs.store.store import FrameLoc, Store

log = logging.getLogger(__name__)

BATCH_BYTES = 4 << 20  # raw bytes of frames decoded per thread hand-off
STREAM_STEP = 4 << 20  # pack bytes read into the page cache per thread call (stream)
STREAM_GIVE_UP = 5.0   # seconds without decoding progress after which a stream stops


class FrameCache:
    """LRU of decoded frames, bounded in bytes, shared by every open file.

    A frame being decoded has an Event in ``_inflight``: a reader that needs it waits for that
    decode instead of starting another."""

    def __init__(self, store: Store, budget: int = 128 << 20) -> None:
        self.store = store
        self.budget = budget
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # _put runs on decoding threads too
        self._inflight: dict[int, trio.Event] = {}
        self._failed: dict[int, CorruptDataError] = {}
        # decoding threads ahead of readers: one per core, so that a restore decodes on both
        # while fast reads (core/readmap.py) leave the request thread nearly idle
        self._prefetch_limiter = trio.CapacityLimiter(max(1, min(4, os.cpu_count() or 1)))
        self.nursery: trio.Nursery | None = None
        self.hits = self.misses = self.prefetched = 0
        # record bytes of the frames decoded so far: the pace of stream(). Decoding threads
        # add to it without a lock; a lost addition only lets a stream wait a step longer.
        self.read_bytes = 0

    @property
    def buffers(self) -> dict[int, bytes]:
        """The decoded frames by id, for READs answered without the core (core/readmap.py):
        read under the GIL only, never written there."""
        return self._frames

    def _put(self, frame_id: int, data: bytes) -> None:
        """Add a decoded frame (any thread: the decoding threads add each frame as it is
        done, so that READs answered without the core find it before its batch is over)."""
        with self._lock:
            if frame_id in self._frames:
                return
            self._frames[frame_id] = data
            self._bytes += len(data)
            while self._bytes > self.budget and len(self._frames) > 1:
                _, old = self._frames.popitem(last=False)
                self._bytes -= len(old)

    def drop(self, frame_ids: Iterable[int]) -> None:
        """Forget frames gc removed (their ids never come back, but nothing stale stays)."""
        with self._lock:
            for f in frame_ids:
                self._failed.pop(f, None)
                data = self._frames.pop(f, None)
                if data is not None:
                    self._bytes -= len(data)

    def _decode_batch(self, locs: list[tuple[int, FrameLoc]], warm: bool = False
                      ) -> dict[int, CorruptDataError]:
        """Read, verify and decode frames into the cache (a worker thread); returns the ones
        that failed. ``warm``: first ask the kernel to read the whole batch ahead (its fadvise
        calls cost the request thread 2% of a restore when they were made there)."""
        if warm:
            self.store.packs.warm([(loc.pack, loc.off, loc.rlen) for _, loc in locs])
        failed: dict[int, CorruptDataError] = {}
        for fid, loc in locs:
            try:
                self._put(fid, self.store.read_frame(loc))
                self.read_bytes += loc.rlen
            except CorruptDataError as exc:
                failed[fid] = exc
        return failed

    async def _decode(self, frame_ids: list[int], limiter: trio.CapacityLimiter | None) -> None:
        """Decode frames not cached or in flight; marks them in flight meanwhile."""
        todo = [f for f in frame_ids if f not in self._frames and f not in self._inflight]
        if not todo:
            return
        events = {f: trio.Event() for f in todo}
        self._inflight.update(events)
        try:
            locs = []
            for f in todo:  # one frame without a row fails alone, not its whole batch
                try:
                    locs.append((f, self.store.frame_loc(f)))
                except CorruptDataError as exc:
                    self._failed[f] = exc
            # frames of remote packs: their GETs start now, in parallel, even for batches
            # that still wait for the decoding thread; local ones are warmed by that thread
            self.store.packs.warm([(loc.pack, loc.off, loc.rlen) for _, loc in locs],
                                  local=False)
            # decoded frames are in the cache already
            self._failed.update(await trio.to_thread.run_sync(self._decode_batch, locs, True,
                                                              limiter=limiter))
        finally:
            for f, ev in events.items():
                del self._inflight[f]
                ev.set()

    async def get(self, frame_ids: list[int]) -> dict[int, bytes]:
        """Decoded frames by id. Raises CorruptDataError if one fails its checks."""
        out: dict[int, bytes] = {}
        missing = []
        for f in frame_ids:
            data = self._frames.get(f)
            if data is not None:
                with self._lock:
                    if f in self._frames:
                        self._frames.move_to_end(f)
                out[f] = data
                self.hits += 1
            else:
                missing.append(f)
        if missing:
            self.misses += len(missing)
            todo = [f for f in missing if f not in self._inflight]
            if len(todo) == 1 and self._decode_inline(todo[0]):
                todo = []
            await self._decode(todo, None)
            for f in missing:
                ev = self._inflight.get(f)
                if ev is not None:
                    await ev.wait()
                if f in self._failed:
                    raise self._failed.pop(f)
                data = self._frames.get(f)
                if data is None:  # evicted between decode and now: decode again, for us only
                    loc = self.store.frame_loc(f)
                    data = await trio.to_thread.run_sync(self.store.read_frame, loc)
                out[f] = data
        return out

    def _decode_inline(self, frame_id: int) -> bool:
        """Decode one frame of a local pack right here, on the request thread; False (nothing
        done) for a frame of a remote pack, whose read may wait on the network.

        A thread hand-off costs more than the decode it hands off: 130 us for the hop against
        70 us to read, verify and decompress a 200 KiB frame (measured on the 2-core test
        machine). Only a single missing frame is decoded here, which is what a random 4 KiB
        read needs; batches still go to the worker thread."""
        try:
            loc = self.store.frame_loc(frame_id)
        except CorruptDataError as exc:
            self._failed[frame_id] = exc
            return True
        if loc.pack >= REMOTE_BASE or self.store.packs.remote is not None:
            return False
        self._failed.update(self._decode_batch([(frame_id, loc)]))
        return True

    def prefetch(self, frame_ids: list[int]) -> None:
        """Start decoding these frames in the background (no-op without a nursery)."""
        if self.nursery is None:
            return
        todo = [f for f in frame_ids if f not in self._frames and f not in self._inflight]
        if not todo:
            return
        self.prefetched += len(todo)
        self.store.know_frames(todo)
        batch: list[int] = []
        size = 0
        for f in todo:
            try:
                size += self.store.frame_loc(f).raw
            except CorruptDataError:
                continue  # lost (fsck marked it): the reader that needs it gets the EIO
            batch.append(f)
            if size >= BATCH_BYTES:
                self.nursery.start_soon(self._background, batch)
                batch, size = [], 0
        if batch:
            self.nursery.start_soon(self._background, batch)

    def stream(self, locs: list[tuple[int, int, int]]) -> None:
        """A restore starts: read the packs of its pages images, (pack, off, length) in the
        order CRIU will want them, into the page cache (remote packs: fetch them into the
        node's cache) from now on, up to STREAM_LEAD ahead of what has been decoded.

        CRIU first reads its small images and builds the process tree (0.5-0.8 s at
        200 MB/s), then reads through a model server's zeroed KV cache at memory speed: the
        disk has nothing to do in both unless asked ahead. Asked for all at once, though
        (POSIX_FADV_WILLNEED over the snapshot), a slow disk queued hundreds of MiB and CRIU's
        own reads of the files it maps waited 2.5 s behind them (measured at 200 MB/s), so
        this reads a few MiB per step and waits for each."""
        if self.nursery is None or not locs:
            return
        self.store.packs.warm(locs, local=False)
        runs = self.store.packs.local_runs(locs)
        if runs:
            self.nursery.start_soon(self._stream, runs)

    async def _stream(self, runs: list[tuple[int, int, int]]) -> None:
        packs = self.store.packs
        base, done = self.read_bytes, 0
        try:
            for pack, lo, hi in runs:
                for at in range(lo, hi, STREAM_STEP):
                    if not await self._stream_may_go_on(base, done):
                        return
                    step = min(hi, at + STREAM_STEP) - at
                    await trio.to_thread.run_sync(packs.read_through, pack, at, at + step)
                    done += step
        except Exception:  # a hint, like a prefetch: the reads that need the bytes report
            log.exception("reading a restore's packs ahead failed")

    async def _stream_may_go_on(self, base: int, done: int) -> bool:
        """Wait while the stream is STREAM_LEAD ahead of the decoding; False when the
        decoding made no progress for STREAM_GIVE_UP seconds (the restore is over, or
        stopped: nothing will read the rest)."""
        last, since = self.read_bytes, trio.current_time()
        while done - (self.read_bytes - base) > STREAM_LEAD:
            if self.read_bytes != last:
                last, since = self.read_bytes, trio.current_time()
            elif trio.current_time() - since > STREAM_GIVE_UP:
                return False
            await trio.sleep(0.01)
        return True

    async def _background(self, frame_ids: list[int]) -> None:
        try:
            await self._decode(frame_ids, self._prefetch_limiter)
        except Exception:  # a prefetch is a hint: the reader that needs the frame reports
            log.exception("prefetch of %d frames failed", len(frame_ids))

    def describe(self) -> dict[str, int]:
        return {"frames": len(self._frames), "bytes": self._bytes, "budget": self.budget,
                "hits": self.hits, "misses": self.misses, "prefetched": self.prefetched}


class _Stream:
    """One sequential reader within a handle: where it goes next and how far ahead to decode."""

    __slots__ = ("issued_to", "last_off", "next_off", "seen", "window")

    def __init__(self, off: int, end: int, window: int) -> None:
        self.last_off = off
        self.next_off = end
        self.window = window
        self.issued_to = end
        self.seen = 1


class Readahead:
    """Per open handle: follows a few sequential streams at once and asks the cache to decode
    ahead of each, with a window that grows while a stream goes on.

    One handle can carry several streams: `criu lazy-pages` reads one pages image with 4 KiB
    reads for the pages the process faults on (forward, as the process works through its
    memory) interleaved with 64 KiB reads of its background transfer (forward from the start).
    A single cursor saw every switch between the two as a random jump and started over. A read
    that continues no stream starts a new one without prefetching: a random 4 KiB read used
    to set off 1 MiB of decoding that nobody read, which is what held random reads through the
    mount to about 10 MB/s. The exception is a read at offset 0 (a file read from its start)."""

    MIN_WINDOW = 1 << 20
    MAX_WINDOW = 32 << 20
    STREAMS = 4

    def __init__(self) -> None:
        self.streams: list[_Stream] = []  # most recently used first

    def advise(self, off: int, end: int) -> tuple[int, int] | None:
        """Record a read of [off, end); returns a range to prefetch, if any."""
        i = next((k for k, st in enumerate(self.streams)
                  if st.next_off <= off <= st.next_off + st.window), None)
        if i is None:
            s = _Stream(off, end, self.MIN_WINDOW)
            self.streams.insert(0, s)
            del self.streams[self.STREAMS:]
            if off != 0:
                return None
            s.issued_to = end + s.window
            return end, s.issued_to
        s = self.streams[i]
        if i:
            self.streams.insert(0, self.streams.pop(i))
        if s.seen > 1:
            s.window = min(s.window * 2, self.MAX_WINDOW)
        s.seen += 1
        s.last_off = off
        s.next_off = end
        target = end + s.window
        start = max(s.issued_to, end)
        if target - start < s.window // 4:
            return None
        s.issued_to = target
        return start, target

    def reached(self, to: int) -> None:
        """The prefetch ``advise`` just asked for went on to ``to`` (past pages that store
        nothing, FileMap.frames_ahead): the stream it was for counts as issued that far."""
        if self.streams:
            s = self.streams[0]
            s.issued_to = max(s.issued_to, to)

    def bound(self) -> tuple[int, int] | None:
        """How far the stream the last read advanced may be read without the core
        (core/readmap.py): from that read's start to half a window short of what was
        prefetched for it, so the read that crosses the bound comes back to ``advise`` while
        the other half is still being decoded; None if nothing was prefetched ahead of it."""
        if not self.streams:
            return None
        s = self.streams[0]
        hi = s.issued_to - s.window // 2
        if hi <= s.next_off:
            return None
        return s.last_off, hi
