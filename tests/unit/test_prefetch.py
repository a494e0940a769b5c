"""Readahead's stream tracking and the frame cache's single-frame path, without a mount."""

from __future__ import annotations

import os
import random

import trio

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
