"""Readahead's stream tracking and the frame cache's single-frame path, without a mount."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

import pytest
import trio

from lzfs.core import prefetch
from lzfs.core.filemap import FileMap
from lzfs.core.prefetch import FrameCache, Readahead
from lzfs.store.layout import mkfs
from lzfs.store.store import Store

KiB, MiB = 1 << 10, 1 << 20


def test_random_reads_prefetch_nothing():
    """A random 4 KiB read used to set off 1 MiB of decoding that nobody read."""
    ra = Readahead()
    rnd = random.Random(1)
    advised = [ra.advise(off, off + 4 * KiB)
               for off in (rnd.randrange(1, 1 << 18) * 4 * KiB for _ in range(500))]
    assert sum(a is not None for a in advised) < 10, advised


def test_a_file_read_from_its_start_prefetches_at_once():
    assert Readahead().advise(0, MiB) == (MiB, 2 * MiB)


def test_sequential_reads_grow_the_window_to_its_limit():
    ra = Readahead()
    ends = []
    for off in range(0, 64 * MiB, MiB):
        got = ra.advise(off, off + MiB)
        if got is not None:
            assert got[0] >= off + MiB  # only ahead of the reader
            ends.append(got[1])
    assert ends == sorted(ends)
    assert ends[-1] - 63 * MiB >= Readahead.MAX_WINDOW  # 32 MiB ahead at the end


def test_two_interleaved_streams_are_both_followed():
    """criu lazy-pages reads one image with faults (4 KiB, forward) among the 64 KiB reads of
    its background transfer: both streams keep their own window and prefetch."""
    ra = Readahead()
    fault, background = 100 * MiB, 0
    ahead: list[tuple[int, int]] = []
    for _ in range(200):
        for off, n in ((fault, 4 * KiB), (background, 64 * KiB)):
            got = ra.advise(off, off + n)
            if got is not None:
                ahead.append(got)
        fault += 12 * KiB  # the process skips pages the background already sent
        background += 64 * KiB
    near_fault = [a for a in ahead if a[0] >= 100 * MiB]
    near_background = [a for a in ahead if a[1] <= 100 * MiB]
    assert near_fault and near_background
    assert max(b - a for a, b in near_fault) >= 4 * MiB  # the window grew
    assert max(b - a for a, b in near_background) >= 4 * MiB


def test_a_missing_frame_of_a_random_read_decodes_without_a_thread(tmp_path):
    """One missing frame of a local store is decoded on the request thread (a hand-off costs
    more than the decode); the bytes are the file's and later reads hit the cache."""
    mkfs(tmp_path / "s")
    store = Store(tmp_path / "s")
    data = os.urandom(3 * MiB) + bytes(MiB) + b"lzfs" * (MiB // 4)

    async def main():
        cache = FrameCache(store, 64 * MiB)
        fm = FileMap(1, 0, store, cache, [], lambda *a: None)
        await fm.write(0, data)
        await fm.flush()
        cache.drop(list(cache._frames))
        threads: list[object] = []
        real = trio.to_thread.run_sync

        async def counting(fn, *args, **kw):
            threads.append(fn)
            return await real(fn, *args, **kw)

        trio.to_thread.run_sync = counting
        try:
            rnd = random.Random(2)
            for _ in range(50):
                off = rnd.randrange(len(data) // 4096) * 4096
                assert bytes(await fm.read(off, 4096, Readahead())) == data[off:off + 4096]
        finally:
            trio.to_thread.run_sync = real
        assert threads == []
        assert cache.hits > 0

    try:
        trio.run(main)
    finally:
        store.close()


def _written(tmp_path):
    """A fresh store, its frame cache, and an empty file map in it (store, cache, file map);
    ``_flushed`` writes the file."""
    mkfs(tmp_path / "s")
    store = Store(tmp_path / "s")
    cache = FrameCache(store, 256 * MiB)
    fm = FileMap(1, 0, store, cache, [], lambda *a: None)
    return store, cache, fm


async def _flushed(store, cache, fm, data: bytes) -> None:
    """Write ``data`` as the file, then drop its frames from the cache and its packs (synced)
    from the page cache, as after a remount with caches dropped."""
    await fm.write(0, data)
    await fm.flush()
    store.sync_packs()
    cache.drop(list(cache._frames))
    for pack in (store.root / "packs").iterdir():
        fd = os.open(pack, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def test_the_window_steps_over_pages_that_store_nothing(tmp_path):
    """A model server's zeroed KV cache stores nothing: a window counted in file bytes ran
    dry inside it, and the frames past it were decoded only once the reader got there."""
    data = os.urandom(2 * MiB) + bytes(96 * MiB) + os.urandom(2 * MiB)
    store, cache, fm = _written(tmp_path)

    async def main():
        await _flushed(store, cache, fm, data)
        frames, reach = fm.frames_ahead(MiB, 2 * MiB)
        assert reach > 98 * MiB  # past the zeros, a MiB into what follows them
        after = fm.frames_ahead(98 * MiB, MiB)[0]
        assert after and set(after) <= set(frames)
        async with trio.open_nursery() as nursery:
            cache.nursery = nursery
            ra = Readahead()
            for off in range(0, 2 * MiB, 256 * KiB):  # the reader is before the zeros
                assert bytes(await fm.read(off, 256 * KiB, ra)) == data[off:off + 256 * KiB]
        assert after[0] in cache._frames  # decoded before the reader got there
        assert bytes(await fm.read(50 * MiB, MiB, ra)) == bytes(MiB)
        assert bytes(await fm.read(99 * MiB, MiB, ra)) == data[99 * MiB:]

    try:
        trio.run(main)
    finally:
        store.close()


def _resident(path) -> int:
    """Bytes of ``path`` in the page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def _page_cache_evictable(path) -> bool:
    return shutil.which("fincore") is not None and _resident(path) == 0


def test_warm_and_read_through_read_the_whole_range(tmp_path):
    """POSIX_FADV_WILLNEED reads at most the device's readahead size per call: one call over
    24 MiB read 8 MiB here (128 KiB on many disks), and the rest stayed on disk."""
    data = os.urandom(48 * MiB)
    store, cache, fm = _written(tmp_path)
    trio.run(_flushed, store, cache, fm, data)
    try:
        [pack] = list((store.root / "packs").iterdir())
        if not _page_cache_evictable(pack):
            pytest.skip("no fincore, or the page cache of this file system cannot be dropped")
        pid = int(pack.stem)
        store.packs.warm([(pid, 0, 24 * MiB)])
        deadline = time.monotonic() + 10
        while _resident(pack) < 24 * MiB and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _resident(pack) >= 24 * MiB
        store.packs.read_through(pid, 24 * MiB, 48 * MiB)  # returns once it is read
        assert _resident(pack) >= 47 * MiB
    finally:
        store.close()


def test_a_restore_stream_goes_in_order_and_keeps_its_lead(tmp_path, monkeypatch):
    """A restore's packs are read from its start, a step at a time, in the order given, and
    no more than STREAM_LEAD ahead of the decoding: the stream waits while nothing is decoded
    and gives up once nothing has been for STREAM_GIVE_UP seconds."""
    monkeypatch.setattr(prefetch, "STREAM_LEAD", 8 * MiB)
    monkeypatch.setattr(prefetch, "STREAM_STEP", MiB)
    monkeypatch.setattr(prefetch, "STREAM_GIVE_UP", 0.5)
    data = os.urandom(32 * MiB)
    store, cache, fm = _written(tmp_path)
    steps: list[tuple[int, int, int]] = []
    real = store.packs.read_through

    def spy(pack: int, lo: int, hi: int) -> None:
        steps.append((pack, lo, hi))
        real(pack, lo, hi)

    monkeypatch.setattr(store.packs, "read_through", spy)

    async def main():
        await _flushed(store, cache, fm, data)
        fids = fm.frames_ahead(0, len(data))[0]
        store.know_frames(fids)
        locs = [(store.frame_loc(f).pack, store.frame_loc(f).off, store.frame_loc(f).rlen)
                for f in fids]
        async with trio.open_nursery() as nursery:
            cache.nursery = nursery
            cache.stream(locs)
            await trio.sleep(0.3)
            ahead = sum(hi - lo for _, lo, hi in steps)
            assert 8 * MiB <= ahead <= 10 * MiB  # at its lead, waiting for the decoding
            assert [lo for _, lo, _ in steps] == sorted(lo for _, lo, _ in steps)
            await cache.get(fids[:len(fids) // 2])  # the restore decodes half
            await trio.sleep(0.3)
            assert sum(hi - lo for _, lo, hi in steps) >= ahead + 8 * MiB
        # nothing decoded since: the stream gave up (the nursery closed) short of the end
        assert sum(hi - lo for _, lo, hi in steps) < len(data) + MiB

    try:
        trio.run(main)
    finally:
        store.close()
