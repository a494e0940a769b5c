"""The node-local cache of pack objects: fixed-size segments of remote packs on local disk, with
a size limit, so a second restore on one node reads locally.

Why segments and not frames: one ranged GET per 4 MiB segment turns a restore of a 2 GiB image
into ~500 GETs instead of ~10,000 (one per 256 KiB frame), and segments are the unit prefetch
asks for ahead of the reader. Segments are fetched on a thread pool, so the readahead window
of a restore is in flight as parallel GETs; a segment already being fetched is waited for, not
fetched twice. Eviction is least-recently-used by whole segment.

A segment goes to the readers waiting for it as soon as its GET returns; it is written to the
cache disk after that, off their path. Its bytes arrive in a buffer the cache reuses
(``_Fetched``): readers copy their frame out of it while it is in flight, and read the file
once it is kept. A fresh 4 MiB buffer per GET cost more CPU in page faults than the socket
copy itself.

Cached bytes are not trusted more than remote ones: every frame read from them is verified by
its checksum and content hashes (store.read_frame), and a segment that fails is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import xxhash

from lzfs.objectstore.protocol import Backend, Counters, RemoteError

log = logging.getLogger(__name__)

SEGMENT = 4 << 20
WORKERS = 8


class _Fetched:
    """A fetched segment's bytes (``view``) in a pooled buffer, until ``gone``: then the buffer
    is another fetch's, and readers read the segment's file instead. Both flags and the copy
    out of ``view`` are under the cache's lock."""

    __slots__ = ("gone", "view")

    def __init__(self, buf: bytearray, n: int) -> None:
        self.view = memoryview(buf)[:n]
        self.gone = False


class SegmentCache:
    def __init__(self, backend: Backend, directory: Path, limit: int,
                 counters: Counters | None = None) -> None:
        self.backend = backend
        self.dir = directory
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.limit = max(limit, 2 * SEGMENT)
        self.counters = counters or Counters()
        self.hits = 0
        self.sizes: dict[str, int] = {}  # object key -> end of its last known frame
        self.peak_inflight = 0  # most GETs in flight at once: prefetch runs them in parallel
        self._lock = threading.Lock()
        self._lru: OrderedDict[tuple[str, int], int] = OrderedDict()  # (key, idx) -> bytes
        self._bytes = 0
        self._inflight: dict[tuple[str, int], Future[_Fetched]] = {}
        self._free: list[bytearray] = []  # buffers of segments kept or dropped, for reuse
        # XXH3 of the bytes each segment fetched by this mount holds, and of those a frame of
        # it failed its check on (drop): the same bytes fetched again are not kept
        self._digests: dict[tuple[str, int], int] = {}
        self._bad: dict[tuple[str, int], int] = {}
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="lzfs-get")
        self._scan()

    def _scan(self) -> None:
        """Adopt what an earlier mount left, oldest first (by mtime)."""
        found = []
        for sub in self.dir.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                try:
                    st = f.stat()
                except FileNotFoundError:  # renamed or evicted by a daemon beside us
                    continue
                if f.name.startswith("."):  # a fetch in progress (perhaps of a daemon beside
                    if st.st_mtime < time.time() - 3600:  # us), or one a crash left
                        f.unlink(missing_ok=True)
                    continue
                found.append((st.st_mtime, (_unslug(sub.name), int(f.name)), st.st_size))
        for _, seg, size in sorted(found):
            self._lru[seg] = size
            self._bytes += size
        self._evict()

    def _path(self, seg: tuple[str, int]) -> Path:
        return self.dir / _slug(seg[0]) / f"{seg[1]:06d}"

    # ---- reading (any thread) --------------------------------------------------------------

    def read(self, key: str, off: int, length: int) -> bytes:
        """Bytes [off, off+length) of object ``key``: from cached segments (only the slice
        asked for is read from disk), else fetched, waiting for fetches already under way."""
        end = off + length
        pending = [(i, self._segment(key, i)) for i in range(off // SEGMENT,
                                                              (end - 1) // SEGMENT + 1)]
        parts = []
        for i, fut in pending:
            lo, hi = max(off - i * SEGMENT, 0), min(end - i * SEGMENT, SEGMENT)
            data = self._read_cached((key, i), lo, hi) if fut is None else None
            parts.append(data if data is not None else self._read_fetched(key, i, fut, lo, hi))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_fetched(self, key: str, idx: int, fut: Future[_Fetched] | None, lo: int,
                      hi: int) -> bytes:
        """Bytes [lo, hi) of a segment from its fetch (``fut``, or a new one). A fetch that is
        over has handed its buffer on and left the file, unless that was evicted since."""
        for _ in range(3):  # a buffer recycled and its file evicted, twice: not likely
            got = (fut or self._fetching(key, idx)).result()
            with self._lock:
                if not got.gone:
                    return bytes(got.view[lo:hi])
            data = self._read_cached((key, idx), lo, hi)
            if data is not None:
                return data
            fut = None
        raise RemoteError(f"{key}: segment {idx} went from the cache while being read")

    def _read_cached(self, seg: tuple[str, int], lo: int, hi: int) -> bytes | None:
        try:
            fd = os.open(self._path(seg), os.O_RDONLY)
        except FileNotFoundError:  # evicted since: fetch again
            return None
        try:
            return os.pread(fd, hi - lo, lo)
        finally:
            os.close(fd)

    def prefetch(self, ranges: list[tuple[str, int, int]], ahead: int = 0) -> None:
        """Start fetching the segments covering (key, off, length) ranges, and ``ahead`` more
        segments after each, not past ``sizes[key]`` (the end of the object as far as known);
        returns at once."""
        for key, off, length in ranges:
            last = (off + length - 1) // SEGMENT + ahead
            known = self.sizes.get(key)
            if known is not None:
                last = min(last, (known - 1) // SEGMENT)
            for i in range(off // SEGMENT, max(last, (off + length - 1) // SEGMENT) + 1):
                self._segment(key, i)

    def drop(self, key: str, off: int, length: int) -> None:
        """Forget cached segments of a range that failed verification."""
        for i in range(off // SEGMENT, (off + length - 1) // SEGMENT + 1):
            with self._lock:
                size = self._lru.pop((key, i), None)
                if size is not None:
                    self._bytes -= size
                self._inflight.pop((key, i), None)  # a fetch under way keeps no file
                bad = self._digests.pop((key, i), None)
                if bad is not None:
                    self._bad[(key, i)] = bad
            self._path((key, i)).unlink(missing_ok=True)

    def _fetching(self, key: str, idx: int) -> Future[_Fetched]:
        """The fetch of a segment whose cached copy is gone (evicted under us)."""
        fut = self._segment(key, idx, refetch=True)
        assert fut is not None  # refetch never answers "cached"
        return fut

    def _segment(self, key: str, idx: int, refetch: bool = False) -> Future[_Fetched] | None:
        """None when the segment is cached, else the future of its fetch."""
        seg = (key, idx)
        with self._lock:
            fut = self._inflight.get(seg)
            # a fetch still writing its file is waited for; not one whose GET returned and
            # whose segment was evicted or not kept since: it will leave no file, and its
            # bytes may be the ones a check failed on
            if fut is not None and not (fut.done() and seg not in self._lru):
                return fut
            if seg in self._lru:
                if not refetch:
                    self._lru.move_to_end(seg)
                    self.hits += 1
                    return None
                self._bytes -= self._lru.pop(seg)
            fut = Future()
            try:
                self._pool.submit(self._fetch, seg, fut)
            except RuntimeError:  # closed: nobody may wait for a fetch that never runs
                raise RemoteError("the segment cache is closed") from None
            self._inflight[seg] = fut
            self.peak_inflight = max(self.peak_inflight, len(self._inflight))
            return fut

    def _fetch(self, seg: tuple[str, int], fut: Future[_Fetched]) -> None:
        """GET a segment and hand it to its readers, then write it to the cache: readers (a
        restore) do not wait for the disk. The segment takes its place in the LRU when its
        GET returns, and stays in ``_inflight`` (so readers take it from the future) until
        its file is in place; a segment evicted or dropped meanwhile leaves no file. Then its
        buffer goes back to the pool."""
        with self._lock:
            buf = self._free.pop() if self._free else bytearray(SEGMENT)
        got, kept = None, False
        try:
            try:
                n = self.backend.get_into(seg[0], seg[1] * SEGMENT, memoryview(buf))
            except Exception as exc:  # noqa: BLE001 - its readers raise it
                fut.set_exception(exc)
                return
            got = _Fetched(buf, n)
            data = got.view  # what the readers share, and the file is written from
            self.counters.got(len(data))
            digest = xxhash.xxh3_64_intdigest(data)
            try:
                with self._lock:
                    # not dropped meanwhile, and not the bytes a check of it failed on (a
                    # reader fetching it again for a good frame of it, after another dropped
                    # it for a damaged one): they are served, never kept
                    if self._inflight.get(seg) is fut and self._bad.get(seg) != digest:
                        self._bad.pop(seg, None)
                        self._digests[seg] = digest
                        self._lru[seg] = len(data)
                        self._bytes += len(data)
                        self._evict()
            finally:
                fut.set_result(got)
            kept = self._keep(seg, fut, data)
        finally:
            with self._lock:
                if self._inflight.get(seg) is fut:
                    del self._inflight[seg]
                if not fut.done():  # something above failed: its readers must not hang
                    fut.set_exception(RemoteError(f"fetching {seg[0]}@{seg[1]} failed"))
                if got is None or kept:  # else readers may still come for its bytes
                    if got is not None:
                        got.gone = True
                    if len(self._free) < WORKERS:
                        self._free.append(buf)

    def _keep(self, seg: tuple[str, int], fut: Future[_Fetched], data: memoryview) -> bool:
        """Write a fetched segment's file, under its final name only while it is still this
        fetch's and in the LRU (decided under the lock, so a later fetch of the same segment
        is never overwritten); else it leaves no file. Whether it did: a segment without a
        file keeps its buffer for the readers holding its future."""
        with self._lock:  # dropped (a check failed on it) or evicted already: no disk write
            if self._inflight.get(seg) is not fut or seg not in self._lru:
                return False
        path = self._path(seg)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            with self._lock:
                if self._inflight.get(seg) is fut and seg in self._lru:
                    os.rename(tmp, path)
                    return True
        except OSError as exc:  # the cache disk: readers have their bytes; next time a GET
            log.warning("cannot keep segment %s@%d in the cache: %s", seg[0], seg[1], exc)
            with self._lock:
                if self._inflight.get(seg) is fut and seg in self._lru:
                    self._bytes -= self._lru.pop(seg)
                    self._digests.pop(seg, None)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False

    def _evict(self) -> None:
        """Drop least recently used segments past the limit (caller holds the lock)."""
        while self._bytes > self.limit and len(self._lru) > 1:
            seg, size = self._lru.popitem(last=False)
            self._bytes -= size
            self._digests.pop(seg, None)
            try:
                self._path(seg).unlink(missing_ok=True)
            except OSError as exc:  # the cache disk failing: the segment is forgotten anyway
                log.warning("cannot remove cached segment %s@%d: %s", seg[0], seg[1], exc)

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def describe(self) -> dict[str, float]:
        c = self.counters
        return {"gets": c.gets, "get_bytes": c.get_bytes, "first_get_at": c.first_get_at,
                "last_get_at": c.last_get_at, "puts": c.puts,
                "put_bytes": c.put_bytes, "segment_hits": self.hits,
                "peak_inflight": self.peak_inflight, "cached_bytes": self._bytes,
                "limit": self.limit}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:  # fetches cancelled before they began: nobody may wait for them
            for fut in self._inflight.values():
                if not fut.done():
                    fut.set_exception(RemoteError("the segment cache was closed"))


def _slug(key: str) -> str:
    return key.replace("/", "%")


def _unslug(name: str) -> str:
    return name.replace("%", "/")
