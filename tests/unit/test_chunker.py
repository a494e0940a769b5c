"""Cut points: page granular, content defined, zero pages as holes, shift-proof."""

from __future__ import annotations

import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from lzfs.chunker import Chunker
from lzfs.codec import PAGE

CH = Chunker(16, 64)


def _pages(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(PAGE) for _ in range(n)]


def _blocks(buf: bytes, base: int = 0) -> list[bytes]:
    pieces, consumed = CH.cut(buf, base, True)
    assert consumed == len(buf)
    return [buf[p.start:p.start + p.length] for p in pieces if not p.zero]


def test_pieces_tile_the_buffer_and_zero_pages_are_holes():
    buf = b"".join(_pages(40, 1)) + bytes(3 * PAGE) + b"".join(_pages(10, 2)) + b"tail"
    pieces, consumed = CH.cut(buf, 0, True)
    assert consumed == len(buf)
    pos = 0
    for p in pieces:
        assert p.start == pos
        pos += p.length
        if p.zero:
            assert buf[p.start:p.start + p.length] == bytes(p.length)
    assert pos == len(buf)
    zero = [p for p in pieces if p.zero]
    assert [(z.start, z.length) for z in zero] == [(40 * PAGE, 3 * PAGE)]


def test_blocks_are_whole_pages_and_bounded():
    buf = b"".join(_pages(2000, 3))
    for b in _blocks(buf):
        assert len(b) % PAGE == 0
        assert PAGE <= len(b) <= 64 * PAGE


def test_not_final_keeps_the_open_block():
    buf = b"".join(_pages(100, 4))
    pieces, consumed = CH.cut(buf, 0, False)
    assert consumed < len(buf)
    assert consumed % PAGE == 0
    assert sum(p.length for p in pieces) == consumed


def test_shifted_pages_share_blocks():
    pages = _pages(4000, 5)
    a = b"".join(pages)
    # other pages inserted at the front and in the middle, some removed: CRIU dumping a
    # process whose VMAs moved, or another process's pages in between
    b = b"".join(_pages(7, 6) + pages[:1500] + _pages(33, 7) + pages[1530:])
    blocks_a = set(_blocks(a))
    blocks_b = _blocks(b)
    shared = sum(len(x) for x in blocks_b if x in blocks_a)
    common = (1500 + 2470) * PAGE  # bytes the two files really share
    assert shared >= 0.9 * common


def test_unaligned_base_cuts_on_absolute_page_boundaries():
    buf = os.urandom(5 * PAGE)
    pieces, _ = CH.cut(buf, 100, True)
    for p in pieces[1:]:
        assert (100 + p.start) % PAGE == 0


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3 * PAGE), st.lists(st.sampled_from(["r", "z", "s"]), max_size=30),
       st.booleans())
def test_cut_is_a_partition(base, kinds, final):
    rnd = random.Random(len(kinds))
    buf = b"".join(rnd.randbytes(PAGE) if k == "r" else bytes(PAGE) if k == "z"
                   else b"x" * rnd.randrange(1, PAGE) for k in kinds)
    pieces, consumed = CH.cut(buf, base, final)
    assert sum(p.length for p in pieces) == consumed
    if final:
        assert consumed == len(buf)
    assert all(p.length > 0 for p in pieces)
