"""Cutting file data at file pages: zero pages are holes, heads and tails are pieces of their
own, a batch that is not final keeps its partial last page for later, and a piece's hash
depends on its bytes only."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from lzfs.store.chunker import split
from lzfs.store.codec import PAGE, block_hash


def test_zero_pages_are_holes_and_data_pages_are_hashed():
    a, b = os.urandom(PAGE), os.urandom(PAGE)
    pieces, consumed = split(a + bytes(2 * PAGE) + b, 0, True)
    assert consumed == 4 * PAGE
    assert [(p[0], p[1]) for p in pieces] == [(0, PAGE), (PAGE, PAGE), (2 * PAGE, PAGE),
                                                     (3 * PAGE, PAGE)]
    assert [p[2] for p in pieces] == [block_hash(a), None, None, block_hash(b)]


def test_an_unaligned_head_and_a_short_tail_are_pieces_of_their_own():
    data = os.urandom(100 + 2 * PAGE + 7)
    pieces, consumed = split(data, PAGE - 100, True)
    assert consumed == len(data)
    assert [(p[0], p[1]) for p in pieces] == [(0, 100), (100, PAGE),
                                                     (100 + PAGE, PAGE), (100 + 2 * PAGE, 7)]


def test_a_batch_that_is_not_final_keeps_its_partial_page():
    data = os.urandom(3 * PAGE + 500)
    pieces, consumed = split(data, 0, False)
    assert consumed == 3 * PAGE
    assert len(pieces) == 3
    # less than a page after an unaligned start: nothing yet
    assert split(data[:50], 10, False) == ([], 0)


def test_the_same_page_hashes_the_same_anywhere_and_a_seed_changes_it():
    page = os.urandom(PAGE)
    one, _ = split(page, 0, True)
    two, _ = split(os.urandom(PAGE) + page, 7 * PAGE, True)
    assert one[0][2] == two[1][2]
    seeded, _ = split(page, 0, True, seed=5)
    assert seeded[0][2] != one[0][2]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5 * PAGE), st.integers(0, 3 * PAGE), st.booleans())
def test_pieces_tile_what_they_consume_and_page_boundaries_are_file_pages(data, base, final):
    pieces, consumed = split(data, base, final)
    pos = 0
    for start, length, h in pieces:
        assert start == pos and length > 0
        end = base + start + length
        assert end % PAGE == 0 or start + length == len(data)
        chunk = data[start:start + length]
        assert (h is None) == (chunk == bytes(len(chunk)))
        assert h is None or h == block_hash(chunk)
        pos += length
    assert pos == consumed
    if final:
        assert consumed == len(data)
