"""core/readmap.py: the quadruples a file's runs become, the bounds each reader gets, and that
a change drops the map before anything could be answered from it."""

from __future__ import annotations

from lzfs.core.prefetch import Readahead
from lzfs.core.readmap import HOLE, STREAMS, ReadWindows, segments
from lzfs.store.blockmap import Run
from lzfs.testing.fastread_model import ModelReplier


def test_runs_become_gapless_quadruples_with_holes_and_the_tail_clipped():
    exts = [Run(4096, 8192, 5, 0), Run(12288, 100, 6, 4096), Run(20000, 4096, 7, 0)]
    assert list(segments(exts, 22000)) == [
        0, 4096, HOLE, 0,
        4096, 8192, 5, 0,
        12288, 100, 6, 4096,
        12388, 20000 - 12388, HOLE, 0,
        20000, 2000, 7, 0,  # clipped to the size
    ]
    assert list(segments([], 10)) == [0, 10, HOLE, 0]
    assert list(segments(exts, 0)) == []
    assert list(segments([Run(0, 4096, 1, 0), Run(8192, 4096, 2, 0)], 6000)) == [
        0, 4096, 1, 0, 4096, 1904, HOLE, 0]  # a run past the size is left out


def test_a_sequential_reader_is_bounded_half_a_window_short_of_its_prefetch():
    ra = Readahead()
    assert ra.advise(0, 1 << 20) == (1 << 20, 2 << 20)
    lo, hi = ra.bound()
    assert (lo, hi) == (0, (2 << 20) - (512 << 10))
    ra.advise(1 << 20, 2 << 20)
    ra.advise(2 << 20, 3 << 20)  # the window doubles once the stream goes on
    lo, hi = ra.bound()
    assert lo == 2 << 20 and hi > 3 << 20
    random = Readahead()
    assert random.advise(5 << 20, (5 << 20) + 4096) is None
    assert random.bound() is None  # nothing prefetched ahead of a random read
    assert Readahead().bound() is None


def test_a_file_is_mapped_once_bounded_per_reader_and_forgotten_on_change():
    model = ModelReplier()
    w = ReadWindows(model)
    w.serve_from({5: bytes(range(256)) * 64})
    exts = [Run(0, 16384, 5, 0)]
    readers = [Readahead() for _ in range(STREAMS + 2)]
    for ra in readers:
        ra.advise(0, 4096)
        w.offer(9, 16384, exts, ra)
    assert len(model.bnds[9]) == STREAMS  # the oldest readers' bounds went
    assert model.answer(9, 100, 1000) == (bytes(range(256)) * 64)[100:1100]
    assert w.figures()["mapped_files"] == 1
    w.forget(9)
    assert model.answer(9, 100, 1000) is None
    assert 9 not in model.maps and w.figures()["mapped_files"] == 0
    w.forget(9)  # nothing mapped: nothing to tell


def test_nothing_is_answered_outside_the_bounds_or_from_a_frame_not_cached():
    model = ModelReplier()
    w = ReadWindows(model)
    frames: dict[int, bytes] = {1: b"a" * 8192}
    w.serve_from(frames)
    exts = [Run(k * 8192, 8192, 1 if k != 3 else 2, 0) for k in range(512)]  # 4 MiB
    ra = Readahead()
    ra.advise(0, 4096)
    w.offer(3, 4 << 20, exts, ra)
    [(lo, hi)] = model.bnds[3]
    assert (lo, hi) == (0, 4096 + (512 << 10))
    assert model.answer(3, 0, 4096) == b"a" * 4096
    assert model.answer(3, 3 * 8192, 100) is None  # frame 2 is not in the cache
    frames[2] = b"b" * 8192
    assert model.answer(3, 3 * 8192, 100) == b"b" * 100
    assert model.answer(3, hi - 20, 10) == b"a" * 10
    assert model.answer(3, hi - 10, 20) is None  # crosses the bound: the core sees it
    assert model.answer(3, 4 << 20, 4096) is None  # the end of the file is past the bound
